"""hk.KerasModel keeps the Estimator's guarantees: resume, NaN guard, early stopping, exports.

No Estimator is built in this module: Keras 2 models built before a
graph-mode model would be invalidated (see test_same_as_estimator.py).
"""

from __future__ import annotations

import glob
import io
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from tests.conftest import ROOT, make_data, tiny_body, tiny_heads

WORKER = os.path.join(ROOT, "tests", "keras", "_worker.py")
MAX_STEPS = 30


def _has_legacy_optimizers() -> bool:
    try:  # Keras 3 keeps the names, and raises ImportError when one is built
        return tf.keras.optimizers.legacy.RMSprop(0.01) is not None
    except (AttributeError, ImportError):
        return False


def _spawn(model_dir, max_steps=MAX_STEPS, *extra):
    return subprocess.Popen([sys.executable, WORKER, model_dir, str(max_steps), *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def _finish(process, timeout=180):
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, out, err


def _body_weights(model_dir):
    """The body's weights in the newest checkpoint, restored into a fresh body.

    Read through the object graph, not by key: Keras 3 saves a trainable variable
    under the optimizer's path (the shortest one), tf.keras 2 under the body's.
    """
    body = tiny_body()
    tf.train.Checkpoint(body=body).restore(
        tf.train.latest_checkpoint(model_dir)).expect_partial().assert_existing_objects_matched()
    return {f"{index}:{tuple(variable.shape)}": variable.numpy()
            for index, variable in enumerate(body.weights)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("keras_reference"))
    code, out, err = _finish(_spawn(model_dir))
    assert code == 0, err[-3000:]
    return model_dir


@pytest.mark.timeout(240)
def test_a_kill_at_a_random_step_then_a_rerun_ends_with_the_uninterrupted_weights(
        reference, tmp_path):
    model_dir = str(tmp_path / "killed")
    process = _spawn(model_dir)
    kill_after = random.Random(os.getpid()).randint(7, 24)
    deadline = time.monotonic() + 150
    for line in process.stdout:
        if line.startswith("step ") and int(line.split()[1]) >= kill_after:
            process.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline
    process.wait(timeout=30)
    resumed = int(tf.train.load_variable(tf.train.latest_checkpoint(model_dir),
                                         "step/.ATTRIBUTES/VARIABLE_VALUE"))
    assert 5 <= resumed <= kill_after
    code, out, err = _finish(_spawn(model_dir))
    assert code == 0, err[-3000:]
    assert out.splitlines()[0] == f"start {resumed}"
    ours, theirs = _body_weights(model_dir), _body_weights(reference)
    assert set(ours) == set(theirs) and ours
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.timeout(240)
def test_a_non_finite_loss_names_the_head_and_step_and_no_checkpoint_holds_it(tmp_path):
    model_dir = str(tmp_path / "nan")
    code, out, err = _finish(_spawn(model_dir, MAX_STEPS, 90))  # row 90: in the 6th batch
    assert code != 0
    assert "NonFiniteLossError: headkit: non-finite loss at global step 6 in head(s) size " \
           "(total). No update was applied." in err
    steps = [int(line.split()[1]) for line in out.splitlines() if line.startswith("step ")]
    assert steps == [1, 2, 3, 4, 5]
    latest = tf.train.latest_checkpoint(model_dir)
    assert latest.endswith("ckpt-5")
    for name, _ in tf.train.list_variables(latest):
        value = tf.train.load_variable(latest, name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), name


def _inputs(n=96, plateau=False):
    features, labels = make_data(n)
    if plateau:  # labels that do not depend on the features: nothing to learn
        rng = np.random.default_rng(3)
        labels = dict(labels, size=rng.normal(size=n).astype("float32"))
    heads = tiny_heads()
    return (hk.input_fn(features, labels, heads, batch_size=16, shuffle=True, num_epochs=None,
                        seed=0),
            hk.input_fn(features, labels, heads, batch_size=32))


def test_train_and_evaluate_stops_early_keeps_the_best_exports_and_writes_summaries(tmp_path):
    model = hk.KerasModel(tiny_body, tiny_heads(), learning_rate=0.5, model_dir=str(tmp_path),
                          seed=0, steps_per_run=5)
    train, evaluation = _inputs(plateau=True)
    stream = io.StringIO()
    result = hk.train_and_evaluate(
        model, train, evaluation, max_steps=400, eval_every=10,
        early_stopping=hk.EarlyStopping("size/rmse", patience=2),
        export=hk.BestExport("kind/accuracy", keep=2), progress=stream)
    assert result.stopped_early and result.steps < 400
    assert [e.step for e in result.history] == list(range(10, result.steps + 1, 10))
    assert 1 <= len(result.exports) <= 2 and result.final_export
    manifest = hk.load(result.best_export).manifest
    assert manifest["backend"] == "keras" and manifest["best_export"]["metric"] == "kind/accuracy"
    assert f"step {result.steps}/400" in stream.getvalue()
    tags = set()
    for path in glob.glob(os.path.join(str(tmp_path), "**", "events.out.tfevents.*"),
                          recursive=True):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {value.tag for value in event.summary.value}
    assert {"kind/loss", "size/loss", "loss", "kind/accuracy", "size/rmse"} <= tags


def test_steps_per_run_gives_the_weights_of_single_steps_and_stops_exactly(tmp_path):
    weights = []
    for steps_per_run in (1, 4):
        model = hk.KerasModel(tiny_body, tiny_heads(), learning_rate=0.05, seed=0,
                              model_dir=str(tmp_path / f"spr{steps_per_run}"),
                              steps_per_run=steps_per_run)
        model.train(_inputs()[0], max_steps=10)
        assert model.global_step() == 10 and model.latest_checkpoint().endswith("ckpt-10")
        weights.append([w.numpy() for w in model.keras_model.headkit_body.weights])
    for one, four in zip(*weights):
        np.testing.assert_allclose(one, four, rtol=1e-5, atol=1e-6)


def test_batch_norm_statistics_move_in_training_and_serve_in_inference(tmp_path):
    def body():
        x = tf.keras.Input((4,), name="x")
        h = tf.keras.layers.BatchNormalization()(x)
        return tf.keras.Model({"x": x}, {"size": tf.keras.layers.Dense(1)(h)})

    heads = hk.HeadSet([hk.Head("size", hk.Regression())])
    features, labels = make_data(64)
    features = {"x": features["x"] * 3.0 + 5.0}
    model = hk.KerasModel(body, heads, model_dir=str(tmp_path), seed=0)
    model.train(hk.input_fn(features, {"size": labels["size"]}, heads, batch_size=16,
                            num_epochs=None), max_steps=20)
    layer = model.keras_model.headkit_body.layers[1]
    assert layer.moving_mean.numpy().mean() > 0.5  # from 0 toward the features' mean of 5
    rows = list(model.predict(hk.input_fn(features, None, heads, batch_size=16)))
    alone = next(model.predict(hk.input_fn({"x": features["x"][3:4]}, None, heads)))
    np.testing.assert_allclose(alone["size/predictions"], rows[3]["size/predictions"], rtol=1e-5)


@pytest.mark.parametrize("optimizer", [
    "sgd", "adagrad", "rmsprop", "ftrl",
    tf.keras.optimizers.Adam(0.01),
    pytest.param(lambda: tf.keras.optimizers.legacy.RMSprop(0.01), marks=pytest.mark.skipif(
        not _has_legacy_optimizers(), reason="Keras 3 has no legacy optimizers")),
    lambda: tf.keras.optimizers.SGD(0.1, momentum=0.9),
], ids=["sgd", "adagrad", "rmsprop", "ftrl", "keras-adam", "legacy-rmsprop", "factory"])
def test_every_keras_optimizer_spec_advances_the_step(optimizer, tmp_path):
    model = hk.KerasModel(tiny_body, tiny_heads(), optimizer=optimizer, model_dir=str(tmp_path))
    model.train(_inputs(32)[0], steps=3)
    assert model.global_step() == 3
    model.train(_inputs(32)[0], steps=2)
    assert model.global_step() == 5


@pytest.mark.parametrize("kwargs, error, message", [
    ({"optimizer": tf.compat.v1.train.AdamOptimizer(0.1)}, TypeError,
     r"AdamOptimizer is a TF1 optimizer, which Keras models do not take"),
    ({"optimizer": "adamw"}, ValueError, r"unknown name 'adamw'. Known names: adam, sgd"),
    ({"steps_per_run": 0}, ValueError, r"steps_per_run must be an int >= 1 \(got 0\)"),
    ({"optimizer": tf.keras.optimizers.Adam(), "learning_rate": 0.1}, ValueError,
     r"learning_rate=0.1 applies only to an optimizer name"),
])
def test_bad_settings_are_refused_when_the_model_is_built(kwargs, error, message, tmp_path):
    with pytest.raises(error, match=message):
        hk.KerasModel(tiny_body, tiny_heads(), model_dir=str(tmp_path), **kwargs)


def test_a_cluster_in_tf_config_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"chief": ["localhost:1"], "worker": '
                                    '["localhost:2"]}, "task": {"type": "chief", "index": 0}}')
    with pytest.raises(hk.ConfigError, match=r"trains in one process, and TF_CONFIG describes "
                                             r"a cluster of 2 tasks.*Train on a cluster with "
                                             r"hk.Estimator"):
        hk.KerasModel(tiny_body, tiny_heads(), model_dir=str(tmp_path))


def test_a_body_output_that_fits_no_head_names_the_head(tmp_path):
    def body():
        x = tf.keras.Input((4,), name="x")
        return tf.keras.Model({"x": x}, {"kind": tf.keras.layers.Dense(3)(x)})

    model = hk.KerasModel(body, tiny_heads(), model_dir=str(tmp_path))
    with pytest.raises(hk.ConfigError, match=r"no output for head\(s\) \['size', 'flag'\]"):
        model.train(_inputs(32)[0], steps=1)


def test_a_checkpoint_without_the_bodys_weights_is_refused_not_resumed_with_fresh_weights(
        tmp_path):
    # What a model_dir of the other Keras looks like from here: a step, no matching body.
    other = tf.train.Checkpoint(step=tf.Variable(5, dtype=tf.int64),
                                body=tf.train.Checkpoint(w=tf.Variable([1.0])))
    tf.train.CheckpointManager(other, str(tmp_path), max_to_keep=1,
                               checkpoint_name="ckpt").save(checkpoint_number=5)
    with pytest.raises(hk.CheckpointError, match=r"ckpt-5' does not hold this model's weights.*"
                                                 r"does not resume under Keras 3"):
        hk.KerasModel(tiny_body, tiny_heads(), model_dir=str(tmp_path))
