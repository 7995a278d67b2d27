"""``headkit launch`` with small Python tasks (no TensorFlow): TF_CONFIGs, output, exit codes,
stopping, restarts, and no process left behind."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from headkit.errors import ConfigError
from headkit.launch import Launcher, cluster_tasks, free_ports

pytestmark = pytest.mark.timeout(120)

#: A task's behaviour, by its role: the script reads TF_CONFIG and a JSON plan
#: {"<type>:<index>": [what the first run does, what the second does, ...]}.
TASK = textwrap.dedent("""
    import json, os, subprocess, sys, time
    config = json.loads(os.environ["TF_CONFIG"])
    task = "{type}:{index}".format(**config["task"])
    state = sys.argv[1]
    runs = os.path.join(state, task.replace(":", "-") + ".runs")
    with open(runs, "a") as handle:
        handle.write("x")
    run = len(open(runs).read()) - 1
    with open(os.path.join(state, "pids"), "a") as handle:
        handle.write(f"{os.getpid()}\\n")
    plan = json.loads(sys.argv[2]).get(task, ["exit 0"])
    action = plan[min(run, len(plan) - 1)]
    print(f"{task} run {run}: {action}; cluster {json.dumps(config['cluster'])}", flush=True)
    kind, _, value = action.partition(" ")
    if kind == "exit":
        sys.exit(int(value))
    if kind == "wait-for":  # until a file exists, then exit 0
        while not os.path.exists(os.path.join(state, value)):
            time.sleep(0.05)
        sys.exit(0)
    if kind in ("grandchild", "orphan"):  # leaves a child behind; then sleeps, or exits 0
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(os.path.join(state, "pids"), "a") as handle:
            handle.write(f"{child.pid}\\n")
        if kind == "orphan":
            sys.exit(0)
    if kind == "late":  # exits with the code given, 2 s after starting
        time.sleep(2)
        sys.exit(int(value))
    if kind == "chatter":  # many lines, then exit 0
        for line in range(int(value)):
            print(f"{task} line {line} " + "x" * 100)
        sys.exit(0)
    while True:  # "sleep": until stopped
        time.sleep(0.05)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture
def run(tmp_path):
    """Run a launch with a plan; return (exit code, prefixed output, launcher)."""
    script = tmp_path / "task.py"
    script.write_text(TASK)
    state = tmp_path / "state"
    state.mkdir()

    def launch(plan, **options):
        out = io.StringIO()
        grace = {"late_grace": options.pop("late_grace")} if "late_grace" in options else {}
        options.setdefault("env", dict(os.environ, PYTHONUNBUFFERED="1"))
        launcher = Launcher([sys.executable, str(script), str(state), json.dumps(plan)],
                            log_dir=str(tmp_path / "logs"), out=out, **options)
        code = launcher.run(**grace)
        return code, out.getvalue(), launcher

    launch.state, launch.logs = state, tmp_path / "logs"
    yield launch
    _assert_none_left((state / "pids").read_text().split() if (state / "pids").exists() else [])


def _assert_none_left(pids):
    """Give the processes 5 s to go; fail (after killing them) if any is still alive."""
    deadline = time.monotonic() + 5
    while any(_alive(int(pid)) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in pids if _alive(int(pid))]
    for pid in left:
        os.kill(int(pid), 9)
    assert not left, f"processes left behind: {left}"


def test_free_ports_are_distinct_and_bindable():
    import socket

    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as handle:
            handle.bind(("localhost", port))


def test_cluster_lists_every_task_once_and_starts_the_ps_first():
    cluster, tasks = cluster_tasks(workers=2, ps=1, evaluator=True)
    assert {job: len(addresses) for job, addresses in cluster.items()} == {
        "chief": 1, "worker": 2, "ps": 1, "evaluator": 1}
    addresses = [a for addresses in cluster.values() for a in addresses]
    assert len(set(addresses)) == len(addresses)
    assert tasks == [("ps", 0), ("chief", 0), ("worker", 0), ("worker", 1), ("evaluator", 0)]


def test_each_task_gets_its_tf_config_prefixed_output_and_a_log_file(run):
    code, out, launcher = run({}, workers=2, ps=1, evaluator=True)
    assert code == 0
    for label, task in (("chief", "chief:0"), ("worker:0", "worker:0"), ("worker:1", "worker:1"),
                        ("ps:0", "ps:0"), ("evaluator", "evaluator:0")):
        line = next(line for line in out.splitlines() if line.startswith(f"[{label}] "))
        assert line.startswith(f"[{label}] {task} run 0: exit 0; cluster ")
        assert json.loads(line.split("cluster ", 1)[1]) == launcher.cluster
        log = (run.logs / (label.replace(":", "-") + ".log")).read_text()
        assert log.startswith(f"{task} run 0")  # the log holds the task's lines, unprefixed
    assert launcher.exit_codes == dict.fromkeys(
        ["chief", "worker:0", "worker:1", "ps:0", "evaluator"], 0)


