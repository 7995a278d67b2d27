"""The export contract: every head's signatures, TF Serving's rules, verification, load()."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit import serving
from headkit.kinds import REGRESS
from tests.conftest import VOCABULARY, tiny_body, tiny_heads


def _examples(features, rows):
    serialized = []
    for i in rows:
        feature = {
            "x": tf.train.Feature(float_list=tf.train.FloatList(value=features["x"][i])),
            "tag": tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[features["tag"][i, 0].encode()])
            ),
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        serialized.append(example.SerializeToString())
    return serialized


def test_signature_layout_has_every_head_twice_plus_default_and_predict(exported):
    _, export_dir, _ = exported
    model = hk.load(export_dir)
    assert sorted(model.signatures) == [
        "flag", "flag/predict", "kind", "kind/predict", "predict", "serving_default",
        "size", "size/predict",
    ]
    assert model.signatures["kind"]["method"] == "tensorflow/serving/classify"
    assert model.signatures["size"]["method"] == "tensorflow/serving/regress"
    assert model.signatures["serving_default"]["heads"] == ["kind"]
    assert model.default_head.name == "kind"


def test_classify_and_regress_run_as_tensorflow_serving_runs_them(exported):
    """A tf.compat.v1 session, tag serve, feed serialized tf.Example by tensor name."""
    _, export_dir, features = exported
    serialized = _examples(features, [0, 1, 2])
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
        classify = meta.signature_def["kind"]
        assert classify.method_name == "tensorflow/serving/classify"
        assert list(classify.inputs) == ["inputs"]
        classes, scores = session.run(
            [classify.outputs["classes"].name, classify.outputs["scores"].name],
            {classify.inputs["inputs"].name: serialized},
        )
        assert classes.dtype == object and classes.shape == (3, 3)
        assert [c.decode() for c in classes[0]] == list(VOCABULARY)
        assert scores.dtype == np.float32 and scores.shape == (3, 3)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)

        binary = meta.signature_def["flag"]
        classes, scores = session.run(
            [binary.outputs["classes"].name, binary.outputs["scores"].name],
            {binary.inputs["inputs"].name: serialized},
        )
        assert classes.tolist() == [[b"0", b"1"]] * 3 and scores.shape == (3, 2)

        regress = meta.signature_def["size"]
        assert regress.method_name == "tensorflow/serving/regress"
        (values,) = session.run(
            [regress.outputs["outputs"].name], {regress.inputs["inputs"].name: serialized}
        )
        assert values.dtype == np.float32 and values.shape in ((3,), (3, 1))

        default = meta.signature_def["serving_default"]
        assert default.method_name == "tensorflow/serving/classify"
        assert default.outputs["classes"].name == classify.outputs["classes"].name


def test_every_head_is_reachable_through_a_raw_tensor_predict_signature(exported):
    _, export_dir, features = exported
    loaded = tf.saved_model.load(export_dir)
    raw = {"x": tf.constant(features["x"][:5]), "tag": tf.constant(features["tag"][:5])}
    everything = loaded.signatures["predict"](**raw)
    for head in ("kind", "size", "flag"):
        own = loaded.signatures[f"{head}/predict"](**raw)
        assert own, head
        for key, value in own.items():
            assert value.numpy().tolist() == everything[f"{head}/{key}"].numpy().tolist()
    assert everything["kind/classes"].shape == (5, 1)
    assert everything["size/predictions"].shape == (5, 1)


def test_loaded_predictions_equal_estimator_predictions(exported):
    estimator, export_dir, features = exported
    rows = {"x": features["x"][:8], "tag": features["tag"][:8]}
    expected = list(
        estimator.predict(
            lambda: tf.data.Dataset.from_tensor_slices(rows).batch(8), yield_single_examples=False
        )
    )[0]
    model = hk.load(export_dir)
    for as_rows in (False, True):
        given = (
            [{"x": rows["x"][i].tolist(), "tag": rows["tag"][i, 0]} for i in range(8)]
            if as_rows else rows
        )
        got = model.predict(given)
        assert set(got) == {"kind", "size", "flag"}
        for head in got:
            for key, value in got[head].items():
                want = expected[f"{head}/{key}"]
                if value.dtype == object:
                    assert value.tolist() == want.tolist(), (head, key)
                else:
                    np.testing.assert_allclose(value, want, atol=1e-5, err_msg=f"{head}/{key}")
    one = model.predict(rows, head="size")
    assert list(one) == ["size"]
    np.testing.assert_allclose(one["size"]["predictions"], expected["size/predictions"], atol=1e-5)


def test_predict_accepts_a_dataframe(exported):
    pd = pytest.importorskip("pandas")
    _, export_dir, features = exported
    model = hk.load(export_dir)
    frame = pd.DataFrame({"x": list(features["x"][:3]), "tag": features["tag"][:3, 0]})
    frame["x"] = frame["x"].apply(np.asarray)
    got = model.predict({"x": np.stack(frame["x"]), "tag": frame["tag"].to_numpy()})
    assert got["kind"]["classes"].shape == (3, 1)


def test_default_head_in_last_position_serves_serving_default(trained, tmp_path):
    estimator, _, _ = trained
    heads = tiny_heads(default="flag")
    assert heads.names[-1] == "flag"
    relabelled = hk.Estimator(tiny_body, heads, model_dir=estimator.model_dir)
    export_dir = relabelled.export(str(tmp_path))
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
    default = meta.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/classify"
    assert default.outputs["scores"].name == meta.signature_def["flag"].outputs["scores"].name
    assert default.outputs["scores"].tensor_shape.dim[1].size == 2
    assert hk.load(export_dir).default_head.name == "flag"


def test_manifest_round_trips_the_headset_and_records_step_and_spec(exported):
    estimator, export_dir, _ = exported
    manifest = serving.read_manifest(export_dir)
    assert hk.HeadSet.from_dict(manifest["heads"]) == estimator.heads
    assert manifest["global_step"] == 30
    assert manifest["feature_spec"] == {
        "tag": {"dtype": "string", "kind": "fixed", "shape": [1]},
        "x": {"dtype": "float32", "kind": "fixed", "shape": [4]},
    }
    assert manifest["tensorflow_version"] == tf.__version__
    assert manifest["headkit_version"] == hk.__version__
    assert set(manifest["signatures"]) == set(serving.signature_table(estimator.heads))


def test_an_impossible_signature_fails_the_export_and_leaves_nothing(
    trained, tmp_path, monkeypatch
):
    estimator, _, _ = trained
    from headkit.estimator import model_fn as model_fn_lib

    real = model_fn_lib._export_output

    def broken(method, outputs, *passthrough):
        if method == REGRESS:  # TF Serving rejects regress outputs of [batch, 2]
            value = outputs["outputs"]
            return tf.estimator.export.RegressionOutput(value=tf.concat([value, value], 1))
        return real(method, outputs, *passthrough)

    monkeypatch.setattr(model_fn_lib, "_export_output", broken)
    expected = r"'size': 'outputs' must be float \[batch\]"
    with pytest.raises(hk.ExportError, match=expected) as raised:
        estimator.export(str(tmp_path))
    assert "removed" in str(raised.value)
    assert os.listdir(tmp_path) == []


def test_a_dropped_signature_is_named_and_nothing_is_left(trained, tmp_path, monkeypatch):
    estimator, _, _ = trained
    from headkit.estimator import model_fn as model_fn_lib

    real = model_fn_lib.export_outputs

    def dropping(heads, per_head, *passthrough):
        result = real(heads, per_head, *passthrough)
        del result["flag/predict"]
        return result

    monkeypatch.setattr(model_fn_lib, "export_outputs", dropping)
    with pytest.raises(hk.ExportError, match=r"'flag/predict': the model_fn produced no export"):
        estimator.export(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_explicit_feature_spec_overrides_the_body_inputs(trained, tmp_path):
    estimator, _, _ = trained
    spec = {
        "x": tf.io.FixedLenFeature([4], tf.float32),
        "tag": tf.io.FixedLenFeature([1], tf.string, default_value=["u"]),
    }
    export_dir = estimator.export(str(tmp_path), feature_spec=spec)
    manifest = serving.read_manifest(export_dir)
    assert manifest["feature_spec"]["tag"]["default_value"] == ["u"]


@pytest.mark.estimator
def test_export_without_a_checkpoint_says_train_first(tmp_path):
    estimator = hk.Estimator(tiny_body, tiny_heads(), model_dir=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="no checkpoint .* Train the estimator first"):
        estimator.export(str(tmp_path / "exports"))


def test_load_of_a_non_export_names_the_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a headkit export"):
        hk.load(str(tmp_path))


def test_predict_names_a_missing_feature(exported):
    _, export_dir, features = exported
    with pytest.raises(ValueError, match=r"feature 'tag' is missing"):
        hk.load(export_dir).predict({"x": features["x"][:2]})


def test_manifest_is_json_with_the_signature_table(exported):
    _, export_dir, _ = exported
    with open(os.path.join(export_dir, "assets.extra", "headkit.json")) as handle:
        manifest = json.load(handle)
    assert manifest["signatures"]["kind/predict"]["inputs"] == ["tag", "x"]
    assert manifest["signatures"]["kind"]["inputs"] == ["inputs"]
    assert manifest["signatures"]["kind"]["outputs"] == ["classes", "scores"]


@pytest.mark.estimator
def test_a_lambda_loss_exports_and_loads_without_it(tmp_path):
    """A custom loss from a training script does not block export or hk.load."""
    def body():
        x = tf.keras.Input((4,), name="x")
        return tf.keras.Model({"x": x}, {"size": tf.keras.layers.Dense(1)(x)})

    heads = hk.HeadSet([hk.Head("size", hk.Regression(),
                                loss=lambda labels, outputs: tf.abs(labels - outputs))])
    features = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    estimator = hk.Estimator(body, heads, model_dir=str(tmp_path / "model"))
    estimator.train(lambda: tf.data.Dataset.from_tensor_slices(
        ({"x": features}, features[:, :1])).repeat().batch(8), steps=2)
    export_dir = estimator.export(str(tmp_path / "exports"))
    with pytest.warns(UserWarning, match=r"size.loss=.*<lambda>.*prediction does not use them"):
        model = hk.load(export_dir)
    assert model.heads["size"].loss is None
    assert model.predict({"x": features[:2]})["size"]["predictions"].shape == (2, 1)
    with pytest.raises(ValueError, match="cannot be written to a dict"):
        heads.to_dict()  # a config file, unlike a manifest, must round-trip


def test_every_export_path_removes_leftovers_of_killed_exports(trained, tmp_path):
    """hk.export (used by BestExport too), not only Estimator.export, cleans temp-*."""
    estimator, _, _ = trained
    leftover = tmp_path / "temp-1700000000"
    leftover.mkdir()
    (leftover / "saved_model.pb").write_bytes(b"half")
    export_dir = hk.export(estimator, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(export_dir)]


def test_load_never_imports_callables_named_in_the_manifest():
    from headkit.serving.loading import _serving_heads

    data = {"heads": [{"name": "y", "output": {"type": "regression"},
                       "loss": {"callable": "headkit.kinds.losses:_mae"},
                       "metrics": ["mae", {"callable": "os:abort"}]}]}
    with pytest.warns(UserWarning, match=r"never imports code named in a file \(y.loss="
                      r"headkit.kinds.losses:_mae; y.metrics: os:abort\)"):
        heads = _serving_heads(data, "export")
    assert heads["y"].loss is None and heads["y"].metrics == ("mae",)
