"""Aggregate training examples/s of a local cluster with 1 and with 2 trainers, wall and CPU.

Each run is ``headkit launch`` of examples/distributed/train.py training only
(``--no-evaluation``: no evaluator, no early stop, a checkpoint every tenth of
the run) with one TensorFlow thread per task:

- ``ps``: between-graph training with one parameter server; 1 trainer is
  the chief alone, 2 trainers are the chief and one worker;
- ``mwms``: MultiWorkerMirroredStrategy (no ps); 1 trainer is the chief
  alone, 2 are the chief and one worker, each step all-reducing the gradients.

What is measured, per run:

- ``steady examples/s``: the global steps between the first and the last kept
  checkpoint, times the examples per global step, over the seconds between
  their files (start-up and the final export are outside the window);
- ``CPU s``: user + system seconds of every task of the cluster, start to
  end (``resource.getrusage`` of the launcher's reaped children);
- ``examples per CPU s``: every example trained, over that CPU time: the
  figure that does not flatter a 2-core machine where two trainers and a ps
  compete for the same cores;
- ``wall s``: the whole run, launch to the last exit; and each task's exit
  delay after the chief's last step (the file time of the last checkpoint).

Run: ``python bench/distributed.py`` (about 5 minutes on 2 idle cores);
``--out bench/results/distributed.json`` keeps the numbers. Results and their
reading: docs/distributed.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "examples", "distributed", "train.py")
_EXIT = re.compile(r"^headkit launch: \[([\d.]+)s\] (\S+) exited with (.*)$")


def _checkpoints(model_dir: str):
    """(step, mtime) of each kept checkpoint, by step."""
    found = []
    for index in glob.glob(os.path.join(model_dir, "model.ckpt-*.index")):
        step = int(os.path.basename(index)[len("model.ckpt-"):-len(".index")])
        found.append((step, os.path.getmtime(index)))
    return sorted(found)


def run_once(mode: str, trainers: int, steps: int, batch_size: int, work: str) -> dict:
    """One cluster run; its throughput, CPU time, wall time and exit delays."""
    model_dir = os.path.join(work, f"{mode}-{trainers}")
    command = [sys.executable, "-m", "headkit.cli", "launch", "--workers", str(trainers - 1),
               "--ps", "1" if mode == "ps" else "0", "--log-dir", model_dir + "-logs", "--",
               sys.executable, TRAIN, "--model-dir", model_dir,
               "--strategy", "none" if mode == "ps" else "multi_worker_mirrored",
               "--max-steps", str(steps), "--eval-every", str(steps // 10),
               "--no-evaluation", "--rows", "8192", "--batch-size", str(batch_size)]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_NUM_INTEROP_THREADS="1",
               TF_NUM_INTRAOP_THREADS="1", GRPC_POLL_STRATEGY="poll", TF_CPP_MIN_LOG_LEVEL="3")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    launcher = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    lines, exits = [], {}
    for line in launcher.stdout:  # each task's exit, stamped with the wall clock
        lines.append(line)
        match = _EXIT.match(line.rstrip("\n"))
        if match:
            exits[match.group(2)] = time.time()
    code = launcher.wait(timeout=900)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"{mode} with {trainers} trainer(s) failed:\n{''.join(lines[-60:])}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    kept = _checkpoints(model_dir)
    (first_step, first_time), (last_step, last_time) = kept[0], kept[-1]
    # A global step is one batch per trainer under MWMS (one synchronous step of the
    # group), and one batch of one trainer with parameter servers.
    per_step = batch_size * (trainers if mode == "mwms" else 1)
    return {
        "mode": mode, "trainers": trainers, "global_steps": last_step,
        "steady_examples_per_s": (last_step - first_step) * per_step / (last_time - first_time),
        "examples": last_step * per_step, "cpu_s": cpu,
        "examples_per_cpu_s": last_step * per_step / cpu, "wall_s": wall,
        # The last checkpoint is written at the chief's last step.
        "exit_after_last_step_s": {task: round(t - last_time, 1) for task, t in exits.items()},
    }


def table(results) -> str:
    lines = ["| mode | trainers | steady examples/s (wall) | CPU s | examples per CPU s "
             "| wall s | exit after the last step (s) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        exits = ", ".join(f"{t} {s:.1f}" for t, s in sorted(r["exit_after_last_step_s"].items()))
        lines.append(f"| {r['mode']} | {r['trainers']} | {r['steady_examples_per_s']:.0f} | "
                     f"{r['cpu_s']:.0f} | {r['examples_per_cpu_s']:.0f} | {r['wall_s']:.0f} | "
                     f"{exits or '-'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="ps,mwms")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="headkit-bench-distributed-") as work:
        for mode in args.modes.split(","):
            for trainers in (1, 2):
                results.append(run_once(mode, trainers, args.steps, args.batch_size, work))
                print(json.dumps(results[-1]), flush=True)
    print(f"{os.cpu_count()} CPUs; one TensorFlow thread per task\n")
    print(table(results))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump({"cpus": os.cpu_count(), "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