def test_the_exit_code_is_the_chiefs_and_the_others_are_stopped(run):
    started = time.monotonic()
    code, out, launcher = run({"chief:0": ["exit 3"], "worker:0": ["grandchild"],
                               "ps:0": ["sleep"]}, workers=1, ps=1)
    assert code == 3
    assert "chief failed; stopping the other tasks" in out
    assert launcher.exit_codes["worker:0"] == -15 and launcher.exit_codes["ps:0"] == -15
    assert time.monotonic() - started < 30
    # the fixture checks that the worker's own child went with it


def test_a_failed_worker_stops_the_group_and_the_chiefs_code_says_how_it_ended(run):
    code, out, _ = run({"chief:0": ["sleep"], "worker:0": ["exit 1"]}, workers=1)
    assert "worker:0 exited with exit code 1" in out
    assert code == 128 + 15  # the chief, stopped with SIGTERM


def test_tasks_that_outlive_the_chief_are_stopped_after_the_grace(run):
    code, out, launcher = run({"chief:0": ["exit 0"], "evaluator:0": ["sleep"]}, workers=0,
                              evaluator=True, late_grace=1.0)
    assert "evaluator did not end within 1s of the chief; stopping them" in out
    assert launcher.exit_codes["evaluator"] == -15
    # The evaluator owns the final export: a run it did not finish is not a success.
    assert code == 1
    assert "the chief succeeded, but evaluator (stopped) did not: exit code 1" in out


def test_an_evaluator_failing_after_the_chief_succeeded_makes_the_launch_fail(run):
    code, out, launcher = run({"chief:0": ["exit 0"], "evaluator:0": ["late 4"]}, workers=0,
                              evaluator=True)
    assert launcher.exit_codes == {"chief": 0, "evaluator": 4}
    assert code == 1
    assert "the chief succeeded, but evaluator (exit code 4) did not" in out


def test_a_failed_evaluator_restarts_alone_even_without_parameter_servers(run):
    # Under MultiWorkerMirroredStrategy the trainers restart as a group, but the
    # evaluator is in no collective: restarting it must not stop training.
    plan = {"chief:0": ["wait-for evaluator-0.runs-2"], "worker:0": ["wait-for chief-done"],
            "evaluator:0": ["exit 1", "exit 0"]}
    state = run.state

    def release():  # once the evaluator ran twice, let the trainers end
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = state / "evaluator-0.runs"
            if runs.exists() and len(runs.read_text()) >= 2:
                (state / "evaluator-0.runs-2").touch()
                (state / "chief-done").touch()
                return
            time.sleep(0.05)

    threading.Thread(target=release, daemon=True).start()
    code, out, _ = run(plan, workers=1, evaluator=True, restarts=1)
    assert code == 0, out
    assert "restarting evaluator with the same TF_CONFIG (0 restart(s) left)" in out
    assert "restarting the whole group" not in out
    assert (state / "chief-0.runs").read_text() == "x"
    assert (state / "worker-0.runs").read_text() == "x"


def test_what_a_task_leaves_in_its_process_group_goes_when_it_exits(run):
    code, out, _ = run({"chief:0": ["orphan"]}, workers=0)
    assert code == 0, out
    # the fixture checks that the chief's child did not outlive the launch


