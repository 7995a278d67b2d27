"""Loss weighting on the penguins: each method over several seeds and splits, and PCGrad's cost.

    python bench/multitask_study.py                        # every method, seeds 0-4
    python bench/multitask_study.py --seeds 0 --methods uncertainty --steps 500
    python bench/multitask_study.py --cost                 # steps/s with and without PCGrad
    python bench/multitask_study.py --from-json bench/results/multitask.json   # tables again

The three heads of ``examples/quickstart.py`` (species, body mass, sex) and
its body, trained with ``hk.KerasModel`` for a fixed number of steps (no early
stopping: the methods' total losses are not comparable, so none of them
picks the step), then evaluated on the split's held-out test rows. Seed
``k`` draws the split (``quickstart.load_splits(k)``), the initial weights
and the shuffling. Results and their reading: ``docs/multitask.md``.

Writes ``bench/results/multitask.json`` (every run) and prints the table in
Markdown. Not part of the test suite: ``tests/multitask/test_penguins.py``
runs one method on one seed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.environ.get("HEADKIT_SRC", ROOT))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import headkit as hk  # noqa: E402

hk.quiet_tensorflow()

import quickstart  # noqa: E402
import tensorflow as tf  # noqa: E402

#: Reported metrics on the test rows, and the bars of the issue.
METRICS = {"species/accuracy": (">=", 0.95), "sex/accuracy": (">=", 0.80),
           "body_mass_g/rmse": ("<=", 400.0)}
LEARNING_RATE = 0.003
BATCH_SIZE = 32


def _grams_body(stats) -> tf.keras.Model:
    """The quickstart's body with the old hand-tuned output: grams = 800 * Dense(1) + 4200."""
    model = quickstart.build_body(stats)
    outputs = dict(model.output)
    outputs["body_mass_g"] = outputs["body_mass_g"] * 800.0 + 4200.0
    return tf.keras.Model(model.input, outputs)


def _raw_heads(train, weight: float) -> hk.HeadSet:
    """The quickstart's heads with an unnormalised mass head of the given weight."""
    heads = quickstart.make_heads(train, loss_weighting="fixed")
    return hk.HeadSet([hk.Head("body_mass_g", hk.Regression(), metrics=("rmse", "mae"),
                               weight=weight) if h.name == "body_mass_g" else h for h in heads])


#: Method -> (heads from the training split, body from the feature statistics).
METHODS: Dict[str, tuple] = {
    "fixed 1.0 in grams": (lambda train: _raw_heads(train, 1.0), quickstart.build_body),
    "hand-tuned": (lambda train: _raw_heads(train, 1.0 / 800.0**2), _grams_body),
    "fixed 1.0": (lambda train: quickstart.make_heads(train, loss_weighting="fixed"),
                  quickstart.build_body),
    "uncertainty": (lambda train: quickstart.make_heads(train), quickstart.build_body),
    "DWA": (lambda train: quickstart.make_heads(train, loss_weighting=hk.DynamicWeightAverage()),
            quickstart.build_body),
    "PCGrad": (lambda train: quickstart.make_heads(train, loss_weighting="fixed",
                                                   gradient_surgery=hk.PCGrad()),
               quickstart.build_body),
    "uncertainty + PCGrad": (lambda train: quickstart.make_heads(
        train, gradient_surgery=hk.PCGrad()), quickstart.build_body),
}


def run(method: str, seed: int, steps: int) -> Dict[str, Any]:
    """Train one method on one seed's split; its metrics on the test rows."""
    make_heads, make_body = METHODS[method]
    train, _, test = quickstart.load_splits(seed)
    heads = make_heads(train)
    numeric = train[quickstart.NUMERIC].to_numpy("float32")
    stats = (numeric.mean(axis=0), numeric.var(axis=0))
    columns = dict(heads=heads, feature_columns=quickstart.NUMERIC + ["island"])
    model = hk.KerasModel(lambda: make_body(stats), heads, optimizer="adam",
                          learning_rate=LEARNING_RATE, seed=seed, steps_per_run=50,
                          checkpoint_every=10**9,
                          model_dir=tempfile.mkdtemp(prefix="headkit-study-"))
    start = time.perf_counter()
    model.train(hk.input_fn_from_dataframe(train, shuffle=True, num_epochs=None, seed=seed,
                                           batch_size=BATCH_SIZE, **columns), max_steps=steps)
    seconds = time.perf_counter() - start
    metrics = model.evaluate(hk.input_fn_from_dataframe(test, batch_size=256, **columns))
    result = {"method": method, "seed": seed, "steps": steps, "train_seconds": seconds}
    result.update({k: float(v) for k, v in metrics.items() if k in METRICS
                   or k.endswith("/loss_weight")})
    return result


def table(runs: List[Dict[str, Any]], methods: List[str]) -> str:
    """Markdown: mean ± standard deviation over seeds, and how many seeds clear each bar."""
    seeds = sorted({r["seed"] for r in runs})
    lines = [f"| method | {' | '.join(METRICS)} | all three bars |",
             "|---|" + "---|" * (len(METRICS) + 1)]
    for method in methods:
        rows = [r for r in runs if r["method"] == method]
        if not rows:
            continue
        cells = []
        for key, (op, bar) in METRICS.items():
            values = [r[key] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cleared = sum(1 for v in values if (v >= bar if op == ">=" else v <= bar))
            digits = 0 if key.endswith("rmse") else 3
            cells.append(f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f} "
                         f"({cleared}/{len(values)})")
        every = sum(1 for r in rows if all(
            (r[k] >= b if op == ">=" else r[k] <= b) for k, (op, b) in METRICS.items()))
        lines.append(f"| {method} | {' | '.join(cells)} | {every}/{len(rows)} |")
    lines.append("")
    lines.append(f"Mean ± standard deviation over seeds {seeds} (each its own split), on the "
                 "held-out test rows; in brackets, the seeds that clear the bar "
                 f"({', '.join(f'{k} {op} {b:g}' for k, (op, b) in METRICS.items())}).")
    return "\n".join(lines)


