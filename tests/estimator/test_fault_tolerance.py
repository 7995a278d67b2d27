"""Kills, damaged checkpoints and non-finite losses lose nothing (headkit.checkpoints, .resume).

Kill tests start real processes (tests/estimator/_fault_worker.py) and send real
SIGKILLs; everything else runs in-process on the same seeded model and data.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.estimator import checkpoints
from headkit.estimator.resume import INPUT_SCOPE, keras_seeded
from headkit.serving.export_dir import clean_export_leftovers
from tests.estimator import _fault_worker as worker

WORKER = os.path.abspath(worker.__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(WORKER)))  # the repository
MAX_STEPS = 40
DEADLINE = 90.0  # seconds any one process may take


# ------------------------------------------------------------------ processes


class Process:
    """A worker process whose stdout lines arrive on a queue; killed by PID at teardown."""

    def __init__(self, *args: str, log_path: str) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.popen = subprocess.Popen(
            [sys.executable, WORKER, *args], stdout=subprocess.PIPE, stderr=self._log,
            text=True, env=env, cwd=ROOT,
        )
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.seen: list = []
        threading.Thread(target=self._read, daemon=True).start()
        self.started = time.monotonic()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_line(self, accept) -> str:
        """The first stdout line ``accept`` takes; fails at the deadline or at exit."""
        while True:
            left = DEADLINE - (time.monotonic() - self.started)
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                pytest.fail(f"worker {self.popen.args[2:]} passed the {DEADLINE}s deadline")
            if line is None:
                pytest.fail(f"worker exited ({self.popen.wait()}) first; log:\n{self.log()}")
            self.seen.append(line)
            if accept(line):
                return line

    def kill(self) -> None:
        os.kill(self.popen.pid, signal.SIGKILL)
        assert self.popen.wait(timeout=DEADLINE) == -signal.SIGKILL

    def finish(self) -> int:
        self.wait_line(lambda line: line == "done")
        return self.popen.wait(timeout=max(DEADLINE - (time.monotonic() - self.started), 1))

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path) as handle:
            return handle.read()[-3000:]


@pytest.fixture
def spawn(tmp_path):
    started = []

    def start(*args: str) -> Process:
        process = Process(*args, log_path=str(tmp_path / f"worker-{len(started)}.log"))
        started.append(process)
        return process

    yield start
    for process in started:  # leftovers die by PID, never by name
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait(timeout=10)
        process._log.close()


def _first_step(process: Process) -> int:
    return int(process.wait_line(lambda line: line.startswith("start ")).split()[1])


def _kill_at(process: Process, step: int) -> None:
    process.wait_line(lambda line: line.startswith("step ") and int(line.split()[1]) >= step)
    process.kill()


# ------------------------------------------------------------------ weights


def _weights(model_dir: str) -> dict:
    reader = tf.train.load_checkpoint(model_dir)
    dtypes = reader.get_variable_to_dtype_map()
    return {name: reader.get_tensor(name) for name in dtypes if dtypes[name] != tf.variant}


def _assert_same_weights(model_dir: str, reference: str) -> None:
    got, want = _weights(model_dir), _weights(reference)
    assert got.keys() == want.keys()
    assert int(got["global_step"]) == MAX_STEPS
    different = [name for name in want if not np.array_equal(got[name], want[name])]
    assert different == []


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A seeded, uninterrupted run to MAX_STEPS, in-process (checked repeatable below)."""
    model_dir = str(tmp_path_factory.mktemp("reference"))
    worker.estimator(model_dir).train(worker.input_fn(), max_steps=MAX_STEPS)
    return model_dir


@pytest.fixture(scope="module")
def at_step_20(tmp_path_factory):
    """A model dir trained to step 20 (checkpoints 5 to 20), copied by each damage test."""
    model_dir = str(tmp_path_factory.mktemp("at_step_20"))
    worker.estimator(model_dir).train(worker.input_fn(), max_steps=20)
    return model_dir


def _train(model_dir: str, max_steps: int = 25, **data) -> worker.StepPrinter:
    printer = worker.StepPrinter(out=open(os.devnull, "w"))
    worker.estimator(model_dir).train(worker.input_fn(**data), max_steps=max_steps,
                                      hooks=[printer])
    return printer


# ------------------------------------------------------------------ repeatability


def test_two_seeded_runs_end_with_identical_weights(reference, tmp_path):
    model_dir = str(tmp_path / "again")
    _train(model_dir, max_steps=MAX_STEPS)
    _assert_same_weights(model_dir, reference)


def test_checkpoints_hold_the_input_position(reference):
    names = tf.train.load_checkpoint(reference).get_variable_to_dtype_map()
    assert [n for n in names if n.startswith(INPUT_SCOPE + "/")] != []


