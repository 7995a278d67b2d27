"""How much of a quickstart-style train_and_evaluate run goes to evaluation, before and after.

    python bench/eval_share.py            # both ways, 2 rounds, each in its own process

``checkpoint``: tf.estimator.train_and_evaluate as headkit 0.1.0 ran it (each
evaluation builds a graph, opens a session and restores the checkpoint).
``in_memory``: hk.train_and_evaluate now (the evaluation graph is built once
and fed the training session's values). Same model, data, steps and
eval_every=100; the time spent evaluating is measured inside each process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_one(way: str, steps: int, eval_every: int) -> dict:
    sys.path.insert(0, os.environ.get("HEADKIT_SRC") or ROOT)  # as bench/variants.py
    import headkit as hk

    hk.quiet_tensorflow()
    import palmerpenguins
    import tensorflow as tf

    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
    heads = hk.HeadSet([
        hk.Head("species", hk.Classification(vocabulary=("Adelie", "Chinstrap", "Gentoo")),
                metrics=("accuracy",), is_default=True),
        hk.Head("sex", hk.Classification(vocabulary=("female", "male")), metrics=("accuracy",),
                missing_label=""),
    ])

    def body():
        inputs = {n: tf.keras.Input((1,), name=n) for n in numeric}
        h = tf.keras.layers.BatchNormalization()(tf.keras.layers.Concatenate()(
            list(inputs.values())))
        h = tf.keras.layers.Dense(32, activation="relu")(h)
        return tf.keras.Model(inputs, {"species": tf.keras.layers.Dense(3)(h),
                                       "sex": tf.keras.layers.Dense(1)(h)})

    penguins = palmerpenguins.load_penguins().dropna(subset=numeric)
    train, validation = penguins[:270], penguins[270:]
    estimator = hk.Estimator(body, heads, learning_rate=0.003,
                             model_dir=tempfile.mkdtemp(prefix="eval-share-"),
                             config=tf.estimator.RunConfig(tf_random_seed=0))
    train_input = hk.input_fn_from_dataframe(train, heads, feature_columns=numeric,
                                             shuffle=True, num_epochs=None, seed=0)
    eval_input = hk.input_fn_from_dataframe(validation, heads, feature_columns=numeric)
    spent = [0.0]
    if way == "checkpoint":
        evaluate = estimator.evaluate

        def timed_evaluate(*args, **kwargs):
            started = time.perf_counter()
            try:
                return evaluate(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started

        estimator.evaluate = timed_evaluate
        config = estimator.config.replace(save_checkpoints_steps=eval_every,
                                          save_checkpoints_secs=None)
        estimator._config = config
        started = time.perf_counter()
        tf.estimator.train_and_evaluate(
            estimator, tf.estimator.TrainSpec(train_input, max_steps=steps),
            tf.estimator.EvalSpec(eval_input, steps=None, start_delay_secs=0,
                                  throttle_secs=0))
    else:
        from headkit.estimator import hooks

        after_save = hooks.InMemoryEvaluation.after_save

        def timed_after_save(self, session, step):
            started = time.perf_counter()
            try:
                return after_save(self, session, step)
            finally:
                spent[0] += time.perf_counter() - started

        hooks.InMemoryEvaluation.after_save = timed_after_save
        started = time.perf_counter()
        hk.train_and_evaluate(estimator, train_input, eval_input, max_steps=steps,
                              eval_every=eval_every, progress=False)
    wall = time.perf_counter() - started
    return {"way": way, "steps": steps, "eval_every": eval_every,
            "wall_seconds": wall, "eval_seconds": spent[0],
            "eval_share": spent[0] / wall, "steps_per_second": steps / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", choices=("checkpoint", "in_memory"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.eval_every)))
        return 0
    rows = []
    for round_index in range(args.rounds):
        for way in ("checkpoint", "in_memory") if round_index % 2 == 0 else (
                "in_memory", "checkpoint"):
            done = subprocess.run([sys.executable, __file__, "--one", way, "--steps",
                                   str(args.steps), "--eval-every", str(args.eval_every)],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print("| way | wall (s) | evaluating (s) | share evaluating | steps/s overall |")
    print("|---|---|---|---|---|")
    for way in ("checkpoint", "in_memory"):
        mine = sorted((r for r in rows if r["way"] == way), key=lambda r: r["wall_seconds"])
        median = mine[len(mine) // 2]
        print(f"| {way} | {median['wall_seconds']:.1f} | {median['eval_seconds']:.1f} | "
              f"{median['eval_share']:.0%} | {median['steps_per_second']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
