"""Training on a ``TF_CONFIG`` cluster: the roles, who writes what, how every role ends, dead peers.

headkit reads the cluster from ``TF_CONFIG`` as Kubeflow, Vertex AI or a person
sets it, checks it when ``hk.Estimator`` is built, and runs each role itself
rather than through ``tf.estimator.train_and_evaluate`` (whose parameter
servers never return, whose evaluator only ends at ``max_steps``, and which
lets every task of a distribute coordinator believe it is the chief):

- **chief**: trains, saves every checkpoint and alone runs the checkpoint
  guard; it writes ``headkit_cluster.json``, the end-of-training signal:
  ``training`` when it starts, ``done`` or ``failed`` when it ends. With no
  evaluator it also evaluates, decides early stopping and exports.
- **worker**: trains; ends when the chief's status says ``done`` (parameter
  servers) or with the chief's stop flag, all-reduced with every step
  (``MultiWorkerMirroredStrategy``: the whole group stops after the same step).
- **ps**: serves the variables until the chief's status says ``done``, then
  until the workers have left.
- **evaluator**: evaluates each new checkpoint, decides early stopping, keeps
  the best exports; after the chief's ``done`` it evaluates the last checkpoint,
  writes the final export and ends.

Each role watches the peers it cannot work without by connecting to their
addresses; a peer unreachable for ``HEADKIT_PEER_TIMEOUT_SECS`` makes the role
fail with a :class:`~headkit.errors.ClusterError` naming the peer and its address.
"""

from __future__ import annotations

import copy
import faulthandler
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs
import tensorflow as tf

from headkit.errors import ClusterError, ConfigError

__all__ = [
    "Cluster",
    "STATUS_FILE",
    "BETWEEN_GRAPH",
    "PARAMETER_SERVER",
    "MULTI_WORKER_MIRRORED",
    "STRATEGIES",
    "cluster_mode",
    "read_status",
    "run_cluster",
]

#: The chief's status of the cluster run in model_dir (its single writer is the chief).
STATUS_FILE = "headkit_cluster.json"
#: The modes: no strategy (variables on the ps through ``replica_device_setter``),
#: ``tf.compat.v1.distribute.experimental.ParameterServerStrategy``, and
#: ``MultiWorkerMirroredStrategy`` (synchronous all-reduce, no ps).
BETWEEN_GRAPH, PARAMETER_SERVER, MULTI_WORKER_MIRRORED = (
    "between_graph", "parameter_server", "multi_worker_mirrored")
#: Strategy names ``config={"train_distribute": NAME}`` accepts.
STRATEGIES = (PARAMETER_SERVER, MULTI_WORKER_MIRRORED)
TASK_TYPES = ("chief", "worker", "ps", "evaluator")
#: Seconds a peer seen once may stay unreachable (a restarted chief must be back by then).
PEER_TIMEOUT_ENV, PEER_TIMEOUT_DEFAULT = "HEADKIT_PEER_TIMEOUT_SECS", 60.0
#: Seconds a peer never seen yet may take to come up (Kubernetes may schedule pods late).
STARTUP_TIMEOUT_ENV, STARTUP_TIMEOUT_DEFAULT = "HEADKIT_STARTUP_TIMEOUT_SECS", 600.0
#: "1" on every task when an evaluator runs that TF_CONFIG's cluster does not list.
EVALUATOR_ENV = "HEADKIT_EVALUATOR"
_POLL_SECS = 0.5  # how often a role reads the other roles' files
_EXIT_GRACE_SECS = 10.0  # after a fatal peer loss, how long TensorFlow may take to return
_WORKERS_LEAVE_SECS = 30.0  # how long a ps waits for the workers after the chief's "done"
_STOP_COLLECTION = "headkit_stop_signal"  # (flag, all-reduced flag) under MWMS
_CLASS_MODES = {
    "ParameterServerStrategyV1": PARAMETER_SERVER,
    "CollectiveAllReduceStrategy": MULTI_WORKER_MIRRORED,
    "CollectiveAllReduceStrategyV1": MULTI_WORKER_MIRRORED,
    "MultiWorkerMirroredStrategy": MULTI_WORKER_MIRRORED,
}
_EXAMPLE = ('{"cluster": {"chief": ["host0:2222"], "worker": ["host1:2222"], '
            '"ps": ["host2:2222"]}, "task": {"type": "worker", "index": 0}}')

_log = logging.getLogger("headkit")


# ------------------------------------------------------------------ TF_CONFIG


def _fail(field: str, message: str) -> ConfigError:
    return ConfigError(f"{field}: {message}", field=field)


def _check_address(field: str, address: Any) -> str:
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail(field, f"{address!r} is not an address 'host:port'. Give each task's "
                           "host and the port its TensorFlow server listens on.")
    return address


