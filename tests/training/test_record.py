"""A model_dir is one model: a rerun with other heads or another body is refused, unwritten."""

from __future__ import annotations

import json
import logging
import os
import shutil

import attrs
import pytest
import tensorflow as tf

import headkit as hk
from headkit.training.record import (
    RECORD_FILE,
    check_model_dir,
    model_record,
    recorded_heads,
    write_record,
)
from tests.conftest import ROOT, make_data, numpy_input_fn, tiny_body, tiny_heads


def _evolve(heads, head_name, **changes):
    return hk.HeadSet([attrs.evolve(h, **changes) if h.name == head_name else h for h in heads])


def _body(kind_units=3, hidden=16, kind_name="kind"):
    def build():
        x = tf.keras.Input((4,), name="x")
        tag = tf.keras.Input((1,), name="tag", dtype=tf.string)
        h = tf.keras.layers.Dense(hidden, activation="relu")(x)
        return tf.keras.Model({"x": x, "tag": tag}, {
            kind_name: tf.keras.layers.Dense(kind_units)(h),
            "size": tf.keras.layers.Dense(1)(h), "flag": tf.keras.layers.Dense(1)(h)})
    return build


@pytest.fixture()
def recorded(tmp_path):
    model_dir = str(tmp_path / "model")
    write_record(model_dir, model_record(tiny_heads(), _body()))
    return model_dir


@pytest.mark.estimator
def test_the_first_training_run_writes_a_versioned_record(tmp_path):
    model_dir = str(tmp_path / "model")
    estimator = hk.Estimator(tiny_body, tiny_heads(), model_dir=model_dir)
    estimator.train(numpy_input_fn(*make_data(16), batch_size=8), steps=1)
    with open(os.path.join(model_dir, RECORD_FILE)) as handle:
        record = json.load(handle)
    assert record["schema_version"] == 1
    assert [h["name"] for h in record["heads"]] == ["kind", "size", "flag"]
    assert [layer["class"] for layer in record["body"]][-3:] == ["Dense"] * 3
    assert {layer["head"] for layer in record["body"]} >= {"kind", "size", "flag", None}
    hk.Estimator(tiny_body, tiny_heads(), model_dir=model_dir)  # the same model: accepted


@pytest.mark.estimator
@pytest.mark.parametrize("heads, body, fragments", [
    (_evolve(tiny_heads(), "kind", output=hk.Classification(vocabulary=("a", "b", "c", "d"))),
     _body(kind_units=4), ["head 'kind': n_classes 3 -> 4",
                           "head 'kind': vocabulary ['a', 'b', 'c'] -> ['a', 'b', 'c', 'd']",
                           "body layer 2: Dense [[16, 3], [3]] -> Dense [[16, 4], [4]]"]),
    (_evolve(tiny_heads(), "kind", name="species", is_default=True), _body(kind_name="species"),
     ["heads ['flag', 'kind', 'size'] became ['flag', 'size', 'species']", "removed ['kind']",
      "added ['species']"]),
    (_evolve(tiny_heads(), "size", label_key="mass"), _body(),
     ["head 'size': label_key 'size' -> 'mass'"]),
    (tiny_heads(), _body(hidden=8), ["body layer 0: Dense [[4, 16], [16]] -> Dense [[4, 8], [8]]"]),
])
def test_a_rerun_with_another_model_is_refused_naming_each_change(recorded, heads, body,
                                                                  fragments):
    before = sorted(os.listdir(recorded))
    with pytest.raises(hk.ConfigError) as raised:
        hk.Estimator(body, heads, model_dir=recorded)
    message = str(raised.value)
    assert isinstance(raised.value, hk.errors.RecordMismatchError)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{missing} not in: {message}"
    assert "Use a new model_dir" in message and "warm_start_from=" in message
    assert sorted(os.listdir(recorded)) == before  # nothing written


