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


# ------------------------------------------------------------ checked before training


def _x_body(width=4, dtype=tf.float32):
    def build():
        x = tf.keras.Input((width,), name="x", dtype=dtype)
        h = x if dtype != tf.string else tf.keras.layers.CategoryEncoding(
            num_tokens=3, output_mode="multi_hot")(tf.keras.layers.StringLookup(
                vocabulary=["a", "b"])(x))
        return tf.keras.Model({"x": x}, {"size": tf.keras.layers.Dense(1)(h)})

    return build


@pytest.mark.parametrize("body, x, error, message", [
    (_x_body(), np.array([["a", "b", "c", "d"]] * 8), TypeError,
     r"^feature 'x' is string, but the body's Keras Input 'x' is float32\. Declare the Input "
     r"as text, tf\.keras\.Input\(\(4,\), name='x', dtype=tf\.string\)"),
    (_x_body(1, tf.string), np.ones(8), TypeError,
     r"^feature 'x' is float32, but the body's Keras Input 'x' is string\. Feed it text"),
    (_x_body(), np.ones((8, 2)), ValueError,
     r"^feature 'x' has shape \(None, 2\), but the body's Keras Input 'x' expects \(None, 4\).*"
     r"tf\.keras\.Input\(\(2,\), name='x'\)"),
], ids=["text-to-number-input", "numbers-to-text-input", "two-columns-for-four"])
def test_a_feature_that_cannot_feed_its_input_is_named_with_both_dtypes_or_shapes(
        body, x, error, message, tmp_path):
    estimator = hk.Estimator(body, _SIZE, model_dir=str(tmp_path))
    with pytest.raises(error, match=message) as raised:
        estimator.train(hk.input_fn({"x": x}, {"size": np.zeros(8)}, _SIZE), max_steps=1)
    assert isinstance(raised.value, hk.DataError)
    assert estimator.latest_checkpoint() is None


def _mixed_body():
    x = tf.keras.Input((1,), name="x")
    tag = tf.keras.Input((1,), name="tag", dtype=tf.string)
    h = tf.keras.layers.Concatenate()([x, tag])
    return tf.keras.Model({"x": x, "tag": tag}, {"size": tf.keras.layers.Dense(1)(h)})


def _one_hot_lookup_body():
    tag = tf.keras.Input((1,), name="tag", dtype=tf.string)
    h = tf.keras.layers.StringLookup(vocabulary=["u", "v"], output_mode="one_hot")(tag)
    return tf.keras.Model({"tag": tag}, {"size": tf.keras.layers.Dense(1)(h)})


def _spaced_input_body():
    x = tf.keras.Input((1,), name="bill length (mm)")
    return tf.keras.Model({"bill length (mm)": x}, {"size": tf.keras.layers.Dense(1)(x)})


@pytest.mark.parametrize("body, message", [
    (_mixed_body, r"body: building the Keras model failed \(TypeError: .*don't all match\.\)\. "
                  r"A string Input meets a number Input.*'x' \(float32\), 'tag' \(string\).*"
                  r"StringLookup"),
    (_one_hot_lookup_body, r"body: building the Keras model failed .*graph mode.*"
                           r"StringLookup\(output_mode='one_hot'\).*CategoryEncoding"),
    (_spaced_input_body, r"'bill length \(mm\)' cannot name a Keras Input in a graph.*"
                         r"input_names=\{'bill length \(mm\)': 'bill_length_mm'\}"),
], ids=["text-concatenated-with-numbers", "one-hot-lookup-in-graph-mode", "input-with-spaces"])
def test_a_body_that_fails_to_build_names_its_inputs_and_the_fix(body, message, tmp_path):
    estimator = hk.Estimator(body, _SIZE, model_dir=str(tmp_path))
    features = {"x": np.ones(4), "tag": np.array(["u", "v"] * 2)}
    with pytest.raises(hk.ConfigError, match=message) as raised:
        estimator.train(hk.input_fn(features, {"size": np.zeros(4)}, _SIZE), max_steps=1)
    assert raised.value.field == "body"