def _parse_jobs(cluster: Any) -> Dict[str, Tuple[str, ...]]:
    if not isinstance(cluster, dict):
        raise _fail("TF_CONFIG.cluster", f"must be an object mapping task types to address "
                                         f"lists (got {cluster!r}). Example: {_EXAMPLE}")
    jobs: Dict[str, Tuple[str, ...]] = {}
    for job, addresses in cluster.items():
        field = f"TF_CONFIG.cluster.{job}"
        if job == "master":
            raise _fail(field, "the legacy 'master' task type is not supported. Rename it "
                               "'chief' (one address): the chief saves the checkpoints.")
        if job not in TASK_TYPES:
            raise _fail(field, f"unknown task type {job!r}; the task types are "
                               f"{list(TASK_TYPES)!r}.")
        if not isinstance(addresses, list) or not addresses:
            raise _fail(field, f"must be a non-empty list of 'host:port' (got {addresses!r}).")
        jobs[job] = tuple(_check_address(f"{field}[{i}]", a) for i, a in enumerate(addresses))
    for job, most in (("chief", 1), ("evaluator", 1)):
        if len(jobs.get(job, ())) > most:
            raise _fail(f"TF_CONFIG.cluster.{job}", f"lists {len(jobs[job])} addresses; a "
                        f"cluster has at most one {job}. List the others as 'worker'.")
    if "chief" not in jobs:
        raise _fail("TF_CONFIG.cluster.chief", "is missing. A cluster needs one chief (it "
                    "saves the checkpoints): name one task 'chief', for instance your first "
                    f"worker. Example: {_EXAMPLE}")
    seen: Dict[str, str] = {}
    for job, addresses in jobs.items():
        for index, address in enumerate(addresses):
            if address in seen:
                raise _fail(f"TF_CONFIG.cluster.{job}[{index}]", f"{address!r} is also "
                            f"{seen[address]}; every task needs its own port.")
            seen[address] = f"{job}[{index}]"
    return jobs


def _parse_task(task: Any, jobs: Mapping[str, Tuple[str, ...]]) -> Tuple[str, int]:
    if not isinstance(task, dict):
        raise _fail("TF_CONFIG.task", f"must be an object {{'type': ..., 'index': ...}} "
                                      f"naming this process's task (got {task!r}).")
    task_type, index = task.get("type"), task.get("index", 0)
    known = sorted(set(jobs) | {"evaluator"})
    if task_type not in known:
        raise _fail("TF_CONFIG.task.type", f"{task_type!r} is not a task type of the cluster, "
                    f"whose types are {known!r}. Set it to this process's role.")
    if isinstance(index, str) and index.isdigit():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, int):
        raise _fail("TF_CONFIG.task.index", f"must be an integer (got {index!r}).")
    count = len(jobs.get(task_type, ())) or 1  # an unlisted evaluator is task 0
    if not 0 <= index < count:
        raise _fail("TF_CONFIG.task.index", f"{index} is out of range: the cluster lists "
                    f"{count} {task_type!r} task(s), so the index is 0 to {count - 1}. "
                    f"Give each {task_type} process its own index in that range, or list more "
                    f"addresses in TF_CONFIG.cluster.{task_type}.")
    return task_type, index


