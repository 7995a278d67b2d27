"""hk.train_and_evaluate: early stopping, best exports, restarts, TensorBoard, progress."""

from __future__ import annotations

import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.serving import read_manifest
from headkit.spec.catalog import metric_direction
from headkit.training.loop import _ranking
from headkit.training.monitor import Monitor
from headkit.training.state import STATE_FILE
from tests.conftest import make_data, numpy_input_fn, tiny_body, tiny_heads

MAX_STEPS = 40
#: The fixtures of this module that build an hk.Estimator (see tests/conftest.py).
ESTIMATOR_FIXTURES = ("improving", "plateau")


def _estimator(model_dir, optimizer="adam", learning_rate=0.05):
    return hk.Estimator(tiny_body, tiny_heads(), optimizer=optimizer,
                        learning_rate=learning_rate, model_dir=str(model_dir))


def _inputs(uninformative=False):
    features, labels = make_data(96, seed=0)
    eval_features, eval_labels = make_data(64, seed=1)
    if uninformative:  # every row looks the same: validation plateaus at once
        for data in (features, eval_features):
            data["x"] = np.zeros_like(data["x"])
            data["tag"] = np.full_like(data["tag"], "u")
    return (numpy_input_fn(features, labels),
            numpy_input_fn(eval_features, eval_labels, repeat=False))


def _scalar_tags(directory):
    tags = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


@pytest.fixture(scope="module")
def improving(tmp_path_factory):
    """Real data, learning: 4 evaluations, early stopping on loss, 2 best exports."""
    model_dir = tmp_path_factory.mktemp("improving")
    train_input, eval_input = _inputs()
    stream = io.StringIO()
    result = hk.train_and_evaluate(
        _estimator(model_dir), train_input, eval_input, max_steps=MAX_STEPS, eval_every=10,
        early_stopping=hk.EarlyStopping("loss", patience=2),
        export=hk.BestExport("kind/accuracy", keep=2), progress=stream,
    )
    return result, stream.getvalue()


@pytest.fixture(scope="module")
def plateau(tmp_path_factory):
    """Uninformative features, a named EvalSpec: kind/accuracy cannot improve for long."""
    model_dir = tmp_path_factory.mktemp("plateau")
    train_input, eval_input = _inputs(uninformative=True)
    return hk.train_and_evaluate(
        _estimator(model_dir), train_input, eval_input, max_steps=400, eval_every=5,
        early_stopping=hk.EarlyStopping("kind/accuracy", patience=2),
        eval_name="holdout", progress=False,
    )


# ------------------------------------------------------------------ early stopping


def test_plateau_stops_well_before_max_steps_and_says_why(plateau):
    assert plateau.stopped_early
    assert plateau.steps <= 100
    assert plateau.stop_reason.startswith(
        "early stopping: kind/accuracy did not improve by more than 0.0 for 2 evaluations")


def test_no_step_runs_after_the_deciding_evaluation(plateau):
    assert plateau.history[-1].step == plateau.steps


def test_named_eval_spec_still_stops_and_writes_its_own_folder(plateau):
    assert plateau.stopped_early
    assert os.path.isdir(os.path.join(plateau.model_dir, "eval_holdout"))
    assert not os.path.exists(os.path.join(plateau.model_dir, "eval"))


def test_improving_run_is_not_stopped(improving):
    result, _ = improving
    assert not result.stopped_early
    assert result.steps == MAX_STEPS
    assert result.stop_reason == f"reached max_steps={MAX_STEPS}"
    assert [e.step for e in result.history] == [10, 20, 30, 40]


@pytest.mark.estimator
def test_wrong_metric_name_fails_before_any_file_is_written(tmp_path):
    model_dir = tmp_path / "model"
    train_input, eval_input = _inputs()
    with pytest.raises(ValueError, match=r"no metric 'knd/accuracy'.*'kind/accuracy'.*"
                                         r"Did you mean 'kind/accuracy'"):
        hk.train_and_evaluate(_estimator(model_dir), train_input, eval_input, max_steps=20,
                              eval_every=5, early_stopping=hk.EarlyStopping("knd/accuracy"))
    assert not model_dir.exists() or not any(model_dir.iterdir())