def test_input_names_feed_a_column_whose_name_cannot_name_an_input(tmp_path):
    import pandas as pd

    def build():
        x = tf.keras.Input((1,), name="bill_length_mm")
        return tf.keras.Model({"bill_length_mm": x}, {"size": tf.keras.layers.Dense(1)(x)})

    frame = pd.DataFrame({"bill length (mm)": [39.1, 46.5, 50.0, 41.0], "size": np.zeros(4)})
    estimator = hk.Estimator(build, _SIZE, model_dir=str(tmp_path))
    with pytest.raises(hk.DataError, match=r"Inputs \['bill_length_mm'\] have no feature.*"
                       r"The column 'bill length \(mm\)' cannot name an Input; map it to "
                       r"'bill_length_mm'.*input_names="):
        estimator.train(hk.input_fn_from_dataframe(frame, _SIZE), max_steps=1)
    estimator.train(hk.input_fn_from_dataframe(
        frame, _SIZE, input_names={"bill length (mm)": "bill_length_mm"}), max_steps=1)
    assert estimator.global_step() == 1


def _size_head(loss):
    return hk.HeadSet([hk.Head("size", hk.Regression(), loss=loss)])


@pytest.mark.parametrize("loss, message", [
    (lambda labels, outputs: None, r"Head 'size': the loss <lambda> returned None\. headkit "
     r"calls it as loss\(labels, outputs\) with labels \(None, 1\) float32 and outputs "
     r"\(None, 1\) float32.*Add the missing return"),
    (lambda labels, outputs: tf.reduce_mean(tf.square(outputs - labels)),
     r"Head 'size': the loss <lambda> returned one number for the whole batch \(shape \(\)\).*"
     r"never the batch itself"),
    (lambda labels, outputs: tf.zeros([3, 4, 5]),
     r"Head 'size': the loss <lambda> returned shape \(3, 4, 5\), not one loss per example"),
    (lambda labels, outputs: labels.numpy(),
     r"Head 'size': the loss <lambda> failed while the graph was built \(AttributeError: .*"
     r"numpy.*\)\. headkit calls it as loss\(labels, outputs\)"),
], ids=["returns-none", "reduces-the-batch", "wrong-shape", "eager-only-code"])
def test_a_custom_loss_failing_in_the_graph_names_the_head_and_the_loss(loss, message, tmp_path):
    heads = _size_head(loss)
    estimator = hk.Estimator(_one_head_body(), heads, model_dir=str(tmp_path))
    features, labels = make_data(8)
    with pytest.raises(hk.ConfigError, match=message) as raised:
        estimator.train(hk.input_fn({"x": features["x"]}, {"size": labels["size"]}, heads),
                        max_steps=1)
    assert raised.value.field == "loss"


def test_keras_loss_classes_and_reducing_instances_are_refused_when_the_head_is_built(tmp_path):
    with pytest.raises(TypeError, match=r"loss is the class MeanSquaredError, not a loss.*"
                       r"loss=tf\.keras\.losses\.MeanSquaredError\(reduction='none'\)"):
        _size_head(tf.keras.losses.MeanSquaredError)
    with pytest.raises(ValueError, match=r"the Keras loss Huber reduces the batch to one "
                       r"number \(reduction='auto'\).*Pass Huber\(reduction='none'\)"):
        _size_head(tf.keras.losses.Huber())
    heads = _size_head(tf.keras.losses.Huber(reduction="none"))  # what the message asks for
    estimator = hk.Estimator(_one_head_body(), heads, model_dir=str(tmp_path))
    features, labels = make_data(8)
    estimator.train(hk.input_fn({"x": features["x"]}, {"size": labels["size"]}, heads),
                    max_steps=1)
    assert estimator.global_step() == 1


@pytest.fixture(scope="module")
def three_class_model_dir(tmp_path_factory):
    """A 3-class model trained one step; other metrics may evaluate it (metrics are logged)."""
    model_dir = str(tmp_path_factory.mktemp("three_classes"))
    heads = hk.HeadSet([hk.Head("kind", hk.Classification(3))])
    features, labels = make_data(8)
    data = hk.input_fn({"x": features["x"]}, {"kind": labels["flag"]}, heads)
    hk.Estimator(_mismatched_body([("kind", 3)]), heads, model_dir=model_dir).train(
        data, max_steps=1)
    return model_dir, features, labels


