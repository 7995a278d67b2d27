"""hk.Estimator with learned loss weights, PCGrad, normalised targets and class weights.

The learned weights are graph variables of the TRAIN and EVAL graphs: saved by
the default Saver, reported from the checkpoint, never exported. The last test
moves a model to Keras (Keras 2: Keras models come after Estimator work).
"""

from __future__ import annotations

import glob
import math
import os

import attrs
import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.serving.contract import read_signature_defs
from tests.conftest import multitask_data, multitask_heads, numpy_input_fn, tiny_body

S = "headkit_loss_weighting/{}/log_variance"


@pytest.fixture(scope="module")
def uncertain(tmp_path_factory):
    features, labels = multitask_data()
    heads = multitask_heads(labels, loss_weighting="uncertainty")
    model_dir = str(tmp_path_factory.mktemp("uncertain"))
    estimator = hk.Estimator(tiny_body, heads, learning_rate=0.05, model_dir=model_dir)
    estimator.train(numpy_input_fn(features, labels), steps=10)
    # One batch: with class weights a mean of batch totals is not the total of the means.
    evaluation = estimator.evaluate(numpy_input_fn(features, labels, 96, repeat=False))
    export_dir = estimator.export(str(tmp_path_factory.mktemp("uncertain_exports")))
    return dict(estimator=estimator, features=features, labels=labels, evaluation=evaluation,
                export_dir=export_dir)


def test_evaluate_reports_each_heads_loss_weight_from_the_checkpoint(uncertain):
    estimator, evaluation = uncertain["estimator"], uncertain["evaluation"]
    assert set(evaluation) == set(estimator.heads.metric_names) | {"global_step"}
    checkpoint = estimator.latest_checkpoint()
    for name, factor in (("kind", 1.0), ("size", 0.5), ("flag", 1.0)):
        s = tf.train.load_variable(checkpoint, S.format(name))
        assert s != 0.0  # learned
        assert evaluation[f"{name}/loss_weight"] == pytest.approx(factor * math.exp(-s),
                                                                  rel=1e-5)
    terms = sum(f * (evaluation[f"{n}/loss"] * math.exp(-tf.train.load_variable(
        checkpoint, S.format(n))) + tf.train.load_variable(checkpoint, S.format(n)))
        for n, f in (("kind", 1.0), ("size", 0.5), ("flag", 1.0)))
    assert evaluation["loss"] == pytest.approx(terms, rel=1e-4, abs=1e-4)


