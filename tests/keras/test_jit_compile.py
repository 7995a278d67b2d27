"""hk.KerasModel(jit_compile=True): the step's arithmetic compiled by XLA, every check kept.

Keras' own ``compile(jit_compile=True)`` would compile headkit's checks away (XLA
drops ``Assert``); these tests feed the compiled step what the checks exist for.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.body import KERAS_MAJOR
from tests.conftest import (
    make_data,
    multitask_data,
    multitask_heads,
    numeric_body,
    numpy_input_fn,
    tiny_body,
    tiny_heads,
)

STEPS = 12


def _model(model_dir, steps_per_run=1, jit_compile=True, heads=None):
    return hk.KerasModel(numeric_body, heads or tiny_heads(), learning_rate=0.05, seed=0,
                         model_dir=str(model_dir), steps_per_run=steps_per_run,
                         jit_compile=jit_compile)


def _input(heads=None, labels=None, shuffle=True):
    features, default_labels = make_data(96)
    return hk.input_fn(features, default_labels if labels is None else labels,
                       heads or tiny_heads(), batch_size=16, shuffle=shuffle, num_epochs=None,
                       seed=0)


def _state(model):
    """Every variable training moves: the body's (batch norm too), the optimizer's, the step."""
    keras_model = model.keras_model
    variables = (list(keras_model.headkit_body.weights) + list(keras_model.optimizer.variables)
                 + list(keras_model.headkit_weighting.variables)
                 + [keras_model.step, keras_model.position])
    return [np.array(v.numpy() if hasattr(v, "numpy") else v) for v in variables]


@pytest.fixture(scope="module")
def single_steps(tmp_path_factory):
    model = _model(tmp_path_factory.mktemp("single"), jit_compile=False)
    model.train(_input(), max_steps=STEPS)
    return [w.numpy() for w in model.keras_model.headkit_body.weights]


def test_compiled_steps_end_with_the_weights_of_plain_single_steps(tmp_path, single_steps):
    model = _model(tmp_path, 5)  # runs of 5, 5 and a last one of 2
    model.train(_input(), max_steps=STEPS)
    assert model.global_step() == STEPS and model.latest_checkpoint().endswith(f"ckpt-{STEPS}")
    ours = [w.numpy() for w in model.keras_model.headkit_body.weights]
    assert len(ours) == len(single_steps) >= 10  # kernels, biases, batch norm's four
    for index, (mine, theirs) in enumerate(zip(ours, single_steps)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6, err_msg=str(index))


@pytest.mark.parametrize("options", [
    {"loss_weighting": "uncertainty", "gradient_surgery": "pcgrad"},
    {"loss_weighting": hk.DynamicWeightAverage(period=3)},
], ids=["uncertainty+pcgrad", "dwa"])
def test_compiled_steps_train_the_learned_loss_weights_as_plain_steps_do(tmp_path, options):
    _, labels = multitask_data(96)
    heads = multitask_heads(labels, **options)
    states = []
    for jit_compile in (False, True):
        model = _model(tmp_path / str(jit_compile), 4, jit_compile, heads)
        model.train(_input(heads, labels), max_steps=STEPS)
        states.append(_state(model))
    for index, (plain, compiled) in enumerate(zip(*states)):
        np.testing.assert_allclose(compiled, plain, rtol=1e-5, atol=1e-6, err_msg=str(index))


@pytest.mark.parametrize("head, value, message", [
    ("flag", 7, r"Head 'flag': .*7"),
    ("kind", "zebra", r"Head 'kind': .*zebra"),
], ids=["class id out of range", "unknown class name"])
def test_bad_labels_are_refused_as_without_xla(tmp_path, head, value, message):
    # A raw Dataset: hk.input_fn would refuse these labels itself, before any graph ran.
    features, labels = make_data(96)
    labels = {k: v.astype("U8") if k == "kind" else v.copy() for k, v in labels.items()}
    labels[head][50] = value
    model = _model(tmp_path, 4)
    with pytest.raises(hk.DataError, match=message):
        model.train(numpy_input_fn(features, labels, batch_size=16), max_steps=STEPS)
    assert model.global_step() == 3  # batches 0 to 2 trained; the bad batch 3 did not count


def test_a_non_finite_batch_names_its_step_and_changes_no_variable(tmp_path):
    features, labels = multitask_data(96)
    heads = multitask_heads(labels, loss_weighting=hk.DynamicWeightAverage(period=2))
    model = _model(tmp_path, 4, heads=heads)
    model.train(_input(heads, labels), max_steps=4)
    before = _state(model)
    labels = dict(labels, size=np.full(96, np.nan, "float32"))  # every batch is bad now
    nan_input = numpy_input_fn(features, labels, batch_size=16)
    with pytest.raises(hk.NonFiniteLossError, match=r"global step 5 in head\(s\) size"):
        model.train(nan_input, max_steps=8)
    after = _state(model)
    assert len(after) == len(before) > 10
    for index, (old, new) in enumerate(zip(before, after)):
        np.testing.assert_array_equal(new, old, err_msg=str(index))  # batch norm's too


def test_a_body_with_an_op_xla_cannot_compile_is_refused_naming_the_op(tmp_path):
    def formatted_body():  # numbers in, but a string op inside
        x = tf.keras.Input((4,), name="x")
        y = tf.keras.layers.Lambda(lambda t: tf.strings.to_number(tf.strings.as_string(t)))(x)
        return tf.keras.Model({"x": x}, {name: tf.keras.layers.Dense(units, name=name)(y)
                                         for name, units in (("kind", 3), ("size", 1),
                                                             ("flag", 1))})

    model = hk.KerasModel(formatted_body, tiny_heads(), model_dir=str(tmp_path),
                          jit_compile=True)
    with pytest.raises(hk.ConfigError, match=r"XLA cannot compile this training step; it uses "
                                             r"ops XLA has no kernel for: AsString") as raised:
        model.train(_input(), max_steps=2)
    assert raised.value.field == "jit_compile"


def test_a_body_that_takes_strings_is_refused_when_the_model_is_built(tmp_path):
    with pytest.raises(hk.ConfigError, match=r"jit_compile=True: the body takes string "
                                             r"input\(s\) \['tag'\]") as raised:
        hk.KerasModel(tiny_body, tiny_heads(), model_dir=str(tmp_path), jit_compile=True)
    assert raised.value.field == "jit_compile"
    with pytest.raises(hk.ConfigError, match=r"jit_compile must be True or False \(got 1\)"):
        hk.KerasModel(numeric_body, tiny_heads(), model_dir=str(tmp_path / "b"), jit_compile=1)


@pytest.mark.skipif(KERAS_MAJOR < 3, reason="tf.keras 2 never turns XLA on by itself")
def test_keras_own_xla_stays_off_so_the_checks_run_where_keras_would_turn_it_on(
        tmp_path, monkeypatch):
    """Keras 3's compile(jit_compile="auto") compiles the whole train step with XLA on a GPU,
    which would drop headkit's checks; this machine has none, so "auto" is made to say yes."""
    from keras.src.trainers import trainer

    monkeypatch.setattr(trainer.Trainer, "_resolve_auto_jit_compile", lambda self: True)
    features, labels = make_data(96)
    labels["flag"] = labels["flag"].copy()
    labels["flag"][50] = 7
    model = _model(tmp_path, 4, jit_compile=False)
    assert model.keras_model.jit_compile is False
    with pytest.raises(hk.DataError, match=r"Head 'flag': .*7"):  # raw: no hk.input_fn check
        model.train(numpy_input_fn(features, labels, batch_size=16), max_steps=STEPS)