@pytest.mark.parametrize("metric, message", [
    (tf.keras.metrics.AUC(), r"Head 'kind': metric 'kind/auc' \(AUC\) does not fit the head.*"
     r"y_true \(None, 1\) int64 and y_pred \(None, 3\) float32.*SparseCategoricalAccuracy"),
    (tf.keras.metrics.Accuracy(), r"Head 'kind': metric 'kind/accuracy' \(Accuracy\) does not "
     r"fit the head.*Shapes"),
], ids=["auc-on-three-classes", "accuracy-compares-shapes"])
def test_a_keras_metric_that_does_not_fit_names_the_head_and_the_metric(
        metric, message, three_class_model_dir):
    model_dir, features, labels = three_class_model_dir
    heads = hk.HeadSet([hk.Head("kind", hk.Classification(3), metrics=(metric,))])
    estimator = hk.Estimator(_mismatched_body([("kind", 3)]), heads, model_dir=model_dir)
    with pytest.raises(hk.ConfigError, match=message) as raised:
        estimator.evaluate(hk.input_fn({"x": features["x"]}, {"kind": labels["flag"]}, heads))
    assert raised.value.field == "metrics"


def test_a_model_dir_that_is_a_file_or_under_one_is_refused_naming_the_path(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    with pytest.raises(hk.ConfigError, match=r"model_dir '.*notes\.txt' is a file, not a "
                       r"folder.*notes\.txt_model"):
        hk.Estimator(_one_head_body(), _SIZE, model_dir=str(notes))
    with pytest.raises(hk.ConfigError, match=r"model_dir '.*notes\.txt/run' cannot be created: "
                       r"'.*notes\.txt' is a file"):
        hk.Estimator(_one_head_body(), _SIZE, model_dir=str(notes / "run"))
    with pytest.raises(hk.ConfigError, match=r"model_dir must be a folder path \(got 3, a int\)"):
        hk.Estimator(_one_head_body(), _SIZE, model_dir=3)
    hk.Estimator(_one_head_body(), _SIZE, model_dir=str(tmp_path / "new" / "run"))  # created later


def test_a_model_dir_in_a_folder_without_write_permission_is_refused(tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root)")
        with pytest.raises(hk.ConfigError, match=r"cannot be created: no permission to write"):
            hk.Estimator(_one_head_body(), _SIZE, model_dir=str(locked / "run"))
    finally:
        locked.chmod(0o700)


def _any_length_body():
    x = tf.keras.Input((None,), name="x")  # any number of values per example
    h = tf.keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=1, keepdims=True))(x)
    return tf.keras.Model({"x": x}, {"size": tf.keras.layers.Dense(1)(h)})


def test_an_input_of_unknown_size_exports_with_the_padded_spec_the_error_suggests(tmp_path):
    estimator = hk.Estimator(_any_length_body, _SIZE, model_dir=str(tmp_path / "model"))
    estimator.train(hk.input_fn({"x": np.ones((4, 3))}, {"size": np.zeros(4)}, _SIZE,
                                num_epochs=None), max_steps=1)
    exports = str(tmp_path / "exports")
    with pytest.raises(hk.ConfigError, match=r"Input 'x' has shape \(None, None\) with an "
                       r"unknown dimension.*feature_spec= with a tf\.io\.FixedLenFeature of the "
                       r"padded shape"):
        estimator.export(exports)
    with pytest.raises(hk.ConfigError, match=r"feature_spec\['x'\]: a tf\.io\.VarLenFeature "
                       r"parses to a SparseTensor, but the body's Input 'x' is dense.*"
                       r"FixedLenFeature"):
        estimator.export(exports, feature_spec={"x": tf.io.VarLenFeature(tf.float32)})
    with pytest.raises(hk.ConfigError, match=r"feature_spec\['x'\]: dtype string, but the body's "
                       r"Input 'x' is float32.*Use dtype tf\.float32"):
        estimator.export(exports, feature_spec={"x": tf.io.FixedLenFeature([3], tf.string)})
    export_dir = estimator.export(exports, feature_spec={
        "x": tf.io.FixedLenFeature([3], tf.float32, default_value=[0.0, 0.0, 0.0])})
    served = hk.load(export_dir).predict({"x": np.ones((2, 3), "float32")})
    assert served["size"]["predictions"].shape == (2, 1)
