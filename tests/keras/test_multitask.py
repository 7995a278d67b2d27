"""hk.KerasModel with learned loss weights, PCGrad and normalised targets.

The learned weights are variables of the model, tracked by its checkpoint:
reported by evaluate() and in the TrainResult history, written to
TensorBoard, restored by a new model on the model_dir, never exported. No
Estimator is built here (see test_same_as_estimator.py).
"""

from __future__ import annotations

import glob
import math
import os

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from tests.conftest import multitask_data, multitask_heads, numpy_input_fn, tiny_body


@pytest.fixture(scope="module")
def uncertain(tmp_path_factory):
    features, labels = multitask_data()
    heads = multitask_heads(labels, loss_weighting="uncertainty")
    model = hk.KerasModel(tiny_body, heads, learning_rate=0.05, seed=0,
                          model_dir=str(tmp_path_factory.mktemp("uncertain")))
    evaluation_input = numpy_input_fn(features, labels, 96, repeat=False)
    result = hk.train_and_evaluate(model, numpy_input_fn(features, labels), evaluation_input,
                                   max_steps=10, eval_every=5, progress=False,
                                   export=hk.BestExport(keep=1))
    return dict(model=model, result=result, features=features, labels=labels,
                evaluation=model.evaluate(evaluation_input), input=evaluation_input)


def test_the_history_and_evaluate_report_each_heads_loss_weight(uncertain):
    model, result, evaluation = uncertain["model"], uncertain["result"], uncertain["evaluation"]
    assert [row["step"] for row in result.head_history("size")] == [5, 10]
    assert all("loss_weight" in row for row in result.head_history("size"))
    assert set(evaluation) == set(model.heads.metric_names) | {"global_step"}
    s = {n: float(v) for n, v in model.keras_model.headkit_weighting.log_variances.items()}
    for name, factor in (("kind", 1.0), ("size", 0.5), ("flag", 1.0)):
        assert s[name] != 0.0
        assert evaluation[f"{name}/loss_weight"] == pytest.approx(factor * math.exp(-s[name]),
                                                                  rel=1e-5)
    assert result.history[-1].metrics["kind/loss_weight"] == pytest.approx(
        evaluation["kind/loss_weight"], rel=1e-6)


def test_tensorboard_shows_each_heads_loss_weight(uncertain):
    tags = set()
    pattern = os.path.join(uncertain["model"].model_dir, "**", "events.out.tfevents.*")
    for path in glob.glob(pattern, recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {value.tag for value in event.summary.value}
    assert {"kind/loss_weight", "size/loss_weight", "flag/loss_weight"} <= tags


def test_the_checkpoint_holds_the_learned_weights_and_a_new_model_restores_them(uncertain):
    model = uncertain["model"]
    saved = [n for n, _ in tf.train.list_variables(model.latest_checkpoint())]
    assert "loss_weighting/log_variances/size/.ATTRIBUTES/VARIABLE_VALUE" in saved
    again = hk.KerasModel(tiny_body, model.heads, learning_rate=0.05, model_dir=model.model_dir)
    evaluation = again.evaluate(uncertain["input"])
    for key in ("kind/loss_weight", "size/loss_weight", "flag/loss_weight", "loss"):
        assert evaluation[key] == pytest.approx(uncertain["evaluation"][key], rel=1e-6), key


def test_the_export_holds_no_loss_weight_and_serves_mass_in_label_units(uncertain):
    export_dir = uncertain["result"].best_export
    variables = [n for n, _ in tf.train.list_variables(os.path.join(export_dir, "variables",
                                                                    "variables"))]
    assert variables and not any("loss_weighting" in n or "log_variance" in n
                                 for n in variables)
    loaded = hk.load(export_dir)
    assert "loss_weight" not in str(loaded.signatures)
    assert loaded.heads.loss_weighting == hk.UncertaintyWeighting()  # from the manifest
    served = loaded.predict(uncertain["features"])["size"]["predictions"][:, 0]
    assert 4000 < served.mean() < 6000  # grams, not the normalised body output


def _weights(model_dir):
    latest = tf.train.latest_checkpoint(model_dir)
    return {name: tf.train.load_variable(latest, name) for name, _ in
            tf.train.list_variables(latest)
            if name.startswith(("body/", "loss_weighting/")) and "OPTIMIZER" not in name}


def test_pcgrad_with_dwa_resumed_halfway_ends_with_the_uninterrupted_weights(tmp_path):
    features, labels = multitask_data()
    heads = multitask_heads(labels, loss_weighting=hk.DynamicWeightAverage(period=2),
                            gradient_surgery=hk.PCGrad(seed=3))

    def train(model_dir, max_steps):
        model = hk.KerasModel(tiny_body, heads, learning_rate=0.05, seed=0, model_dir=model_dir)
        model.train(hk.input_fn(features, labels, heads, batch_size=16, shuffle=True,
                                num_epochs=None, seed=0), max_steps=max_steps)
        return model

    whole = train(str(tmp_path / "whole"), 8)
    train(str(tmp_path / "halves"), 4)
    halves = train(str(tmp_path / "halves"), 8)
    ours, theirs = _weights(halves.model_dir), _weights(whole.model_dir)
    assert set(ours) == set(theirs) and "loss_weighting/weights/.ATTRIBUTES/VARIABLE_VALUE" in ours
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=1e-7, err_msg=name)
    dwa = ours["loss_weighting/weights/.ATTRIBUTES/VARIABLE_VALUE"]
    assert dwa.sum() == pytest.approx(3.0) and not np.allclose(dwa, 1.0)
