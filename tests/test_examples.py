"""The examples run as a user runs them, and the quickstart clears its bars."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.estimator  # they train hk.Estimator models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_clears_its_bars_and_serves_every_head(tmp_path):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "quickstart.py"),
         "--model-dir", str(tmp_path / "model"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "All three heads clear their bars on the held-out split." in out
    assert "Test metrics of the best export" in out and "early stopping" in out
    assert "species/accuracy" in out and "body_mass_g/rmse" in out and "sex/accuracy" in out
    assert "serving_default *" in out and "classify" in out and "regress" in out
    for head in ("species", "body_mass_g", "sex"):
        assert f"  {head} " in out.split("Predictions from the reloaded export")[1]
    best = os.listdir(tmp_path / "model" / "export" / "best")
    assert 1 <= len(best) <= 2 and all(name.isdigit() for name in best)
    assert len(os.listdir(tmp_path / "model" / "export" / "final")) == 1


def test_readme_example_runs_and_predicts_species(tmp_path):
    """The README's first Python block, run as written (in a scratch directory)."""
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = handle.read()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "readme_example.py"
    script.write_text("import headkit as hk\nhk.quiet_tensorflow()\n" + block)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = re.findall(r"b'(\w+)'", done.stdout)
    assert len(printed) == 3 and set(printed) <= {"Adelie", "Chinstrap", "Gentoo"}, done.stdout


def test_quickstart_with_few_steps_derives_its_schedule_and_exits_0(tmp_path):
    """--steps below the fixed 600 (eval_every 100 x patience 5 + 1) used to be refused."""
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "quickstart.py"),
         "--model-dir", str(tmp_path / "model"), "--quiet", "--steps", "60"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Trained 60 steps" in done.stdout
    assert "--steps 60 is a short run: the quality bars apply from --steps 1000." in done.stdout
    assert "Predictions from the reloaded export" in done.stdout


def test_quickstart_runs_on_the_keras_backend_and_serves_the_same_signatures(tmp_path):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "quickstart.py"), "--backend", "keras",
         "--model-dir", str(tmp_path / "model"), "--quiet", "--steps", "60"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "Trained 60 steps" in out and "Predictions from the reloaded export" in out
    assert "serving_default *" in out and "classify" in out and "regress" in out
    assert any(name.startswith("ckpt-") for name in os.listdir(tmp_path / "model"))
