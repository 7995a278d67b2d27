"""Exports cross TensorFlow versions, both ways, with the same contract and the same numbers.

Run on TensorFlow 2.15 and on the newest (``.ci/run`` runs both):

- ``fixtures/keras_tf2_21/``: an ``hk.KerasModel`` export written on TensorFlow 2.21
  (Keras 3) by ``make_keras_fixture.py``, with what it served there;
- ``fixtures/release_0_1_0/export``: an ``hk.Estimator`` export written on TensorFlow
  2.15 by headkit 0.1.0 (``test_release_fixtures.py`` checks what it serves).

A Keras export made here must declare the contract of that Estimator export:
the same signatures, method names, inputs, outputs, dtypes and shapes.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from tests.conftest import ROOT, signature_contract

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
KERAS_EXPORT = os.path.join(FIXTURES, "keras_tf2_21", "export")
ESTIMATOR_EXPORT = os.path.join(FIXTURES, "release_0_1_0", "export")
sys.path.insert(0, FIXTURES)
import make_keras_fixture  # noqa: E402
import release_model  # noqa: E402

with open(os.path.join(FIXTURES, "keras_tf2_21", "expected.json")) as _handle:
    EXPECTED = json.load(_handle)


def test_the_keras_fixture_was_written_by_the_keras_backend_on_tensorflow_2_21():
    manifest = hk.load(KERAS_EXPORT).manifest
    assert manifest["backend"] == "keras"
    assert manifest["tensorflow_version"].startswith("2.21.")
    assert EXPECTED["tensorflow_version"] == manifest["tensorflow_version"]


def test_a_keras_export_from_tensorflow_2_21_serves_here_what_it_served_there():
    model = hk.load(KERAS_EXPORT)
    assert model.heads == release_model.heads() and model.default_head.name == "kind"
    served = model.predict(release_model.serving_rows())
    for head, tensors in EXPECTED["predict"].items():
        for key, values in tensors.items():
            np.testing.assert_allclose(served[head][key], values, rtol=1e-6, atol=1e-6,
                                       err_msg=f"{head}/{key}")
    for head, classes in EXPECTED["classes"].items():
        assert [c.decode() for c in served[head]["classes"].ravel()] == classes
    classified = model._loaded.signatures["serving_default"](
        inputs=tf.constant(make_keras_fixture.serialized_rows()))
    want = EXPECTED["serving_default"]
    assert [[c.decode() for c in row] for row in classified["classes"].numpy()] == want["classes"]
    np.testing.assert_allclose(classified["scores"].numpy(), want["scores"], rtol=1e-6,
                               atol=1e-6)


def test_the_keras_fixture_declares_the_contract_of_the_tensorflow_2_15_estimator_export():
    assert signature_contract(KERAS_EXPORT) == signature_contract(ESTIMATOR_EXPORT)


def test_a_keras_export_made_here_declares_the_tensorflow_2_15_estimator_contract(tmp_path):
    heads = release_model.heads()
    features, labels = release_model.data()
    model = hk.KerasModel(release_model.body, heads, learning_rate=0.05, seed=0,
                          model_dir=str(tmp_path / "model"))
    model.train(hk.input_fn(features, labels, heads, batch_size=8), steps=2)
    export_dir = model.export(str(tmp_path / "exports"))
    assert signature_contract(export_dir) == signature_contract(ESTIMATOR_EXPORT)
    ours, theirs = hk.load(export_dir).manifest, hk.load(ESTIMATOR_EXPORT).manifest
    for key in ("signatures", "feature_spec", "heads", "default_head"):
        assert ours[key] == theirs[key], key


@pytest.mark.timeout(120)
def test_hk_estimator_says_what_to_install_where_tf_estimator_cannot_run():
    import subprocess

    # sys.modules[name] = None makes `import name` fail, as on a TensorFlow without it.
    code = ("import sys\n"
            "sys.modules['tensorflow_estimator'] = None\n"
            "import headkit as hk\n"
            "try:\n"
            "    hk.Estimator(lambda: None, [hk.Head('y', hk.Regression())])\n"
            "except hk.BackendUnavailableError as error:\n"
            "    print(isinstance(error, ImportError), error)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("True hk.Estimator needs tf.estimator, and ")
    assert "pip install 'headkit[estimator]'" in done.stdout
    assert "TensorFlow 2.13 to 2.15" in done.stdout and "hk.KerasModel" in done.stdout


@pytest.mark.skipif(tuple(map(int, tf.__version__.split(".")[:2])) <= (2, 15),
                    reason="TensorFlow 2.15 has tf.estimator")
def test_on_the_newest_tensorflow_hk_estimator_names_the_version_and_the_extra():
    with pytest.raises(hk.BackendUnavailableError,
                       match=rf"TensorFlow {tf.__version__} has no tf.estimator \(it ends at "
                             r"2.15\). .*pip install 'headkit\[estimator\]'"):
        hk.Estimator(release_model.body, release_model.heads())