def _evaluator_declared(jobs: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    value = environ.get(EVALUATOR_ENV)
    if value is None or value == "":
        return "evaluator" in jobs
    flag = value.strip().lower()
    if flag not in ("1", "true", "yes", "0", "false", "no"):
        raise _fail(EVALUATOR_ENV, f"must be 1 or 0 (got {value!r}): 1 when an evaluator "
                                   "runs beside the cluster.")
    if flag in ("0", "false", "no") and "evaluator" in jobs:
        raise _fail(EVALUATOR_ENV, "is 0, but TF_CONFIG.cluster lists an evaluator. Remove "
                                   "one of the two.")
    return flag in ("1", "true", "yes")


@attrs.frozen
class Cluster:
    """This process's place in a ``TF_CONFIG`` cluster, checked; None when training alone.

    ``evaluator`` says whether an evaluator runs: the cluster lists one, or
    ``HEADKIT_EVALUATOR=1`` is set on every task (Kubeflow and Vertex AI leave
    the evaluator out of the cluster, as TensorFlow expects).

    Example:
        >>> tf_config = json.dumps({"cluster": {"chief": ["h0:1"], "ps": ["h1:1"]},
        ...                         "task": {"type": "ps", "index": 0}})
        >>> Cluster.from_environment({"TF_CONFIG": tf_config}).owner
        'chief'
    """

    jobs: Mapping[str, Tuple[str, ...]]
    task_type: str
    task_index: int
    evaluator: bool

    @classmethod
    def from_environment(cls, environ: Optional[Mapping[str, str]] = None
                         ) -> Optional["Cluster"]:
        """Read and check ``TF_CONFIG``; None when it describes no cluster.

        Raises:
            ConfigError: naming the field of TF_CONFIG at fault and the fix.
        """
        environ = os.environ if environ is None else environ
        text = environ.get("TF_CONFIG") or ""
        if not text.strip():
            return None
        try:
            config = json.loads(text)
        except ValueError as error:
            raise _fail("TF_CONFIG", f"is not JSON ({error}; it starts {text[:60]!r}). Set "
                                     f"it to a JSON object such as {_EXAMPLE}") from None
        if not isinstance(config, dict):
            raise _fail("TF_CONFIG", f"must be a JSON object (got {config!r}). Example: "
                                     f"{_EXAMPLE}")
        if not config.get("cluster"):
            task = config.get("task") or {}
            if isinstance(task, dict) and task.get("type") not in (None, "worker"):
                raise _fail("TF_CONFIG.cluster", f"is empty, but TF_CONFIG.task names a "
                            f"{task.get('type')!r} task. Describe the cluster, or unset "
                            "TF_CONFIG to train in this process alone.")
            return None
        jobs = _parse_jobs(config["cluster"])
        task_type, index = _parse_task(config.get("task"), jobs)
        evaluator = _evaluator_declared(jobs, environ)
        if task_type == "evaluator" and not evaluator:
            raise _fail("TF_CONFIG.cluster.evaluator", "this task is the evaluator, but "
                        "nothing tells the chief that an evaluator runs, so it would evaluate "
                        "and export too (two writers of the training state). List the "
                        "evaluator in TF_CONFIG.cluster, or set HEADKIT_EVALUATOR=1 on every "
                        "task (Kubeflow and Vertex AI leave it out of the cluster).")
        return cls(jobs, task_type, index, evaluator)

    @property
    def task(self) -> str:
        """This task as ``"<type>:<index>"``."""
        return f"{self.task_type}:{self.task_index}"

    @property
    def address(self) -> Optional[str]:
        """This task's ``host:port`` (None for an evaluator the cluster does not list)."""
        addresses = self.jobs.get(self.task_type, ())
        return addresses[self.task_index] if addresses else None

    @property
    def trainers(self) -> Tuple[Tuple[str, int], ...]:
        """The training tasks in input-shard order: the chief, then the workers."""
        return (("chief", 0),) + tuple(("worker", i) for i in range(len(self.jobs.get(
            "worker", ()))))

    @property
    def trainer_index(self) -> Optional[int]:
        """This task's input shard (chief 0, worker i is i + 1), None when it does not train."""
        return self.trainers.index((self.task_type, self.task_index)) if (
            self.task_type in ("chief", "worker")) else None

    @property
    def owner(self) -> str:
        """Who evaluates and writes the training state and exports: the evaluator, else
        the chief."""
        return "evaluator" if self.evaluator else "chief"

    @property
    def is_owner(self) -> bool:
        return self.task_type == self.owner

    def training_spec(self) -> tf.train.ClusterSpec:
        """The cluster without the evaluator (which is not part of training)."""
        return tf.train.ClusterSpec({job: list(addresses) for job, addresses in self.jobs.items()
                                     if job != "evaluator"})


def cluster_mode(cluster: Cluster, strategy: Any) -> str:
    """The mode for ``strategy`` (an object, a name, or None) on ``cluster``, checked.

    Raises:
        ConfigError: a strategy Estimators cannot use, or a cluster it cannot run.

    Example:
        >>> tf_config = json.dumps({"cluster": {"chief": ["h0:1"], "ps": ["h1:1"]},
        ...                         "task": {"type": "chief", "index": 0}})
        >>> cluster_mode(Cluster.from_environment({"TF_CONFIG": tf_config}), None)
        'between_graph'
    """
    if strategy is None:
        mode = BETWEEN_GRAPH
    elif isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ConfigError(
                f"config.train_distribute: unknown strategy name {strategy!r}; the names are "
                f"{list(STRATEGIES)!r}, or pass a strategy object.",
                field="config.train_distribute")
        mode = strategy
    else:
        name = type(strategy).__name__
        mode = _CLASS_MODES.get(name)
        if mode is None:
            hint = (" It is TensorFlow 2's ParameterServerStrategy, which needs a coordinator "
                    "running tf.function steps; Estimators run graphs. Use "
                    "tf.compat.v1.distribute.experimental.ParameterServerStrategy() (or the "
                    "name 'parameter_server')." if name == "ParameterServerStrategyV2" else
                    " Estimators on a TF_CONFIG cluster train with no strategy (variables on "
                    "the ps), tf.compat.v1.distribute.experimental.ParameterServerStrategy() "
                    "or tf.distribute.MultiWorkerMirroredStrategy().")
            raise ConfigError(f"config.train_distribute: {name} cannot train an Estimator on "
                              f"a TF_CONFIG cluster.{hint}", field="config.train_distribute")
    has_ps = "ps" in cluster.jobs
    if mode == MULTI_WORKER_MIRRORED and has_ps:
        raise _fail("TF_CONFIG.cluster.ps", "MultiWorkerMirroredStrategy keeps a copy of the "
                    "variables on every worker and never uses a ps. Remove the ps tasks, or "
                    "train with parameter servers (no strategy, or 'parameter_server').")
    if mode != MULTI_WORKER_MIRRORED and not has_ps:
        what = "no strategy" if mode == BETWEEN_GRAPH else "ParameterServerStrategy"
        raise _fail("TF_CONFIG.cluster.ps", f"is missing: with {what} the variables live on "
                    "the parameter servers. Add ps tasks, or use "
                    "tf.distribute.MultiWorkerMirroredStrategy() to train without them.")
    return mode


def check_model_dir(model_dir: Any, cluster: Cluster) -> None:
    """Refuse a ``model_dir`` the tasks of a cluster cannot share.

    Every task reads the chief's checkpoints and status file there, and the
    status files are written with file system calls: the folder must be a
    path every task mounts (NFS, a ReadWriteMany volume, Cloud Storage FUSE).

    Raises:
        ConfigError: no model_dir, or a URL such as ``gs://...``.

    Example:
        >>> tf_config = json.dumps({"cluster": {"chief": ["h0:1"], "ps": ["h1:1"]},
        ...                         "task": {"type": "ps", "index": 0}})
        >>> check_model_dir("/runs/a", Cluster.from_environment({"TF_CONFIG": tf_config}))
    """
    if model_dir is None:
        raise ConfigError(
            f"model_dir: none given, and TF_CONFIG makes this process the {cluster.task} of a "
            "cluster: each task would train in a temporary folder of its own. Pass the same "
            "model_dir, on a file system every task mounts, to every task.", field="model_dir")
    if "://" in os.fspath(model_dir):
        raise ConfigError(
            f"model_dir {os.fspath(model_dir)!r} is a URL; on a TF_CONFIG cluster the tasks "
            "share model_dir through file system calls (the chief's status file). Mount the "
            "storage on every task (a ReadWriteMany volume, NFS, or Cloud Storage FUSE at "
            "/gcs/<bucket> on Vertex AI) and pass that path.", field="model_dir")


def make_strategy(name: str, cluster: Cluster) -> Any:
    """The strategy object for a strategy name on this task (None where it does not train)."""
    if cluster.task_type not in ("chief", "worker"):
        return None  # the ps and evaluator build no strategy: they never train under one
    if name == PARAMETER_SERVER:
        return tf.compat.v1.distribute.experimental.ParameterServerStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy()


def role_config(config: Any, cluster: Cluster) -> Any:
    """``config`` for this task: the ps and the evaluator keep no training strategy.

    A ``MultiWorkerMirroredStrategy`` built on the evaluator runs a health
    check that cannot be deep-copied, which ``tf.estimator.Estimator`` does
    with its config; neither role trains, so neither needs it.
    """
    if cluster.task_type in ("chief", "worker") or config.train_distribute is None:
        return config
    config = copy.copy(config)
    config._train_distribute = None  # noqa: SLF001 - RunConfig.replace deep-copies the strategy
    return config


# ------------------------------------------------------------------ the end-of-training signal


def read_status(model_dir: str) -> Optional[Dict[str, Any]]:
    """The chief's status of the cluster run (``headkit_cluster.json``), or None.

    ``{"run", "state": "training" | "done" | "failed", "start_step", "ready",
    "step", "max_steps", "evaluator", "reason", "time"}``: ``run`` is new at
    every chief start, ``start_step`` is the checkpoint it resumed from,
    ``ready`` says its session exists, ``step`` is the last step once done.

    Example:
        >>> read_status("runs/cluster")["state"]  # doctest: +SKIP
        'done'
    """
    path = os.path.join(model_dir, STATUS_FILE)
    try:
        with open(path) as handle:
            status = json.load(handle)
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def _write_status(model_dir: str, status: Mapping[str, Any]) -> None:
    os.makedirs(model_dir, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".headkit_cluster.", dir=model_dir)
    with os.fdopen(handle, "w") as out:
        json.dump(dict(status, time=time.time()), out, indent=2, sort_keys=True)
    os.replace(temp, os.path.join(model_dir, STATUS_FILE))


class _ChiefStatus:
    """The chief's status as another role follows it: a ``done`` left by an earlier run is old."""

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self.initial = read_status(model_dir)

    @property
    def initially_done(self) -> bool:
        return bool(self.initial) and self.initial.get("state") == "done"

    def current(self) -> Optional[Dict[str, Any]]:
        """The status if it belongs to this run (one that was training when this role started,
        or that started since), else None."""
        status = read_status(self.model_dir)
        if status is None:
            return None
        old = self.initial
        if old is not None and old.get("state") != "training" and status.get("run") == old.get(
                "run"):
            return None
        return status

    def ended(self) -> Optional[Dict[str, Any]]:
        status = self.current()
        return status if status and status.get("state") in ("done", "failed") else None


def _chief_failure(status: Mapping[str, Any], cluster: Cluster) -> ClusterError:
    address = cluster.jobs["chief"][0]
    return ClusterError(
        f"headkit: the chief at {address} failed, so this {cluster.task} stops: "
        f"{status.get('reason') or 'no reason recorded'}", task="chief:0", address=address)


# ------------------------------------------------------------------ peer death


def _reachable(address: str, timeout: float) -> Optional[str]:
    """None when a TCP connection to ``address`` opens, else why not."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def _seconds(environ_key: str, default: float) -> float:
    text = os.environ.get(environ_key)
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if not value > 0:
        raise _fail(environ_key, f"must be a number of seconds > 0 (got {text!r}).")
    return value


def _peers(cluster: Cluster, mode: str) -> List[Tuple[str, str]]:
    """The tasks this task cannot work without: ``(task, address)``."""
    chief = [("chief:0", cluster.jobs["chief"][0])]
    ps = [(f"ps:{i}", a) for i, a in enumerate(cluster.jobs.get("ps", ()))]
    workers = [(f"worker:{i}", a) for i, a in enumerate(cluster.jobs.get("worker", ()))
               if ("worker", i) != (cluster.task_type, cluster.task_index)]
    if cluster.task_type in ("ps", "evaluator"):
        return chief
    if mode == MULTI_WORKER_MIRRORED:  # collectives need the whole group
        return workers if cluster.task_type == "chief" else chief + workers
    return ps if cluster.task_type == "chief" else chief + ps


class PeerWatch:
    """A thread that connects to each peer every second; a lost peer ends this task.

    A peer never seen yet has ``HEADKIT_STARTUP_TIMEOUT_SECS`` to come up; one
    seen once may be unreachable for ``HEADKIT_PEER_TIMEOUT_SECS`` (a restarted
    peer comes back within it). A lost peer after a normal end (``normal_end()``)
    ends this task cleanly; any other sets :attr:`error`, which the training
    hooks and loops raise. If TensorFlow is blocked on the dead peer and
    does not return within a grace period, the process exits with status 1
    after writing the error to stderr (a worker blocked on a ps that left
    after a normal end exits with 0).
    """

    def __init__(self, peers: Sequence[Tuple[str, str]], role: str,
                 normal_end: Callable[[], bool], on_error: Callable[[ClusterError], None],
                 exit_after_normal_end: bool = False) -> None:
        self.peers = list(peers)
        self.role, self._normal_end, self._on_error = role, normal_end, on_error
        self._exit_after_normal_end = exit_after_normal_end
        self.timeout = _seconds(PEER_TIMEOUT_ENV, PEER_TIMEOUT_DEFAULT)
        self.startup_timeout = _seconds(STARTUP_TIMEOUT_ENV, STARTUP_TIMEOUT_DEFAULT)
        self.error: Optional[ClusterError] = None
        self.ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="headkit-peer-watch",
                                        daemon=True)

    def start(self) -> "PeerWatch":
        if self.peers:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> None:
        """Raise the peer loss this task must fail with, if any."""
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        started = time.monotonic()
        seen: Dict[str, float] = {}
        while not self._stop.wait(1.0):
            for task, address in self.peers:
                problem = _reachable(address, timeout=2.0)
                now = time.monotonic()
                if problem is None:
                    seen[task] = now
                    continue
                since = seen.get(task)
                limit = self.timeout if since is not None else self.startup_timeout
                if now - (since if since is not None else started) > limit:
                    self._lost(task, address, problem, limit, since is not None)
                    return

    def _lost(self, task: str, address: str, problem: str, limit: float, was_up: bool) -> None:
        if self._normal_end():
            self.ended = True
            _log.info("headkit: %s: training has ended and %s at %s has left.", self.role,
                      task, address)
            if self._exit_after_normal_end:  # a worker may be blocked on a ps that left
                self._exit_if_stuck(0, "")
            return
        what = "has been unreachable" if was_up else "never became reachable"
        self.error = ClusterError(
            f"headkit: the {task.replace(':', ' task ')} at {address} {what} for {limit:g}s "
            f"({problem}): it died, or the network to it is down. This {self.role} stops; "
            f"restart the cluster to resume from the newest checkpoint ({PEER_TIMEOUT_ENV} "
            "sets how long a peer may be away).", task=task, address=address)
        try:
            self._on_error(self.error)
        finally:
            self._exit_if_stuck(1, str(self.error))

    def _exit_if_stuck(self, code: int, message: str) -> None:
        if self._stop.wait(_EXIT_GRACE_SECS):
            return  # the main thread returned: it reports the error itself
        try:
            if message:
                sys.stderr.write(f"{message}\nheadkit: TensorFlow did not return within "
                                 f"{_EXIT_GRACE_SECS:g}s; exiting. Where each thread was:\n")
                faulthandler.dump_traceback(sys.stderr, all_threads=True)
            sys.stderr.flush()
            sys.stdout.flush()
        except (OSError, ValueError, AttributeError):  # a broken console: the reader is gone
            pass
        finally:
            os._exit(code)  # whatever the console did, the task must not outlive its error


# ------------------------------------------------------------------ roles


_servers: List[Any] = []  # a started server lives as long as the process


def _start_server(cluster: Cluster, config: Any) -> None:
    """Start this task's TensorFlow server (the chief's, a worker's or a ps's)."""
    threads = config.session_config
    server_config = tf.compat.v1.ConfigProto(
        inter_op_parallelism_threads=getattr(threads, "inter_op_parallelism_threads", 0),
        intra_op_parallelism_threads=getattr(threads, "intra_op_parallelism_threads", 0))
    _servers.append(tf.distribute.Server(cluster.training_spec(), job_name=cluster.task_type,
                                         task_index=cluster.task_index, config=server_config,
                                         start=True))


def _step_of(checkpoint: Optional[str]) -> int:
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else -1


class _Role:
    """This task's part in the run: what it trains or evaluates, and the signals it follows."""

    def __init__(self, estimator: Any, plan: Any, monitor: Any) -> None:
        self.estimator, self.plan, self.monitor = estimator, plan, monitor
        self.cluster: Cluster = estimator.cluster
        self.mode: str = estimator.cluster_mode
        self.is_chief = self.cluster.task_type == "chief"
        self.chief_evaluates = (self.is_chief and self.cluster.is_owner
                                and plan.eval_input_fn is not None)
        self.follower = None if self.is_chief else _ChiefStatus(estimator.model_dir)
        history = monitor.history
        self.last_evaluated = history[-1].step if history else -1
        #: The chief's training loop has ended: trainers leaving is then normal, and
        #: its last evaluation and export need no peer.
        self.training_over = False
        self._status: Dict[str, Any] = {}
        self._lock = threading.Lock()
        trainer = self.cluster.task_type == "worker"
        self.watch = PeerWatch(_peers(self.cluster, self.mode), self.cluster.task,
                               normal_end=self._normal_end, on_error=self._on_error,
                               exit_after_normal_end=trainer)

    # -- the chief's status file
    def write_status(self, state: str, **fields: Any) -> None:
        """The chief records the run's state; the first ``done`` or ``failed`` stays."""
        with self._lock:
            if self._status.get("state") in ("done", "failed"):
                return
            if state == "training":
                self._status = {"run": uuid.uuid4().hex, "step": None, "reason": "",
                                "max_steps": self.plan.max_steps,
                                "evaluator": self.cluster.evaluator}
            self._status.update(fields, state=state)
            _write_status(self.estimator.model_dir, self._status)

    def mark_ready(self) -> None:
        """The chief has created its session: the variables exist, workers may start."""
        with self._lock:
            if self._status.get("state") == "training" and not self._status.get("ready"):
                self._status["ready"] = True
                _write_status(self.estimator.model_dir, self._status)

    def wait_for_chief(self) -> bool:
        """On a worker with parameter servers: wait until the chief has initialized the
        variables (TensorFlow's own wait polls every 30 s); False when training has ended."""
        while True:
            self.watch.check()
            status = self.follower.current()
            if status is not None and status.get("state") in ("done", "failed"):
                if status["state"] == "failed":
                    raise _chief_failure(status, self.cluster)
                return False
            if status is not None and status.get("ready"):
                return True
            time.sleep(_POLL_SECS)

    def _on_error(self, error: ClusterError) -> None:
        if self.is_chief:
            self.write_status("failed", reason=str(error))

    def _normal_end(self) -> bool:
        if self.is_chief:
            return self.training_over
        status = self.follower.ended() if self.follower is not None else None
        return bool(status) and status.get("state") == "done"

    def finished(self) -> bool:
        """Nothing is left to train: early stopping fired, or the last checkpoint is at
        max_steps."""
        return (self.monitor.stop_step is not None
                or self.estimator.global_step() >= self.plan.max_steps)

    # -- evaluation by the owner
    def evaluate_latest(self) -> None:
        """Evaluate the newest checkpoint if it is new, and record it (the owner only)."""
        checkpoint = self.estimator.latest_checkpoint()
        if checkpoint is None or _step_of(checkpoint) <= self.last_evaluated:
            return
        try:
            metrics = self.estimator.evaluate(
                self.plan.eval_input_fn, steps=self.plan.eval_steps,
                checkpoint_path=checkpoint, name=self.plan.eval_name)
        except (tf.errors.OpError, ValueError):
            if os.path.exists(checkpoint + ".index"):
                raise
            _log.info("headkit: %s was removed while it was evaluated (the chief keeps only "
                      "the newest checkpoints); evaluating the next one.", checkpoint)
            return
        step = int(metrics[tf.compat.v1.GraphKeys.GLOBAL_STEP])
        try:
            self.monitor.record(step, {k: float(v) for k, v in metrics.items()
                                       if k != tf.compat.v1.GraphKeys.GLOBAL_STEP}, checkpoint)
        except Exception:
            if os.path.exists(checkpoint + ".index"):
                raise
            self.monitor.reload()  # the state file still holds the state before this record
            _log.info("headkit: %s was removed before its export; evaluating the next "
                      "checkpoint instead.", checkpoint)
            return
        self.last_evaluated = max(step, _step_of(checkpoint))

    # -- what a trainer polls between steps
    def poll(self, signal: "_SignalHook", run_context: Any) -> None:
        if self.is_chief:
            if not self.cluster.is_owner and self.plan.eval_input_fn is not None:
                self.monitor.reload()
                if self.monitor.stop_step is not None:
                    signal.want_stop(run_context)
            return
        status = self.follower.ended()
        if status is None:
            return
        if status["state"] == "failed":
            raise _chief_failure(status, self.cluster)
        if self.mode != MULTI_WORKER_MIRRORED:  # the group stops on the chief's flag
            run_context.request_stop()


