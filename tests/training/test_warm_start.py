"""Warm start: a new model_dir starts from a trained body, matched by layer structure.

Each case of the session's ``lifecycle`` fixture warm-starts an hk.Estimator
from one trained 10 steps; its step-0 checkpoint (``model.ckpt-0``) must hold
the source's shared body, batch-norm moving statistics included, and the
weights of every head that exists in both with the same shapes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.training.layout import has_keys
from headkit.training.record import RECORD_FILE
from headkit.training.weights import checkpoint_weights
from tests.conftest import LIFECYCLE_CASES, ROOT, lifecycle_body, lifecycle_heads

# Compares with tf.estimator (canned heads, hk.Estimator): TensorFlow 2.15 only
# (tests/conftest.py leaves the module out where tf.estimator cannot run).
pytestmark = pytest.mark.estimator

RELEASE = os.path.join(ROOT, "tests", "fixtures", "release_0_1_0")


def _layers(estimator, checkpoint):
    """The weighted layers of ``checkpoint``, read by ``estimator``'s body structure."""
    return checkpoint_weights(estimator.body, estimator.heads, checkpoint)


def _same(a, b):
    return len(a.values) == len(b.values) and all(
        np.array_equal(x, y) for x, y in zip(a.values, b.values))


@pytest.fixture(scope="module")
def source_layers(lifecycle):
    source, _ = lifecycle["source"]
    layers = _layers(source, source.latest_checkpoint())
    norm = next(layer for layer in layers if layer.class_name == "BatchNormalization")
    moving_mean, moving_variance = norm.values[2], norm.values[3]
    assert np.abs(moving_mean).max() > 1e-3 and np.abs(moving_variance - 1).max() > 1e-3, (
        "the source's batch-norm statistics must have moved for the test to mean anything")
    return layers


def _step_zero(lifecycle, case):
    estimator, _ = lifecycle[case]
    return estimator, _layers(estimator, os.path.join(estimator.model_dir, "model.ckpt-0"))


def _by_owner(layers):
    return {owner: [layer for layer in layers if layer.owner == owner]
            for owner in {layer.owner for layer in layers}}


def _assert_body_restored(source_layers, layers):
    old, new = _by_owner(source_layers)[None], _by_owner(layers)[None]
    assert [layer.class_name for layer in new] == ["Dense", "BatchNormalization"]
    for before, after in zip(old, new):  # gamma, beta, moving mean and variance included
        assert _same(before, after), after.describe()


def test_a_new_head_starts_fresh_and_the_body_and_bn_statistics_are_restored_at_step_0(
        lifecycle, source_layers):
    estimator, layers = _step_zero(lifecycle, "flag")
    _assert_body_restored(source_layers, layers)
    old, new = _by_owner(source_layers), _by_owner(layers)
    assert _same(old["kind"][0], new["kind"][0]) and _same(old["size"][0], new["size"][0])
    report = estimator.warm_start_report
    assert report.restored_heads == ("kind", "size") and report.fresh_heads == ("flag",)
    assert [(r.owner, r.reason) for r in report.skipped] == [("flag", "new head")]
    assert report.report().startswith(
        f"Warm start from model_dir {lifecycle['source'][0].model_dir!r}: restored 4 weighted "
        "layer(s), skipped 1.")
    with open(os.path.join(estimator.model_dir, RECORD_FILE)) as handle:  # the new run's heads
        assert [h["name"] for h in json.load(handle)["heads"]] == ["kind", "size", "flag"]


def test_a_head_with_more_classes_starts_fresh_and_the_body_is_restored_at_step_0(
        lifecycle, source_layers):
    estimator, layers = _step_zero(lifecycle, "four_classes")
    _assert_body_restored(source_layers, layers)
    old, new = _by_owner(source_layers), _by_owner(layers)
    assert new["kind"][0].shapes == ((8, 4), (4,))
    assert _same(old["size"][0], new["size"][0])
    (skipped,) = estimator.warm_start_report.skipped
    assert skipped.owner == "kind" and skipped.reason.startswith(
        "shapes differ: [(8, 4), (4,)] (target) vs layer")


def test_a_renamed_head_is_new_unless_head_map_maps_it(lifecycle, source_layers, tmp_path):
    estimator, layers = _step_zero(lifecycle, "renamed")  # head_map={"mass": "size"}
    _assert_body_restored(source_layers, layers)
    assert _same(_by_owner(source_layers)["size"][0], _by_owner(layers)["mass"][0])
    assert not estimator.warm_start_report.skipped
    assert "restored layer 4 'mass' (head 'mass'): from head 'size'" in str(
        estimator.warm_start_report)

    options, _ = LIFECYCLE_CASES["renamed"]
    unmapped = hk.Estimator(functools.partial(lifecycle_body, **options),
                            lifecycle_heads(**options), model_dir=str(tmp_path / "unmapped"),
                            warm_start_from=lifecycle["source"][0].model_dir)
    report = unmapped.warm_start_report
    assert report.fresh_heads == ("mass",) and report.dropped_heads == ("size",)
    assert [r.reason for r in report.skipped] == ["new head"]
    assert "Source head(s) not used: 'size'." in report.report()


