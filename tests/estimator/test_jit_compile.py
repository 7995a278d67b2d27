"""hk.Estimator(jit_compile=True): each training step compiled by XLA, and every check kept.

XLA drops ``Assert`` ops, so these tests feed the compiled step what the checks
exist for (bad labels, bad weights, a NaN) and expect the same errors as without it.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.multitask import SCOPE
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


def _train(model_dir, steps_per_run, jit_compile, heads=None, labels=None, optimizer="adam",
           max_steps=STEPS, learning_rate=0.05):
    features, default_labels = make_data(96)
    labels = default_labels if labels is None else labels
    heads = heads or tiny_heads()
    estimator = hk.Estimator(numeric_body, heads, optimizer=optimizer, learning_rate=learning_rate,
                             model_dir=str(model_dir), steps_per_run=steps_per_run,
                             jit_compile=jit_compile,
                             config=tf.estimator.RunConfig(tf_random_seed=0))
    estimator.train(hk.input_fn(features, labels, heads, batch_size=16, shuffle=True,
                                num_epochs=None, seed=0), max_steps=max_steps)
    return estimator


def _variables(estimator):
    reader = tf.train.load_checkpoint(estimator.latest_checkpoint())
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_dtype_map()}


def _assert_same(ours, theirs):
    assert set(ours) == set(theirs)
    for name, value in theirs.items():  # weights, L2's pull, batch norm, Adam's slots
        if np.asarray(value).dtype.kind in "SUO":  # the input's fingerprint
            assert ours[name] == value, name
        else:
            np.testing.assert_allclose(ours[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.fixture(scope="module")
def single_steps(tmp_path_factory):
    """What plain single steps leave after STEPS steps: the reference of every variant."""
    return _variables(_train(tmp_path_factory.mktemp("single"), 1, False))


@pytest.mark.parametrize("steps_per_run, jit_compile", [(4, False), (1, True), (5, True)],
                         ids=["looped", "compiled", "looped+compiled"])
def test_compiled_and_looped_steps_end_with_the_variables_of_plain_single_steps(
        tmp_path, single_steps, steps_per_run, jit_compile):
    ours = _variables(_train(tmp_path, steps_per_run, jit_compile))
    assert ours["global_step"] == STEPS and ours["headkit_input/position"] == STEPS
    _assert_same(ours, single_steps)
    moving = ours["batch_normalization/moving_mean"]
    assert not np.allclose(moving, 0.0)  # the statistics did move, in every variant


@pytest.mark.parametrize("options", [
    {"loss_weighting": "uncertainty", "gradient_surgery": "pcgrad"},
    {"loss_weighting": hk.DynamicWeightAverage(period=3)},
], ids=["uncertainty+pcgrad", "dwa"])
def test_compiled_steps_train_the_learned_loss_weights_as_plain_steps_do(tmp_path, options):
    _, labels = multitask_data(96)
    heads = multitask_heads(labels, **options)
    plain = _variables(_train(tmp_path / "plain", 1, False, heads, labels))
    compiled = _variables(_train(tmp_path / "compiled", 4, True, heads, labels))
    assert [n for n in plain if n.startswith(SCOPE + "/")]
    _assert_same(compiled, plain)


@pytest.mark.parametrize("keras_adam", [tf.keras.optimizers.legacy.Adam, tf.keras.optimizers.Adam],
                         ids=["legacy", "keras"])
def test_a_keras_optimizer_is_compiled_with_the_step(tmp_path, keras_adam):
    def optimizer():
        return keras_adam(0.05)

    plain = _variables(_train(tmp_path / "plain", 1, False, optimizer=optimizer,
                              learning_rate=None))
    compiled = _variables(_train(tmp_path / "compiled", 4, True, optimizer=optimizer,
                                 learning_rate=None))
    assert compiled["global_step"] == STEPS
    _assert_same(compiled, plain)


def _bad(labels, head, row, value):
    labels = {k: v.astype("U8") if k == "kind" else v.copy() for k, v in labels.items()}
    labels[head][row] = value
    return labels


@pytest.mark.parametrize("head, value, message", [
    ("flag", 7, r"Head 'flag': .*7"),
    ("kind", "zebra", r"Head 'kind': .*zebra"),
], ids=["class id out of range", "unknown class name"])
def test_bad_labels_are_refused_as_without_xla(tmp_path, head, value, message):
    # A raw Dataset: hk.input_fn would refuse these labels itself, before any graph ran.
    features, labels = make_data(96)
    estimator = hk.Estimator(numeric_body, tiny_heads(), model_dir=str(tmp_path),
                             steps_per_run=4, jit_compile=True)
    with pytest.raises(hk.DataError, match=message):
        estimator.train(numpy_input_fn(features, _bad(labels, head, 3 * 16 + 2, value),
                                       batch_size=16), max_steps=STEPS)
    assert estimator.latest_checkpoint() is None or estimator.global_step() < 4


def test_a_negative_example_weight_is_refused_as_without_xla(tmp_path):
    features, labels = make_data(96)
    features["w"] = np.ones((96, 1), "float32")
    features["w"][40] = -2.0
    heads = hk.HeadSet([hk.Head("kind", hk.Classification(vocabulary=("a", "b", "c")),
                                is_default=True),
                        hk.Head("size", hk.Regression(), weight_column="w"),
                        hk.Head("flag", hk.Classification(2))])
    estimator = hk.Estimator(numeric_body, heads, model_dir=str(tmp_path), steps_per_run=4,
                             jit_compile=True)
    with pytest.raises(hk.DataError, match=r"Head 'size': weight_column 'w' must hold finite "
                                           r"weights >= 0; got.*-2"):
        estimator.train(numpy_input_fn(features, labels, batch_size=16), max_steps=8)


def test_a_non_finite_loss_names_its_step_and_the_checkpoint_keeps_the_last_good_run(tmp_path):
    _, labels = make_data(96)
    labels = _bad(labels, "size", 5 * 16 + 3, np.nan)  # 6th batch: step 5, in run 2
    features, _ = make_data(96)
    estimator = hk.Estimator(numeric_body, tiny_heads(), model_dir=str(tmp_path),
                             steps_per_run=4, jit_compile=True,
                             config=tf.estimator.RunConfig(save_checkpoints_steps=4))
    with pytest.raises(hk.NonFiniteLossError, match=r"non-finite loss at global step 5 in "
                                                    r"head\(s\) size"):
        estimator.train(numpy_input_fn(features, labels, batch_size=16), max_steps=12)
    assert estimator.global_step() == 4
    for name, value in _variables(estimator).items():
        assert np.asarray(value).dtype.kind in "SUO" or np.isfinite(value).all(), name


def test_a_compiled_step_on_a_non_finite_loss_changes_no_variable():
    """'No update was applied', read in the session that failed (batch norm's statistics too)."""
    from headkit.errors import translate_graph_errors
    from headkit.estimator.model_fn import _TrainStep

    features, labels = multitask_data(16)
    heads = multitask_heads(labels, loss_weighting="uncertainty", gradient_surgery="pcgrad")
    nan_labels = dict(labels, size=np.full(16, np.nan, "float32"))
    with tf.Graph().as_default():
        model = numeric_body()
        step = _TrainStep(model, heads, tf.compat.v1.train.AdamOptimizer(0.1), None,
                          jit_compile=True)
        batch = {k: tf.compat.v1.placeholder(tf.as_dtype(v.dtype) if v.dtype != object
                                             else tf.string, (None,) + v.shape[1:])
                 for k, v in labels.items()}
        result = step({"x": tf.constant(features["x"])}, batch, step.global_step.read_value())
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(result.done, {batch[k]: v for k, v in labels.items()})  # one good step
            variables = tf.compat.v1.global_variables()
            before = session.run(variables)
            with pytest.raises(hk.NonFiniteLossError, match="global step 1 in head"):
                with translate_graph_errors():
                    session.run(result.done, {batch[k]: v for k, v in nan_labels.items()})
            after = session.run(variables)
    # weights, batch norm, Adam's slots, the learned loss weights, the global step
    assert any(SCOPE in v.name for v in variables) and len(variables) > 10
    for variable, old, new in zip(variables, before, after):
        np.testing.assert_array_equal(new, old, err_msg=variable.name)


def test_bodies_xla_cannot_compile_are_refused_naming_what_it_cannot(tmp_path):
    features, labels = make_data(96)
    data = hk.input_fn(features, labels, tiny_heads(), batch_size=16)
    with pytest.raises(hk.ConfigError, match=r"jit_compile=True: the body takes string "
                                             r"input\(s\) \['tag'\].*or use jit_compile=False") \
            as raised:
        hk.Estimator(tiny_body, tiny_heads(), model_dir=str(tmp_path / "s"), jit_compile=True)
    assert raised.value.field == "jit_compile"

    def formatted_body():  # numbers in, but a string op inside
        x = tf.keras.Input((4,), name="x")
        y = tf.keras.layers.Lambda(lambda t: tf.strings.to_number(tf.strings.as_string(t)))(x)
        return tf.keras.Model({"x": x}, {name: tf.keras.layers.Dense(units)(y)
                                         for name, units in (("kind", 3), ("size", 1),
                                                             ("flag", 1))})

    formatted = hk.Estimator(formatted_body, tiny_heads(), model_dir=str(tmp_path / "f"),
                             jit_compile=True, steps_per_run=2)
    with pytest.raises(hk.ConfigError, match=r"XLA cannot compile this training step; it uses "
                                             r"ops XLA has no kernel for: AsString.*"
                                             r"jit_compile=False") as raised:
        formatted.train(data, max_steps=2)
    assert raised.value.field == "jit_compile"


def test_jit_compile_is_refused_when_it_is_not_a_bool_and_under_a_cluster(tmp_path, monkeypatch):
    with pytest.raises(hk.ConfigError, match=r"jit_compile must be True or False \(got 'yes'\)"):
        hk.Estimator(numeric_body, tiny_heads(), model_dir=str(tmp_path / "a"),
                     jit_compile="yes")
    assert hk.Estimator(numeric_body, tiny_heads(), model_dir=str(tmp_path / "n"),
                        jit_compile=np.bool_(True)).jit_compile is True
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"chief": ["localhost:2222"], "worker": '
                                    '["localhost:2223"], "ps": ["localhost:2224"]}, '
                                    '"task": {"type": "worker", "index": 0}}')
    with pytest.raises(hk.ConfigError, match=r"jit_compile=True compiles the step for one "
                       r"process's devices, and TF_CONFIG makes this process the worker:0 of a "
                       r"cluster. Use jit_compile=False there") as raised:
        hk.Estimator(numeric_body, tiny_heads(), model_dir=str(tmp_path / "b"),
                     jit_compile=True)
    assert raised.value.field == "jit_compile"