class _SignalHook(tf.compat.v1.train.SessionRunHook):
    """On every trainer: raises a lost peer, follows the stop decision and the chief's end.

    Under ``MultiWorkerMirroredStrategy`` the chief's stop flag is all-reduced
    with every step, so the whole group stops after the same step.
    """

    def __init__(self, role: _Role) -> None:
        self._role, self._next_poll = role, 0.0
        self._flag = self._reduced = None
        self.stop_wanted = False

    def begin(self):
        signal = tf.compat.v1.get_collection(_STOP_COLLECTION)
        if signal:
            self._flag, self._reduced = signal

    def after_create_session(self, session, coord):
        if self._role.is_chief:
            self._role.mark_ready()

    def before_run(self, run_context):
        if self._reduced is None:
            return None
        feed = {self._flag: 1.0} if self.stop_wanted else None
        return tf.compat.v1.train.SessionRunArgs(self._reduced, feed_dict=feed)

    def after_run(self, run_context, run_values):
        role = self._role
        role.watch.check()
        if role.watch.ended or (self._reduced is not None and run_values.results > 0):
            run_context.request_stop()
            return
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + _POLL_SECS
            role.poll(self, run_context)

    def want_stop(self, run_context: Any) -> None:
        if self._reduced is not None:
            self.stop_wanted = True  # fed with the next step, all-reduced, obeyed by all
        else:
            run_context.request_stop()


