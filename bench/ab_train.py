"""Training steps of handwritten and headkit, interleaved in one process (a profile aid).

On a shared machine two processes never see the same load. Here both TRAIN
graphs live in one process, each in its own session, and run in alternating
blocks of steps, so load from other programs falls on both alike. Plain
``session.run`` of the train_op and loss: no Estimator hooks, which isolates
the cost of the graph that headkit builds.

Two references bound what several steps per ``session.run`` can gain here:
``handwritten_loop32``, the hand-written step in a plain ``tf.while_loop``
of 32 steps (no checks, no saved input position), and
``handwritten_loop32_xla``, the same with each step XLA-compiled.

    python bench/ab_train.py                 # median microseconds per step, and the ratios
    python bench/ab_train.py --blocks 80 --json ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.environ.get("HEADKIT_SRC") or os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
import tensorflow as tf  # noqa: E402
import variants  # noqa: E402
import workload as wl  # noqa: E402


def train_session(model_fn: Any, paths: Dict[str, str],
                  looped: bool = False) -> Tuple[Any, List[Any], int]:
    """A session over a fresh TRAIN graph of ``model_fn``; returns it, fetches, op count.

    ``looped``: the model_fn reads its batches itself, in a loop (``steps_per_run``).
    """
    from headkit.estimator.resume import LoopInput

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(wl.SEED)
        tf.compat.v1.train.get_or_create_global_step()
        iterator = tf.compat.v1.data.make_initializable_iterator(wl.dataset(paths, True))
        if looped:
            features, labels = LoopInput(iterator.get_next), None
        else:
            features, labels = iterator.get_next()
        spec = model_fn(features, labels, tf.estimator.ModeKeys.TRAIN, None)
        init = [tf.compat.v1.global_variables_initializer(),
                tf.compat.v1.local_variables_initializer(), iterator.initializer]
    session = tf.compat.v1.Session(graph=graph, config=wl.run_config(None).session_config)
    session.run(init)
    return session, [spec.train_op, spec.loss], len(graph.get_operations())


#: Steps per session.run of the looped variant.
LOOP = 32


def compare(blocks: int, steps_per_block: int, warmup: int, paths: Dict[str, str]) -> Dict:
    from headkit.estimator.model_fn import make_model_fn
    from headkit.estimator.optimizers import resolve_optimizer

    optimizer = resolve_optimizer("adam", wl.LEARNING_RATE)
    sessions = {
        "handwritten": train_session(variants.handwritten_model_fn, paths),
        "headkit": train_session(make_model_fn(wl.build_body, variants.headkit_heads(),
                                               optimizer), paths),
        f"headkit_spr{LOOP}": train_session(make_model_fn(
            wl.build_body, variants.headkit_heads(), optimizer, steps_per_run=LOOP), paths,
            looped=True),
        f"headkit_spr{LOOP}_xla": train_session(make_model_fn(
            wl.build_body, variants.headkit_heads(), optimizer, steps_per_run=LOOP,
            jit_compile=True), paths, looped=True),
        "headkit_xla": train_session(make_model_fn(
            wl.build_body, variants.headkit_heads(), optimizer, jit_compile=True), paths),
        # The references: how much a loop of LOOP steps can gain on this machine.
        f"handwritten_loop{LOOP}": train_session(
            variants.handwritten_loop_model_fn(LOOP), paths, looped=True),
        f"handwritten_loop{LOOP}_xla": train_session(
            variants.handwritten_loop_model_fn(LOOP, jit_compile=True), paths, looped=True),
    }
    #: Steps per session.run (a looped graph runs LOOP) and session.run calls per block.
    per_run = {name: LOOP if f"loop{LOOP}" in name or f"spr{LOOP}" in name else 1
               for name in sessions}
    runs = {name: steps_per_block // per_run[name] for name in sessions}
    for name, (session, fetches, _) in sessions.items():
        for _ in range(max(1, warmup * runs[name] // steps_per_block)):
            session.run(fetches)
    times: Dict[str, List[float]] = {name: [] for name in sessions}
    names = list(sessions)
    for block in range(blocks):
        for name in names if block % 2 == 0 else names[::-1]:
            session, fetches, _ = sessions[name]
            start = time.perf_counter()
            for _ in range(runs[name]):
                session.run(fetches)
            steps = runs[name] * per_run[name]
            times[name].append((time.perf_counter() - start) / steps * 1e6)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "us_per_step": medians,
        "graph_ops": {name: ops for name, (_, _, ops) in sessions.items()},
        "steps_per_second_ratio": {name: medians["handwritten"] / medians[name]
                                   for name in names},
        "blocks": blocks,
        "steps_per_block": steps_per_block,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--steps-per-block", type=int, default=64,
                        help="a multiple of 32 (the looped variant runs 32 per call)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="headkit-ab-") as folder:
        data.prepare_data(folder, args.rows, 1)
        paths = data.paths(folder, "train")
        result = compare(args.blocks, args.steps_per_block, args.warmup, paths)
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
