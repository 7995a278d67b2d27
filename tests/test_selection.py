"""The newest-TensorFlow run of ``.ci/run`` leaves out exactly the tests that need tf.estimator.

That run deselects the ``estimator`` marker (``tests/conftest.py`` says which
tests get it by rule). Every other mark is listed here, so that leaving a test
out of the newest run is a reviewed change, never a silent one.

It runs where tf.estimator does (TensorFlow 2.15), which collects every test,
``tests/estimator/`` included.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import ROOT

#: Tests marked ``estimator`` by hand, as "<file>" (the whole module) or
#: "<file>::<test function>", with why they need tf.estimator.
MARKED_BY_HAND = {
    "tests/test_examples.py",  # the examples train hk.Estimator models
    # tf.estimator at import (canned heads, hk.Estimator): conftest.ESTIMATOR_MODULES
    "tests/kinds/test_logistic.py",
    "tests/kinds/test_multi_label.py",
    "tests/kinds/test_poisson.py",
    "tests/training/test_warm_start.py",
    # whole modules built on hk.Estimator models
    "tests/keras/test_every_kind.py",
    "tests/serving/test_passthrough.py",
    "tests/kinds/test_end_to_end.py",
    "tests/kinds/test_losses.py::test_every_metric_the_canned_head_reports_is_available_by_name",
    "tests/training/test_train_and_evaluate.py::"
    "test_an_evaluation_input_that_never_ends_is_refused_before_training",
    "tests/training/test_train_and_evaluate.py::"
    "test_an_endless_evaluation_input_with_eval_steps_runs_and_numpy_integers_count",
    "tests/training/test_train_and_evaluate.py::test_bad_loop_arguments_name_the_field_and_value",
    "tests/keras/test_same_as_estimator.py",  # compares with an hk.Estimator
    "tests/test_bench.py::test_tiny_run_writes_json_and_markdown_with_ratios_from_the_same_run",
    "tests/test_bench.py::"
    "test_the_in_process_ab_reports_headkit_beside_the_plain_loop_references",
    "tests/test_release_fixtures.py::test_a_0_1_0_model_dir_resumes_its_steps_and_its_record",
    "tests/data/test_inputs.py::test_the_config_file_example_loads_and_trains",
    # tf.estimator's canned heads are the reference
    "tests/kinds/test_losses.py::test_head_loss_matches_the_canned_head",
    "tests/kinds/test_losses.py::test_weighted_total_matches_multi_head",
    "tests/kinds/test_losses.py::test_accuracy_and_eval_loss_match_the_canned_head",
    "tests/kinds/test_losses.py::test_canned_head_class_ids_match_headkit_predictions",
    # these build an hk.Estimator (or a tf.estimator.Estimator)
    "tests/serving/test_serving.py::test_export_without_a_checkpoint_says_train_first",
    "tests/serving/test_serving.py::test_a_lambda_loss_exports_and_loads_without_it",
    "tests/training/test_record.py::test_the_first_training_run_writes_a_versioned_record",
    "tests/training/test_record.py::"
    "test_a_rerun_with_another_model_is_refused_naming_each_change",
    "tests/training/test_record.py::"  # its Estimator case
    "test_a_rerun_uses_the_recorded_statistics_and_logs_the_difference",
    "tests/training/test_train_and_evaluate.py::"
    "test_wrong_metric_name_fails_before_any_file_is_written",
    "tests/training/test_train_and_evaluate.py::test_restart_continues_the_early_stopping_count",
    "tests/training/test_train_and_evaluate.py::test_early_stopping_without_evaluation_rejected",
    "tests/training/test_train_and_evaluate.py::"
    "test_early_stopping_that_can_never_fire_rejected",
    "tests/training/test_train_and_evaluate.py::"
    "test_best_export_metric_checked_against_the_heads",
    "tests/training/test_train_and_evaluate.py::test_plain_tf_estimator_rejected",
}

#: Files every test of which runs on the newest TensorFlow: the Keras backend and the
#: backend-neutral core.
ALWAYS_RUN = (
    "tests/keras/test_keras_model.py", "tests/test_cross_version.py", "tests/test_layers.py",
    "tests/spec/", "tests/training/test_loop.py",
    "tests/training/test_progress.py", "tests/training/test_weights.py",
)


def _estimator_runs() -> bool:
    from headkit.estimator import unavailable_reason

    return unavailable_reason() is None


pytestmark = pytest.mark.skipif(not _estimator_runs(), reason="checks the selection where "
                                "every test is collected: TensorFlow 2.15 with tf.estimator")


class _Recorder:
    def __init__(self):
        self.items = []

    def pytest_collection_finish(self, session):
        self.items = list(session.items)


@pytest.fixture(scope="module")
def collected():
    """(file, function name, marked, marked by rule) of every test of the suite."""
    from tests.conftest import ESTIMATOR_FIXTURES, needs_estimator

    recorder = _Recorder()
    code = pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider",
                        os.path.join(ROOT, "tests")], plugins=[recorder])
    assert code == 0 and recorder.items
    rows = []
    for item in recorder.items:
        path = os.path.relpath(str(item.path), ROOT).replace(os.sep, "/")
        fixtures = ESTIMATOR_FIXTURES + tuple(getattr(item.module, "ESTIMATOR_FIXTURES", ()))
        by_rule = path.startswith("tests/estimator/") or any(
            name in fixtures for name in item.fixturenames)
        rows.append((path, item.originalname, needs_estimator(item), by_rule))
    return rows


def test_tests_marked_by_hand_are_the_listed_ones(collected):
    by_hand = {(path, name) for path, name, marked, by_rule in collected
               if marked and not by_rule}
    found = {f"{path}::{name}" if f"{path}::{name}" in MARKED_BY_HAND else path
             for path, name in by_hand}
    assert found - MARKED_BY_HAND == set(), "marked estimator but not listed in MARKED_BY_HAND"
    assert MARKED_BY_HAND - found == set(), "listed in MARKED_BY_HAND but not marked (or gone)"


def test_the_keras_backend_and_core_files_run_whole_on_the_newest_tensorflow(collected):
    left_out = [f"{path}::{name}" for path, name, marked, _ in collected
                if marked and path.startswith(ALWAYS_RUN)]
    assert left_out == []
    assert {path for path, *_ in collected if path.startswith(ALWAYS_RUN)} >= {
        p for p in ALWAYS_RUN if p.endswith(".py")}


def test_most_of_the_suite_runs_on_the_newest_tensorflow(collected):
    kept = sum(1 for _, _, marked, _ in collected if not marked)
    assert kept >= 215, f"only {kept} tests left for the newest TensorFlow"
