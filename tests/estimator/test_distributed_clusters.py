"""Real clusters on localhost: each mode ends by itself, shards its input, and survives faults.

Every test runs ``headkit launch`` on examples/distributed/train.py (a batch-norm
body, plateau data, early stopping, BestExport) with one TensorFlow thread per
task, and asserts that every task has exited within ``CLUSTER_BOUND`` seconds of
the cluster's (re)start. The fixture kills whatever a test leaves running.
Run one at a time (no xdist): each cluster uses both cores.
"""

from __future__ import annotations

import glob
import os

import pytest

from tests.estimator._cluster import (
    CLUSTER_BOUND,
    SHORT_PEER_TIMEOUT,
    TRAIN,
    LaunchedCluster,
)

pytestmark = pytest.mark.timeout(420)

BASE = ("--rows", "256", "--batch-size", "16", "--eval-every", "100")
#: Plateau data: validation stops improving after an evaluation or two, so early
#: stopping (patience 2) ends every run long before max_steps. A short sleep after
#: each step leaves the evaluator CPU to keep up (it decides sooner, in steps and seconds).
ARGS = BASE + ("--max-steps", "5000", "--patience", "2", "--plateau", "--step-delay", "0.02")
#: Learnable data, slowed down: a run long enough to kill a task and restart it.
SLOW = BASE + ("--max-steps", "800", "--patience", "3", "--step-delay", "0.03")
ROWS, BATCH = 256, 16
OK = ["exit code 0"]


@pytest.fixture
def launch(tmp_path):
    started = []

    def start(strategy: str, **options) -> LaunchedCluster:
        cluster = LaunchedCluster(str(tmp_path / f"run{len(started)}"), strategy,
                                  args=options.pop("args", ARGS), **options)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.close()


def _assert_finished_with_exports(cluster: LaunchedCluster) -> dict:
    state = cluster.state()
    status = cluster.status()
    assert status["state"] == "done"
    for kind in ("best", "final"):
        exports = os.listdir(os.path.join(cluster.model_dir, "export", kind))
        assert len(exports) == 1 and exports[0].isdigit(), exports  # no temp- leftovers
    assert state["final_export"]["step"] == status["step"]
    return state


def _assert_stopped_early_with_exports(cluster: LaunchedCluster, patience: int = 2) -> dict:
    state = _assert_finished_with_exports(cluster)
    count = state["early_stopping"]
    assert count["stop_step"] is not None and count["evals_without_improvement"] == patience
    assert cluster.status()["step"] < 5000
    return state


def _assert_one_writer_layout(cluster: LaunchedCluster) -> None:
    """No folder a non-chief task would write (TensorFlow's tmp_worker_<i>), no save leftovers."""
    names = os.listdir(cluster.model_dir)
    assert not [n for n in names if n.startswith("tmp_") or n.endswith("_temp")], names
    assert not glob.glob(os.path.join(cluster.model_dir, "export", "*", "temp-*"))