def add_stop_signal() -> None:
    """Under ``MultiWorkerMirroredStrategy``: the stop flag and its all-reduced sum.

    Called in the TRAIN model_fn (in replica context). The chief's signal hook
    feeds 1.0 once training must stop; every task fetches the sum with each
    step and stops after the first step where it is positive.
    """
    flag = tf.compat.v1.placeholder_with_default(tf.constant(0.0), [], name="headkit_stop")
    context = tf.distribute.get_replica_context()
    reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, flag) if context else flag
    for tensor in (flag, reduced):
        tf.compat.v1.add_to_collection(_STOP_COLLECTION, tensor)


class _ChiefSaverHook(tf.compat.v1.train.CheckpointSaverHook):
    """The chief's only checkpoint saver, every ``eval_every`` steps and at the end;
    with no evaluator, each save is evaluated at once, and may stop training."""

    def __init__(self, role: _Role, signal: _SignalHook, save_steps: int) -> None:
        super().__init__(role.estimator.model_dir, save_steps=save_steps,
                         save_graph_def=role.estimator.config.checkpoint_save_graph_def)
        self._role, self._signal = role, signal

    def after_run(self, run_context, run_values):
        saved = self._timer.last_triggered_step()
        super().after_run(run_context, run_values)
        if self._role.chief_evaluates and self._timer.last_triggered_step() != saved:
            self._role.evaluate_latest()
            if self._role.monitor.stop_step is not None:
                self._signal.want_stop(run_context)

    def end(self, session):
        super().end(session)
        self._role.training_over = True  # the workers may leave during the last evaluation
        if self._role.chief_evaluates:
            self._role.evaluate_latest()


