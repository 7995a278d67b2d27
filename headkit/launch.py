"""``headkit launch``: a local ``TF_CONFIG`` cluster for development, the twin of a Kubeflow TFJob.

Every task runs the same command with its own ``TF_CONFIG``, on free localhost
ports. Output lines are prefixed by role (``[worker:0] ...``) and written to
one log file per role; the exit code is the chief's, or 1 when the chief
succeeded but another task failed or had to be stopped. When a task fails,
the others are stopped, unless ``restarts`` allow starting it again: the
evaluator restarts alone; with parameter servers so does a worker, or a
chief that was killed; without them (``MultiWorkerMirroredStrategy``, whose
collectives need the whole group), when a ps fails, or when the chief ended
with an error (which stops every role), the group restarts once the other
tasks have stopped. No process is left behind: each task runs in its own
process group, killed as a whole when the task ends or is stopped, and dies
with the launcher; SIGTERM and SIGHUP stop every task as Ctrl-C does.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Dict, List, Optional, Sequence, Tuple

from headkit.errors import ConfigError

__all__ = ["Launcher", "free_ports", "cluster_tasks"]

#: Seconds a task may take to stop after SIGTERM before SIGKILL.
STOP_GRACE_SECS = 10.0


def free_ports(count: int, host: str = "localhost") -> List[int]:
    """``count`` ports the system reports free, by binding port 0 (held together, then closed).

    Example:
        >>> len(set(free_ports(3)))
        3
    """
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            handle.bind((host, 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def cluster_tasks(workers: int, ps: int, evaluator: bool, host: str = "localhost"
                  ) -> Tuple[Dict[str, List[str]], List[Tuple[str, int]]]:
    """The ``TF_CONFIG`` cluster on free ports, and the tasks in start order (ps first).

    The evaluator is listed in the cluster, so that every task knows one runs.

    Example:
        >>> cluster, tasks = cluster_tasks(workers=2, ps=1, evaluator=True)
        >>> sorted(cluster), tasks[0]
        (['chief', 'evaluator', 'ps', 'worker'], ('ps', 0))
    """
    counts = {"chief": 1, "worker": workers, "ps": ps, "evaluator": int(evaluator)}
    ports = iter(free_ports(sum(counts.values()), host))
    cluster = {job: [f"{host}:{next(ports)}" for _ in range(n)] for job, n in counts.items()
               if n}
    tasks = [(job, i) for job in ("ps", "chief", "worker", "evaluator")
             for i in range(counts[job])]
    return cluster, tasks


def _label(task: Tuple[str, int]) -> str:
    return "evaluator" if task[0] == "evaluator" else ("chief" if task[0] == "chief"
                                                       else f"{task[0]}:{task[1]}")


def _die_with_parent(parent: int) -> None:  # pragma: no cover - in the child before exec
    os.setsid()  # its own process group, killed as a whole
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the launcher's finally clause still stops it
    if os.getppid() != parent:  # the launcher died before the line above: no signal comes
        os._exit(1)


def _write(out: IO[str], text: str) -> None:
    """Write to the console; a closed one (``headkit launch ... | head``) is ignored, so
    the tasks' pipes are still drained into their logs and no task blocks on output."""
    try:
        out.write(text)
        out.flush()
    except (OSError, ValueError):
        pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class _Task:
    """One running task: its process, its reader thread and its log."""

    def __init__(self, task: Tuple[str, int], command: Sequence[str], env: Dict[str, str],
                 log: IO[str], out: IO[str], lock: threading.Lock) -> None:
        self.task, self.label = task, _label(task)
        self.process = subprocess.Popen(
            list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()))
        self._log, self._out, self._lock = log, out, lock
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:  # drained to the end, whatever the console does
            with self._lock:
                self._log.write(line)
                self._log.flush()
                _write(self._out, f"[{self.label}] {line}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the task's whole process group, its children included, even once the
        task's own process has exited."""
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def finish(self) -> None:
        self._reader.join(timeout=5)


class Launcher:
    """Run ``command`` as every task of a local cluster; :meth:`run` returns the chief's exit code.

    Args:
        command: the program and its arguments (``["python", "train.py", ...]``).
        workers, ps: how many workers (besides the chief) and parameter servers.
        evaluator: whether to run an evaluator.
        restarts: how many times in all a failed task (or the group) is started again.
        log_dir: where ``chief.log``, ``worker-0.log``, ... go (created).
        env: the environment of every task (default this process's), plus its TF_CONFIG.
        out: where prefixed lines go (default stdout).

    Example:
        >>> code = Launcher(["python", "train.py"], workers=1, ps=1,
        ...                 evaluator=True).run()  # doctest: +SKIP
    """

    def __init__(self, command: Sequence[str], workers: int = 1, ps: int = 0,
                 evaluator: bool = False, restarts: int = 0, log_dir: str = "headkit-logs",
                 env: Optional[Dict[str, str]] = None, out: Optional[IO[str]] = None,
                 host: str = "localhost") -> None:
        if not command:
            raise ConfigError("launch: no command given. Put the command every task runs "
                              "after --, e.g. headkit launch --workers 2 -- python train.py",
                              field="command")
        for name, value in (("workers", workers), ("ps", ps), ("restarts", restarts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"launch: --{name} must be an integer >= 0 (got {value!r}); "
                                  f"give the number of {name}, e.g. --{name} 1.", field=name)
        self.command, self.restarts_left = list(command), restarts
        self.cluster, self.tasks = cluster_tasks(workers, ps, evaluator, host)
        self.log_dir, self.out = log_dir, out or sys.stdout
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env.setdefault("GRPC_POLL_STRATEGY", "poll")
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._running: Dict[Tuple[str, int], _Task] = {}
        self._logs: Dict[Tuple[str, int], IO[str]] = {}
        self.exit_codes: Dict[str, int] = {}

    def say(self, message: str) -> None:
        with self._lock:
            elapsed = time.monotonic() - self._started
            _write(self.out, f"headkit launch: [{elapsed:.1f}s] {message}\n")

    def _start(self, task: Tuple[str, int]) -> None:
        env = dict(self.env, TF_CONFIG=json.dumps(
            {"cluster": self.cluster, "task": {"type": task[0], "index": task[1]}}))
        label = _label(task)
        if task in self._running:  # never two processes of one task (one address, one log)
            old = self._running.pop(task)
            old.stop(signal.SIGKILL)
            old.process.wait()
            old.finish()
        if task not in self._logs:
            name = label.replace(":", "-") + ".log"
            self._logs[task] = open(os.path.join(self.log_dir, name), "a")
        running = _Task(task, self.command, env, self._logs[task], self.out, self._lock)
        self._running[task] = running
        address = self.cluster[task[0]][task[1]]
        self.say(f"{label} started (pid {running.process.pid}) at {address}")

    def _stop_all(self, wait_first: float = 0.0) -> None:
        """Stop every running task: let them end by themselves for ``wait_first`` seconds,
        then SIGTERM, then SIGKILL."""
        deadline = time.monotonic() + wait_first
        while time.monotonic() < deadline and self._alive():
            time.sleep(0.2)
        for sig, grace in ((signal.SIGTERM, STOP_GRACE_SECS), (signal.SIGKILL, 5.0)):
            for task in self._running.values():
                task.stop(sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self._alive():
                time.sleep(0.1)
        self._reap()

    def _alive(self) -> List[_Task]:
        return [t for t in self._running.values() if t.process.poll() is None]

    def _reap(self) -> List[Tuple[_Task, int]]:
        """The tasks that have exited since the last call, with their codes."""
        done = []
        for key, task in list(self._running.items()):
            code = task.process.poll()
            if code is not None:
                task.stop(signal.SIGKILL)  # whatever the task left behind in its group
                task.finish()
                del self._running[key]
                self.exit_codes[task.label] = code
                self.say(f"{task.label} exited with {_describe(code)}")
                done.append((task, code))
        return done

    def _restart(self, failed: _Task, code: int) -> bool:
        """Start ``failed`` again, alone or with its whole group; True for the group."""
        self.restarts_left -= 1
        # With parameter servers a trainer holds no state another needs; an evaluator
        # is in no collective: each restarts alone. Otherwise the group restarts, and so
        # it does when the chief ended with an error: it then tells every role to stop.
        chief_error = failed.task[0] == "chief" and code > 0
        if failed.task[0] == "evaluator" or (
                "ps" in self.cluster and failed.task[0] != "ps" and not chief_error):
            self.say(f"restarting {failed.label} with the same TF_CONFIG "
                     f"({self.restarts_left} restart(s) left)")
            self._start(failed.task)
            return False
        why = ("a ps holds variables no other task has" if failed.task[0] == "ps" else
               "the chief failed with an error, which stops every role" if chief_error else
               "collectives need the whole group")
        self.say(f"restarting the whole group ({why}) once the other tasks have stopped "
                 f"({self.restarts_left} restart(s) left)")
        self._stop_all(wait_first=float(self.env.get("HEADKIT_PEER_TIMEOUT_SECS", 60)) + 30)
        for task in self.tasks:
            self._start(task)
        return True

    def run(self, late_grace: float = 120.0) -> int:
        """Start every task; return the chief's exit code (128 + N when a signal N ended it).

        After the chief succeeds, every other task should end by itself; one
        still running ``late_grace`` seconds later is stopped, and named. When
        the chief succeeded but another task failed or had to be stopped (the
        evaluator's final export may be missing), the code is 1, not 0.
        """
        os.makedirs(self.log_dir, exist_ok=True)
        self.say(f"cluster {json.dumps(self.cluster)}; logs in {self.log_dir}")
        chief_code: Optional[int] = None
        chief_done = 0.0
        unfinished: List[str] = []  # tasks that failed or were stopped after the chief's 0
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):  # as Ctrl-C: stop every task
                previous[sig] = signal.signal(sig, _interrupt)
        try:
            for task in self.tasks:
                self._start(task)
            while self._running:
                time.sleep(0.2)
                for task, code in self._reap():
                    if task.task == ("chief", 0):
                        chief_code, chief_done = code, time.monotonic()
                    if code == 0:
                        continue
                    if self.restarts_left > 0:
                        if task.task == ("chief", 0):
                            chief_code = None
                        if self._restart(task, code):
                            chief_code = None
                            break  # the rest of this poll's exits were the old group's
                        continue
                    if chief_code == 0:
                        unfinished.append(f"{task.label} ({_describe(code)})")
                    self.say(f"{task.label} failed; stopping the other tasks")
                    self._stop_all()
                late = [t.label for t in self._alive()]
                if chief_code == 0 and late and time.monotonic() - chief_done > late_grace:
                    self.say(f"{', '.join(late)} did not end within {late_grace:g}s of the "
                             "chief; stopping them")
                    unfinished.extend(f"{label} (stopped)" for label in late)
                    self._stop_all()
        except KeyboardInterrupt:
            self.say("interrupted; stopping every task")
            if chief_code is None:
                chief_code = -signal.SIGINT
        finally:
            self._stop_all()
            for log in self._logs.values():
                log.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        code = self.exit_codes.get("chief", 1) if chief_code is None else chief_code
        if code == 0 and unfinished:
            self.say(f"the chief succeeded, but {', '.join(unfinished)} did not: exit code 1 "
                     "(see their logs; the evaluator's exports may be missing)")
            return 1
        return 128 - code if code < 0 else code


def _interrupt(signum, frame):  # SIGTERM and SIGHUP stop the tasks as Ctrl-C does
    raise KeyboardInterrupt
