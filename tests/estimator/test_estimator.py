"""hk.Estimator end to end: train, evaluate, predict; optimizers, batch norm, regularization."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from tests.conftest import make_data, numpy_input_fn


def test_three_heads_train_evaluate_and_predict(trained):
    estimator, features, labels = trained
    assert estimator.get_variable_value("global_step") == 30
    result = estimator.evaluate(numpy_input_fn(features, labels, repeat=False))
    assert set(result) == set(estimator.heads.metric_names) | {"global_step"}
    assert result["kind/accuracy"] > 0.5  # learnable from x in 30 steps
    expected_total = result["kind/loss"] + 0.5 * result["size/loss"] + result["flag/loss"]
    assert result["loss"] == pytest.approx(expected_total, rel=1e-4)
    assert result["size/rmse"] == pytest.approx(np.sqrt(result["size/loss"]), rel=1e-4)

    batch = next(estimator.predict(numpy_input_fn(features, repeat=False),
                                   yield_single_examples=False))
    assert batch["kind/probabilities"].shape == (32, 3)
    assert batch["kind/logits"].shape == (32, 3)
    assert batch["kind/class_ids"].shape == (32, 1)
    assert set(batch["kind/classes"][:, 0]) <= {b"a", b"b", b"c"}
    assert batch["size/predictions"].shape == (32, 1)
    assert batch["flag/probabilities"].shape == (32, 2)
    np.testing.assert_array_equal(
        batch["flag/class_ids"][:, 0], (batch["flag/probabilities"][:, 1] > 0.5).astype(int)
    )


def _one_head_body(batch_norm: bool = False, l2: float = 0.0):
    def build():
        x = tf.keras.Input((4,), name="x")
        h = x
        if batch_norm:
            h = tf.keras.layers.BatchNormalization(name="bn")(h)
        regularizer = tf.keras.regularizers.L2(l2) if l2 else None
        out = tf.keras.layers.Dense(1, kernel_regularizer=regularizer, name="out")(h)
        return tf.keras.Model({"x": x}, {"size": out})

    return build


_SIZE = hk.HeadSet([hk.Head("size", hk.Regression(), metrics=("mse",))])


@pytest.mark.parametrize(
    "optimizer",
    [
        "adam",
        "sgd",
        tf.compat.v1.train.MomentumOptimizer(0.01, 0.9),
        tf.keras.optimizers.Adam(),
        tf.keras.optimizers.legacy.RMSprop(),
        lambda: tf.keras.optimizers.SGD(0.01),
    ],
    ids=["name-adam", "name-sgd", "v1-momentum", "keras-adam", "keras-legacy-rmsprop",
         "factory-keras-sgd"],
)
def test_every_optimizer_kind_advances_global_step_once_per_step(optimizer, tmp_path):
    features, labels = make_data(32)
    estimator = hk.Estimator(_one_head_body(), _SIZE, optimizer=optimizer,
                             model_dir=str(tmp_path))
    before = None
    estimator.train(numpy_input_fn({"x": features["x"]}, {"size": labels["size"]}), steps=3)
    before = estimator.get_variable_value("out/kernel")
    assert estimator.get_variable_value("global_step") == 3
    estimator.train(numpy_input_fn({"x": features["x"]}, {"size": labels["size"]}), steps=2)
    assert estimator.get_variable_value("global_step") == 5
    assert not np.allclose(before, estimator.get_variable_value("out/kernel"))


def test_unknown_optimizer_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown name 'adamw'.*adam, sgd, adagrad"):
        hk.Estimator(_one_head_body(), _SIZE, optimizer="adamw")


def test_learning_rate_with_an_optimizer_object_is_refused():
    with pytest.raises(ValueError, match="learning_rate=0.1 applies only to an optimizer name"):
        hk.Estimator(_one_head_body(), _SIZE, optimizer=tf.keras.optimizers.Adam(),
                     learning_rate=0.1)


def test_batch_norm_statistics_update_and_eval_runs_in_inference_mode(tmp_path):
    features, labels = make_data(64)
    features = {"x": features["x"] * 3.0 + 5.0}  # moving mean moves towards 5
    estimator = hk.Estimator(_one_head_body(batch_norm=True), _SIZE, model_dir=str(tmp_path))
    estimator.train(numpy_input_fn(features, {"size": labels["size"]}), steps=20)
    moving_mean = estimator.get_variable_value("bn/moving_mean")
    assert np.all(moving_mean > 0.5), moving_mean  # starts at 0; 20 updates at momentum 0.99

    def predict(rows):
        return next(estimator.predict(
            lambda: tf.data.Dataset.from_tensor_slices({"x": rows}).batch(len(rows)),
            yield_single_examples=False))["size/predictions"]

    alone = predict(features["x"][:1])
    in_batch = predict(features["x"][:16])[:1]
    np.testing.assert_allclose(alone, in_batch, rtol=1e-5)  # no batch statistics used
    first = estimator.evaluate(numpy_input_fn(features, {"size": labels["size"]}, repeat=False))
    second = estimator.evaluate(numpy_input_fn(features, {"size": labels["size"]}, repeat=False))
    assert first["loss"] == second["loss"]  # evaluation changed no statistics
    np.testing.assert_array_equal(moving_mean, estimator.get_variable_value("bn/moving_mean"))


def test_regularization_is_the_exact_gap_between_total_and_weighted_head_losses(tmp_path):
    features, labels = make_data(32)
    heads = hk.HeadSet([hk.Head("size", hk.Regression(), weight=0.25)])
    estimator = hk.Estimator(_one_head_body(l2=0.1), heads, model_dir=str(tmp_path))
    data = numpy_input_fn({"x": features["x"]}, {"size": labels["size"]}, repeat=False)
    estimator.train(data, steps=1)
    result = estimator.evaluate(data)  # one batch of 32: means are exact
    kernel = estimator.get_variable_value("out/kernel")
    regularization = 0.1 * float(np.sum(kernel**2))
    assert regularization > 0.01
    assert result["loss"] - 0.25 * result["size/loss"] == pytest.approx(regularization, rel=1e-4)


def _mismatched_body(outputs):
    def build():
        x = tf.keras.Input((4,), name="x")
        return tf.keras.Model({"x": x}, {k: tf.keras.layers.Dense(n)(x) for k, n in outputs})

    return build


_TWO = hk.HeadSet([
    hk.Head("kind", hk.Classification(3), is_default=True),
    hk.Head("size", hk.Regression()),
])


@pytest.mark.parametrize(
    "outputs, message",
    [
        ([("kind", 3)], r"no output for head\(s\) \['size'\]"),
        ([("kind", 3), ("size", 1), ("extra", 2)], r"output\(s\) \['extra'\] match no head"),
        ([("kind", 4), ("size", 1)],
         r"Head 'kind': the body output has shape \(None, 4\), expected \[batch, 3\]"),
        ([("kind", 3), ("size", 2)],
         r"Head 'size': the body output has shape \(None, 2\), expected \[batch, 1\]"),
    ],
    ids=["missing", "extra", "four-logits-for-three-classes", "two-values-for-one"],
)
def test_body_outputs_that_do_not_fit_the_heads_fail_at_graph_build(outputs, message, tmp_path):
    features, labels = make_data(8)
    estimator = hk.Estimator(_mismatched_body(outputs), _TWO, model_dir=str(tmp_path))
    data = numpy_input_fn({"x": features["x"]},
                          {"kind": labels["flag"], "size": labels["size"]})
    with pytest.raises(ValueError, match=message):
        estimator.train(data, steps=1)
    assert estimator.latest_checkpoint() is None


def test_an_unused_label_is_an_error_not_ignored(tmp_path):
    features, labels = make_data(8)
    estimator = hk.Estimator(_one_head_body(), _SIZE, model_dir=str(tmp_path))
    data = numpy_input_fn({"x": features["x"]}, {"size": labels["size"], "sizee": labels["size"]})
    with pytest.raises(ValueError, match=r"\['sizee'\] would be ignored"):
        estimator.train(data, steps=1)


def test_string_labels_outside_the_vocabulary_fail_at_the_first_batch(tmp_path):
    heads = hk.HeadSet([hk.Head("kind", hk.Classification(vocabulary=("a", "b")))])

    def build():
        x = tf.keras.Input((4,), name="x")
        return tf.keras.Model({"x": x}, {"kind": tf.keras.layers.Dense(2)(x)})

    features, _ = make_data(8)
    estimator = hk.Estimator(build, heads, model_dir=str(tmp_path))
    data = numpy_input_fn({"x": features["x"]}, {"kind": np.array(["a", "zebra"] * 4)})
    with pytest.raises(hk.DataError, match=r"^Head 'kind': labels not in the "
                       r"vocabulary \['a', 'b'\]: zebra zebra"):
        estimator.train(data, steps=1)


def test_keras_model_instance_is_cloned_into_each_graph(tmp_path):
    with tf.Graph().as_default():
        model = _one_head_body()()
    features, labels = make_data(16)
    estimator = hk.Estimator(model, _SIZE, model_dir=str(tmp_path))
    estimator.train(numpy_input_fn({"x": features["x"]}, {"size": labels["size"]}), steps=2)
    assert estimator.get_variable_value("global_step") == 2


def test_a_non_finite_loss_names_the_head_and_step_and_applies_no_update(tmp_path):
    features, labels = make_data(32)
    estimator = hk.Estimator(_one_head_body(), _SIZE, model_dir=str(tmp_path))
    good = numpy_input_fn({"x": features["x"]}, {"size": labels["size"]})
    estimator.train(good, steps=2)
    kernel = estimator.get_variable_value("out/kernel")
    size = labels["size"].copy()
    size[3] = np.inf
    with pytest.raises(hk.NonFiniteLossError, match=r"non-finite loss at global step 2 in "
                       r"head\(s\) size") as raised:
        estimator.train(numpy_input_fn({"x": features["x"]}, {"size": size}), steps=2)
    assert raised.value.heads == ["size"] and raised.value.step == 2
    np.testing.assert_array_equal(kernel, estimator.get_variable_value("out/kernel"))


def test_class_ids_out_of_range_fail_at_the_first_batch_with_the_range_seen(tmp_path):
    heads = hk.HeadSet([hk.Head("kind", hk.Classification(3))])

    def build():
        x = tf.keras.Input((4,), name="x")
        return tf.keras.Model({"x": x}, {"kind": tf.keras.layers.Dense(3)(x)})

    features, _ = make_data(8)
    estimator = hk.Estimator(build, heads, model_dir=str(tmp_path))
    data = numpy_input_fn({"x": features["x"]}, {"kind": np.array([0, 1, 2, 7] * 2)})
    with pytest.raises(hk.DataError, match=r"^Head 'kind': class ids must be in \[0, 3\); the "
                       r"batch holds ids from 0 to 7"):
        estimator.train(data, steps=1)
    assert estimator.get_variable_value("global_step") == 0  # no update was applied
