"""What headkit 0.1.0 left on users' disks still loads, inspects and resumes.

The fixtures in tests/fixtures/release_0_1_0/ were written by headkit 0.1.0
(see tests/fixtures/README.md); they are never regenerated.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest

import headkit as hk
from tests.conftest import ROOT

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
RELEASE = os.path.join(FIXTURES, "release_0_1_0")
sys.path.insert(0, FIXTURES)
import release_model  # noqa: E402

with open(os.path.join(RELEASE, "expected.json")) as _handle:
    EXPECTED = json.load(_handle)


def test_a_0_1_0_export_loads_and_serves_what_0_1_0_served():
    model = hk.load(os.path.join(RELEASE, "export"))
    assert model.manifest["schema_version"] == 1  # 0.1.0 wrote none
    assert model.default_head.name == "kind" and model.heads == release_model.heads()
    served = model.predict(release_model.serving_rows())
    predictions = EXPECTED["predictions"]
    for head, tensors in served.items():
        for key, values in tensors.items():
            if values.dtype.kind == "O":
                continue
            np.testing.assert_allclose(values, predictions[head][key], rtol=1e-6, atol=1e-6)
    for head, classes in predictions["classes"].items():
        assert [c.decode() for c in served[head]["classes"].ravel()] == classes


def test_a_0_1_0_export_inspects(capsys):
    from headkit import cli

    assert cli.main(["inspect", "--json", os.path.join(RELEASE, "export")]) == 0
    description = json.loads(capsys.readouterr().out)
    assert description["heads"] == ["kind", "size", "flag"]
    assert description["schema_version"] == 1 and description["global_step"] == 10
    assert {s["key"] for s in description["signatures"]} == set(hk.load(
        os.path.join(RELEASE, "export")).signatures)


@pytest.mark.estimator
@pytest.mark.timeout(300)
def test_a_0_1_0_model_dir_resumes_its_steps_and_its_record(tmp_path):
    import tensorflow as tf

    model_dir = str(tmp_path / "model_dir")
    shutil.copytree(os.path.join(RELEASE, "model_dir"), model_dir)
    heads = release_model.heads()
    features, labels = release_model.data()
    estimator = hk.Estimator(release_model.body, heads, optimizer="adam", learning_rate=0.05,
                             model_dir=model_dir,
                             config=tf.estimator.RunConfig(tf_random_seed=0))
    assert estimator.global_step() == EXPECTED["global_step"] == 10
    result = hk.train_and_evaluate(
        estimator, hk.input_fn(features, labels, heads, batch_size=8, shuffle=True,
                               num_epochs=None, seed=0),
        hk.input_fn(features, labels, heads, batch_size=16),
        max_steps=15, eval_every=5, progress=False)
    assert result.steps == 15
    assert [e.step for e in result.history] == EXPECTED["history_steps"] + [15]
    assert result.history[0].metrics["kind/accuracy"] == 0.4375  # 0.1.0's record, kept