def _epoch_share(batches, trainers: int) -> list:
    """A trainer's rows of the first epoch: the first ROWS // trainers rows it read."""
    rows = [row for batch in batches for row in batch]
    return rows[: ROWS // trainers]


@pytest.mark.parametrize("strategy, ps", [
    ("none", 1),
    ("parameter_server", 1),
    ("multi_worker_mirrored", 0),
])
def test_each_mode_stops_early_every_role_exits_and_workers_read_disjoint_rows(
        launch, strategy, ps):
    cluster = launch(strategy, workers=1, ps=ps, evaluator=True)
    assert cluster.finish(CLUSTER_BOUND + 60) == 0, cluster.output()
    tasks = ["chief", "worker:0", "evaluator"] + ["ps:0"] * ps
    assert cluster.exits() == {task: OK for task in tasks}, cluster.output()
    last_exit = max(t for t, _, what in cluster.events if what != "started")
    assert last_exit <= CLUSTER_BOUND, cluster.output()
    _assert_stopped_early_with_exports(cluster)
    _assert_one_writer_layout(cluster)

    chief, worker = cluster.rows("chief-0"), cluster.rows("worker-0")
    assert chief and worker, cluster.output()
    shares = [_epoch_share(chief, 2), _epoch_share(worker, 2)]
    for share in shares:
        assert len(share) == len(set(share))  # no row twice within a shard's epoch
    assert not set(shares[0]) & set(shares[1])  # no row read by both in the first epoch
    evaluated = cluster.rows("evaluator-0", "eval-rows")
    per_evaluation = [row for batch in evaluated[:1] for row in batch]
    assert sorted(per_evaluation) == list(range(ROWS // 4))  # the evaluator reads every row
    assert not cluster.rows("chief-0", "eval-rows")  # the evaluator alone evaluates


# ------------------------------------------------------------------ faults


def _reference_batches(shard: int, shards: int, batches: int) -> list:
    """The batches of row ids trainer ``shard`` reads, from the beginning (as the script builds
    its input)."""
    import importlib.util

    import tensorflow as tf

    spec = importlib.util.spec_from_file_location("distributed_train", TRAIN)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    features, labels = script.make_data(ROWS, seed=0, plateau=True)
    import headkit as hk

    input_fn = hk.input_fn(features, labels, script.HEADS, batch_size=BATCH, shuffle=True,
                           num_epochs=None, seed=0)
    context = tf.distribute.InputContext(num_input_pipelines=shards, input_pipeline_id=shard)
    return [[int(v) for v in f["row"].numpy()[:, 0]]
            for f, _ in input_fn(input_context=context).take(batches)]


def _assert_resumed_from_its_saved_position(before: list, after: list, shard: int) -> int:
    """``after`` (the batches a restarted trainer read) continues ``before`` from a saved
    position: the same shard, not its beginning. Returns that position."""
    reference = _reference_batches(shard, 2, len(before) + len(after) + 5)
    assert before == reference[:len(before)]  # the shard, read in order
    assert after, "the restarted task read nothing"
    position = reference.index(after[0])
    assert 1 <= position <= len(before), (position, len(before))
    assert after == reference[position:position + len(after)]
    return position


def _checkpoint_steps(model_dir: str) -> list:
    return sorted(int(os.path.basename(p)[len("model.ckpt-"):-len(".index")])
                  for p in glob.glob(os.path.join(model_dir, "model.ckpt-*.index")))


def test_ps_mode_worker_killed_and_restarted_rejoins_and_resumes_its_shard(launch):
    cluster = launch("none", workers=1, ps=1, evaluator=False, restarts=1, args=SLOW)
    cluster.wait_until(lambda: len(cluster.rows("worker-0")) >= 30, 150,
                       "30 batches read by the worker")
    cluster.kill("worker:0")
    before = cluster.rows("worker-0")
    assert cluster.finish(CLUSTER_BOUND + 90) == 0, cluster.output()
    assert cluster.exits() == {"chief": OK, "ps:0": OK,
                               "worker:0": ["signal SIGKILL", "exit code 0"]}, cluster.output()
    restarted = cluster.event_time("worker:0", "started", 1)
    assert cluster.event_time("worker:0", "exit code") - restarted <= CLUSTER_BOUND
    _assert_finished_with_exports(cluster)
    after = cluster.rows("worker-0")[len(before):]
    _assert_resumed_from_its_saved_position(before, after, shard=1)


def test_ps_mode_chief_killed_and_restarted_resumes_from_the_newest_checkpoint(launch):
    cluster = launch("none", workers=1, ps=1, evaluator=True, restarts=1, args=SLOW)
    cluster.wait_until(lambda: any(s >= 100 for s in _checkpoint_steps(cluster.model_dir)),
                       150, "a checkpoint at step 100")
    cluster.kill("chief")
    at_kill = _checkpoint_steps(cluster.model_dir)
    before = cluster.rows("chief-0")
    assert cluster.finish(CLUSTER_BOUND + 90) == 0, cluster.output()
    assert cluster.exits() == {"ps:0": OK, "worker:0": OK, "evaluator": OK,
                               "chief": ["signal SIGKILL", "exit code 0"]}, cluster.output()
    status = cluster.status()
    assert status["start_step"] in at_kill and status["start_step"] >= 100, (status, at_kill)
    _assert_finished_with_exports(cluster)
    after = cluster.rows("chief-0")[len(before):]
    _assert_resumed_from_its_saved_position(before, after, shard=0)


def test_evaluator_killed_and_restarted_keeps_evaluating_and_its_early_stopping_count(launch):
    cluster = launch("none", workers=0, ps=1, evaluator=True, restarts=1,
                     args=BASE + ("--max-steps", "3000", "--patience", "3", "--plateau",
                                  "--step-delay", "0.02"))

    def counting():
        try:
            state = cluster.state()
        except (OSError, ValueError):
            return False
        return state["early_stopping"]["evals_without_improvement"] >= 1

    cluster.wait_until(counting, 150, "an evaluation without improvement")
    cluster.kill("evaluator")
    before = cluster.state()
    assert cluster.finish(CLUSTER_BOUND + 90) == 0, cluster.output()
    assert cluster.exits() == {"ps:0": OK, "chief": OK,
                               "evaluator": ["signal SIGKILL", "exit code 0"]}, cluster.output()
    after = _assert_finished_with_exports(cluster)
    kept = len(before["history"])
    assert after["history"][:kept] == before["history"]  # nothing evaluated twice or lost
    assert len(after["history"]) > kept  # the restarted evaluator went on
    count = before["early_stopping"]
    stopped = after["early_stopping"]
    assert stopped["evals_without_improvement"] == 3  # stopped by patience
    if stopped["best_step"] == count["best_step"]:  # no improvement since:
        # the count went on from where it was (at least 1): a reset count would have
        # needed all 3 evaluations again. (After the stop, the evaluator also evaluates
        # the last checkpoint the chief saved.)
        deciding = [e for e in after["history"][kept:] if e["step"] <= stopped["stop_step"]]
        assert len(deciding) == 3 - count["evals_without_improvement"]


def test_killed_ps_gives_every_other_role_a_clear_error_naming_it(launch):
    # restarts=1: the launcher waits for the others to stop by themselves before it would
    # restart the group, instead of stopping them at once.
    cluster = launch("none", workers=1, ps=1, evaluator=True, restarts=1,
                     peer_timeout=SHORT_PEER_TIMEOUT)
    cluster.wait_until(lambda: len(cluster.rows("worker-0")) >= 20, 150, "training")
    address = cluster.address("ps:0")
    killed = cluster.kill("ps:0")
    others = ("chief", "worker:0", "evaluator")
    cluster.wait_until(lambda: all(cluster.exits().get(t) for t in others),
                       cluster.peer_timeout + 60, "every other task to stop")
    for task in others:
        assert cluster.exits()[task] == ["exit code 1"], cluster.output()
        assert cluster.event_time(task, "exit code") - killed <= cluster.peer_timeout + 25
        assert f"ps task 0 at {address}" in cluster.task_output(task), cluster.output()
    status = cluster.status()  # the chief recorded why it failed, for the evaluator
    assert status["state"] == "failed" and f"ps task 0 at {address}" in status["reason"]
    assert f"the chief at {cluster.address('chief')} failed" in cluster.task_output("evaluator")


def test_mwms_worker_killed_stops_every_task_and_the_restarted_group_resumes(launch):
    cluster = launch("multi_worker_mirrored", workers=1, ps=0, evaluator=True, restarts=1,
                     peer_timeout=SHORT_PEER_TIMEOUT,
                     args=BASE + ("--max-steps", "1000", "--patience", "2", "--plateau",
                                  "--step-delay", "0.02"))
    cluster.wait_until(lambda: any(s >= 100 for s in _checkpoint_steps(cluster.model_dir)),
                       180, "a checkpoint at step 100")
    address = cluster.address("worker:0")
    killed = cluster.kill("worker:0")
    at_kill = _checkpoint_steps(cluster.model_dir)
    cluster.wait_until(lambda: cluster.exits().get("chief") and cluster.exits().get(
        "evaluator"), cluster.peer_timeout + 60, "the chief and the evaluator to stop")
    for task in ("chief", "evaluator"):
        assert cluster.event_time(task, "exit code") - killed <= cluster.peer_timeout + 25
        assert f"worker task 0 at {address}" in cluster.task_output(task), cluster.output()
    assert cluster.finish(CLUSTER_BOUND + 150) == 0, cluster.output()
    assert cluster.exits() == {"chief": ["exit code 1", "exit code 0"],
                               "evaluator": ["exit code 1", "exit code 0"],
                               "worker:0": ["signal SIGKILL", "exit code 0"]}, cluster.output()
    restarted = cluster.event_time("chief", "started", 1)
    last_exit = max(t for t, _, what in cluster.events if what != "started")
    assert last_exit - restarted <= CLUSTER_BOUND
    status = cluster.status()
    assert status["start_step"] in at_kill and status["start_step"] >= 100, (status, at_kill)
    _assert_finished_with_exports(cluster)
