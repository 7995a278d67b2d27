"""A local cluster for the tests: ``headkit launch`` running examples/distributed/train.py.

The launcher runs in its own process group; its tasks each run in theirs and
die with it. :meth:`LaunchedCluster.close` kills the launcher's group and every
task it reported, so no process outlives a test.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "examples", "distributed", "train.py")
#: Seconds a peer may be away in the tests: a restarted chief must be back by then.
PEER_TIMEOUT = 30
#: The peer timeout of a test where no task comes back: a lost peer is found sooner.
SHORT_PEER_TIMEOUT = 15
#: Every cluster run, from its (re)start to the last task's exit, takes at most this.
CLUSTER_BOUND = 120.0
_EVENT = re.compile(
    r"^headkit launch: \[([\d.]+)s\] (\S+) (started \(pid (\d+)\).*|exited with (.*))$")


def environment(peer_timeout: float = PEER_TIMEOUT) -> Dict[str, str]:
    """One TensorFlow thread per task, gRPC's poll engine, the tests' peer timeout."""
    return dict(os.environ, PYTHONPATH=ROOT, TF_NUM_INTEROP_THREADS="1",
                TF_NUM_INTRAOP_THREADS="1", GRPC_POLL_STRATEGY="poll",
                TF_CPP_MIN_LOG_LEVEL="3", HEADKIT_PEER_TIMEOUT_SECS=f"{peer_timeout:g}",
                PYTHONUNBUFFERED="1")


class LaunchedCluster:
    """``headkit launch`` of the example script; its output lines, task PIDs and exits."""

    def __init__(self, directory: str, strategy: str, workers: int = 1, ps: int = 0,
                 evaluator: bool = True, restarts: int = 0, args: Sequence[str] = (),
                 peer_timeout: float = PEER_TIMEOUT) -> None:
        self.directory, self.peer_timeout = directory, peer_timeout
        self.model_dir = os.path.join(directory, "model")
        self.rows_dir = os.path.join(directory, "rows")
        self.log_dir = os.path.join(directory, "logs")
        command = [sys.executable, "-m", "headkit.cli", "launch", "--workers", str(workers),
                   "--ps", str(ps), "--restarts", str(restarts), "--log-dir", self.log_dir,
                   *(["--evaluator"] if evaluator else []), "--",
                   sys.executable, TRAIN, "--model-dir", self.model_dir, "--strategy", strategy,
                   "--log-rows", self.rows_dir, *args]
        self.started = time.monotonic()
        self.popen = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=environment(peer_timeout), cwd=ROOT,
                                      start_new_session=True)
        self.lines: List[str] = []
        self.cluster: Dict[str, List[str]] = {}
        self.pids: Dict[str, int] = {}
        self.all_pids: List[int] = []
        self.events: List[tuple] = []  # (seconds since launch, task, "started" | exit text)
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            line = line.rstrip("\n")
            match = _EVENT.match(line)
            with self._lock:
                self.lines.append(line)
                if line.startswith("headkit launch: [") and "] cluster {" in line:
                    self.cluster = json.loads(line.split("] cluster ", 1)[1].split("; logs", 1)[0])
                if match:
                    seconds, task = float(match.group(1)), match.group(2)
                    if match.group(4):
                        self.pids[task] = int(match.group(4))
                        self.all_pids.append(int(match.group(4)))
                        self.events.append((seconds, task, "started"))
                    else:
                        self.events.append((seconds, task, match.group(5)))
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, accept: Callable[[str], bool], timeout: float, what: str) -> str:
        """The first new output line ``accept`` takes; fails with the output at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {what} within {timeout:g}s:\n{self.output()}") from None
            if line is None:
                raise AssertionError(f"the launcher ended before {what}:\n{self.output()}")
            if accept(line):
                return line

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.popen.poll() is not None:
                raise AssertionError(f"no {what} within {timeout:g}s:\n{self.output()}")
            time.sleep(0.2)

    def address(self, task: str) -> str:
        job, _, index = task.partition(":")
        return self.cluster[job][int(index or 0)]

    def kill(self, task: str, sig: int = signal.SIGKILL) -> float:
        """Send ``sig`` to a task's process group; return the launcher's clock then."""
        os.killpg(self.pids[task], sig)
        return time.monotonic() - self.started

    def finish(self, timeout: float) -> int:
        """The launcher's exit code (the chief's); fails if it runs past ``timeout``."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the cluster ran past {timeout:g}s:\n{self.output()}") from None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the reader has seen every line
            try:
                if self._queue.get(timeout=0.1) is None:
                    break
            except queue.Empty:
                continue
        return code

    def exits(self) -> Dict[str, List[str]]:
        """Each task's exits in order: ``exit code 0``, ``signal SIGKILL``, ..."""
        found: Dict[str, List[str]] = {}
        for _, task, what in self.events:
            if what != "started":
                found.setdefault(task, []).append(what)
        return found

    def event_time(self, task: str, what: str, nth: int = 0) -> float:
        times = [t for t, name, kind in self.events if name == task and kind.startswith(what)]
        return times[nth]

    def task_output(self, task: str) -> str:
        prefix = f"[{task}] "
        return "\n".join(line[len(prefix):] for line in self.lines if line.startswith(prefix))

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines[-150:])

    def state(self) -> dict:
        with open(os.path.join(self.model_dir, "headkit_training.json")) as handle:
            return json.load(handle)

    def status(self) -> dict:
        with open(os.path.join(self.model_dir, "headkit_cluster.json")) as handle:
            return json.load(handle)

    def rows(self, task: str, suffix: str = "rows") -> List[List[int]]:
        """The batches of row ids a task read, in order (``task`` as ``chief-0``)."""
        path = os.path.join(self.rows_dir, f"{task}.{suffix}")
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            return [[int(v) for v in line.strip().strip("[]").split()] for line in handle
                    if line.strip()]

    def close(self) -> None:
        """Kill the launcher's process group and every task it started; nothing survives."""
        for pid in [self.popen.pid] + self.all_pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        deadline = time.monotonic() + 10
        for pid in self.all_pids:  # tasks are not our children: wait until they are gone
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    try:  # a zombie is gone for our purpose
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
