"""Every output kind trains on the Keras backend with the Estimator's numbers and export.

The Estimator trains first (Keras 2 models built before a graph-mode model are
invalidated), then ``KerasModel.from_estimator`` evaluates the same weights.
"""

from __future__ import annotations

import numpy as np
import pytest

import headkit as hk
from headkit.serving.contract import read_signature_defs
from tests.kinds.test_end_to_end import HEADS, _body, _data

# Compares with hk.Estimator on the same weights: TensorFlow 2.15 only.
pytestmark = pytest.mark.estimator


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    features, labels = _data(64, seed=0)
    eval_features, eval_labels = _data(48, seed=1)
    eval_input = hk.input_fn(eval_features, eval_labels, HEADS, batch_size=16)
    estimator = hk.Estimator(_body, HEADS, learning_rate=0.05,
                             model_dir=str(tmp_path_factory.mktemp("kinds_estimator")))
    estimator.train(hk.input_fn(features, labels, HEADS, batch_size=16, shuffle=True,
                                num_epochs=None, seed=0), max_steps=20)
    theirs = estimator.evaluate(eval_input)
    estimator_export = estimator.export(str(tmp_path_factory.mktemp("kinds_estimator_export")))
    model = hk.KerasModel.from_estimator(
        estimator, model_dir=str(tmp_path_factory.mktemp("kinds_keras")))
    ours = model.evaluate(eval_input)
    keras_export = model.export(str(tmp_path_factory.mktemp("kinds_keras_export")))
    return dict(model=model, theirs=theirs, ours=ours, estimator_export=estimator_export,
                keras_export=keras_export, features=eval_features, labels=labels,
                train_features=features)


def test_every_kind_reports_the_estimators_metrics(both):
    ours, theirs = both["ours"], both["theirs"]
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        tolerance = 5e-3 if key.split("/")[-1] in ("auc", "auc_pr") else 1e-5
        assert ours[key] == pytest.approx(float(value), rel=tolerance, abs=tolerance), key


def test_every_kind_exports_the_same_contract_and_predictions(both):
    def contract(export_dir):
        return {key: (sig.method_name, sorted(sig.inputs), sorted(sig.outputs))
                for key, sig in read_signature_defs(export_dir).items()
                if not key.startswith("__")}

    assert contract(both["keras_export"]) == contract(both["estimator_export"])
    rows = {"x": both["features"]["x"][:5]}
    ours = hk.load(both["keras_export"]).predict(rows)
    theirs = hk.load(both["estimator_export"]).predict(rows)
    for head in ("tags", "visits", "share"):
        np.testing.assert_allclose(ours[head]["predictions" if head != "tags"
                                              else "probabilities"],
                                   theirs[head]["predictions" if head != "tags"
                                                else "probabilities"], rtol=1e-5, atol=1e-6)


def test_every_kind_trains_on_keras(both):
    model = both["model"]
    step = model.global_step()
    model.train(hk.input_fn(both["train_features"], both["labels"], HEADS, batch_size=16,
                            num_epochs=None), steps=10)
    assert model.global_step() == step + 10
    weights = model.keras_model.headkit_body.trainable_weights
    assert all(np.isfinite(w.numpy()).all() for w in weights)