class _ClosedConsole(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_console_neither_hangs_the_tasks_nor_loses_their_logs(tmp_path):
    # `headkit launch ... | head`: once the console is gone, each task's output still
    # drains into its log, so no task blocks on a full pipe (~1 MB here, 16x a pipe).
    script = tmp_path / "task.py"
    script.write_text(TASK)
    state = tmp_path / "state"
    state.mkdir()
    launcher = Launcher([sys.executable, str(script), str(state),
                         json.dumps({"chief:0": ["chatter 10000"]})], workers=0,
                        log_dir=str(tmp_path / "logs"), out=_ClosedConsole(),
                        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert launcher.run() == 0
    log = (tmp_path / "logs" / "chief.log").read_text().splitlines()
    assert log[-1].startswith("chief:0 line 9999 ")


def test_restarts_restart_a_failed_task_alone_when_there_are_parameter_servers(run):
    # Run 0 of the worker fails; run 1 waits for a file the test creates once it sees it.
    state = run.state
    plan = {"chief:0": ["wait-for chief-go"], "worker:0": ["exit 1", "exit 0"],
            "ps:0": ["wait-for ps-go"]}

    def release():  # once the worker has run twice, let the chief and the ps end
        deadline = time.monotonic() + 60
        runs = state / "worker-0.runs"
        while time.monotonic() < deadline:
            if runs.exists() and len(runs.read_text()) >= 2:
                time.sleep(0.5)
                (state / "chief-go").touch()
                (state / "ps-go").touch()
                return
            time.sleep(0.05)

    threading.Thread(target=release, daemon=True).start()
    code, out, launcher = run(plan, workers=1, ps=1, restarts=1)
    assert code == 0, out
    assert "restarting worker:0 with the same TF_CONFIG (0 restart(s) left)" in out
    assert (state / "chief-0.runs").read_text() == "x"  # the chief was not restarted
    worker_lines = [line for line in out.splitlines() if line.startswith("[worker:0] ")]
    configs = {line.split("cluster ", 1)[1] for line in worker_lines}
    assert len(worker_lines) == 2 and len(configs) == 1


def test_restarts_restart_the_whole_group_when_there_is_no_parameter_server(run):
    # Without a ps (MultiWorkerMirroredStrategy) the group restarts once every task stopped.
    plan = {"chief:0": ["wait-for worker-0.runs", "exit 0"], "worker:0": ["exit 1", "exit 0"]}
    code, out, _ = run(plan, workers=1, restarts=1,
                       env=dict(os.environ, HEADKIT_PEER_TIMEOUT_SECS="1"))
    assert code == 0, out
    assert "restarting the whole group (collectives need the whole group)" in out
    assert (run.state / "chief-0.runs").read_text() == "xx"
    assert (run.state / "worker-0.runs").read_text() == "xx"


def test_a_chief_that_failed_with_an_error_restarts_with_its_group(run):
    # A chief that raises writes "failed", and every other role stops on it (a killed
    # chief writes nothing and restarts alone): the launch restarts the whole group.
    plan = {"chief:0": ["exit 1", "exit 0"], "worker:0": ["late 1", "exit 0"],
            "ps:0": ["late 1", "exit 0"]}
    code, out, _ = run(plan, workers=1, ps=1, restarts=1,
                       env=dict(os.environ, HEADKIT_PEER_TIMEOUT_SECS="1"))
    assert code == 0, out
    assert ("restarting the whole group (the chief failed with an error, which stops every "
            "role)") in out
    for task in ("chief-0", "worker-0", "ps-0"):
        assert (run.state / f"{task}.runs").read_text() == "xx"


def test_no_restarts_left_stops_everything(run):
    code, out, launcher = run({"chief:0": ["sleep"], "worker:0": ["exit 1"], "ps:0": ["sleep"]},
                              workers=1, ps=1, restarts=0)
    assert code == 128 + 15
    assert "worker:0 failed; stopping the other tasks" in out


@pytest.mark.parametrize("options, field", [
    ({"command": []}, "command"),
    ({"command": ["python"], "workers": -1}, "workers"),
    ({"command": ["python"], "restarts": 1.5}, "restarts"),
])
def test_bad_launch_options_name_the_field(options, field):
    with pytest.raises(ConfigError, match=field) as raised:
        Launcher(**options)
    assert raised.value.field == field


def test_the_console_script_without_a_command_exits_2_with_the_fix():
    done = subprocess.run([sys.executable, "-m", "headkit.cli", "launch", "--workers", "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "after --, e.g. headkit launch --workers 2 -- python train.py" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_hangup_stops_every_task_and_leaves_no_process(tmp_path):
    # An ssh session that drops sends SIGHUP: the launch stops its tasks as on Ctrl-C.
    script = tmp_path / "task.py"
    script.write_text(TASK)
    state = tmp_path / "state"
    state.mkdir()
    plan = json.dumps({"chief:0": ["grandchild"], "worker:0": ["sleep"]})
    launch = subprocess.Popen(
        [sys.executable, "-m", "headkit.cli", "launch", "--workers", "1", "--log-dir",
         str(tmp_path / "logs"), "--", sys.executable, str(script), str(state), plan],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the chief, its child and the worker have started
        pids = (state / "pids").read_text().split() if (state / "pids").exists() else []
        if len(pids) == 3:
            break
        time.sleep(0.05)
    launch.send_signal(signal.SIGHUP)
    out, _ = launch.communicate(timeout=60)
    assert launch.returncode == 130, out
    assert "interrupted; stopping every task" in out
    assert len(pids) == 3
    _assert_none_left(pids)
