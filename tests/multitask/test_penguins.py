"""The proof on real data: three penguin heads, every weight 1.0, no hand-tuned number.

One seed (0) and its split, trained the way ``bench/multitask_study.py`` trains
every method (``hk.KerasModel``, 2,000 steps, the quickstart's body); the
study runs the methods over five seeds and splits, outside CI.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import tensorflow as tf

import headkit as hk
from tests.conftest import ROOT


def _study():
    path = os.path.join(ROOT, "bench", "multitask_study.py")
    spec = importlib.util.spec_from_file_location("multitask_study", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


study = _study()


def test_the_quickstart_heads_have_no_hand_tuned_number():
    quickstart = study.quickstart
    train = quickstart.load_splits(0)[0]
    heads = quickstart.make_heads(train)
    assert all(head.weight == 1.0 for head in heads)
    assert heads.loss_weighting == hk.UncertaintyWeighting()
    assert heads["body_mass_g"].output == hk.Regression.from_labels(train["body_mass_g"])
    numeric = train[quickstart.NUMERIC].to_numpy("float32")
    body = quickstart.build_body((numeric.mean(axis=0), numeric.var(axis=0)))
    mass = body.output["body_mass_g"]
    history = mass._keras_history  # Keras 2: (layer, ...); Keras 3: (operation, ...)
    layer = getattr(history, "layer", None) or history.operation
    assert isinstance(layer, tf.keras.layers.Dense) and layer.units == 1  # a plain Dense(1)


@pytest.mark.timeout(240)
def test_uncertainty_weighting_clears_the_held_out_bars_on_seed_0():
    result = study.run("uncertainty", seed=0, steps=2000)
    assert result["species/accuracy"] >= 0.95, result
    assert result["sex/accuracy"] >= 0.80, result
    assert result["body_mass_g/rmse"] <= 400.0, result  # grams
    assert {"species/loss_weight", "body_mass_g/loss_weight", "sex/loss_weight"} <= set(result)
