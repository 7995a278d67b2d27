"""The Keras backend gives the Estimator's numbers and the Estimator's export, on the same weights.

One Estimator is trained (a body with batch norm and an L2-regularized layer),
then moved to Keras with ``KerasModel.from_estimator``; both evaluate the same
data and export. Keras 2 invalidates Keras models built before a graph-mode
model is built, so every Estimator step comes first.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from tests.conftest import make_data, numpy_input_fn, signature_contract, tiny_heads

pytestmark = pytest.mark.estimator  # they train hk.Estimator models


def regularized_body():
    x = tf.keras.Input((4,), name="x")
    tag = tf.keras.Input((1,), name="tag", dtype=tf.string)
    tag_id = tf.keras.layers.StringLookup(vocabulary=["u", "v"])(tag)
    tag_vector = tf.keras.layers.Flatten()(tf.keras.layers.Embedding(3, 2)(tag_id))
    h = tf.keras.layers.Concatenate()([x, tag_vector])
    h = tf.keras.layers.Dense(16, activation="relu",
                              kernel_regularizer=tf.keras.regularizers.L2(0.01))(h)
    h = tf.keras.layers.BatchNormalization()(h)
    return tf.keras.Model({"x": x, "tag": tag}, {
        "kind": tf.keras.layers.Dense(3, name="kind")(h),
        "size": tf.keras.layers.Dense(1, name="size")(h),
        "flag": tf.keras.layers.Dense(1, name="flag")(h),
    })


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    heads = tiny_heads()
    features, labels = make_data(96)
    estimator = hk.Estimator(regularized_body, heads, learning_rate=0.05,
                             model_dir=str(tmp_path_factory.mktemp("estimator")))
    estimator.train(numpy_input_fn(features, labels, batch_size=16), steps=40)
    eval_input = numpy_input_fn(features, labels, batch_size=32, repeat=False)
    estimator_metrics = estimator.evaluate(eval_input)
    estimator_export = estimator.export(str(tmp_path_factory.mktemp("estimator_exports")))
    model = hk.KerasModel.from_estimator(estimator,
                                         model_dir=str(tmp_path_factory.mktemp("keras")))
    keras_metrics = model.evaluate(eval_input)
    keras_export = model.export(str(tmp_path_factory.mktemp("keras_exports")))
    return dict(estimator=estimator, model=model, features=features,
                estimator_metrics=estimator_metrics, keras_metrics=keras_metrics,
                estimator_export=estimator_export, keras_export=keras_export)


def test_evaluate_reports_the_same_names_and_numbers(both):
    ours, theirs = both["keras_metrics"], both["estimator_metrics"]
    assert set(ours) == set(theirs)
    assert ours["global_step"] == theirs["global_step"] == 40
    for key in ("loss", "kind/loss", "size/loss", "flag/loss", "kind/accuracy", "size/rmse",
                "size/mae", "flag/accuracy"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-5), key
    assert ours["flag/auc"] == pytest.approx(theirs["flag/auc"], abs=5e-3)  # see docs/keras.md
    # The total holds the L2 term: it is more than the weighted heads alone.
    heads_only = ours["kind/loss"] + 0.5 * ours["size/loss"] + ours["flag/loss"]
    assert ours["loss"] > heads_only + 1e-4


def test_the_migrated_body_holds_the_batch_norm_statistics(both):
    layer = next(layer for layer in both["model"].keras_model.headkit_body.layers
                 if isinstance(layer, tf.keras.layers.BatchNormalization))
    moving_mean = tf.train.load_variable(both["estimator"].latest_checkpoint(),
                                         layer.moving_mean.name.split(":")[0].replace(
                                             layer.name, "batch_normalization"))
    np.testing.assert_allclose(layer.moving_mean.numpy(), moving_mean, rtol=1e-6)
    assert np.abs(moving_mean).max() > 0.01  # training moved it away from 0


def test_both_exports_declare_the_identical_contract(both):
    assert signature_contract(both["keras_export"]) == signature_contract(both["estimator_export"])
    keras_manifest = hk.load(both["keras_export"]).manifest
    estimator_manifest = hk.load(both["estimator_export"]).manifest
    assert keras_manifest["backend"] == "keras" and estimator_manifest["backend"] == "estimator"
    for key in ("signatures", "feature_spec", "heads", "default_head", "global_step"):
        assert keras_manifest[key] == estimator_manifest[key], key


def test_both_exports_serve_the_same_predictions(both):
    features = {k: v[:7] for k, v in both["features"].items()}
    ours = hk.load(both["keras_export"]).predict(features)
    theirs = hk.load(both["estimator_export"]).predict(features)
    for head, tensors in theirs.items():
        for key, value in tensors.items():
            if value.dtype.kind == "O":
                assert (ours[head][key] == value).all(), (head, key)
            else:
                np.testing.assert_allclose(ours[head][key], value, rtol=1e-5, atol=1e-5)


def test_predict_yields_the_estimators_keys_and_values(both):
    features = {k: v[:5] for k, v in both["features"].items()}
    first = next(both["model"].predict(numpy_input_fn(features, batch_size=5, repeat=False)))
    served = hk.load(both["estimator_export"]).predict(features)
    assert set(first) == {f"{h}/{k}" for h, t in served.items() for k in t}
    np.testing.assert_allclose(first["kind/probabilities"], served["kind"]["probabilities"][0],
                               rtol=1e-5, atol=1e-5)


def test_the_estimator_refuses_the_keras_model_dir_and_the_keras_model_the_estimators(both):
    with pytest.raises(hk.ConfigError, match=r"trained by the estimator backend.*"
                                             r"hk.KerasModel.from_estimator"):
        hk.KerasModel(regularized_body, tiny_heads(), model_dir=both["estimator"].model_dir)
