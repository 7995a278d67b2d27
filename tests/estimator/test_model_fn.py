"""model_fn details: Keras metrics, 2-logit binary heads, Predict heads, a lone tensor output."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit import serving
from tests.conftest import make_data, numpy_input_fn


def _mixed_body():
    x = tf.keras.Input((4,), name="x")
    h = tf.keras.layers.Dense(8, activation="relu")(x)
    return tf.keras.Model({"x": x}, {
        "kind": tf.keras.layers.Dense(3)(h),
        "flag": tf.keras.layers.Dense(2)(h),  # a binary head may take 2 logits (softmax)
        "embedding": h,
    })


MIXED = hk.HeadSet([
    hk.Head("kind", hk.Classification(3), is_default=True,
            metrics=("accuracy", tf.keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2"))),
    hk.Head("flag", hk.Classification(2),
            metrics=("auc", tf.keras.metrics.SparseCategoricalAccuracy)),
    hk.Head("embedding", hk.Predict()),
])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    features, labels = make_data(64)
    estimator = hk.Estimator(_mixed_body, MIXED, model_dir=str(tmp_path_factory.mktemp("mixed")))
    data = numpy_input_fn({"x": features["x"]},
                          {"kind": np.argmax(features["x"][:, :3], 1), "flag": labels["flag"]})
    estimator.train(data, steps=5)
    return estimator, features, data


def test_keras_metrics_are_reported_under_the_head_prefix(mixed):
    estimator, _, data = mixed
    result = estimator.evaluate(data, steps=2)
    assert set(result) == {"loss", "kind/loss", "kind/accuracy", "kind/top2", "flag/loss",
                           "flag/auc", "flag/sparse_categorical_accuracy", "global_step"}
    assert result["kind/top2"] >= result["kind/accuracy"]
    assert 0.0 <= result["flag/auc"] <= 1.0


def test_two_logit_binary_head_predicts_softmax_probabilities(mixed):
    estimator, features, _ = mixed
    batch = next(estimator.predict(numpy_input_fn({"x": features["x"]}, repeat=False),
                                   yield_single_examples=False))
    np.testing.assert_allclose(batch["flag/probabilities"],
                               tf.nn.softmax(batch["flag/logits"]).numpy(), atol=1e-6)
    assert batch["flag/classes"].shape == (32, 1)
    assert batch["embedding/outputs"].shape == (32, 8)
    assert not any(k.startswith("embedding/") and k != "embedding/outputs" for k in batch)


def test_predict_head_is_exported_but_needs_no_labels(mixed, tmp_path):
    estimator, features, _ = mixed
    export_dir = estimator.export(str(tmp_path))
    signatures = hk.load(export_dir).signatures
    assert signatures["embedding"]["method"] == "tensorflow/serving/predict"
    assert signatures["embedding"]["outputs"] == ["outputs"]
    assert signatures["flag"]["outputs"] == ["classes", "scores"]
    assert "embedding/outputs" in signatures["predict"]["outputs"]
    got = hk.load(export_dir).predict({"x": features["x"][:2]}, head="embedding")
    assert got["embedding"]["outputs"].shape == (2, 8)
    assert serving.read_manifest(export_dir)["heads"]["heads"][2]["output"] == {"type": "predict"}


def test_a_lone_head_may_return_one_tensor_and_take_one_label_tensor(tmp_path):
    def body():
        x = tf.keras.Input((4,), name="x")
        return tf.keras.Model({"x": x}, tf.keras.layers.Dense(1)(x))

    features, labels = make_data(32)
    heads = hk.HeadSet([hk.Head("size", hk.Regression(), metrics=("mae",))])
    estimator = hk.Estimator(body, heads, model_dir=str(tmp_path))

    def input_fn():
        data = tf.data.Dataset.from_tensor_slices(({"x": features["x"]}, labels["size"]))
        return data.batch(16)

    estimator.train(input_fn, steps=2)
    result = estimator.evaluate(input_fn)
    assert result["size/loss"] == pytest.approx(result["loss"], rel=1e-5)
    assert heads.default_head.name == "size"


def test_a_keras_metric_named_like_a_registered_one_is_refused():
    with pytest.raises(ValueError, match=r"Head 'flag': metric names must be unique "
                       r"\(repeated: \['auc'\]\)"):
        hk.Head("flag", hk.Classification(2), metrics=("auc", tf.keras.metrics.AUC(name="auc")))