def test_changes_that_touch_no_weight_are_logged_not_refused(recorded, caplog):
    heads = _evolve(tiny_heads(), "size", weight=2.0, metrics=("mae",))
    with caplog.at_level(logging.INFO, logger="headkit"):
        check_model_dir(recorded, heads, _body())
    assert "head 'size': weight 0.5 -> 2.0" in caplog.text
    assert "head 'size': metrics ['rmse', 'mae'] -> ['mae']" in caplog.text


def test_a_0_1_0_model_dir_is_checked_by_its_training_record(tmp_path):
    import sys

    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    import release_model

    model_dir = str(tmp_path / "model_dir")
    shutil.copytree(os.path.join(ROOT, "tests", "fixtures", "release_0_1_0", "model_dir"),
                    model_dir)
    renamed = _evolve(release_model.heads(), "flag", name="flag2")

    def renamed_body():
        model = release_model.body()
        outputs = dict(model.output)
        return tf.keras.Model(model.input, dict(outputs, flag2=outputs.pop("flag")))

    with pytest.raises(hk.ConfigError, match=r"the trained heads \['flag', 'kind', 'size'\] "
                                             r"became \['flag2', 'kind', 'size'\]"):
        check_model_dir(model_dir, renamed, renamed_body)
    check_model_dir(model_dir, release_model.heads(), release_model.body)


def test_a_record_of_a_newer_schema_is_refused(recorded):
    path = os.path.join(recorded, RECORD_FILE)
    with open(path) as handle:
        record = json.load(handle)
    with open(path, "w") as handle:
        json.dump(dict(record, schema_version=99), handle)
    with pytest.raises(hk.ConfigError, match=r"schema_version 99 is not one this headkit reads"):
        check_model_dir(recorded, tiny_heads(), _body())


# ------------------------------------------------------------------ issue 19


def _normalised(mean=0.0, std=2.0, **options):
    heads = tiny_heads()
    return attrs.evolve(heads, heads=[
        attrs.evolve(h, output=hk.Regression(mean=mean, std=std)) if h.name == "size" else h
        for h in heads], **options)


def test_a_rerun_that_changes_the_loss_weighting_is_refused(tmp_path):
    model_dir = str(tmp_path / "model")
    write_record(model_dir, model_record(tiny_heads(), _body()))  # fixed, as 0.1.0 wrote
    weighted = attrs.evolve(tiny_heads(), loss_weighting=hk.UncertaintyWeighting())
    with pytest.raises(hk.errors.RecordMismatchError,
                       match=r"loss_weighting \{'type': 'fixed'\} -> \{'type': 'uncertainty'\}"):
        check_model_dir(model_dir, weighted, _body())
    write_record(model_dir, model_record(weighted, _body()))
    with pytest.raises(hk.errors.RecordMismatchError, match=r"'temperature': 2\.0"):
        check_model_dir(model_dir, attrs.evolve(weighted, loss_weighting="dynamic_weight_average"),
                        _body())
    with pytest.raises(hk.errors.RecordMismatchError, match=r"-> \{'type': 'fixed'\}"):
        check_model_dir(model_dir, tiny_heads(), _body())


def _reweighted(heads, **weights):
    return attrs.evolve(heads, heads=[attrs.evolve(h, weight=weights.get(h.name, h.weight))
                                      for h in heads])


def _reordered(heads, order):
    return attrs.evolve(heads, heads=[heads[name] for name in order])