class _CrashAtStep(tf.compat.v1.train.SessionRunHook):
    """Simulates a killed job: raises after the given global step."""

    def __init__(self, step):
        self._step = step

    def begin(self):
        self._global_step = tf.compat.v1.train.get_global_step()

    def before_run(self, run_context):
        return tf.compat.v1.train.SessionRunArgs(self._global_step)

    def after_run(self, run_context, run_values):
        if run_values.results + 1 >= self._step:
            raise RuntimeError("simulated crash")


@pytest.mark.estimator
def test_restart_continues_the_early_stopping_count(tmp_path):
    # A model that cannot learn (learning rate 0): the loss never improves after
    # the first evaluation, so the count is exact. Evaluations every 5 steps.
    train_input, eval_input = _inputs()
    rule = hk.EarlyStopping("loss", patience=3)

    def run(**extra):
        estimator = _estimator(tmp_path, optimizer="sgd", learning_rate=0.0)
        return hk.train_and_evaluate(estimator, train_input, eval_input, max_steps=100,
                                     eval_every=5, early_stopping=rule, progress=False, **extra)

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(hooks=[_CrashAtStep(12)])  # evaluated at 5 and 10, killed at 12
    with open(tmp_path / STATE_FILE) as handle:
        saved = json.load(handle)
    assert saved["early_stopping"]["evals_without_improvement"] == 1
    assert [e["step"] for e in saved["history"]] == [5, 10]

    result = run()  # restarts from checkpoint 10: evaluations at 15 and 20 end the count
    assert result.stopped_early
    assert [e.step for e in result.history] == [5, 10, 15, 20]
    assert result.steps == 20  # a fresh count would have stopped at 30
    again = run()  # an ended run returns its result without training
    assert (again.steps, again.stopped_early, again.history) == (20, True, result.history)


# ------------------------------------------------------------------ best exports


def test_exports_kept_are_the_n_best_by_the_chosen_metric(trained, tmp_path):
    # Evaluations made up for one checkpoint, so the ranking is known: by
    # kind/accuracy the two best are steps 20 and 30; by loss they would be 40 and 30.
    estimator, _, _ = trained
    export = hk.BestExport("kind/accuracy", keep=2, final=False, export_dir_base=str(tmp_path))
    state = Monitor(estimator, None, export, _ranking(None, export), None)
    state.path = str(tmp_path / STATE_FILE)  # keep the shared fixture's model_dir clean
    checkpoint = estimator.latest_checkpoint()
    for step, accuracy, loss in ((10, 0.5, 1.0), (20, 0.9, 2.0), (30, 0.7, 0.5), (40, 0.7, 0.4)):
        state.record(step, {"loss": loss, "kind/accuracy": float(np.float32(accuracy))},
                     checkpoint)
    kept = [read_manifest(path)["best_export"] for path in (e["path"] for e in state.kept)]
    assert [(k["step"], round(k["value"], 3)) for k in kept] == [(20, 0.9), (30, 0.7)]
    on_disk = sorted(glob.glob(os.path.join(str(tmp_path), "best", "*")))
    assert on_disk == sorted(e["path"] for e in state.kept)  # step 10's export was deleted
    assert kept[0]["metric"] == "kind/accuracy" and kept[0]["mode"] == "max"


def test_run_keeps_the_best_exports_by_its_metric_and_a_final_one(improving):
    result, _ = improving
    by_accuracy = sorted(result.history, key=lambda e: (-e.metrics["kind/accuracy"], e.step))
    manifests = [read_manifest(path)["best_export"] for path in result.exports]
    assert [m["step"] for m in manifests] == [e.step for e in by_accuracy[:2]]
    assert [m["value"] for m in manifests] == [e.metrics["kind/accuracy"] for e in by_accuracy[:2]]
    assert len(os.listdir(os.path.join(result.model_dir, "export", "best"))) == 2
    assert read_manifest(result.final_export)["final_export"]["step"] == MAX_STEPS


def test_result_points_at_the_best_export(improving):
    result, output = improving
    assert result.metric == "kind/accuracy"
    assert result.best_export == result.exports[0]
    assert read_manifest(result.best_export)["best_export"]["step"] == result.best_step
    assert result.best_value == max(e.metrics["kind/accuracy"] for e in result.history)
    assert f"export {result.best_export}" in output


