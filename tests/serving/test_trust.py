"""Files never run code: a config file or a manifest naming a callable imports and calls nothing.

The callable named here lives in a module that leaves a mark on disk when it is
imported, and another when it is called; every test checks both marks are absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import headkit as hk
from tests.conftest import ROOT

EVIL = '''
import pathlib
pathlib.Path({imported!r}).write_text("imported")

def mark(*args, **kwargs):
    pathlib.Path({called!r}).write_text("called")
    return 0.0
'''


@pytest.fixture()
def evil(tmp_path, monkeypatch):
    """A module `headkit_evil_module` on sys.path; returns the two mark paths."""
    imported, called = tmp_path / "imported.mark", tmp_path / "called.mark"
    (tmp_path / "headkit_evil_module.py").write_text(
        EVIL.format(imported=str(imported), called=str(called)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield imported, called
    sys.modules.pop("headkit_evil_module", None)


def _no_marks(marks):
    assert [m.name for m in marks if m.exists()] == []
    assert "headkit_evil_module" not in sys.modules


@pytest.mark.parametrize("where", ["loss", "metric"])
def test_a_config_file_naming_a_callable_is_refused_unless_the_caller_passes_it(
        evil, tmp_path, where):
    head = {"name": "y", "output": {"type": "regression"}}
    if where == "loss":
        head["loss"] = {"callable": "headkit_evil_module:mark"}
    else:
        head["metrics"] = [{"callable": "headkit_evil_module:mark"}]
    path = tmp_path / "heads.json"
    path.write_text(json.dumps({"heads": [head]}))
    with pytest.raises(hk.ConfigError, match=r"'headkit_evil_module:mark' is not among the "
                                             r"custom_objects passed \(none\)\. headkit never "
                                             r"imports code named in a file"):
        hk.HeadSet.from_file(path)
    _no_marks(evil)

    import tensorflow as tf

    def my_mark(*args):  # a loss (labels, outputs), or a metric factory ()
        return args[0] if args else tf.keras.metrics.MeanAbsoluteError(name="my_mae")

    heads = hk.HeadSet.from_file(path, custom_objects={"mark": my_mark})
    assert (heads["y"].loss if where == "loss" else heads["y"].metrics[0]) is my_mark
    _no_marks(evil)


@pytest.fixture()
def tampered_export(exported, tmp_path):
    """The session's export, its manifest now naming the evil module as loss and metric."""
    _, export_dir, features = exported
    copy = str(tmp_path / "export")
    shutil.copytree(export_dir, copy)
    path = os.path.join(copy, "assets.extra", "headkit.json")
    with open(path) as handle:
        manifest = json.load(handle)
    manifest["heads"]["heads"][1]["loss"] = {"callable": "headkit_evil_module:mark"}
    manifest["heads"]["heads"][1]["metrics"] = [{"callable": "headkit_evil_module:mark"}]
    with open(path, "w") as handle:
        json.dump(manifest, handle)
    return copy, features


def test_load_and_predict_never_import_what_a_manifest_names(evil, tampered_export):
    export_dir, features = tampered_export
    with pytest.warns(UserWarning, match="never imports code named in a file"):
        model = hk.load(export_dir)
    model.predict({k: v[:2] for k, v in features.items()})
    assert model.heads["size"].loss is None and model.heads["size"].metrics == ()
    _no_marks(evil)


def test_the_cli_never_imports_what_a_manifest_names(evil, tampered_export, tmp_path):
    export_dir, features = tampered_export
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"x": features["x"][0].tolist(), "tag": ["u"]}) + "\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]),
               TF_CPP_MIN_LOG_LEVEL="3")
    for command in (["inspect", export_dir], ["predict", export_dir, "--input", str(rows)]):
        done = subprocess.run([sys.executable, "-m", "headkit.cli", *command], env=env,
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-2000:]
    _no_marks(evil)