def test_under_a_learned_weighting_the_weighted_heads_must_stay_those_of_the_checkpoints(
        tmp_path, caplog):
    model_dir = str(tmp_path / "model")
    dwa = attrs.evolve(tiny_heads(), loss_weighting=hk.DynamicWeightAverage(period=2))
    write_record(model_dir, model_record(dwa, _body()))
    # DWA keeps one vector entry per weighted head, by position: another order would
    # hand one head's weight to another.
    with pytest.raises(hk.errors.RecordMismatchError,
                       match=r"the heads weighted by the dynamic_weight_average loss weighting "
                             r"\(weight > 0, in this order\) \['kind', 'size', 'flag'\] -> "
                             r"\['kind', 'flag', 'size'\]: its variables in the checkpoints "
                             r"belong to those heads\. List the heads in the recorded order"):
        check_model_dir(model_dir, _reordered(dwa, ["kind", "flag", "size"]), _body())
    with pytest.raises(hk.errors.RecordMismatchError, match=r"\['kind', 'size', 'flag'\] -> "
                                                            r"\['kind', 'size'\]"):
        check_model_dir(model_dir, _reweighted(dwa, flag=0.0), _body())  # a vector entry gone
    with caplog.at_level(logging.INFO, logger="headkit"):  # no variable changes: logged
        check_model_dir(model_dir, attrs.evolve(
            dwa, loss_weighting=hk.DynamicWeightAverage(temperature=1.0, period=5)), _body())
    assert "'temperature': 1.0, 'period': 5" in caplog.text
    # Uncertainty: one variable per head, by name; order is free, a new weighted head is not.
    write_record(model_dir, model_record(
        _reweighted(attrs.evolve(tiny_heads(), loss_weighting="uncertainty"), flag=0.0),
        _body()))
    uncertain = attrs.evolve(tiny_heads(), loss_weighting="uncertainty")
    check_model_dir(model_dir, _reordered(_reweighted(uncertain, flag=0.0),
                                          ["size", "kind", "flag"]), _body())
    with pytest.raises(hk.errors.RecordMismatchError,
                       match=r"the heads weighted by the uncertainty loss weighting \(weight > 0\) "
                             r"\['kind', 'size'\] -> \['kind', 'size', 'flag'\]"):
        check_model_dir(model_dir, uncertain, _body())


def test_gradient_surgery_and_class_weights_are_logged(recorded, caplog):
    heads = attrs.evolve(_evolve(tiny_heads(), "kind", class_weight={"a": 2.0}),
                         gradient_surgery=hk.PCGrad())
    with caplog.at_level(logging.INFO, logger="headkit"):
        check_model_dir(recorded, heads, _body())
    assert "gradient_surgery None -> {'type': 'pcgrad', 'seed': 0}" in caplog.text
    assert "head 'kind': class_weight None -> {'a': 2.0}" in caplog.text


@pytest.mark.parametrize("backend", [pytest.param("estimator", marks=pytest.mark.estimator),
                                     "keras"])
def test_a_rerun_uses_the_recorded_statistics_and_logs_the_difference(tmp_path, caplog, backend):
    model_dir = str(tmp_path / "model")
    write_record(model_dir, model_record(_normalised(mean=1.0, std=2.0), _body(), backend))
    with caplog.at_level(logging.WARNING, logger="headkit"):
        heads = recorded_heads(model_dir, _normalised(mean=1.5, std=2.5))
    assert (heads["size"].output.mean, heads["size"].output.std) == (1.0, 2.0)
    assert "head 'size': normalisation statistics {'mean': 1.5, 'std': 2.5} differ from the " \
           "recorded {'mean': 1.0, 'std': 2.0}" in caplog.text
    assert "the recorded ones are used" in caplog.text
    check_model_dir(model_dir, heads, _body(), backend=backend)
    model_class = hk.Estimator if backend == "estimator" else hk.KerasModel
    model = model_class(_body(), _normalised(mean=9.0, std=9.0), model_dir=model_dir)
    assert (model.heads["size"].output.mean, model.heads["size"].output.std) == (1.0, 2.0)


def test_turning_normalisation_on_or_off_is_refused(tmp_path):
    model_dir = str(tmp_path / "model")
    write_record(model_dir, model_record(tiny_heads(), _body()))
    with pytest.raises(hk.errors.RecordMismatchError,
                       match=r"head 'size': normalised targets none -> \{'mean': 0\.0, "):
        check_model_dir(model_dir, recorded_heads(model_dir, _normalised()), _body())