def test_history_is_reported_per_head(improving):
    result, _ = improving
    kind = result.head_history("kind")
    assert [row["step"] for row in kind] == [10, 20, 30, 40]
    assert set(kind[0]) == {"step", "loss", "accuracy"}
    assert set(result.history_by_head) == {"loss", "kind", "size", "flag"}


# ------------------------------------------------------------------ TensorBoard and progress


def test_tensorboard_has_per_head_training_losses_and_eval_metrics(improving, plateau):
    result, _ = improving
    assert {"kind/loss", "size/loss", "flag/loss", "loss"} <= _scalar_tags(result.model_dir)
    eval_tags = _scalar_tags(os.path.join(result.model_dir, "eval"))
    assert {"kind/accuracy", "size/rmse", "flag/auc", "kind/loss"} <= eval_tags
    assert "kind/accuracy" in _scalar_tags(os.path.join(plateau.model_dir, "eval_holdout"))


def test_progress_shows_steps_loss_rate_eta_and_the_watched_metric(improving):
    _, output = improving
    assert f"step {MAX_STEPS}/{MAX_STEPS}" in output
    for part in ("loss ", " steps/s", "ETA ", "(best "):
        assert part in output
    assert "training ended at step 40: reached max_steps=40" in output


# ------------------------------------------------------------------ configuration errors


def test_metric_direction_follows_the_name():
    assert [metric_direction(m) for m in ("loss", "a/rmse", "a/mae", "a/mse")] == ["min"] * 4
    assert [metric_direction(f"a/{m}") for m in ("accuracy", "auc", "precision", "recall")] == (
        ["max"] * 4)


def test_unknown_metric_kind_needs_an_explicit_mode():
    with pytest.raises(ValueError, match=r"'species/f1'.*Pass mode='min' or mode='max'"):
        hk.EarlyStopping("species/f1")
    assert hk.EarlyStopping("species/f1", mode="max").direction == "max"


def test_misspelled_metric_kind_suggests_the_known_one():
    with pytest.raises(ValueError, match="Did you mean 'accuracy'"):
        hk.EarlyStopping("kind/acuracy")


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "down"}, r"mode must be one of \('auto', 'min', 'max'\) \(got 'down'\)"),
    ({"patience": 0}, r"patience must be an int >= 1 \(got 0\)"),
    ({"min_delta": -1.0}, r"min_delta must be a finite number >= 0 \(got -1.0\)"),
])
def test_bad_early_stopping_settings_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        hk.EarlyStopping("loss", **kwargs)


@pytest.mark.estimator
def test_early_stopping_without_evaluation_rejected(tmp_path):
    train_input, _ = _inputs()
    with pytest.raises(ValueError, match="needs evaluations, but eval_input_fn is None"):
        hk.train_and_evaluate(_estimator(tmp_path), train_input, None, max_steps=50,
                              early_stopping=hk.EarlyStopping("loss"))


@pytest.mark.estimator
def test_early_stopping_that_can_never_fire_rejected(tmp_path):
    train_input, eval_input = _inputs()
    with pytest.raises(ValueError, match=r"patience=3\) can never stop: max_steps=30 with "
                                         r"eval_every=10 gives 3 evaluation"):
        hk.train_and_evaluate(_estimator(tmp_path), train_input, eval_input, max_steps=30,
                              eval_every=10, early_stopping=hk.EarlyStopping("loss"))


@pytest.mark.estimator
def test_best_export_metric_checked_against_the_heads(tmp_path):
    train_input, eval_input = _inputs()
    with pytest.raises(ValueError, match=r"BestExport: evaluation produces no metric 'size/auc'"):
        hk.train_and_evaluate(_estimator(tmp_path), train_input, eval_input, max_steps=30,
                              export=hk.BestExport("size/auc"))


@pytest.mark.estimator
def test_plain_tf_estimator_rejected(tmp_path):
    estimator = tf.estimator.Estimator(lambda features, labels, mode: None, str(tmp_path))
    with pytest.raises(TypeError, match="needs a headkit model such as hk.Estimator"):
        hk.train_and_evaluate(estimator, None, None, max_steps=10)