def test_keras_seeded_restores_the_callers_random_state():
    random.seed(1)
    expected = random.Random(1).random()
    with keras_seeded(5):
        inside = random.random()
    assert random.random() == expected
    with keras_seeded(5):
        assert random.random() == inside


# ------------------------------------------------------------------ SIGKILL


def test_sigkill_at_a_random_step_then_rerun_matches_uninterrupted_run(spawn, reference,
                                                                       tmp_path):
    model_dir = str(tmp_path / "killed_once")
    step = random.randint(3, MAX_STEPS - 5)
    first = spawn("train", model_dir, str(MAX_STEPS))
    assert _first_step(first) == 0
    _kill_at(first, step)
    rerun = spawn("train", model_dir, str(MAX_STEPS))
    assert _first_step(rerun) > 0, f"restarted from step 0 after a kill at step {step}"
    assert rerun.finish() == 0
    _assert_same_weights(model_dir, reference)


def test_two_sigkills_at_different_steps_then_rerun_matches(spawn, reference, tmp_path):
    model_dir = str(tmp_path / "killed_twice")
    early = random.randint(6, 15)
    late = random.randint(early + 7, MAX_STEPS - 4)
    _kill_at(spawn("train", model_dir, str(MAX_STEPS)), early)
    second = spawn("train", model_dir, str(MAX_STEPS))
    resumed = _first_step(second)
    assert 0 < resumed <= early + worker.SAVE_EVERY
    _kill_at(second, late)
    third = spawn("train", model_dir, str(MAX_STEPS))
    assert _first_step(third) >= resumed
    assert third.finish() == 0
    _assert_same_weights(model_dir, reference)


# ------------------------------------------------------------------ damaged checkpoints


def _largest_shard(model_dir: str, step: int) -> str:
    shards = [n for n in checkpoints.find_checkpoints(model_dir)[step] if ".data-" in n]
    return max((os.path.join(model_dir, n) for n in shards), key=os.path.getsize)


