"""Pass-through features: copied unchanged into predictions and every predict signature.

The hk.KerasModel side (specs taken from the training data, the same export)
is in tests/keras/test_lifecycle.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.serving.contract import read_signature_defs
from headkit.serving.signatures import PREDICT
from headkit.training.record import read_record
from tests.conftest import PASSTHROUGH, make_data, tiny_body, tiny_heads

# Pass-through is tested through hk.Estimator models: TensorFlow 2.15 only.
pytestmark = pytest.mark.estimator

IDS = np.array(["id-7", "id-8", "id-9"])


def test_every_predict_signature_takes_and_returns_the_pass_through_features(with_ids):
    _, export_dir = with_ids
    for key, signature in read_signature_defs(export_dir).items():
        if key.startswith("__"):
            continue
        if signature.method_name == PREDICT:
            assert {"example_id", "tag"} <= set(signature.inputs) and {
                "example_id", "tag"} <= set(signature.outputs), key
            assert signature.outputs["example_id"].dtype == tf.string.as_datatype_enum
        else:  # classify and regress: as TensorFlow Serving requires them
            assert list(signature.inputs) == ["inputs"], key
            assert set(signature.outputs) in ({"classes", "scores"}, {"outputs"}), key


def test_the_manifest_records_each_pass_through_dtype_shape_and_source(with_ids):
    _, export_dir = with_ids
    manifest = hk.load(export_dir).manifest
    assert manifest["passthrough"] == {
        "example_id": {"dtype": "string", "shape": [], "source": PASSTHROUGH["example_id"]},
        "tag": {"dtype": "string", "shape": [1], "source": PASSTHROUGH["tag"]}}
    assert "example_id" in manifest["signatures"]["kind/predict"]["outputs"]
    assert "example_id" not in manifest["feature_spec"]  # tf.Example clients need not send it


def test_load_and_predict_return_the_features_unchanged_beside_the_heads(with_ids):
    estimator, export_dir = with_ids
    features, _ = make_data(3)
    served = hk.load(export_dir)
    result = served.predict({**features, "example_id": IDS})
    assert sorted(result) == ["example_id", "flag", "kind", "size", "tag"]
    assert result["example_id"].tolist() == [i.encode() for i in IDS]
    assert served.predict({**features, "example_id": IDS}, head="kind")["tag"].shape == (3, 1)

    rows = list(estimator.predict(hk.input_fn({**features, "example_id": IDS}, None,
                                              estimator.heads)))
    assert [row["example_id"] for row in rows] == [[b"id-7"], [b"id-8"], [b"id-9"]]
    np.testing.assert_allclose(rows[0]["size/predictions"], result["size"]["predictions"][0],
                               rtol=1e-5)


def test_a_missing_pass_through_feature_is_named_at_predict(with_ids):
    estimator, export_dir = with_ids
    features, _ = make_data(3)
    with pytest.raises(hk.DataError, match=(
            r"passthrough 'example_id' is not a feature of this input \(features: \['tag', "
            r"'x'\]\)\. Add the column, or drop it from passthrough\.")):
        next(estimator.predict(hk.input_fn(features, None, estimator.heads)))
    with pytest.raises(hk.DataError, match=r"feature 'example_id' is missing; the export needs "
                                           r"\['example_id', 'tag', 'x'\]"):
        hk.load(export_dir).predict(features)


def test_specs_come_from_the_training_data_and_are_kept_in_the_record(tmp_path):
    features, labels = make_data(32)
    features["example_id"] = np.arange(32).astype("int64")
    model_dir = str(tmp_path / "model")
    estimator = hk.Estimator(tiny_body, tiny_heads(), model_dir=model_dir,
                             passthrough=("example_id",))
    estimator.train(hk.input_fn(features, labels, estimator.heads, num_epochs=None), steps=2)
    assert read_record(model_dir)["passthrough"] == {
        "example_id": {"dtype": "int64", "shape": [1], "source": "training data"}}
    again = hk.Estimator(tiny_body, tiny_heads(), model_dir=model_dir, passthrough=("example_id",))
    export_dir = again.export(str(tmp_path / "exports"), heads=["kind"])
    result = hk.load(export_dir).predict({**make_data(2)[0], "example_id": [41, 42]})
    assert result["example_id"].tolist() == [[41], [42]]
    with open(os.path.join(export_dir, "assets.extra", "headkit.json")) as handle:
        assert json.load(handle)["passthrough"]["example_id"]["dtype"] == "int64"


def test_an_export_without_a_known_spec_says_how_to_declare_it(trained, tmp_path):
    estimator, _, _ = trained  # trained without example_id
    undeclared = hk.Estimator(tiny_body, tiny_heads(), model_dir=estimator.model_dir,
                              passthrough=("example_id",))
    with pytest.raises(hk.ConfigError, match=(
            r"export: passthrough 'example_id' is not a body Input, was not declared, and no "
            r"training run of this model_dir has seen it, so its dtype and shape are unknown\. "
            r"Declare it \(passthrough=\{'example_id': tf.TensorSpec\(\[None\], tf.string\)\}\)")):
        undeclared.export(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_training_data_without_an_undeclared_pass_through_feature_is_refused(tmp_path):
    features, labels = make_data(16)
    estimator = hk.Estimator(tiny_body, tiny_heads(), model_dir=str(tmp_path / "m"),
                             passthrough=("example_id",))
    with pytest.raises(hk.DataError, match=(
            r"passthrough 'example_id' is not a feature of the training data \(features: "
            r"\['tag', 'x'\]\), and it is not a body Input.*declare it with "
            r"passthrough=\{'example_id': tf.TensorSpec\(\[None\], tf.string\)\}")):
        estimator.train(hk.input_fn(features, labels, estimator.heads, num_epochs=None), steps=1)


@pytest.mark.parametrize("passthrough, error, message", [
    ("example_id", TypeError, r"passthrough must be a tuple of feature names \(got the string "
                              r"'example_id'\); write passthrough=\('example_id',\)"),
    (("kind",), hk.ConfigError, r"passthrough 'kind' clashes with the head 'kind'"),
    (("kind/id",), hk.ConfigError, r"passthrough 'kind/id' clashes with the flat prediction "
                                   r"keys 'kind/<key>' of head 'kind'"),
    (("loss",), hk.ConfigError, r"passthrough 'loss' clashes with the reserved name 'loss'"),
    ({"classes": tf.TensorSpec([None], tf.string)}, hk.ConfigError,
     r"passthrough 'classes' clashes with the output 'classes' of head 'kind': its predict "
     r"signatures would hold both under one key"),
    ({"example_id": tf.TensorSpec([1], tf.string)}, hk.ConfigError,
     r"passthrough\['example_id'\]: the shape \(1,\) must start with the batch dimension None"),
    ({"example_id": "string"}, TypeError, r"passthrough\['example_id'\] must be a tf.TensorSpec"),
])
def test_a_pass_through_that_cannot_work_is_refused_when_built(passthrough, error, message,
                                                                tmp_path):
    with pytest.raises(error, match=message):
        hk.Estimator(tiny_body, tiny_heads(), model_dir=str(tmp_path), passthrough=passthrough)