def test_a_run_whose_every_evaluation_was_nan_stops_with_a_readable_reason(trained, tmp_path):
    estimator, _, _ = trained
    rule = hk.EarlyStopping("loss", patience=1)
    state = Monitor(estimator, rule, None, _ranking(rule, None), None)
    state.path = str(tmp_path / STATE_FILE)
    checkpoint = estimator.latest_checkpoint()
    for step in (10, 20):
        state.record(step, {"loss": float("nan")}, checkpoint)
    assert "(best none: every value was NaN)" in state.stop_reason()


def test_a_best_export_mode_without_a_metric_is_refused():
    with pytest.raises(ValueError, match=r"BestExport\(mode='max'\) needs a metric"):
        hk.BestExport(mode="max")
    with pytest.raises(ValueError, match=r"BestExport.mode must be one of .* \(got 'up'\)"):
        hk.BestExport(mode="up")


# ------------------------------------------------------------------ checked before training


def _endless_with_arguments(mode, params, config):
    """An input_fn as tf.estimator calls them, whose dataset repeats forever."""
    features, labels = make_data(16, seed=1)
    return tf.data.Dataset.from_tensor_slices((features, labels)).repeat().batch(8)


@pytest.mark.parametrize("endless, message", [
    (lambda: hk.input_fn(*make_data(16, seed=1), tiny_heads(), num_epochs=None),
     r"it was made with num_epochs=None, which repeats forever"),
    (lambda: numpy_input_fn(*make_data(16, seed=1), repeat=True),
     r"its dataset repeats forever \(a \.repeat\(\) with no count\?\)"),
    (lambda: _endless_with_arguments, r"its dataset repeats forever \(a \.repeat\(\) with no "
                                      r"count\?\)"),
], ids=["hk-input-fn-num-epochs-none", "dataset-repeat", "estimator-style-arguments"])
@pytest.mark.estimator
def test_an_evaluation_input_that_never_ends_is_refused_before_training(endless, message,
                                                                         tmp_path):
    train_input, _ = _inputs()
    model_dir = tmp_path / "model"
    with pytest.raises(hk.ConfigError, match=r"^eval_input_fn never ends: " + message +
                       r", and eval_steps is None.*pass eval_steps=N") as raised:
        hk.train_and_evaluate(_estimator(model_dir), train_input, endless(), max_steps=20,
                              eval_every=5, progress=False)
    assert raised.value.field == "eval_input_fn"
    assert not model_dir.exists() or not any(model_dir.iterdir())


@pytest.mark.estimator
def test_an_endless_evaluation_input_with_eval_steps_runs_and_numpy_integers_count(tmp_path):
    train_input, _ = _inputs()
    endless = hk.input_fn(*make_data(16, seed=1), tiny_heads(), batch_size=8, num_epochs=None)
    result = hk.train_and_evaluate(
        _estimator(tmp_path), train_input, endless, max_steps=np.int64(4),
        eval_every=np.int64(2), eval_steps=np.int64(2), progress=False,
        early_stopping=hk.EarlyStopping("loss", patience=np.int64(1)))
    assert result.steps == 4 and [e.step for e in result.history] == [2, 4]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"progress": "yes"}, TypeError,
     r"progress must be True, False or a stream with write\(\) \(got 'yes'\)\. Use "
     r"progress=True"),
    ({"max_steps": "100"}, ValueError, r"max_steps must be an int >= 1 \(got '100', a str\)"),
    ({"eval_every": 2.5}, ValueError, r"eval_every must be an int >= 1 \(got 2\.5\)"),
    ({"eval_steps": 0}, ValueError, r"eval_steps must be an int >= 1 \(got 0\)"),
], ids=["progress-yes", "max-steps-text", "eval-every-fraction", "eval-steps-zero"])
@pytest.mark.estimator
def test_bad_loop_arguments_name_the_field_and_value(kwargs, error, message, tmp_path):
    train_input, eval_input = _inputs()
    arguments = {"max_steps": 20, "eval_every": 5, "progress": False, **kwargs}
    with pytest.raises(error, match=message) as raised:
        hk.train_and_evaluate(_estimator(tmp_path), train_input, eval_input, **arguments)
    assert isinstance(raised.value, hk.ConfigError) and raised.value.field == next(iter(kwargs))