def _train_with_strategy(role: _Role, hooks: List[Any]) -> None:
    """Train under the strategy through TensorFlow's distribute coordinator, as tf.estimator does,
    but with this task's own role in the config and only the chief's saver writing model_dir."""
    from tensorflow.python.distribute import distribute_coordinator as coordinator
    from tensorflow.python.distribute import distribute_coordinator_context as context
    from tensorflow.python.distribute import estimator_training

    estimator, plan = role.estimator, role.plan

    def train(strategy: Any) -> None:
        local = copy.copy(estimator)
        config = local._config = copy.copy(estimator.config)
        config._train_distribute = strategy
        estimator_training._init_run_config_from_worker_context(
            config, context.get_current_worker_context())
        local._train_distribution = strategy
        config._distribute_coordinator_mode = None  # train() must not re-enter the coordinator
        # Only _ChiefSaverHook saves. Under MultiWorkerMirroredStrategy, TensorFlow would
        # otherwise give each worker a checkpoint and summary folder tmp_worker_<i> in model_dir.
        config._save_checkpoints_steps = config._save_checkpoints_secs = None
        if not role.is_chief:
            config._save_summary_steps, config._log_step_count_steps = 0, None
        local.train(plan.train_input_fn, max_steps=plan.max_steps, hooks=hooks)

    session_config = copy.deepcopy(estimator.config.session_config) or tf.compat.v1.ConfigProto(
        allow_soft_placement=True)
    coordinator.run_distribute_coordinator(
        train, estimator.config.train_distribute,
        mode=coordinator.CoordinatorMode.INDEPENDENT_WORKER, session_config=session_config)


