"""hk.Estimator(steps_per_run=N): N steps per session.run, and the meaning of every step kept."""

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
    numpy_input_fn,
    tiny_body,
    tiny_heads,
)


def _estimator(model_dir, steps_per_run, **config):
    return hk.Estimator(tiny_body, tiny_heads(), learning_rate=0.05, model_dir=str(model_dir),
                        steps_per_run=steps_per_run,
                        config=tf.estimator.RunConfig(tf_random_seed=0, **config))


def _weights(estimator):
    reader = tf.train.load_checkpoint(estimator.latest_checkpoint())
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_dtype_map()
            if not name.startswith(("global_step", "headkit_input"))}


def test_n_steps_per_run_end_with_the_weights_of_single_steps_and_stop_exactly(tmp_path):
    features, labels = make_data(96)
    data = hk.input_fn(features, labels, tiny_heads(), batch_size=16, shuffle=True,
                       num_epochs=None, seed=0)
    single = _estimator(tmp_path / "one", 1)
    single.train(data, max_steps=22)
    looped = _estimator(tmp_path / "eight", 8)
    looped.train(data, max_steps=22)  # runs of 8, 8 and a last one of 6
    assert looped.global_step() == single.global_step() == 22
    ours, theirs = _weights(looped), _weights(single)
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    reader = tf.train.load_checkpoint(looped.latest_checkpoint())
    assert reader.get_tensor("headkit_input/position") == 22  # every batch read, counted
    looped.train(data, steps=5)
    assert looped.global_step() == 27


@pytest.mark.parametrize("options", [
    {"loss_weighting": "uncertainty", "gradient_surgery": "pcgrad"},
    {"loss_weighting": hk.DynamicWeightAverage(period=3)},
], ids=["uncertainty+pcgrad", "dwa"])
def test_looped_steps_train_the_learned_loss_weights_as_single_steps_do(tmp_path, options):
    features, labels = multitask_data(96)
    heads = multitask_heads(labels, **options)  # normalised size, class weights too
    data = hk.input_fn(features, labels, heads, batch_size=16, shuffle=True, num_epochs=None,
                       seed=0)
    weights = []
    for steps_per_run in (1, 4):
        estimator = hk.Estimator(tiny_body, heads, learning_rate=0.05, steps_per_run=steps_per_run,
                                 model_dir=str(tmp_path / str(steps_per_run)),
                                 config=tf.estimator.RunConfig(tf_random_seed=0))
        estimator.train(data, max_steps=14)  # runs of 4, 4, 4 and 2
        weights.append(_weights(estimator))
    single, looped = weights
    learned = [n for n in single if n.startswith(SCOPE + "/")]
    assert learned and set(looped) == set(single)
    for name, value in single.items():
        np.testing.assert_allclose(looped[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    moved = [n for n in learned if not np.allclose(single[n], 0.0) and "weights" not in n]
    assert moved, learned  # the learned weights or DWA's windows did change


def test_checkpoints_and_evaluations_land_on_the_first_run_boundary_at_or_past_them(tmp_path):
    features, labels = make_data(96)
    estimator = _estimator(tmp_path, 4)
    result = hk.train_and_evaluate(
        estimator, hk.input_fn(features, labels, tiny_heads(), batch_size=16, num_epochs=None),
        hk.input_fn(features, labels, tiny_heads(), batch_size=48), max_steps=30, eval_every=10,
        progress=False)
    assert [e.step for e in result.history] == [12, 20, 30]  # 10, 20, 30: at or past
    assert result.steps == 30


def test_a_non_finite_loss_names_its_exact_step_and_no_later_update_is_applied(tmp_path):
    features, labels = make_data(96)
    labels = dict(labels, size=labels["size"].copy())
    labels["size"][5 * 16 + 3] = np.nan  # in the 6th batch: step 5 (0-based), inside run 2
    estimator = _estimator(tmp_path, 4, save_checkpoints_steps=4)
    with pytest.raises(hk.NonFiniteLossError, match=r"non-finite loss at global step 5 in "
                                                    r"head\(s\) size"):
        estimator.train(numpy_input_fn(features, labels, batch_size=16), max_steps=12)
    assert estimator.global_step() == 4  # the checkpoint of run 1; run 2 stopped at step 5
    for name, value in _weights(estimator).items():
        assert np.isfinite(value).all(), name


def test_steps_per_run_is_refused_for_an_input_of_tensors_and_under_a_cluster(tmp_path,
                                                                              monkeypatch):
    features, labels = make_data(32)

    def tensors():
        return ({k: tf.constant(v) for k, v in features.items()},
                {k: tf.constant(v) for k, v in labels.items()})

    with pytest.raises(hk.ConfigError, match=r"must return a tf.data.Dataset \(got tuple\)"):
        _estimator(tmp_path / "tensors", 4).train(tensors, max_steps=4)
    with pytest.raises(hk.ConfigError, match=r"steps_per_run must be an int >= 1 \(got 0\)"):
        _estimator(tmp_path / "zero", 0)
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"chief": ["localhost:2222"], "worker": '
                                    '["localhost:2223"], "ps": ["localhost:2224"]}, '
                                    '"task": {"type": "worker", "index": 0}}')
    with pytest.raises(hk.ConfigError, match=r"steps_per_run=4 runs several steps in one "
                       r"process's graph, and TF_CONFIG makes this process the worker:0 of a "
                       r"cluster. Use steps_per_run=1 there") as raised:
        _estimator(tmp_path / "cluster", 4)
    assert raised.value.field == "steps_per_run"
