"""MultiLabel, Poisson and Logistic heads together: train, evaluate, export, load, predict, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit import cli

# Trains the three kinds with hk.Estimator: TensorFlow 2.15 only.
pytestmark = pytest.mark.estimator

TAGS = ("red", "round", "sweet")


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    tags = [[t for t, on in zip(TAGS, row > 0) if on] for row in x]  # lists of names, some []
    labels = {
        "tags": tags,
        "visits": rng.poisson(np.exp(0.5 * x[:, 0])).astype("float64"),
        "share": 1.0 / (1.0 + np.exp(-x[:, 1])),
    }
    return {"x": x}, labels


def _body():
    x = tf.keras.Input((3,), name="x")
    h = tf.keras.layers.Dense(8, activation="relu")(x)
    return tf.keras.Model({"x": x}, {"tags": tf.keras.layers.Dense(3)(h),
                                     "visits": tf.keras.layers.Dense(1)(h),
                                     "share": tf.keras.layers.Dense(1)(h)})


HEADS = hk.HeadSet([
    hk.Head("tags", hk.MultiLabel(vocabulary=TAGS), is_default=True,
            metrics=("auc", "auc_pr", "precision", "recall")),
    hk.Head("visits", hk.Poisson(), metrics=("label_mean", "prediction_mean", "rmse")),
    hk.Head("share", hk.Logistic(), metrics=("label_mean", "prediction_mean", "mae")),
])


@pytest.mark.timeout(120)
def test_the_three_kinds_train_export_reload_and_predict(tmp_path, capsys):
    features, labels = _data(64, seed=0)
    eval_features, eval_labels = _data(32, seed=1)
    estimator = hk.Estimator(_body, HEADS, optimizer="adam", learning_rate=0.05,
                             model_dir=str(tmp_path / "model"))
    result = hk.train_and_evaluate(
        estimator,
        hk.input_fn(features, labels, HEADS, batch_size=16, shuffle=True, num_epochs=None,
                    seed=0),
        hk.input_fn(eval_features, eval_labels, HEADS, batch_size=32),
        max_steps=20, eval_every=20, export=hk.BestExport(keep=1), progress=False)

    # Every metric asked for is reported, under its catalog name; the counts' means are rates.
    metrics = result.best_metrics
    assert set(HEADS.metric_names) <= set(metrics)
    assert metrics["visits/label_mean"] == pytest.approx(eval_labels["visits"].mean(), rel=1e-5)
    assert metrics["share/label_mean"] == pytest.approx(eval_labels["share"].mean(), rel=1e-5)
    assert 0.0 < metrics["share/prediction_mean"] < 1.0 and metrics["visits/prediction_mean"] > 0

    # The export passed the contract check (hk.ExportError otherwise); reload it.
    model = hk.load(result.best_export)
    methods = {key: model.signatures[key]["method"].rsplit("/", 1)[-1]
               for key in ("tags", "visits", "share", "serving_default")}
    assert methods == {"tags": "classify", "visits": "regress", "share": "regress",
                       "serving_default": "classify"}
    predicted = model.predict({"x": eval_features["x"][:4]})
    tags = predicted["tags"]
    assert tags["all_classes"].tolist() == [[t.encode() for t in TAGS]] * 4
    above = tags["probabilities"] > 0.5
    np.testing.assert_array_equal(tags["class_ids"], above.astype("int64"))
    np.testing.assert_array_equal(tags["classes"], np.where(above, tags["all_classes"], b""))
    np.testing.assert_allclose(predicted["visits"]["predictions"],
                               np.exp(predicted["visits"]["logits"]), rtol=1e-5)
    np.testing.assert_allclose(predicted["share"]["predictions"],
                               1.0 / (1.0 + np.exp(-predicted["share"]["logits"])), rtol=1e-5)

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"x": r.tolist()}) for r in eval_features["x"][:4]))
    capsys.readouterr()
    assert cli.main(["predict", result.best_export, "--input", str(rows)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 4
    assert records[0]["tags"]["all_classes"] == list(TAGS)
    assert records[0]["visits"]["predictions"] == pytest.approx(
        predicted["visits"]["predictions"][0].tolist(), rel=1e-5)
    assert records[0]["share"]["predictions"] == pytest.approx(
        predicted["share"]["predictions"][0].tolist(), rel=1e-5)