def _truncate(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def _flip_bytes(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        chunk = handle.read(16)
        handle.seek(-len(chunk), os.SEEK_CUR)
        handle.write(bytes(b ^ 0xFF for b in chunk))


def _delete_index(path: str) -> None:
    os.remove(path.split(".data-")[0] + ".index")


@pytest.mark.parametrize("damage, reason", [
    (_truncate, "does not read back"),
    (_flip_bytes, "does not read back"),
    (_delete_index, "index file is missing"),
])
def test_damaged_newest_checkpoint_resumes_from_the_previous_one(
        damage, reason, at_step_20, tmp_path, caplog):
    model_dir = str(tmp_path / "model")
    shutil.copytree(at_step_20, model_dir)
    damage(_largest_shard(model_dir, 20))
    with caplog.at_level(logging.WARNING, logger="headkit"):
        printer = _train(model_dir)
    assert printer.start == 15
    assert printer.last == 25
    bad = os.path.join(model_dir, "model.ckpt-20")
    assert any(bad in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    assert os.listdir(os.path.join(model_dir, checkpoints.DAMAGED_DIR)) != []


@pytest.mark.parametrize("state", [None, b"\x00\xffgarbage {{{ not a proto"])
def test_missing_or_garbage_state_file_resumes_from_the_newest_checkpoint(
        state, at_step_20, tmp_path, caplog):
    model_dir = str(tmp_path / "model")
    shutil.copytree(at_step_20, model_dir)
    state_path = os.path.join(model_dir, checkpoints.CHECKPOINT_INDEX_FILE)
    os.remove(state_path)
    if state is not None:
        with open(state_path, "wb") as handle:
            handle.write(state)
    os.makedirs(os.path.join(model_dir, "model.ckpt-21_temp"))  # a killed save's leftover
    with caplog.at_level(logging.WARNING, logger="headkit"):
        printer = _train(model_dir)
    assert printer.start == 20  # not 0
    assert printer.last == 25
    assert any("state file" in r.getMessage() for r in caplog.records)
    assert not os.path.exists(os.path.join(model_dir, "model.ckpt-21_temp"))


def test_no_valid_checkpoint_raises_naming_the_files(at_step_20, tmp_path):
    model_dir = str(tmp_path / "model")
    shutil.copytree(at_step_20, model_dir)
    for step in checkpoints.find_checkpoints(model_dir):
        _delete_index(_largest_shard(model_dir, step))
    with pytest.raises(hk.CheckpointError,
                       match=r"no valid checkpoint.*model\.ckpt-20.*index file is missing.*"
                             r"new model_dir"):
        worker.estimator(model_dir).train(worker.input_fn(), max_steps=25)
    assert not os.path.exists(os.path.join(model_dir, checkpoints.DAMAGED_DIR))


def test_checkpoint_with_non_finite_weights_is_damaged(at_step_20, tmp_path):
    model_dir = str(tmp_path / "model")
    shutil.copytree(at_step_20, model_dir)
    prefix = os.path.join(model_dir, "model.ckpt-20")
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        names = [n for n, _ in tf.train.list_variables(prefix) if not n.startswith(INPUT_SCOPE)]
        reader = tf.train.load_checkpoint(prefix)
        variables = [tf.compat.v1.Variable(reader.get_tensor(n), name=n) for n in names]
        session.run(tf.compat.v1.global_variables_initializer())
        kernel = next(v for v in variables if v.op.name == "dense/kernel")
        session.run(kernel.assign(tf.fill(kernel.shape, np.inf)))
        tf.compat.v1.train.Saver(variables).save(session, prefix, write_meta_graph=False)
    assert "non-finite" in checkpoints.verify_checkpoint(prefix)
    assert checkpoints.verify_checkpoint(os.path.join(model_dir, "model.ckpt-15")) is None


# ------------------------------------------------------------------ non-finite losses


# 320 rows in batches of 16: row r is first read at global step r // 16.
@pytest.mark.parametrize("bad_row, bad_value, step", [
    (2 * 16 + 3, np.inf, 2),             # inf label
    (5 * 16, np.nan, 5),                 # NaN label, in the batch right after model.ckpt-5
    (9 * 16 + 15, np.nan, 9),            # NaN in the batch that would write model.ckpt-10
])
def test_non_finite_label_fails_naming_the_head_and_no_checkpoint_holds_it(
        bad_row, bad_value, step, tmp_path):
    model_dir = str(tmp_path / "model")
    with pytest.raises(hk.NonFiniteLossError, match=rf"global step {step} .*size") as caught:
        _train(model_dir, max_steps=12, n=320, shuffle=False, bad_row=bad_row,
               bad_value=bad_value)
    assert caught.value.heads == ["size"]
    assert caught.value.step == step
    found = checkpoints.find_checkpoints(model_dir)
    assert max(found) <= step
    for saved in found:
        assert checkpoints.verify_checkpoint(os.path.join(model_dir, f"model.ckpt-{saved}")) \
            is None
    if np.isnan(bad_value):  # after fixing the data, a rerun resumes from a finite checkpoint
        printer = _train(model_dir, max_steps=12, n=320, shuffle=False)
        assert printer.start == 5
        assert printer.last == 12


# ------------------------------------------------------------------ exports


def test_sigkill_during_export_leaves_no_partial_export(spawn, tmp_path):
    base = str(tmp_path / "exports")
    process = spawn("export", str(tmp_path / "model"), base)
    previous = process.wait_line(lambda line: line.startswith("exported ")).split()[1]
    process.wait_line(lambda line: line == "exporting")
    deadline = time.monotonic() + DEADLINE
    while not any(n.startswith("temp-") for n in os.listdir(base)):
        assert time.monotonic() < deadline and process.popen.poll() is None
        time.sleep(0.005)
    process.kill()
    names = sorted(os.listdir(base))
    assert [n for n in names if n.isdigit()] == [os.path.basename(previous)]
    assert len([n for n in names if n.startswith("temp-")]) == 1

    outputs = hk.load(previous).predict({"x": np.zeros((2, 4), "float32"),
                                         "tag": np.array([["u"], ["v"]])}, head="size")
    assert outputs["size"]["predictions"].shape[0] == 2
    assert clean_export_leftovers(base) != []
    assert sorted(os.listdir(base)) == [os.path.basename(previous)]


def test_export_removes_leftovers_of_killed_exports(reference, tmp_path):
    base = tmp_path / "exports"
    (base / "temp-1700000000" / "variables").mkdir(parents=True)
    export_dir = worker.estimator(reference).export(str(base))
    assert sorted(os.listdir(base)) == [os.path.basename(export_dir)]


def test_every_update_waits_for_the_finite_loss_check():
    from headkit.estimator.model_fn import make_model_fn
    from headkit.estimator.optimizers import resolve_optimizer

    with tf.Graph().as_default():
        features, labels = tf.compat.v1.data.make_one_shot_iterator(
            worker.input_fn()()).get_next()
        spec = make_model_fn(worker.tiny_body, worker.tiny_heads(), resolve_optimizer("adam"))(
            features, labels, tf.estimator.ModeKeys.TRAIN, None)
        updates = [op for op in tf.compat.v1.get_default_graph().get_operations()
                   if op.type.startswith("ResourceApply")]

    def waits_for_check(op, seen):
        if op in seen:
            return False
        seen.add(op)
        if "headkit_finite_loss_check" in op.name:
            return True
        return any(waits_for_check(parent, seen)
                   for parent in [t.op for t in op.inputs] + list(op.control_inputs))

    assert updates and all(waits_for_check(op, set()) for op in updates)
    assert spec.train_op is not None