def test_a_shared_body_that_differs_is_refused_naming_the_first_mismatched_layers(
        lifecycle, tmp_path):
    def wider():
        x = tf.keras.Input((4,), name="x")
        h = tf.keras.layers.BatchNormalization()(tf.keras.layers.Dense(16)(x))
        return tf.keras.Model({"x": x}, {"kind": tf.keras.layers.Dense(3)(h),
                                         "size": tf.keras.layers.Dense(1)(h)})

    source = lifecycle["source"][0].model_dir
    with pytest.raises(hk.ConfigError, match=(
            rf"warm_start_from model_dir '{source}': the shared bodies differ at shared layer "
            r"#0: target layer 1 'dense.*' \(Dense, shapes \[\(4, 16\), \(16,\)\]\) vs source "
            r"layer 1 'dense.*' \(Dense, shapes \[\(4, 8\), \(8,\)\]\)\. Use the same body")):
        hk.Estimator(wider, lifecycle_heads(), model_dir=str(tmp_path / "w"),
                     warm_start_from=source)
    assert not os.path.exists(tmp_path / "w")


def test_an_export_and_a_checkpoint_prefix_are_sources_too(lifecycle, tmp_path):
    source, export_dir = lifecycle["source"]
    for path, kind in ((export_dir, "export"), (source.latest_checkpoint(), "checkpoint")):
        estimator = hk.Estimator(functools.partial(lifecycle_body, flag=True),
                                 lifecycle_heads(flag=True), model_dir=str(tmp_path / kind),
                                 warm_start_from=path)
        report = estimator.warm_start_report
        assert report.source == f"{kind} {path!r}"
        assert len(report.restored) == 4 and report.fresh_heads == ("flag",)
    with open(os.path.join(export_dir, "assets.extra", "headkit.json")) as handle:
        assert has_keys(json.load(handle)["body"])  # the layout a warm start reads


def test_a_release_0_1_0_export_without_a_layout_is_read_by_the_new_bodys_names(tmp_path):
    from tests.fixtures import release_model

    export_dir = os.path.join(RELEASE, "export")
    estimator = hk.Estimator(release_model.body, release_model.heads(),
                             model_dir=str(tmp_path / "from_0_1_0"), warm_start_from=export_dir)
    report = estimator.warm_start_report
    assert len(report.restored) == 5 and not report.skipped
    reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
    norm = next(values for index, values in report.assignments.items() if len(values) == 4)
    assert np.array_equal(norm[3], reader.get_tensor("norm/moving_variance"))


def test_a_model_dir_with_a_checkpoint_resumes_and_reads_no_source(lifecycle, tmp_path):
    estimator, _ = lifecycle["flag"]
    options, _ = LIFECYCLE_CASES["flag"]
    again = hk.Estimator(functools.partial(lifecycle_body, **options), lifecycle_heads(**options),
                         model_dir=estimator.model_dir, warm_start_from=str(tmp_path / "gone"))
    assert again.warm_start_report is None


@pytest.mark.parametrize("arguments, error, message", [
    ({"warm_start_from": "{tmp}/nowhere"}, hk.ConfigError,
     r"warm_start_from '.*nowhere' does not exist\. Pass a model_dir, a checkpoint or a headkit "
     r"export"),
    ({"warm_start_from": "{tmp}"}, hk.ConfigError,
     r"is a folder without a checkpoint and is not an export \(no saved_model.pb\)"),
    ({"warm_start_from": "{tmp}/model"}, hk.ConfigError,
     r"warm_start_from '.*model' is this model's own model_dir\. A rerun there resumes"),
    ({"head_map": {"mass": "size"}}, hk.ConfigError,
     r"head_map=\{'mass': 'size'\} maps heads of a warm start, but warm_start_from is None"),
    ({"warm_start_from": "{tmp}", "head_map": ["mass"]}, TypeError,
     r"head_map must be a dict \{'<new head>': '<old head>'\} of head names \(got \['mass'\]\)"),
    ({"warm_start_from": tf.estimator.WarmStartSettings("runs/a")}, TypeError,
     r"warm_start_from must be the path of .* tf.estimator.WarmStartSettings and variable "
     r"names are not needed: pass the path"),
])
def test_warm_start_arguments_that_cannot_work_are_refused(arguments, error, message, tmp_path):
    arguments = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v
                 for k, v in arguments.items()}
    with pytest.raises(error, match=message):
        hk.Estimator(lifecycle_body, lifecycle_heads(), model_dir=str(tmp_path / "model"),
                     **arguments)


def test_a_head_map_naming_no_head_of_the_new_model_is_refused(lifecycle, tmp_path):
    with pytest.raises(hk.ConfigError, match=(
            r"head_map maps 'mas' -> 'size', but the target has no layers with weights owned "
            r"by head 'mas'")):
        hk.Estimator(functools.partial(lifecycle_body, size_name="mass"),
                     lifecycle_heads(size_name="mass"), model_dir=str(tmp_path / "m"),
                     warm_start_from=lifecycle["source"][0].model_dir, head_map={"mas": "size"})


def test_a_damaged_layout_names_the_missing_weight(lifecycle, tmp_path):
    source, _ = lifecycle["source"]
    copy = str(tmp_path / "copy")
    shutil.copytree(source.model_dir, copy)
    path = os.path.join(copy, RECORD_FILE)
    with open(path) as handle:
        record = json.load(handle)
    record["body"][0]["variables"][0] = "nothing/kernel"
    with open(path, "w") as handle:
        json.dump(record, handle)
    with pytest.raises(hk.ConfigError, match=(
            r"model_dir '.*copy': layer 1 'dense.*' \(Dense, .*\): the checkpoint has no weight "
            r"'nothing/kernel'")):
        hk.Estimator(lifecycle_body, lifecycle_heads(), model_dir=str(tmp_path / "m"),
                     warm_start_from=copy)
