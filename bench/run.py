"""Benchmark headkit against a hand-written model_fn and its peers, side by side.

Each variant trains the same workload in its own process; the variants
alternate over several rounds (the order rotates each round) and the report
gives medians and ratios against ``handwritten`` measured in the same run.

    python bench/run.py                      # full run: 3 rounds, JSON + Markdown
    python bench/run.py --rounds 1 --steps 64 --variants handwritten,headkit

This module imports no TensorFlow: the variants run in ``bench/variants.py``.
To measure a fixed headkit while others edit the checkout, export a commit
and point ``HEADKIT_SRC`` at it:

    git archive HEAD headkit | tar -x -C /tmp/hk && git rev-parse --short HEAD > /tmp/hk/COMMIT
    HEADKIT_SRC=/tmp/hk python bench/run.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import data as bench_data  # noqa: E402  (numpy only)

BASELINE = "handwritten"
MAIN_VARIANTS = bench_data.MAIN_VARIANTS
#: Reported metrics: key -> (path in a variant's JSON, label, unit).
METRICS = {
    "steps_per_second": (("steps_per_second",), "train steps/s", ""),
    "cpu_ms_per_step": (("cpu_ms_per_step",), "train CPU per step", "ms"),
    "train_wall_seconds": (("train_wall_seconds",), "train() wall", "s"),
    "eval_seconds": (("eval_seconds",), "evaluate() 20 batches", "s"),
    "export_seconds": (("export_seconds",), "export", "s"),
    "savedmodel_kb": (("savedmodel_bytes",), "SavedModel size", "KB"),
    "serving_default_b1_ms": (("serving", "serving_default", "batch_1_ms"),
                              "serving_default, batch 1", "ms"),
    "serving_default_b256_ms": (("serving", "serving_default", "batch_256_ms"),
                                "serving_default, batch 256", "ms"),
    "raw_predict_b1_ms": (("serving", "raw_predict", "batch_1_ms"), "raw predict, batch 1", "ms"),
    "raw_predict_b256_ms": (("serving", "raw_predict", "batch_256_ms"),
                            "raw predict, batch 256", "ms"),
}
SERVING_KEYS = tuple(k for k in METRICS if k.startswith(("serving_default", "raw_predict")))
#: headkit's targets: (variant, metric) -> (comparison, bound), as ratios against
#: handwritten. Several steps per session.run, each compiled by XLA, must pay off
#: (>= 1.5x); without XLA, the loop alone must still gain (>= 1.2x); the fixed costs
#: of train(), evaluate() and export, and serving, must stay near the hand-written ones.
TARGETS = {
    ("headkit", "steps_per_second"): (">=", 0.97),
    ("headkit_spr32", "steps_per_second"): (">=", 1.2),
    ("headkit_spr32_xla", "steps_per_second"): (">=", 1.5),
    ("headkit", "train_wall_seconds"): ("<=", 1.1),
    ("headkit", "eval_seconds"): ("<=", 1.1),
    ("headkit", "export_seconds"): ("<=", 1.5),
    ("headkit", "serving_default_b1_ms"): ("<=", 1.1),
    ("headkit", "serving_default_b256_ms"): ("<=", 1.1),
}
#: A train_and_evaluate run with eval_every=100 spends at most this share evaluating.
EVAL_SHARE_TARGET = 0.25
#: Variants whose final eval loss must equal handwritten's (same model, same steps).
SAME_MODEL = ("headkit", "canned_multihead")
LOSS_TOLERANCE = 1e-3


def metric_value(result: Dict[str, Any], key: str) -> float:
    """One metric of one variant's JSON result (sizes in KB)."""
    value: Any = result
    for part in METRICS[key][0]:
        value = value[part]
    return value / 1024.0 if key == "savedmodel_kb" else float(value)


