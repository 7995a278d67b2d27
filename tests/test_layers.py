"""The layers hold: import-linter's contracts, no tf.estimator outside estimator/, a TF-free spec.

import-linter sees imports, not attribute access such as ``tf.estimator.X``; the
AST test below catches those.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from typing import Iterator, List, Tuple

import pytest

from tests.conftest import ROOT

PACKAGE = os.path.join(ROOT, "headkit")
ESTIMATOR_ONLY = ("tensorflow.estimator", "tensorflow.compat.v1.train",
                  "tensorflow.compat.v1.estimator", "tensorflow_estimator")


def test_import_linter_contracts_are_kept():
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    done = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _estimator_uses(path: str) -> Iterator[Tuple[int, str]]:
    """(line, what) for each use of tf.estimator or TF1 training outside the estimator backend."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    aliases = {}  # local name -> module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.startswith(ESTIMATOR_ONLY):
                    yield node.lineno, f"import {name}"
        elif isinstance(node, ast.Attribute) and not isinstance(getattr(node, "parent", None),
                                                                 ast.Attribute):
            dotted = _dotted(node)
            head, _, rest = dotted.partition(".")
            full = f"{aliases.get(head, head)}.{rest}" if rest else aliases.get(head, head)
            if full.startswith(ESTIMATOR_ONLY):
                yield node.lineno, dotted


def _modules_outside_estimator() -> List[str]:
    found = []
    for folder, _, files in os.walk(PACKAGE):
        if os.path.relpath(folder, PACKAGE).split(os.sep)[0] == "estimator":
            continue
        found += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    return sorted(found)


def test_no_tf_estimator_or_tf1_training_outside_the_estimator_backend():
    uses = [f"{os.path.relpath(path, ROOT)}:{line}: {what}"
            for path in _modules_outside_estimator() for line, what in _estimator_uses(path)]
    assert not uses, "tf.estimator / tf.compat.v1.train belong in headkit/estimator/:\n" + (
        "\n".join(uses))


def test_the_ast_check_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import tensorflow as tf\nfrom tensorflow import estimator\n"
                      "x = tf.estimator.ModeKeys.TRAIN\ny = tf.compat.v1.train.Saver\n"
                      "z = tf.compat.v1.Session\n")
    found = sorted(line for line, _ in _estimator_uses(str(sample)))
    assert found[0] == 2 and 3 in found and 4 in found and 5 not in found


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=240, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def test_import_headkit_and_config_files_load_no_tensorflow():
    done = _run(
        "import sys, headkit as hk, headkit.spec, headkit.training\n"
        "heads = hk.HeadSet.from_file('examples/heads.toml')\n"
        "assert heads.default_head.name == 'species'\n"
        "hk.EarlyStopping('species/accuracy'); hk.BestExport(keep=1)\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules))\n")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.timeout(300)
def test_the_backend_neutral_core_works_without_tensorflow_estimator():
    # sys.modules[name] = None makes `import name` fail, as on a TensorFlow without it.
    done = _run(
        "import sys\n"
        "sys.modules['tensorflow_estimator'] = None\n"
        "import headkit as hk\n"
        "from headkit import body, data, kinds, serving, training\n"
        "import numpy as np, tensorflow as tf\n"
        "heads = hk.HeadSet([hk.Head('y', hk.Regression(), metrics=('rmse',))])\n"
        "labels, mask = kinds.get(heads['y']).prepare_labels(heads['y'], tf.constant([1.0]))\n"
        "features, _ = next(iter(hk.input_fn({'x': np.ones(4)}, {'y': np.ones(4)}, heads,\n"
        "                                    batch_size=2)()))\n"
        "print(sorted(serving.signature_table(heads)), float(labels[0, 0]),\n"
        "      features['x'].shape.as_list())\n"
        "try:\n"
        "    import tensorflow_estimator\n"
        "except ImportError:\n"
        "    print('no tensorflow_estimator')\n")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == [
        "['predict', 'serving_default', 'y', 'y/predict'] 1.0 [2, 1]", "no tensorflow_estimator"]