def _run_trainer(role: _Role) -> None:
    from headkit.estimator.hooks import _ProgressHook

    estimator, plan = role.estimator, role.plan
    if role.is_chief:
        role.write_status("training", start_step=estimator.global_step())
    scratch = None
    try:
        signal = _SignalHook(role)
        hooks = list(plan.hooks) + [signal]
        if plan.progress is not None:
            hooks.append(_ProgressHook(plan.progress))
        if role.is_chief:
            hooks.append(_ChiefSaverHook(role, signal, plan.eval_every))
        elif role.mode == MULTI_WORKER_MIRRORED:
            # Saving reads the synchronized variables (batch norm's moving statistics)
            # through collectives: every worker saves with the chief, into its own scratch
            # folder outside model_dir (TensorFlow would use model_dir/tmp_worker_<i>).
            scratch = tempfile.mkdtemp(prefix="headkit-scratch-checkpoints-")
            hooks.append(tf.compat.v1.train.CheckpointSaverHook(
                scratch, save_steps=plan.eval_every, save_graph_def=False))
        waits = not role.is_chief and role.mode != MULTI_WORKER_MIRRORED
        if role.monitor.stop_step is None and (not waits or role.wait_for_chief()):
            if role.mode == BETWEEN_GRAPH:
                _start_server(role.cluster, estimator.config)
                estimator.train(plan.train_input_fn, max_steps=plan.max_steps, hooks=hooks)
            else:
                _train_with_strategy(role, hooks)
        role.training_over = True
        role.watch.check()
        if role.chief_evaluates:
            role.evaluate_latest()  # a checkpoint no evaluation saw (a restarted chief's)
    except BaseException as error:
        if role.is_chief:
            role.write_status("failed", reason=f"{type(error).__name__}: {error}"[:2000])
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if role.is_chief:
        step = estimator.global_step()
        if role.cluster.evaluator and plan.eval_input_fn is not None:
            _log.info("headkit: chief: training ended at step %d; the evaluator evaluates "
                      "the last checkpoint and exports.", step)
        role.write_status("done", step=step)