def summarize(raw: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """Medians over rounds, and each median's ratio to the baseline's median."""
    if BASELINE not in raw:
        raise ValueError(
            f"The run has no {BASELINE!r} results (got {sorted(raw)!r}); ratios are computed "
            f"against it. Add {BASELINE!r} to --variants."
        )
    medians = {
        variant: {key: statistics.median(metric_value(r, key) for r in results)
                  for key in METRICS}
        for variant, results in raw.items()
    }
    ratios = {
        variant: {key: values[key] / medians[BASELINE][key] for key in METRICS}
        for variant, values in medians.items()
    }
    paired = {
        variant: {key: statistics.median(
            metric_value(r, key) / metric_value(b, key) for r, b in zip(results, raw[BASELINE])
        ) for key in METRICS}
        for variant, results in raw.items()
    }
    return {"medians": medians, "ratios": ratios, "paired_ratios": paired}


def summarize_interleaved(rounds: List[Dict[str, Dict[str, float]]]) -> Dict[str, Any]:
    """Medians over rounds of the interleaved latencies, and ratios to the baseline."""
    variants = [v for v in MAIN_VARIANTS if v in rounds[0]]
    medians = {v: {k: statistics.median(r[v][k] for r in rounds) for k in SERVING_KEYS}
               for v in variants}
    ratios = {v: {k: medians[v][k] / medians[BASELINE][k] for k in SERVING_KEYS}
              for v in variants}
    return {"medians": medians, "ratios": ratios}


def loss_agreement(raw: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """The largest |eval loss - handwritten's| per variant, over the rounds."""
    baseline = [r["eval_loss"] for r in raw[BASELINE]]
    result = {}
    for variant in SAME_MODEL:
        if variant in raw:
            gap = max(abs(r["eval_loss"] - b) for r, b in zip(raw[variant], baseline))
            result[variant] = {"max_abs_difference": gap, "ok": gap <= LOSS_TOLERANCE}
    return result


def check_targets(
    ratios: Dict[str, Dict[str, float]],
    interleaved: Optional[Dict[str, Dict[str, float]]] = None,
) -> List[Dict[str, Any]]:
    """headkit's ratios against the targets of the issue.

    Serving latency is judged on the interleaved measurement when there is
    one (calls of all variants alternate in one process), else per process.
    """
    checks = []
    for (variant, key), (comparison, bound) in TARGETS.items():
        if variant not in ratios:
            continue
        source = "per process"
        ratio = ratios[variant][key]
        if key in SERVING_KEYS and interleaved and variant in interleaved:
            source, ratio = "interleaved", interleaved[variant][key]
        ok = ratio >= bound if comparison == ">=" else ratio <= bound
        checks.append({"variant": variant, "metric": key, "ratio": ratio,
                       "target": f"{comparison} {bound}", "ok": ok, "source": source})
    return checks


def scaling_summary(raw: Dict[str, List[Dict[str, Any]]]) -> Optional[Dict[str, Any]]:
    """Graph build time and steps/s per number of heads; is the growth at most linear?

    Linear means the cost of each extra head does not rise with the number of
    heads: the per-head cost from the middle to the largest size is at most
    1.5x the per-head cost from the smallest to the middle (1.5 for noise).
    """
    rows = {}
    for variant, results in raw.items():
        if variant.startswith("scaling_headkit_"):
            n = int(variant.rsplit("_", 1)[1])
            rows[n] = {
                "graph_build_seconds": statistics.median(r["graph_build_seconds"] for r in results),
                "steps_per_second": statistics.median(r["steps_per_second"] for r in results),
            }
    if not rows:
        return None
    sizes = sorted(rows)
    summary: Dict[str, Any] = {"by_heads": {str(n): rows[n] for n in sizes}}
    if len(sizes) >= 3:
        small, middle, large = sizes[0], sizes[len(sizes) // 2], sizes[-1]
        build = {n: rows[n]["graph_build_seconds"] for n in sizes}
        first = (build[middle] - build[small]) / (middle - small)
        second = (build[large] - build[middle]) / (large - middle)
        summary.update(
            seconds_per_head={f"{small}-{middle}": first, f"{middle}-{large}": second},
            at_most_linear=second <= 1.5 * first,
        )
    return summary


def _fmt(value: float, key: str) -> str:
    if key in ("steps_per_second", "savedmodel_kb"):
        return f"{value:.0f}"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _label(key: str) -> str:
    _, label, unit = METRICS[key]
    return f"{label} ({unit})" if unit else label


def markdown(report: Dict[str, Any]) -> str:
    """The report as Markdown tables: medians with ratios, targets, scaling."""
    medians, ratios = report["summary"]["medians"], report["summary"]["ratios"]
    meta = report["meta"]
    lines = [
        f"Run of {meta['date']}: {meta['rounds']} rounds, {meta['cpu_count']} CPUs, "
        f"TensorFlow {meta.get('tensorflow_version', '?')}, headkit at {meta['git_commit']}"
        f"{' (uncommitted changes)' if meta['git_dirty'] else ''}; load average "
        f"{meta['load_before'][0]:.2f} before, {meta['load_after'][0]:.2f} after.",
        "Medians over the rounds; in brackets the ratio to `handwritten` from the same run.",
        "",
        "| variant | " + " | ".join(_label(k) for k in METRICS) + " | eval loss |",
        "|---" * (len(METRICS) + 2) + "|",
    ]
    for variant in [v for v in MAIN_VARIANTS if v in medians]:
        cells = [f"{_fmt(medians[variant][k], k)} ({ratios[variant][k]:.2f})" for k in METRICS]
        loss = statistics.median(r["eval_loss"] for r in report["raw"][variant])
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {loss:.6f} |")
    interleaved = report.get("serving_interleaved")
    if interleaved:
        lines += [
            "",
            "Serving latency with the calls of all variants interleaved in one process "
            "(median over rounds of each round's median of "
            f"{report['config']['calls']} calls; ratio to `handwritten` in brackets):",
            "",
            "| variant | " + " | ".join(_label(k) for k in SERVING_KEYS) + " |",
            "|---" * (len(SERVING_KEYS) + 1) + "|",
        ]
        for variant in [v for v in MAIN_VARIANTS if v in interleaved["medians"]]:
            values = interleaved["medians"][variant]
            cells = [f"{values[k]:.3f} ({interleaved['ratios'][variant][k]:.2f})"
                     for k in SERVING_KEYS]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    if report["targets"]:
        lines += ["", "| target | ratio to handwritten | target | met | measured |",
                  "|---|---|---|---|---|"]
        for check in report["targets"]:
            lines.append(f"| {check['variant']}: {METRICS[check['metric']][1]} | "
                         f"{check['ratio']:.3f} | {check['target']} | "
                         f"{'yes' if check['ok'] else 'NO'} | {check['source']} |")
    share = report.get("eval_share")
    if share:
        lines += ["", "Quickstart-style `train_and_evaluate` (penguins, "
                      f"{share['steps']} steps, eval_every={share['eval_every']}; medians of "
                      f"{share['rounds']} rounds):", "",
                  "| evaluation | wall (s) | evaluating (s) | share evaluating | steps/s overall |",
                  "|---|---|---|---|---|"]
        for way in ("checkpoint", "in_memory"):
            row = share["medians"][way]
            lines.append(f"| {way} | {row['wall_seconds']:.1f} | {row['eval_seconds']:.1f} | "
                         f"{row['eval_share']:.0%} | {row['steps_per_second']:.0f} |")
        in_memory = share["medians"]["in_memory"]["eval_share"]
        lines += ["", f"In-memory evaluation share {in_memory:.0%} (target <= "
                      f"{EVAL_SHARE_TARGET:.0%}): {'met' if share['ok'] else 'NOT met'}."]
    if report["eval_loss_agreement"]:
        lines += ["", f"| eval loss vs handwritten | max abs difference | within "
                      f"{LOSS_TOLERANCE:g} |", "|---|---|---|"]
        for variant in [v for v in SAME_MODEL if v in report["eval_loss_agreement"]]:
            agreement = report["eval_loss_agreement"][variant]
            lines.append(f"| {variant} | {agreement['max_abs_difference']:.2e} | "
                         f"{'yes' if agreement['ok'] else 'NO'} |")
    scaling = report.get("scaling")
    if scaling:
        lines += ["", "| headkit heads | graph build (s) | train steps/s |", "|---|---|---|"]
        for n, row in sorted(scaling["by_heads"].items(), key=lambda item: int(item[0])):
            lines.append(f"| {n} | {row['graph_build_seconds']:.3f} | "
                         f"{row['steps_per_second']:.0f} |")
        if "seconds_per_head" in scaling:
            per_head = ", ".join(f"{k} heads: {v * 1000:.1f} ms"
                                 for k, v in scaling["seconds_per_head"].items())
            lines.append("")
            lines.append(f"Graph build cost per extra head: {per_head}; at most linear: "
                         f"{'yes' if scaling['at_most_linear'] else 'NO'}.")
    return "\n".join(lines) + "\n"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _headkit_commit() -> str:
    """The commit under test: HEADKIT_SRC's COMMIT file for a snapshot, else HEAD."""
    source = os.environ.get("HEADKIT_SRC")
    if source:
        marker = os.path.join(source, "COMMIT")
        if os.path.isfile(marker):
            with open(marker) as handle:
                return handle.read().strip()
        return f"snapshot {source}"
    return _git("rev-parse", "--short", "HEAD")


def _run_variant(
    variant: str, data: str, out: Optional[str], args: argparse.Namespace, *extra: str
) -> Dict[str, Any]:
    command = [
        sys.executable, os.path.join(HERE, "variants.py"), variant, "--data", data, *extra,
        *(["--out", out] if out else []), "--warmup", str(args.warmup), "--steps", str(args.steps),
        "--scaling-steps", str(args.scaling_steps), "--eval-batches", str(args.eval_batches),
        "--calls", str(args.calls), "--rows", str(args.rows),
    ]
    done = subprocess.run(command, capture_output=True, text=True,
                          env=dict(os.environ, HEADKIT_BENCH_BODY=args.body))
    if done.returncode != 0:
        raise RuntimeError(
            f"Variant {variant!r} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    if out is None:
        return {}
    with open(out) as handle:
        return json.load(handle)


def _progress(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def _serve_interleaved(exports, raw, data, folder, args) -> Dict[str, Dict[str, float]]:
    """Time this round's exports with their calls interleaved, in one process."""
    table = {v: [d, raw[v][-1]["serving"]["raw_predict"]["signature"]]
             for v, d in exports.items()}
    table_path = os.path.join(folder, "exports.json")
    with open(table_path, "w") as handle:
        json.dump(table, handle)
    out = os.path.join(folder, "interleaved.json")
    return _run_variant("serve_interleaved", data, out, args, "--exports", table_path)["latency"]


def _eval_share(args: argparse.Namespace) -> Dict[str, Any]:
    """bench/eval_share.py's two ways, alternating, each round in fresh processes."""
    rows = []
    for round_index in range(args.eval_share_rounds):
        ways = ("checkpoint", "in_memory") if round_index % 2 == 0 else (
            "in_memory", "checkpoint")
        for way in ways:
            done = subprocess.run(
                [sys.executable, os.path.join(HERE, "eval_share.py"), "--one", way],
                capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            _progress(args, f"eval share round {round_index + 1}: {way} "
                            f"{rows[-1]['eval_share']:.0%} of {rows[-1]['wall_seconds']:.1f}s")
    medians = {way: {key: statistics.median(r[key] for r in rows if r["way"] == way)
                     for key in ("wall_seconds", "eval_seconds", "eval_share",
                                 "steps_per_second")}
               for way in ("checkpoint", "in_memory")}
    return {"rounds": args.eval_share_rounds, "steps": rows[0]["steps"],
            "eval_every": rows[0]["eval_every"], "medians": medians, "raw": rows,
            "ok": medians["in_memory"]["eval_share"] <= EVAL_SHARE_TARGET}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    """Prepare the data once, run every variant in every round, build the report."""
    variants = list(args.variants) + [f"scaling_headkit_{n}" for n in args.scaling_heads]
    raw: Dict[str, List[Dict[str, Any]]] = {v: [] for v in variants}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="headkit-bench-") as folder:
        data = os.path.join(folder, "data")
        bench_data.prepare_data(data, args.rows, args.eval_batches)
        interleaved_rounds = []
        for round_index in range(args.rounds):
            shift = round_index % len(variants)
            exports = {}
            for variant in variants[shift:] + variants[:shift]:
                started = time.time()
                out = os.path.join(folder, f"{variant}-{round_index}.json")
                keep = []
                if variant in args.variants and not args.skip_interleaved:
                    exports[variant] = os.path.join(folder, f"export-{round_index}-{variant}")
                    keep = ["--keep-export", exports[variant]]
                result = _run_variant(variant, data, out, args, *keep)
                result.update(round=round_index, load_average=os.getloadavg()[0])
                raw[variant].append(result)
                _progress(args, f"round {round_index + 1}/{args.rounds} {variant}: "
                                f"{time.time() - started:.1f}s")
            if not args.skip_interleaved:
                interleaved_rounds.append(_serve_interleaved(exports, raw, data, folder, args))
                _progress(args, f"round {round_index + 1}/{args.rounds} serving, interleaved")
            for folder_path in exports.values():
                shutil.rmtree(folder_path, ignore_errors=True)
    eval_share = _eval_share(args) if args.eval_share_rounds else None
    main_raw = {v: raw[v] for v in args.variants}
    summary = summarize(main_raw)
    interleaved = summarize_interleaved(interleaved_rounds) if interleaved_rounds else None
    any_result = next(iter(main_raw.values()))[0]
    return {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M", time.localtime()),
            "rounds": args.rounds,
            "body": args.body,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tensorflow_version": any_result.get("tensorflow_version"),
            "headkit_file": any_result.get("headkit_file"),
            "git_commit": _headkit_commit(),
            "git_dirty": not os.environ.get("HEADKIT_SRC") and bool(
                _git("status", "--porcelain", "--", "../headkit")),
            "load_before": list(load_before),
            "load_after": list(os.getloadavg()),
        },
        "config": {k: getattr(args, k) for k in (
            "rows", "warmup", "steps", "scaling_steps", "eval_batches", "calls", "scaling_heads")},
        "baseline": BASELINE,
        "summary": summary,
        "serving_interleaved": interleaved,
        "targets": check_targets(summary["ratios"], interleaved and interleaved["ratios"]),
        "eval_share": eval_share,
        "eval_loss_agreement": loss_agreement(main_raw),
        "scaling": scaling_summary(raw),
        "raw": main_raw,
        "raw_scaling": {v: r for v, r in raw.items() if v not in main_raw},
    }


def _csv(text: str) -> List[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", type=_csv, default=list(MAIN_VARIANTS),
                        help=f"comma-separated, from {','.join(MAIN_VARIANTS)}")
    parser.add_argument("--scaling-heads", type=lambda t: [int(n) for n in _csv(t)],
                        default=[1, 10, 50], help="HeadSet sizes; '' to skip scaling")
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--warmup", type=int, default=128, help="untimed training steps")
    parser.add_argument("--steps", type=int, default=2048, help="timed training steps")
    parser.add_argument("--scaling-steps", type=int, default=512)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per latency")
    parser.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    parser.add_argument("--skip-interleaved", action="store_true",
                        help="no interleaved serving latency (one process fewer per round)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--eval-share-rounds", type=int, default=2,
                        help="rounds of bench/eval_share.py (train_and_evaluate's evaluation "
                             "share, checkpoint vs in memory); 0 to skip")
    parser.add_argument("--body", choices=("mlp128", "mlp512x4"), default="mlp128",
                        help="the workload's body: 2 x 128 (dispatch-bound) or 4 x 512")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in MAIN_VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown!r}; known: {', '.join(MAIN_VARIANTS)}")
    if BASELINE not in args.variants:
        parser.error(f"--variants must include the baseline {BASELINE!r}")
    if args.rounds < 1 or args.warmup < 1 or args.steps < 1:
        parser.error("--rounds, --warmup and --steps must be >= 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    report = run(args)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "results.json"), "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
    table = markdown(report)
    with open(os.path.join(args.out_dir, "results.md"), "w") as handle:
        handle.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