def test_a_model_dir_resumes_across_a_jit_compile_switch_with_the_optimizer_state_in_place(
        tmp_path):
    """The optimizer's slots are made for the variables that get a gradient, with or without
    XLA, so switching jit_compile on a model_dir restores each slot into its own variable
    (an untrained Predict head's layer gets none)."""
    def body():
        x = tf.keras.Input((4,), name="x")
        h = tf.keras.layers.BatchNormalization()(tf.keras.layers.Dense(8, activation="relu")(x))
        return tf.keras.Model({"x": x}, {name: tf.keras.layers.Dense(units, name=name)(h)
                                         for name, units in (("kind", 3), ("size", 1),
                                                             ("flag", 1), ("code", 2))})

    heads = hk.HeadSet(list(tiny_heads()) + [hk.Head("code", hk.Predict())])

    def train(model_dir, jit_compile, max_steps):
        model = hk.KerasModel(body, heads, learning_rate=0.05, seed=0, model_dir=str(model_dir),
                              jit_compile=jit_compile)
        model.train(_input(heads), max_steps=max_steps)
        return [w.numpy() for w in model.keras_model.headkit_body.weights]

    straight = train(tmp_path / "straight", False, 8)
    train(tmp_path / "switched", True, 4)
    switched = train(tmp_path / "switched", False, 8)
    for index, (mine, theirs) in enumerate(zip(switched, straight)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6, err_msg=str(index))