def _run_ps(role: _Role) -> None:
    follower = role.follower
    if follower.initially_done and role.finished():
        return  # a rerun of a finished run: the chief trains nothing
    _start_server(role.cluster, role.estimator.config)
    status = None
    while status is None:
        role.watch.check()
        status = follower.ended()
        if status is None:
            time.sleep(_POLL_SECS)
    if status["state"] == "failed":
        raise _chief_failure(status, role.cluster)
    deadline = time.monotonic() + _WORKERS_LEAVE_SECS  # workers stop within a poll or two
    workers = list(role.cluster.jobs.get("worker", ()))
    while workers and time.monotonic() < deadline:
        workers = [a for a in workers if _reachable(a, timeout=1.0) is None]
        time.sleep(_POLL_SECS)


def _run_evaluator(role: _Role) -> None:
    if role.plan.eval_input_fn is None:
        raise ConfigError(
            "this task is the evaluator, but train_and_evaluate got no eval_input_fn: it has "
            "nothing to evaluate. Pass eval_input_fn, or run the cluster without an evaluator "
            "(headkit launch without --evaluator; no evaluator in TF_CONFIG).",
            field="eval_input_fn")
    follower = role.follower
    late = follower.initially_done and role.finished()  # started after the run ended
    while True:
        role.watch.check()
        status = follower.initial if late else follower.ended()
        current = follower.current()
        if current is not None and current.get("evaluator") is False:
            raise ConfigError(
                "this task is the evaluator, but the chief runs without one (its TF_CONFIG "
                f"cluster lists no evaluator and {EVALUATOR_ENV} is not 1 there): both would "
                f"write the training state. Set {EVALUATOR_ENV}=1 on every task, or list the "
                "evaluator in TF_CONFIG.cluster.", field=EVALUATOR_ENV)
        before = role.last_evaluated
        role.evaluate_latest()
        if role.last_evaluated != before:
            continue  # a newer checkpoint may have come meanwhile
        if status is not None:
            if status["state"] == "failed":
                raise _chief_failure(status, role.cluster)
            if (status.get("step") or -1) <= role.last_evaluated or role.watch.ended:
                return
        time.sleep(_POLL_SECS)


def run_cluster(estimator: Any, plan: Any, monitor: Any) -> None:
    """Run this task's role of ``plan`` (``hk.train_and_evaluate`` on a cluster).

    Example:
        >>> run_cluster(estimator, plan, monitor)  # doctest: +SKIP
    """
    role = _Role(estimator, plan, monitor)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it?
    run = {"ps": _run_ps, "evaluator": _run_evaluator}.get(role.cluster.task_type, _run_trainer)
    _log.info("headkit: %s of a %s cluster %s; %s evaluates and exports.", role.cluster.task,
              role.mode, dict(role.cluster.jobs), role.cluster.owner)
    role.watch.start()
    try:
        run(role)
    finally:
        role.watch.stop()