def test_tensorboard_shows_each_heads_loss_weight_while_training(uncertain):
    tags = set()
    for path in glob.glob(os.path.join(uncertain["estimator"].model_dir, "events.out.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {value.tag for value in event.summary.value}
    assert {"kind/loss_weight", "size/loss_weight", "flag/loss_weight", "kind/loss"} <= tags


def test_the_export_holds_no_loss_weight_and_serves_mass_in_label_units(uncertain):
    export_dir = uncertain["export_dir"]
    variables = [n for n, _ in tf.train.list_variables(os.path.join(export_dir, "variables",
                                                                    "variables"))]
    assert variables and not any("loss_weighting" in n or "log_variance" in n
                                 for n in variables)
    outputs = {k for sig in read_signature_defs(export_dir).values() for k in sig.outputs}
    assert not any("loss_weight" in k for k in outputs)
    loaded = hk.load(export_dir)
    assert loaded.heads["size"].output == uncertain["estimator"].heads["size"].output
    served = loaded.predict(uncertain["features"])["size"]["predictions"][:, 0]
    assert 4000 < served.mean() < 6000  # grams, not the normalised body output
    rmse = float(np.sqrt(np.mean((served - uncertain["labels"]["size"]) ** 2)))
    assert rmse == pytest.approx(uncertain["evaluation"]["size/rmse"], rel=1e-4)


def test_a_new_estimator_on_the_model_dir_resumes_the_learned_weights(uncertain):
    estimator, features, labels = (uncertain[k] for k in ("estimator", "features", "labels"))
    again = hk.Estimator(tiny_body, estimator.heads, learning_rate=0.05,
                         model_dir=estimator.model_dir)
    evaluation = again.evaluate(numpy_input_fn(features, labels, 96, repeat=False))
    for name in ("kind", "size", "flag"):
        key = f"{name}/loss_weight"
        assert evaluation[key] == pytest.approx(uncertain["evaluation"][key], rel=1e-6)


def _weights(model_dir):
    latest = tf.train.latest_checkpoint(model_dir)
    return {name: tf.train.load_variable(latest, name) for name, _ in
            tf.train.list_variables(latest) if not name.startswith("headkit_input")}


def test_pcgrad_with_dwa_resumed_halfway_ends_with_the_uninterrupted_weights(tmp_path):
    features, labels = multitask_data()
    heads = multitask_heads(labels, loss_weighting=hk.DynamicWeightAverage(period=2),
                            gradient_surgery=hk.PCGrad(seed=3))
    config = tf.estimator.RunConfig(tf_random_seed=0)

    def train(model_dir, max_steps):
        estimator = hk.Estimator(tiny_body, heads, learning_rate=0.05, model_dir=model_dir,
                                 config=config)
        estimator.train(hk.input_fn(features, labels, heads, batch_size=16, shuffle=True,
                                    num_epochs=None, seed=0), max_steps=max_steps)
        return estimator

    whole = train(str(tmp_path / "whole"), 8)
    train(str(tmp_path / "halves"), 4)
    halves = train(str(tmp_path / "halves"), 8)
    ours, theirs = _weights(halves.model_dir), _weights(whole.model_dir)
    assert set(ours) == set(theirs)
    assert "headkit_loss_weighting/dynamic_weight_average/weights" in ours
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=1e-7, err_msg=name)
    dwa = ours["headkit_loss_weighting/dynamic_weight_average/weights"]
    assert dwa.sum() == pytest.approx(3.0) and not np.allclose(dwa, 1.0)  # 4 windows seen


def test_a_warm_start_from_a_fixed_model_moves_the_body_and_starts_the_weights_afresh(
        trained, tmp_path):
    source, features, labels = trained  # tiny_heads: fixed weights, no log variances
    heads = attrs.evolve(source.heads, loss_weighting=hk.UncertaintyWeighting())
    estimator = hk.Estimator(tiny_body, heads, learning_rate=0.0, model_dir=str(tmp_path),
                             warm_start_from=source.model_dir)
    estimator.train(numpy_input_fn(features, labels), steps=1)
    kernel = "kind/kernel"
    np.testing.assert_array_equal(estimator.get_variable_value(kernel),
                                  source.get_variable_value(kernel))
    assert estimator.get_variable_value(S.format("kind")) == 0.0


def test_from_estimator_moves_the_learned_weights_to_keras(uncertain, tmp_path):
    estimator, features, labels = (uncertain[k] for k in ("estimator", "features", "labels"))
    model = hk.KerasModel.from_estimator(estimator, model_dir=str(tmp_path / "keras"))
    evaluation = model.evaluate(numpy_input_fn(features, labels, 96, repeat=False))
    for key in ("kind/loss_weight", "size/loss_weight", "flag/loss_weight", "loss",
                "size/rmse"):
        assert evaluation[key] == pytest.approx(uncertain["evaluation"][key], rel=1e-4), key


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_a_body_whose_outputs_ignore_its_layers_is_refused_under_any_weighting(tmp_path,
                                                                               weighting):
    # The learned weights always get a gradient; the body must get one too.
    def frozen_body():
        x = tf.keras.Input((4,), name="x")
        return tf.keras.Model({"x": x}, {
            "kind": tf.keras.layers.Lambda(lambda t: t[:, :3])(x),
            "size": tf.keras.layers.Lambda(lambda t: t[:, :1])(x),
            "flag": tf.keras.layers.Lambda(lambda t: t[:, 1:2])(x)})

    features, labels = multitask_data()
    estimator = hk.Estimator(frozen_body, multitask_heads(labels, loss_weighting=weighting),
                             model_dir=str(tmp_path))
    with pytest.raises(hk.ConfigError, match=r"No trainable variable of the body receives a "
                                             r"gradient from the loss"):
        estimator.train(numpy_input_fn(features, labels), steps=1)