def paired_table(runs: List[Dict[str, Any]], methods: List[str],
                 baseline: str = "fixed 1.0") -> str:
    """Markdown: each method minus ``baseline`` on the same seed and split, mean ± sd."""
    by_run = {(r["method"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs if r["method"] == baseline})
    lines = [f"| method, minus {baseline} on the same split | {' | '.join(METRICS)} |",
             "|---|" + "---|" * len(METRICS)]
    for method in methods:
        if method == baseline or not all((method, s) in by_run for s in seeds):
            continue
        cells = []
        for key in METRICS:
            differences = [by_run[(method, s)][key] - by_run[(baseline, s)][key] for s in seeds]
            spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
            digits = 0 if key.endswith("rmse") else 3
            cells.append(f"{statistics.mean(differences):+.{digits}f} ± {spread:.{digits}f}")
        lines.append(f"| {method} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _wide_body(stats, width: int) -> tf.keras.Model:
    """The penguins' inputs through two Dense(width) layers: a body whose passes cost more."""
    mean, variance = stats
    inputs = {name: tf.keras.Input((1,), name=name) for name in quickstart.NUMERIC}
    inputs["island"] = tf.keras.Input((1,), name="island", dtype=tf.string)
    numeric = tf.keras.layers.Concatenate()([inputs[n] for n in quickstart.NUMERIC])
    h = tf.keras.layers.Normalization(mean=mean, variance=variance)(numeric)
    for _ in range(2):
        h = tf.keras.layers.Dense(width, activation="relu")(h)
    return tf.keras.Model(inputs, {"species": tf.keras.layers.Dense(3)(h),
                                   "body_mass_g": tf.keras.layers.Dense(1)(h),
                                   "sex": tf.keras.layers.Dense(1)(h)})


def steps_per_second(method: str, width: int, steps: int, warmup: int = 100) -> float:
    """Training steps per second of one method, after ``warmup`` steps (tracing excluded)."""
    make_heads, make_body = METHODS[method]
    train, _, _ = quickstart.load_splits(0)
    heads = make_heads(train)
    numeric = train[quickstart.NUMERIC].to_numpy("float32")
    stats = (numeric.mean(axis=0), numeric.var(axis=0))
    body = (lambda: make_body(stats)) if width == 32 else (lambda: _wide_body(stats, width))
    model = hk.KerasModel(body, heads, optimizer="adam", learning_rate=LEARNING_RATE, seed=0,
                          steps_per_run=50, checkpoint_every=10**9,
                          model_dir=tempfile.mkdtemp(prefix="headkit-cost-"))
    train_input = hk.input_fn_from_dataframe(
        train, heads, feature_columns=quickstart.NUMERIC + ["island"], shuffle=True,
        num_epochs=None, seed=0, batch_size=BATCH_SIZE)
    model.train(train_input, max_steps=warmup)
    start = time.perf_counter()
    model.train(train_input, max_steps=warmup + steps)
    return steps / (time.perf_counter() - start)


def cost(steps: int, repeats: int, widths=(32, 1024)) -> str:
    """Steps/s with and without PCGrad, the two measured in turn ``repeats`` times."""
    lines = ["| body | fixed 1.0: steps/s | PCGrad: steps/s | PCGrad / fixed |",
             "|---|---|---|---|"]
    for width in widths:
        rates: Dict[str, List[float]] = {"fixed 1.0": [], "PCGrad": []}
        for _ in range(repeats):
            for method in rates:  # alternating, so a busy moment hits both
                rates[method].append(steps_per_second(method, width, steps))
        plain, surgery = (statistics.median(rates[m]) for m in ("fixed 1.0", "PCGrad"))
        name = "quickstart (2 x Dense(32))" if width == 32 else f"2 x Dense({width})"
        lines.append(f"| {name} | {plain:.0f} | {surgery:.0f} | {surgery / plain:.2f} |")
    lines.append("")
    lines.append(f"3 heads, batches of {BATCH_SIZE}, {steps} timed steps after 100 warm-up "
                 f"steps, median of {repeats}; TensorFlow {tf.__version__}, "
                 f"{os.cpu_count()} CPU cores.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of: {', '.join(METHODS)}")
    parser.add_argument("--steps", type=int, default=2000, help="training steps per run")
    parser.add_argument("--cost", action="store_true", help="measure PCGrad's cost instead")
    parser.add_argument("--from-json", default=None,
                        help="print the tables of a results file again, without training")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "multitask.json"))
    args = parser.parse_args(argv)
    if args.cost:
        print(cost(args.steps, repeats=5))
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {list(METHODS)}")
    if args.from_json:
        with open(args.from_json) as handle:
            runs = json.load(handle)["runs"]
        methods = [m for m in methods if any(r["method"] == m for r in runs)]
        print(table(runs, methods) + "\n\n" + paired_table(runs, methods))
        return 0
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs: List[Dict[str, Any]] = []
    for seed in seeds:
        for method in methods:
            runs.append(run(method, seed, args.steps))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"steps": args.steps, "learning_rate": LEARNING_RATE,
                   "batch_size": BATCH_SIZE, "tensorflow": tf.__version__, "runs": runs},
                  handle, indent=2)
    print(table(runs, methods) + "\n\n" + paired_table(runs, methods))
    return 0


if __name__ == "__main__":
    sys.exit(main())
