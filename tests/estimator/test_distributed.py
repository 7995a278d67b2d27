"""headkit.estimator.distributed without a cluster: TF_CONFIG checks, strategies, ownership,
the chief's status, and the peer watch (real clusters: test_distributed_clusters.py)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest
import tensorflow as tf

import headkit as hk
from headkit.errors import ClusterError
from headkit.estimator import distributed
from headkit.estimator.distributed import Cluster, PeerWatch, cluster_mode
from headkit.training.monitor import Monitor
from tests.conftest import make_data, numpy_input_fn, tiny_body, tiny_heads

CLUSTER = {"chief": ["host0:2222"], "worker": ["host1:2222", "host2:2222"],
           "ps": ["host3:2222"]}


def _cluster(task_type="worker", index=0, cluster=None, **environ):
    tf_config = json.dumps({"cluster": cluster or CLUSTER,
                            "task": {"type": task_type, "index": index}})
    return Cluster.from_environment(dict(environ, TF_CONFIG=tf_config))


def _raises(field, match, text=None, **environ):
    with pytest.raises(hk.ConfigError, match=match) as caught:
        if text is not None:
            Cluster.from_environment(dict(environ, TF_CONFIG=text))
        else:
            _cluster(**environ)
    assert caught.value.field == field
    return caught.value


# ------------------------------------------------------------------ TF_CONFIG


def test_no_tf_config_or_no_cluster_is_training_alone():
    assert Cluster.from_environment({}) is None
    assert Cluster.from_environment({"TF_CONFIG": ""}) is None
    assert Cluster.from_environment({"TF_CONFIG": '{"task": {"type": "worker"}}'}) is None


def test_a_worker_knows_its_shard_and_that_the_chief_owns_the_state():
    cluster = _cluster("worker", 1)
    assert cluster.task == "worker:1" and cluster.address == "host2:2222"
    assert cluster.trainers == (("chief", 0), ("worker", 0), ("worker", 1))
    assert cluster.trainer_index == 2
    assert cluster.owner == "chief" and not cluster.is_owner
    assert _cluster("chief").is_owner and _cluster("ps").trainer_index is None


def test_tf_config_that_is_not_json_names_the_field_and_shows_an_example():
    error = _raises("TF_CONFIG", r"TF_CONFIG: is not JSON .*'\{cluster: \{'.*Set it to a JSON "
                                 r"object such as \{\"cluster\"", text="{cluster: {")
    assert "task" in str(error)


@pytest.mark.parametrize("task_type, index, field, match", [
    ("trainer", 0, "TF_CONFIG.task.type",
     r"'trainer' is not a task type of the cluster, whose types are \['chief', 'evaluator', "
     r"'ps', 'worker'\]"),
    ("worker", 2, "TF_CONFIG.task.index",
     r"2 is out of range: the cluster lists 2 'worker' task\(s\), so the index is 0 to 1"),
    ("worker", -1, "TF_CONFIG.task.index", r"-1 is out of range"),
    ("ps", "one", "TF_CONFIG.task.index", r"must be an integer \(got 'one'\)"),
])
def test_task_type_or_index_that_the_cluster_lacks_is_refused(task_type, index, field, match):
    _raises(field, match, task_type=task_type, index=index)


@pytest.mark.parametrize("cluster, field, match", [
    ({"worker": ["h:1"]}, "TF_CONFIG.cluster.chief", r"is missing. A cluster needs one chief"),
    ({"chief": ["h:1", "h:2"]}, "TF_CONFIG.cluster.chief", r"at most one chief"),
    ({"master": ["h:1"]}, "TF_CONFIG.cluster.master", r"legacy 'master'.*Rename it 'chief'"),
    ({"chief": ["h:1"], "trainer": ["h:2"]}, "TF_CONFIG.cluster.trainer",
     r"unknown task type 'trainer'"),
    ({"chief": ["h:1"], "worker": ["h:2", "nohost"]}, "TF_CONFIG.cluster.worker[1]",
     r"'nohost' is not an address 'host:port'"),
    ({"chief": ["h:1"], "worker": ["h:1"]}, "TF_CONFIG.cluster.worker[0]",
     r"'h:1' is also chief\[0\]; every task needs its own port"),
    ({"chief": ["h:1"], "evaluator": ["h:2", "h:3"]}, "TF_CONFIG.cluster.evaluator",
     r"at most one evaluator"),
])
def test_malformed_cluster_is_refused_naming_the_field(cluster, field, match):
    _raises(field, match, task_type="chief", cluster=cluster)


def test_an_evaluator_the_chief_cannot_know_of_is_refused_at_start_up():
    _raises("TF_CONFIG.cluster.evaluator", r"nothing tells the chief that an evaluator runs.*"
            r"HEADKIT_EVALUATOR=1 on every task", task_type="evaluator")


def test_an_evaluator_is_known_from_the_cluster_or_from_headkit_evaluator():
    listed = dict(CLUSTER, evaluator=["host4:2222"])
    assert _cluster("chief", cluster=listed).owner == "evaluator"
    assert _cluster("chief", HEADKIT_EVALUATOR="1").owner == "evaluator"
    evaluator = _cluster("evaluator", HEADKIT_EVALUATOR="1")  # as Kubeflow and Vertex AI set it
    assert evaluator.is_owner and evaluator.address is None
    _raises("HEADKIT_EVALUATOR", r"must be 1 or 0 \(got 'maybe'\)", HEADKIT_EVALUATOR="maybe")


# ------------------------------------------------------------------ strategies


class ParameterServerStrategyV2:  # TensorFlow 2's strategy's name; building one needs a cluster
    pass


def test_tensorflow_2_parameter_server_strategy_is_refused_with_the_fix():
    with pytest.raises(hk.ConfigError, match=r"ParameterServerStrategyV2 cannot train an "
                       r"Estimator.*Estimators run graphs. Use tf.compat.v1.distribute"
                       r".experimental.ParameterServerStrategy\(\)") as caught:
        cluster_mode(_cluster(), ParameterServerStrategyV2())
    assert caught.value.field == "config.train_distribute"


def test_a_single_machine_strategy_is_refused_on_a_cluster():
    with pytest.raises(hk.ConfigError, match=r"MirroredStrategy cannot train an Estimator on a "
                                             r"TF_CONFIG cluster"):
        cluster_mode(_cluster(), tf.distribute.MirroredStrategy())


def test_modes_follow_the_strategy_and_check_the_parameter_servers():
    assert cluster_mode(_cluster(), None) == distributed.BETWEEN_GRAPH
    assert cluster_mode(_cluster(), "parameter_server") == distributed.PARAMETER_SERVER
    no_ps = {"chief": ["h:1"], "worker": ["h:2"]}
    assert cluster_mode(_cluster(cluster=no_ps), "multi_worker_mirrored") == (
        distributed.MULTI_WORKER_MIRRORED)
    with pytest.raises(hk.ConfigError, match=r"MultiWorkerMirroredStrategy keeps a copy of the "
                                             r"variables on every worker and never uses a ps"):
        cluster_mode(_cluster(), "multi_worker_mirrored")
    with pytest.raises(hk.ConfigError, match=r"TF_CONFIG.cluster.ps: is missing: with no "
                                             r"strategy the variables live on the parameter"):
        cluster_mode(_cluster(cluster=no_ps), None)
    with pytest.raises(hk.ConfigError, match=r"unknown strategy name 'mirrored'; the names are "
                                             r"\['parameter_server', 'multi_worker_mirrored'\]"):
        cluster_mode(_cluster(), "mirrored")


def test_estimator_checks_tf_config_when_it_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": CLUSTER,
                                                "task": {"type": "worker", "index": 5}}))
    with pytest.raises(hk.ConfigError, match=r"TF_CONFIG.task.index: 5 is out of range"):
        hk.Estimator(tiny_body, tiny_heads(), model_dir=str(tmp_path))
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["h:1"], "worker": ["h:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    with pytest.raises(hk.ConfigError, match=r"TF_CONFIG.cluster.ps: is missing"):
        hk.Estimator(tiny_body, tiny_heads(), model_dir=str(tmp_path),
                     config={"train_distribute": "parameter_server"})
    with pytest.raises(hk.ConfigError, match=r"config: .*unexpected keyword argument "
                                             r"'save_every'.*RunConfig's arguments"):
        hk.Estimator(tiny_body, tiny_heads(), model_dir=str(tmp_path),
                     config={"save_every": 3})


@pytest.mark.parametrize("model_dir, match", [
    (None, r"model_dir: none given, and TF_CONFIG makes this process the worker:0 of a "
           r"cluster.*Pass the same model_dir"),
    ("gs://bucket/runs/a", r"model_dir 'gs://bucket/runs/a' is a URL.*Mount the storage on "
                           r"every task"),
])
def test_a_model_dir_the_tasks_cannot_share_is_refused(model_dir, match, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": CLUSTER,
                                                "task": {"type": "worker", "index": 0}}))
    with pytest.raises(hk.ConfigError, match=match) as raised:
        hk.Estimator(tiny_body, tiny_heads(), model_dir=model_dir)
    assert raised.value.field == "model_dir"


def test_a_strategy_name_trains_alone_without_tf_config(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    estimator = hk.Estimator(tiny_body, tiny_heads(), model_dir=str(tmp_path),
                             config={"train_distribute": "multi_worker_mirrored",
                                     "tf_random_seed": 3})
    assert estimator.cluster is None and estimator.config.train_distribute is None
    assert estimator.config.tf_random_seed == 3 and estimator.owns_training_state


def test_ps_and_evaluator_keep_no_training_strategy(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": CLUSTER,
                                                "task": {"type": "ps", "index": 0}}))
    config = tf.estimator.RunConfig(
        train_distribute=tf.compat.v1.distribute.experimental.ParameterServerStrategy())
    estimator = hk.Estimator(tiny_body, tiny_heads(), model_dir=str(tmp_path), config=config)
    assert estimator.cluster_mode == "parameter_server"
    assert estimator.config.train_distribute is None and config.train_distribute is not None
    assert not estimator.is_chief and not estimator.owns_training_state


# ------------------------------------------------------------------ one writer per file


def _checkpoint_with_leftover(model_dir):
    features, labels = make_data()
    hk.Estimator(tiny_body, tiny_heads(), model_dir=model_dir).train(
        numpy_input_fn(features, labels), max_steps=2)
    leftover = os.path.join(model_dir, "model.ckpt-3_temp")
    os.makedirs(leftover)
    return leftover


@pytest.mark.parametrize("task_type, removed", [("worker", False), ("chief", True)])
def test_only_the_chief_runs_the_checkpoint_guard(task_type, removed, tmp_path, monkeypatch):
    model_dir = str(tmp_path / "model")
    leftover = _checkpoint_with_leftover(model_dir)  # a save the chief may still be writing
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": CLUSTER,
                                                "task": {"type": task_type, "index": 0}}))
    estimator = hk.Estimator(tiny_body, tiny_heads(), model_dir=model_dir)
    features, labels = make_data()
    estimator.train(numpy_input_fn(features, labels), max_steps=1)  # nothing left to train
    assert os.path.exists(leftover) != removed


def test_a_task_that_only_reads_the_training_state_cannot_write_it(tmp_path):
    class Model:
        model_dir = str(tmp_path)

    monitor = Monitor(Model(), hk.EarlyStopping("loss"), None, ("loss", "min"), None,
                      read_only=True)
    with pytest.raises(RuntimeError, match=r"only reads .*headkit_training.json.*another task"):
        monitor.record(10, {"loss": 1.0}, "ckpt")
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------ the chief's status


def test_a_done_status_left_by_an_earlier_run_is_not_this_runs_end(tmp_path):
    model_dir = str(tmp_path)
    distributed._write_status(model_dir, {"run": "old", "state": "done", "step": 100})
    follower = distributed._ChiefStatus(model_dir)
    assert follower.initially_done and follower.ended() is None
    distributed._write_status(model_dir, {"run": "new", "state": "training"})
    assert follower.ended() is None and follower.current()["run"] == "new"
    distributed._write_status(model_dir, {"run": "new", "state": "done", "step": 200})
    assert follower.ended()["step"] == 200


def test_a_training_status_at_start_belongs_to_this_run(tmp_path):
    model_dir = str(tmp_path)
    distributed._write_status(model_dir, {"run": "a", "state": "training"})
    follower = distributed._ChiefStatus(model_dir)
    distributed._write_status(model_dir, {"run": "a", "state": "failed", "reason": "ps lost"})
    assert follower.ended()["reason"] == "ps lost"


# ------------------------------------------------------------------ the peer watch


def _listening():
    server = socket.socket()
    server.bind(("localhost", 0))
    server.listen(8)
    return server, f"localhost:{server.getsockname()[1]}"


def _watch(peers, monkeypatch, normal_end=lambda: False):
    monkeypatch.setenv(distributed.PEER_TIMEOUT_ENV, "1.5")
    monkeypatch.setenv(distributed.STARTUP_TIMEOUT_ENV, "3")
    errors = []
    watch = PeerWatch(peers, "worker:0", normal_end, errors.append)
    return watch.start(), errors


def _wait(condition, seconds=15.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


def test_a_peer_that_dies_fails_this_task_naming_it_and_its_address(monkeypatch):
    server, address = _listening()
    watch, errors = _watch([("ps:0", address)], monkeypatch)
    try:
        time.sleep(1.5)  # seen once
        watch.check()
        server.close()
        assert _wait(lambda: errors)
        with pytest.raises(ClusterError, match=rf"the ps task 0 at {address} has been "
                           r"unreachable for 1.5s \(Connection refused\): it died"):
            watch.check()
        assert errors[0].task == "ps:0" and errors[0].address == address
    finally:
        watch.stop()


def test_a_peer_that_never_comes_up_fails_after_the_start_up_timeout(monkeypatch):
    bound = socket.socket()
    bound.bind(("localhost", 0))  # bound, not listening: connections are refused
    watch, errors = _watch([("chief:0", f"localhost:{bound.getsockname()[1]}")], monkeypatch)
    try:
        assert _wait(lambda: errors)
        assert "never became reachable for 3s (Connection refused)" in str(errors[0])
    finally:
        watch.stop()
        bound.close()


def test_a_peer_that_comes_back_within_the_timeout_is_not_lost(monkeypatch):
    server, address = _listening()
    port = int(address.rsplit(":", 1)[1])
    watch, errors = _watch([("chief:0", address)], monkeypatch)
    try:
        time.sleep(1.5)
        server.close()  # a chief restarted on the same port
        time.sleep(0.6)
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("localhost", port))
        server.listen(8)
        time.sleep(3)
        assert not errors and watch.error is None
    finally:
        watch.stop()
        server.close()


def test_a_peer_gone_after_the_end_of_training_ends_this_task_cleanly(monkeypatch):
    server, address = _listening()
    ended = threading.Event()
    watch, errors = _watch([("ps:0", address)], monkeypatch, normal_end=ended.is_set)
    try:
        time.sleep(1.5)
        ended.set()
        server.close()
        assert _wait(lambda: watch.ended)
        assert not errors
        watch.check()
    finally:
        watch.stop()


@pytest.mark.timeout(60)  # before the fix the evaluator waited for the chief (600 s)
def test_an_evaluator_without_an_evaluation_input_is_refused_naming_the_field(
        tmp_path, monkeypatch):
    # headkit launch --evaluator with a script that passes no eval_input_fn.
    cluster = {"chief": ["localhost:1"], "ps": ["localhost:3"], "evaluator": ["localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "evaluator", "index": 0}}))
    estimator = hk.Estimator(tiny_body, tiny_heads(), model_dir=str(tmp_path))
    features, labels = make_data()
    with pytest.raises(hk.ConfigError, match="nothing to evaluate. Pass eval_input_fn, or run "
                       "the cluster without an evaluator") as caught:
        hk.train_and_evaluate(estimator, numpy_input_fn(features, labels), max_steps=4,
                              eval_every=2, progress=False)
    assert caught.value.field == "eval_input_fn"


def test_once_the_chiefs_training_has_ended_its_trainers_may_leave():
    # With no evaluator the chief evaluates and exports after the last step, while the
    # workers (its peers under MWMS) exit: that must not read as a lost peer.
    role = distributed._Role.__new__(distributed._Role)
    role.is_chief, role.follower, role.training_over = True, None, False
    assert not role._normal_end()
    role.training_over = True
    assert role._normal_end()


class _BrokenConsole:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_task_stuck_after_a_lost_peer_exits_even_when_its_console_is_gone(monkeypatch):
    # The launcher (the reader of the task's output) may be gone: writing the error then
    # raises, and the task must still exit instead of hanging in TensorFlow for ever.
    exits = []
    monkeypatch.setattr(distributed, "_EXIT_GRACE_SECS", 0.01)
    monkeypatch.setattr(distributed.os, "_exit", exits.append)
    monkeypatch.setattr(distributed.sys, "stderr", _BrokenConsole())
    monkeypatch.setattr(distributed.sys, "stdout", _BrokenConsole())
    watch = PeerWatch([], "chief:0", lambda: False, lambda error: None)
    watch._exit_if_stuck(1, "headkit: the ps task 0 at localhost:1 has been unreachable")
    assert exits == [1]
