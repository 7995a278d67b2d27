"""Shared fixtures: a tiny 3-head model, trained once per session, and its export."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

#: The repository root.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VOCABULARY = ("a", "b", "c")


def make_data(n: int = 96, seed: int = 0):
    """Features {"x": [n, 4] float32, "tag": [n, 1] str} and labels for the tiny heads."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    tag = np.array(["u", "v"])[rng.integers(0, 2, n)].reshape(-1, 1)
    labels = {
        "kind": np.array(VOCABULARY)[np.argmax(x[:, :3], axis=1)],
        "size": (x.sum(axis=1) * 2.0).astype("float32"),
        "flag": (x[:, 3] > 0).astype("int64"),
    }
    return {"x": x, "tag": tag}, labels


def tiny_heads(default: str = "kind"):
    import headkit as hk

    return hk.HeadSet(
        [
            hk.Head("kind", hk.Classification(vocabulary=VOCABULARY), metrics=("accuracy",),
                    is_default=default == "kind"),
            hk.Head("size", hk.Regression(), metrics=("rmse", "mae"), weight=0.5,
                    is_default=default == "size"),
            hk.Head("flag", hk.Classification(2), metrics=("accuracy", "auc"),
                    is_default=default == "flag"),
        ]
    )


def tiny_body():
    """x (4 floats) and tag (a string looked up in the body) -> three head outputs."""
    import tensorflow as tf

    x = tf.keras.Input((4,), name="x")
    tag = tf.keras.Input((1,), name="tag", dtype=tf.string)
    tag_id = tf.keras.layers.StringLookup(vocabulary=["u", "v"])(tag)
    tag_vector = tf.keras.layers.Flatten()(tf.keras.layers.Embedding(3, 2)(tag_id))
    h = tf.keras.layers.Concatenate()([x, tag_vector])
    h = tf.keras.layers.Dense(16, activation="relu")(h)
    return tf.keras.Model(
        {"x": x, "tag": tag},
        {
            "kind": tf.keras.layers.Dense(3, name="kind")(h),
            "size": tf.keras.layers.Dense(1, name="size")(h),
            "flag": tf.keras.layers.Dense(1, name="flag")(h),
        },
    )


def numpy_input_fn(features, labels=None, batch_size=32, repeat=True):
    import tensorflow as tf

    def input_fn():
        data = dict(features) if labels is None else (dict(features), dict(labels))
        dataset = tf.data.Dataset.from_tensor_slices(data)
        if repeat:
            dataset = dataset.repeat()
        return dataset.batch(batch_size)

    return input_fn


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny 3-head hk.Estimator trained for 30 steps, with its data."""
    import headkit as hk

    features, labels = make_data()
    estimator = hk.Estimator(
        tiny_body, tiny_heads(), optimizer="adam", learning_rate=0.05,
        model_dir=str(tmp_path_factory.mktemp("tiny_model")),
    )
    estimator.train(numpy_input_fn(features, labels), steps=30)
    return estimator, features, labels


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """The export of the session's tiny model: (estimator, export_dir, features)."""
    estimator, features, _ = trained
    export_dir = estimator.export(str(tmp_path_factory.mktemp("tiny_exports")))
    return estimator, export_dir, features


def multitask_data(n: int = 96, seed: int = 0):
    """make_data with the size label in "grams" (mean 5000, spread ~400): normalisation matters."""
    features, labels = make_data(n, seed)
    labels["size"] = (labels["size"] * 100.0 + 5000.0).astype("float32")
    return features, labels


def multitask_heads(labels, **options):
    """The tiny heads with a normalised size head and class weights, weights 1.0."""
    import headkit as hk

    return hk.HeadSet([
        hk.Head("kind", hk.Classification(vocabulary=VOCABULARY), metrics=("accuracy",),
                is_default=True, class_weight={"a": 2.0}),
        hk.Head("size", hk.Regression.from_labels(labels["size"]), metrics=("rmse",)),
        hk.Head("flag", hk.Classification(2), metrics=("accuracy",)),
    ], **options)
