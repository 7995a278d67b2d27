"""The benchmark machinery (bench/run.py): summaries, targets, and one tiny real run.

A full benchmark is never part of the suite; the smoke test runs two
variants for a handful of steps (no interleaved serving, to save a process)
only to check the plumbing and the report.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _load_run_module():
    spec = importlib.util.spec_from_file_location("bench_run", os.path.join(BENCH, "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load_run_module()


def _result(steps, eval_seconds, latency, loss=0.5):
    serving = {"batch_1_ms": latency, "batch_256_ms": 10 * latency}
    return {
        "steps_per_second": steps,
        "cpu_ms_per_step": 1000.0 / steps,
        "train_wall_seconds": 10.0,
        "eval_seconds": eval_seconds,
        "export_seconds": 1.0,
        "savedmodel_bytes": 2048,
        "eval_loss": loss,
        "serving": {"serving_default": serving, "raw_predict": serving},
    }


def test_ratios_are_medians_over_the_baselines_median():
    raw = {
        "handwritten": [_result(100, 2.0, 1.0), _result(300, 4.0, 3.0), _result(200, 3.0, 2.0)],
        "headkit": [_result(190, 3.3, 2.0), _result(10, 9.0, 9.0), _result(198, 3.0, 2.1)],
    }
    summary = run.summarize(raw)
    assert summary["medians"]["handwritten"]["steps_per_second"] == 200
    assert summary["medians"]["headkit"]["steps_per_second"] == 190
    assert summary["ratios"]["headkit"]["steps_per_second"] == pytest.approx(0.95)
    assert summary["ratios"]["headkit"]["eval_seconds"] == pytest.approx(1.1)
    assert summary["ratios"]["headkit"]["serving_default_b256_ms"] == pytest.approx(1.05)
    assert summary["medians"]["headkit"]["savedmodel_kb"] == 2.0
    assert all(v == 1.0 for v in summary["ratios"]["handwritten"].values())


def test_targets_report_a_miss():
    ratios = {"headkit": {"steps_per_second": 0.95, "train_wall_seconds": 1.05,
                          "eval_seconds": 1.0, "export_seconds": 1.6,
                          "serving_default_b1_ms": 1.2, "serving_default_b256_ms": 1.0},
              "headkit_spr32": {"steps_per_second": 1.19},
              "headkit_spr32_xla": {"steps_per_second": 1.52}}
    met = {(c["variant"], c["metric"]): c["ok"] for c in run.check_targets(ratios)}
    assert met == {("headkit", "steps_per_second"): False,
                   ("headkit_spr32", "steps_per_second"): False,
                   ("headkit_spr32_xla", "steps_per_second"): True,
                   ("headkit", "train_wall_seconds"): True, ("headkit", "eval_seconds"): True,
                   ("headkit", "export_seconds"): False,
                   ("headkit", "serving_default_b1_ms"): False,
                   ("headkit", "serving_default_b256_ms"): True}
    # A variant left out of the run is not judged.
    assert {c["variant"] for c in run.check_targets({"headkit": ratios["headkit"]})} == {
        "headkit"}


def test_serving_targets_use_the_interleaved_latency():
    rounds = [
        {v: {k: base * factor for k in run.SERVING_KEYS}
         for v, factor in (("handwritten", 1.0), ("headkit", 1.3))}
        for base in (1.0, 2.0, 3.0)
    ]
    interleaved = run.summarize_interleaved(rounds)
    assert interleaved["medians"]["handwritten"]["serving_default_b1_ms"] == 2.0
    assert interleaved["ratios"]["headkit"]["serving_default_b256_ms"] == pytest.approx(1.3)
    ratios = {"headkit": {"steps_per_second": 1.0, "train_wall_seconds": 1.0,
                          "eval_seconds": 1.0, "export_seconds": 1.0,
                          "serving_default_b1_ms": 1.0, "serving_default_b256_ms": 1.0}}
    checks = {c["metric"]: c for c in run.check_targets(ratios, interleaved["ratios"])}
    assert checks["serving_default_b1_ms"]["source"] == "interleaved"
    assert not checks["serving_default_b1_ms"]["ok"]
    assert checks["eval_seconds"]["source"] == "per process" and checks["eval_seconds"]["ok"]


def test_summary_without_baseline_rejected():
    with pytest.raises(ValueError, match="no 'handwritten' results.*Add 'handwritten'"):
        run.summarize({"headkit": [_result(1, 1, 1)]})


def test_variants_without_baseline_rejected(capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--variants", "headkit"])
    assert "must include the baseline 'handwritten'" in capsys.readouterr().err


def test_loss_disagreement_is_flagged():
    raw = {"handwritten": [_result(1, 1, 1, loss=0.5)],
           "headkit": [_result(1, 1, 1, loss=0.5004)],
           "canned_multihead": [_result(1, 1, 1, loss=0.52)]}
    agreement = run.loss_agreement(raw)
    assert agreement["headkit"]["ok"] and not agreement["canned_multihead"]["ok"]


def test_quadratic_graph_build_is_not_linear():
    def rows(build):
        return {f"scaling_headkit_{n}": [{"graph_build_seconds": t, "steps_per_second": 1.0}]
                for n, t in build.items()}

    linear = run.scaling_summary(rows({1: 0.2, 10: 1.1, 50: 5.1}))
    quadratic = run.scaling_summary(rows({1: 0.01, 10: 1.0, 50: 25.0}))
    assert linear["at_most_linear"] and not quadratic["at_most_linear"]
    assert linear["seconds_per_head"]["10-50"] == pytest.approx(0.1)


@pytest.mark.estimator
def test_tiny_run_writes_json_and_markdown_with_ratios_from_the_same_run(tmp_path):
    command = [
        sys.executable, os.path.join(BENCH, "run.py"), "--rounds", "1",
        "--variants", "handwritten,headkit", "--scaling-heads", "4", "--scaling-steps", "4",
        "--rows", "1024",
        "--warmup", "2", "--steps", "8", "--eval-batches", "2", "--calls", "3",
        "--out-dir", str(tmp_path), "--quiet", "--skip-interleaved", "--eval-share-rounds", "0",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(command, check=True, capture_output=True, env=env, timeout=120)
    report = json.loads((tmp_path / "results.json").read_text())
    assert {"meta", "config", "summary", "targets", "eval_loss_agreement", "raw"} <= set(report)
    assert set(report["raw"]) == {"handwritten", "headkit"}
    medians, ratios = report["summary"]["medians"], report["summary"]["ratios"]
    assert set(medians["headkit"]) == set(run.METRICS)
    for key in run.METRICS:
        assert medians["headkit"][key] > 0
        assert ratios["headkit"][key] == pytest.approx(
            medians["headkit"][key] / medians["handwritten"][key])
    serving = report["raw"]["headkit"][0]["serving"]
    assert serving["serving_default"]["input"] == "tf.Example"
    assert serving["raw_predict"]["signature"] == "predict"
    # Same initial weights, same batches, same steps: the same model.
    assert report["eval_loss_agreement"]["headkit"]["max_abs_difference"] <= 1e-3
    assert report["config"]["steps"] == 8
    table = (tmp_path / "results.md").read_text()
    assert "| headkit |" in table and "| train steps/s |" in table
    # Four heads: the kinds repeat, each head reading its own copy of its label column.
    scaled = report["scaling"]["by_heads"]["4"]
    assert scaled["graph_build_seconds"] > 0 and scaled["steps_per_second"] > 0


def test_the_report_shows_the_evaluation_share_and_its_target():
    raw = {"handwritten": [_result(200, 2.0, 1.0)], "headkit": [_result(190, 2.0, 1.0)]}
    share = {"rounds": 1, "steps": 1000, "eval_every": 100, "ok": True, "medians": {
        "checkpoint": {"wall_seconds": 27.0, "eval_seconds": 13.7, "eval_share": 0.51,
                       "steps_per_second": 37.0},
        "in_memory": {"wall_seconds": 8.6, "eval_seconds": 1.8, "eval_share": 0.21,
                      "steps_per_second": 116.0}}}
    summary = run.summarize(raw)
    report = {"meta": {"date": "today", "rounds": 1, "cpu_count": 2, "git_commit": "abc",
                       "git_dirty": False, "load_before": [0.1], "load_after": [0.2]},
              "config": {"calls": 3}, "summary": summary, "raw": raw,
              "targets": run.check_targets(summary["ratios"]), "eval_share": share,
              "eval_loss_agreement": None, "scaling": None}
    table = run.markdown(report)
    assert "| in_memory | 8.6 | 1.8 | 21% | 116 |" in table
    assert "| checkpoint | 27.0 | 13.7 | 51% | 37 |" in table
    assert "In-memory evaluation share 21% (target <= 25%): met." in table
    assert "| headkit: train() wall | 1.000 | <= 1.1 | yes | per process |" in table


@pytest.mark.estimator
def test_the_in_process_ab_reports_headkit_beside_the_plain_loop_references(tmp_path):
    out = tmp_path / "ab.json"
    command = [sys.executable, os.path.join(BENCH, "ab_train.py"), "--blocks", "2",
               "--steps-per-block", "32", "--warmup", "32", "--rows", "2048", "--json", str(out)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(command, check=True, capture_output=True, env=env, timeout=180)
    result = json.loads(out.read_text())
    names = {"handwritten", "headkit", "headkit_xla", "headkit_spr32", "headkit_spr32_xla",
             "handwritten_loop32", "handwritten_loop32_xla"}
    assert set(result["us_per_step"]) == names
    per_step = result["us_per_step"]
    for name in names:
        assert per_step[name] > 0
        assert result["steps_per_second_ratio"][name] == pytest.approx(
            per_step["handwritten"] / per_step[name])
    # The looped graphs hold one step's ops plus the loop's, not 32 copies of a step.
    assert result["graph_ops"]["headkit_spr32"] < 2 * result["graph_ops"]["headkit"]
    assert result["graph_ops"]["headkit_spr32_xla"] < 2 * result["graph_ops"]["headkit"]
