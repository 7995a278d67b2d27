"""hk.KerasModel's lifecycle: warm start from either backend, pass-through features, subsets.

The Estimator work (the session's ``lifecycle`` fixture, reading its
checkpoint, its export) comes first, in ``estimator_side``: Keras 2
invalidates Keras models built before a graph-mode model is built.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.serving.inspection import describe_export
from headkit.training.record import RECORD_FILE, read_record
from headkit.training.weights import body_structure, checkpoint_weights
from tests.conftest import lifecycle_body, lifecycle_data, lifecycle_heads, lifecycle_input

# Warm starts from, and compares with, hk.Estimator models: TensorFlow 2.15 only.
pytestmark = pytest.mark.estimator

ID_SPEC = {"example_id": tf.TensorSpec([None, 1], tf.string)}


@pytest.fixture(scope="module")
def estimator_side(lifecycle, tmp_path_factory):
    """The source Estimator's layers, and its export of ['size', 'kind'] with example_id."""
    source, export_dir = lifecycle["source"]
    layers = checkpoint_weights(source.body, source.heads, source.latest_checkpoint())
    with_ids = hk.Estimator(source.body, source.heads, model_dir=source.model_dir,
                            passthrough=ID_SPEC)
    subset = with_ids.export(str(tmp_path_factory.mktemp("estimator_subset")),
                             heads=["size", "kind"], default="size")
    return {"source": source, "export": export_dir, "layers": layers, "subset": subset}


@pytest.fixture(scope="module")
def keras_model(estimator_side, tmp_path_factory):
    """A KerasModel warm-started from the Estimator's export, passing example_id (from data)."""
    model = hk.KerasModel(lifecycle_body, lifecycle_heads(), learning_rate=0.05,
                          model_dir=str(tmp_path_factory.mktemp("keras")),
                          warm_start_from=estimator_side["export"], passthrough=("example_id",))
    model.train(lifecycle_input(model.heads), steps=3)
    subset = model.export(str(tmp_path_factory.mktemp("keras_subset")), heads=["size", "kind"],
                          default="size")
    return model, subset


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.values, b.values))


def test_a_keras_model_warm_starts_from_an_estimator_model_dir(estimator_side, tmp_path):
    model = hk.KerasModel(functools.partial(lifecycle_body, flag=True),
                          lifecycle_heads(flag=True), model_dir=str(tmp_path / "k"),
                          warm_start_from=estimator_side["source"].model_dir)
    assert model.warm_start_report.fresh_heads == ("flag",)
    source = estimator_side["layers"]  # dense, batch norm, kind, size
    target = [layer for layer in body_structure(model.keras_model.headkit_body, model.heads)
              if layer.owner != "flag"]
    assert [layer.owner for layer in target] == [layer.owner for layer in source]
    for old, new in zip(source, target):  # batch norm: gamma, beta, moving mean and variance
        assert _same(old, new), new.describe()

    model.train(lifecycle_input(model.heads), steps=1)
    step_zero = tf.train.load_checkpoint(os.path.join(model.model_dir, "ckpt-0"))
    layout = read_record(model.model_dir)["body"]  # the keys a later warm start reads
    norm = next(entry for entry in layout if entry["class"] == "BatchNormalization")
    for key, value in zip(norm["variables"], source[1].values):  # gamma ... moving variance
        assert np.array_equal(step_zero.get_tensor(key), value), key


def test_the_keras_subset_export_has_the_estimators_signatures_and_pass_through(
        estimator_side, keras_model):
    model, subset = keras_model
    ours, theirs = describe_export(subset), describe_export(estimator_side["subset"])
    assert ours["signatures"] == theirs["signatures"]
    assert ours["model_heads"] == theirs["model_heads"] == ["kind", "size"]
    assert ours["heads"] == ["kind", "size"] and ours["default_head"] == "size"
    assert not hk.diff_exports(estimator_side["subset"], subset).changes
    predict = next(s for s in ours["signatures"] if s["key"] == "predict")
    assert {"name": "example_id", "dtype": "string", "shape": [-1, 1]} in predict["inputs"]
    assert {"name": "example_id", "dtype": "string", "shape": [-1, 1]} in predict["outputs"]
    assert [t["name"] for t in next(s for s in ours["signatures"]
                                    if s["key"] == "kind")["inputs"]] == ["inputs"]


def test_keras_pass_through_comes_from_the_training_data_and_is_returned_unchanged(
        keras_model):
    model, subset = keras_model
    assert read_record(model.model_dir)["passthrough"] == {
        "example_id": {"dtype": "string", "shape": [1], "source": "training data"}}
    features, _ = lifecycle_data(4)
    first = next(model.predict(hk.input_fn(features, None, model.heads)))
    assert first["example_id"] == b"row-0" and "size/predictions" in first
    served = hk.load(subset)
    assert served.is_subset is False and served.passthrough["example_id"]["dtype"] == "string"
    result = served.predict({"x": features["x"], "example_id": features["example_id"]})
    assert sorted(result) == ["example_id", "kind", "size"]
    assert result["example_id"].ravel().tolist() == [b"row-0", b"row-1", b"row-2", b"row-3"]
    assert RECORD_FILE in os.listdir(model.model_dir)


def test_a_keras_model_warm_starts_from_a_keras_export_with_a_reshaped_head(keras_model,
                                                                              tmp_path):
    model, subset = keras_model
    warm = hk.KerasModel(functools.partial(lifecycle_body, n_kind=4), lifecycle_heads(n_kind=4),
                         model_dir=str(tmp_path / "four"), warm_start_from=subset)
    assert warm.warm_start_report.fresh_heads == ("kind",)
    assert warm.warm_start_report.source == f"export {subset!r}"
    old = body_structure(model.keras_model.headkit_body, model.heads)
    new = body_structure(warm.keras_model.headkit_body, warm.heads)
    for before, after in zip(old, new):
        assert _same(before, after) == (after.owner != "kind"), after.describe()
