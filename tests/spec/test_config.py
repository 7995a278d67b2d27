"""Declarative config: HeadSet dicts and files, a battery of bad configs, round-trip properties.

No TensorFlow here: config is plain data.
"""

from __future__ import annotations

import json
import math
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import headkit as hk
from headkit.spec.catalog import loss_names, metric_names
from headkit.spec.keys import NAME_PATTERN
from tests.conftest import ROOT

EXAMPLES = os.path.join(ROOT, "examples")


def reg(name="y", **fields):
    return {"name": name, "output": {"type": "regression"}, **fields}


def cls(name="c", output=None, **fields):
    return {"name": name, "output": output or {"type": "classification", "n_classes": 3},
            **fields}


def two(first, second):
    """Two heads, the first the default."""
    return {"heads": [dict(first, is_default=True), second]}


# (id, config, error type, fragments the message must hold: the field's path or the head,
#  the value given, what was expected / the fix)
BAD_CONFIGS = [
    ("n_classes_1", two(reg(), cls(output={"type": "classification", "n_classes": 1})),
     ValueError, ["heads[1].output.n_classes", "got 1", ">= 2", 'type = "regression"']),
    ("n_classes_float", {"heads": [cls(output={"type": "classification", "n_classes": 2.5})]},
     ValueError, ["heads[0].output.n_classes", "got 2.5", "integer >= 2"]),
    ("n_classes_bool", {"heads": [cls(output={"type": "classification", "n_classes": True})]},
     ValueError, ["heads[0].output.n_classes", "got True", "integer >= 2"]),
    ("no_classes", {"heads": [cls(output={"type": "classification"})]},
     ValueError, ["heads[0].output", "n_classes or a vocabulary", "got neither"]),
    ("vocabulary_string", {"heads": [cls(output={"type": "classification", "vocabulary": "ab"})]},
     TypeError, ["heads[0].output.vocabulary", "'ab'", "list of class names"]),
    ("vocabulary_repeated",
     {"heads": [cls(output={"type": "classification", "vocabulary": ["a", "a"]})]},
     ValueError, ["heads[0].output.vocabulary", "['a']", "unique"]),
    ("vocabulary_empty_name",
     {"heads": [cls(output={"type": "classification", "vocabulary": ["a", ""]})]},
     ValueError, ["heads[0].output.vocabulary", "['']", "non-empty strings"]),
    ("vocabulary_size",
     {"heads": [cls(output={"type": "classification", "n_classes": 3, "vocabulary": ["a", "b"]})]},
     ValueError, ["heads[0].output.vocabulary", "n_classes=3", "2 entries", "one name per class"]),
    ("dimension_0", {"heads": [reg(output={"type": "regression", "dimension": 0})]},
     ValueError, ["heads[0].output.dimension", "got 0", "integer >= 1"]),
    ("type_typo", {"heads": [cls(output={"type": "clasification", "n_classes": 2})]},
     ValueError, ["heads[0].output.type", "'clasification'", "'regression'",
                  "Did you mean 'classification'"]),
    ("output_no_type", {"heads": [reg(output={"dimension": 2})]},
     TypeError, ["heads[0].output", "'type'", "{'dimension': 2}"]),
    ("output_unknown_key", {"heads": [reg(output={"type": "regression", "dimensions": 2})]},
     ValueError, ["heads[0].output", "'dimensions'", "Known keys", "'dimension'"]),
    ("head_unknown_key", {"heads": [reg(wieght=0.5)]},
     ValueError, ["heads[0]", "'wieght'", "Known keys", "Did you mean 'weight'"]),
    ("top_unknown_key", {"heads": [reg()], "head": []},
     ValueError, ["top level", "'head'", "'heads'", "'loss_weighting'"]),
    ("no_heads_key", {}, ValueError, ["'heads' list", "[]"]),
    ("heads_not_list", {"heads": reg()}, TypeError, ["'heads' must be a list", "'name': 'y'"]),
    ("head_not_table", {"heads": ["y"]}, TypeError, ["heads[0]", "'y'", "table of head fields"]),
    ("no_name", {"heads": [{"output": {"type": "regression"}}]},
     ValueError, ["heads[0]", "missing required key 'name'"]),
    ("no_output", {"heads": [{"name": "y"}]},
     ValueError, ["heads[0]", "missing required key 'output'"]),
    ("bad_name", {"heads": [reg(name="1y")]},
     ValueError, ["heads[0].name", "'1y'", NAME_PATTERN.pattern, "starting with a letter"]),
    ("name_newline", {"heads": [reg(name="y\n")]},
     ValueError, ["heads[0].name", "'y\\n'", "starting with a letter"]),
    ("unknown_loss", two(reg(), reg("z", loss="xent")),
     ValueError, ["heads[1].loss", "'xent'", "Known losses: mse, mae, huber"]),
    ("classification_loss_mse", {"heads": [cls(loss="mse")]},
     ValueError, ["heads[0].loss", "'mse'", "Known losses: cross_entropy"]),
    ("unknown_metric", {"heads": [reg(metrics=["rmse", "acc"])]},
     ValueError, ["heads[0].metrics[1]", "'acc'", "Known metrics: mse, rmse, mae"]),
    ("auc_multiclass", {"heads": [cls(metrics=["auc"])]},
     ValueError, ["heads[0].metrics[0]", "'auc'", "n_classes=2", "got 3"]),
    ("metrics_string", {"heads": [reg(metrics="rmse")]},
     TypeError, ["heads[0].metrics", "'rmse'", "must be a list"]),
    ("repeated_metric", {"heads": [reg(metrics=["rmse", "rmse"])]},
     ValueError, ["heads[0]", "['rmse']", "unique"]),
    ("weight_negative", {"heads": [reg(weight=-1)]},
     ValueError, ["heads[0].weight", "got -1", "finite number >= 0"]),
    ("weight_string", {"heads": [reg(weight="0.5")]},
     ValueError, ["heads[0].weight", "got '0.5'", "finite number >= 0"]),
    ("weight_nan", {"heads": [reg(weight=float("nan"))]},
     ValueError, ["heads[0].weight", "got nan", "finite number >= 0"]),
    ("is_default_string", {"heads": [reg(is_default="yes")]},
     TypeError, ["heads[0].is_default", "'yes'", "True or False"]),
    ("label_key_empty", {"heads": [reg(label_key="")]},
     TypeError, ["heads[0].label_key", "''", "non-empty string"]),
    ("weight_column_number", {"heads": [reg(weight_column=3)]},
     TypeError, ["heads[0].weight_column", "got 3", "non-empty string"]),
    ("missing_label_in_vocabulary",
     {"heads": [cls(output={"type": "classification", "vocabulary": ["a", "b"]},
                    missing_label="a")]},
     ValueError, ["heads[0].missing_label", "'a'", "outside the vocabulary"]),
    ("missing_label_valid_id", {"heads": [cls(missing_label=1)]},
     ValueError, ["heads[0].missing_label", "got 1", "outside [0, 3)", "-1"]),
    ("missing_label_string_for_regression", {"heads": [reg(missing_label="")]},
     ValueError, ["heads[0].missing_label", "got ''", "a number, or float('nan')"]),
    ("predict_with_loss", two(reg(), {"name": "e", "output": {"type": "predict"}, "loss": "mse"}),
     ValueError, ["heads[1].loss", "'mse'", "Predict head", "never trained"]),
    ("predict_with_missing_label",
     two(reg(), {"name": "e", "output": {"type": "predict"}, "missing_label": -1}),
     ValueError, ["heads[1].missing_label", "-1", "Predict head"]),
    ("duplicate_names", two(reg(), reg()), ValueError, ["heads:", "['y']", "unique", "rename"]),
    ("reserved_name", {"heads": [reg(name="loss")]},
     ValueError, ["heads:", "'loss'", "reserved", "'loss_head'"]),
    ("two_defaults", {"heads": [reg(is_default=True), reg("z", is_default=True)]},
     ValueError, ["heads:", "found 2", "['y', 'z']", "set is_default=True on one head"]),
    ("no_default", {"heads": [reg(), reg("z")]},
     ValueError, ["heads:", "found none", "set is_default=True"]),
    ("only_predict", {"heads": [{"name": "e", "output": {"type": "predict"}}]},
     ValueError, ["heads:", "['e']", "At least one head must be trained"]),
    ("loss_callable_not_in_custom_objects",
     {"heads": [reg(loss={"callable": "no_such_mod:f"})]},
     ValueError, ["heads[0].loss.callable", "'no_such_mod:f'", "custom_objects={'f': f}",
                  "never imports"]),
    ("loss_table_unknown_key", {"heads": [reg(loss={"function": "m:f"})]},
     ValueError, ["heads[0].loss", "'function'", "['callable']"]),
    ("metric_table_unknown", {"heads": [reg(metrics=[{"name": "auc"}])]},
     TypeError, ["heads[0].metrics[0]", "{'name': 'auc'}", "{'callable': 'module:name'}"]),
    # loss weighting, gradient surgery, normalised targets, class weights (issue 19)
    ("weighting_unknown_name", {"heads": [reg()], "loss_weighting": "uncertain"},
     ValueError, ["loss_weighting", "'uncertain'", "'uncertainty'", "Known names"]),
    ("weighting_unknown_type", {"heads": [reg()], "loss_weighting": {"type": "dwa"}},
     ValueError, ["loss_weighting.type", "'dwa'", "'dynamic_weight_average'"]),
    ("weighting_temperature_0",
     {"heads": [reg()], "loss_weighting": {"type": "dynamic_weight_average", "temperature": 0}},
     ValueError, ["loss_weighting.temperature", "got 0", "> 0", "temperature=2.0"]),
    ("weighting_unknown_key",
     {"heads": [reg()], "loss_weighting": {"type": "uncertainty", "temperature": 2.0}},
     ValueError, ["loss_weighting", "'temperature'", "Known keys"]),
    ("weighting_period_0",
     {"heads": [reg()], "loss_weighting": {"type": "dynamic_weight_average", "period": 0}},
     ValueError, ["loss_weighting.period", "got 0", "integer >= 1"]),
    ("pcgrad_one_head", {"heads": [reg()], "gradient_surgery": "pcgrad"},
     ValueError, ["gradient_surgery", "PCGrad(seed=0)", "['y']", "two or more trained heads",
                  "Drop gradient_surgery"]),
    ("pcgrad_one_weighted_head", {"heads": [dict(reg(), is_default=True), reg("z", weight=0)],
                                  "gradient_surgery": {"type": "pcgrad"}},
     ValueError, ["gradient_surgery", "weight > 0", "got ['y']"]),
    ("std_zero", {"heads": [reg(output={"type": "regression", "std": 0})]},
     ValueError, ["heads[0].output.std", "got 0", "finite number > 0", "from_labels"]),
    ("std_negative", {"heads": [reg(output={"type": "regression", "mean": 1, "std": -2.0})]},
     ValueError, ["heads[0].output.std", "got -2.0", "> 0"]),
    ("mean_nan", {"heads": [reg(output={"type": "regression", "mean": float("nan")})]},
     ValueError, ["heads[0].output.mean", "got nan", "finite number", "from_labels"]),
    ("mean_length", {"heads": [reg(output={"type": "regression", "dimension": 2,
                                           "mean": [1.0, 2.0, 3.0]})]},
     ValueError, ["heads[0].output.mean", "3 values", "dimension=2"]),
    ("class_weight_unknown_class",
     {"heads": [cls(output={"type": "classification", "vocabulary": ["a", "b"]},
                    class_weight={"c": 2.0})]},
     ValueError, ["heads[0].class_weight", "['c']", "not in the vocabulary", "('a', 'b')"]),
    ("class_weight_negative", {"heads": [cls(class_weight={"1": -1.0})]},
     ValueError, ["heads[0].class_weight", "{1: -1.0}", "finite numbers >= 0"]),
    ("class_weight_id_out_of_range", {"heads": [cls(class_weight={"3": 1.0})]},
     ValueError, ["heads[0].class_weight", "[3]", "class ids in [0, 3)"]),
    ("class_weight_name_without_vocabulary", {"heads": [cls(class_weight={"a": 1.0})]},
     ValueError, ["heads[0].class_weight", "'a'", "no vocabulary", "ids 0...2"]),
    ("class_weight_on_regression", {"heads": [reg(class_weight={"0": 1.0})]},
     ValueError, ["heads[0].class_weight", "regression head", "weight_column"]),
    ("class_weight_not_table", {"heads": [cls(class_weight=[1.0, 2.0])]},
     TypeError, ["heads[0].class_weight", "[1.0, 2.0]", "table of class -> weight"]),
]


@pytest.mark.parametrize(
    "config, error, fragments", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_is_rejected_naming_field_value_and_fix(config, error, fragments):
    with pytest.raises(error, match=re.escape(fragments[0])) as raised:
        hk.HeadSet.from_dict(config)
    message = str(raised.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message lacks {missing!r}: {message}"
    if ".class_weight" in fragments[0]:
        assert raised.value.field == fragments[0]  # the path the message starts with


def test_weighting_surgery_statistics_and_class_weights_round_trip_through_toml(tmp_path):
    path = tmp_path / "heads.toml"
    path.write_text(
        'loss_weighting = { type = "dynamic_weight_average", temperature = 3.0, period = 20 }\n'
        'gradient_surgery = "pcgrad"\n'
        '[[heads]]\nname = "species"\nis_default = true\n'
        'class_weight = { Chinstrap = 2.0 }\n'
        '[heads.output]\ntype = "classification"\nvocabulary = ["Adelie", "Chinstrap"]\n'
        '[[heads]]\nname = "flag"\nclass_weight = { "1" = 0.5 }\n'
        '[heads.output]\ntype = "classification"\nn_classes = 2\n'
        '[[heads]]\nname = "mass"\n'
        '[heads.output]\ntype = "regression"\nmean = 4200.0\nstd = 800.0\n')
    heads = hk.HeadSet.from_file(path)
    assert heads.loss_weighting == hk.DynamicWeightAverage(temperature=3.0, period=20)
    assert heads.gradient_surgery == hk.PCGrad(seed=0)
    assert heads["species"].class_weights == (1.0, 2.0)
    assert heads["flag"].class_weight == {1: 0.5} and heads["flag"].class_weights == (1.0, 0.5)
    assert (heads["mass"].output.mean, heads["mass"].output.std) == (4200.0, 800.0)
    data = heads.to_dict()
    assert data["loss_weighting"] == {"type": "dynamic_weight_average", "temperature": 3.0,
                                      "period": 20}
    assert data["heads"][1]["class_weight"] == {"1": 0.5}  # JSON keys are strings
    assert hk.HeadSet.from_dict(json.loads(json.dumps(data))) == heads


def test_the_defaults_write_what_headkit_0_1_0_wrote():
    data = hk.HeadSet([hk.Head("y", hk.Regression())]).to_dict()
    assert set(data) == {"heads"}
    assert "class_weight" not in data["heads"][0]
    assert data["heads"][0]["output"] == {"type": "regression", "dimension": 1}


def test_the_battery_has_at_least_30_distinct_cases():
    ids = [c[0] for c in BAD_CONFIGS]
    assert len(set(ids)) == len(ids) >= 30


# ----------------------------------------------------------------- files


def test_example_toml_and_json_describe_the_same_heads():
    from_toml = hk.HeadSet.from_file(os.path.join(EXAMPLES, "heads.toml"))
    from_json = hk.HeadSet.from_file(os.path.join(EXAMPLES, "heads.json"))
    assert from_toml == from_json
    assert from_toml.default_head.name == "species"
    assert from_toml["sex"].missing_label == "" and from_toml["sex"].weight_column == "sex_weight"
    assert math.isnan(from_toml["mass"].missing_label)
    assert from_toml["mass"].label_key == "body_mass_kg"


def test_example_toml_uses_every_head_field():
    heads = hk.HeadSet.from_file(os.path.join(EXAMPLES, "heads.toml"))
    defaults = hk.Head("x", hk.Regression())
    for field in ("loss", "metrics", "weight", "is_default", "label_key", "missing_label",
                  "weight_column"):
        trained = [h for h in heads if h.is_trained]
        assert any(getattr(h, field) != getattr(defaults, field) for h in trained), field


def test_from_file_errors_start_with_the_path(tmp_path):
    path = tmp_path / "heads.toml"
    path.write_text('[[heads]]\nname = "y"\n[heads.output]\ntype = "regression"\ndimension = 0\n')
    with pytest.raises(ValueError, match=r"heads\.toml: heads\[0\]\.output\.dimension must be"):
        hk.HeadSet.from_file(path)


@pytest.mark.parametrize("name, text, expected", [
    ("bad.toml", "[[heads]\nname = 'y'\n", r"bad\.toml: not valid TOML \(.*line 1"),
    ("bad.json", '{"heads": [}', r"bad\.json: not valid JSON \(.*line 1"),
])
def test_from_file_reports_syntax_errors_with_the_path(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=expected):
        hk.HeadSet.from_file(path)


def test_from_file_rejects_other_suffixes(tmp_path):
    path = tmp_path / "heads.yaml"
    path.write_text("heads: []")
    with pytest.raises(ValueError, match=r"must end in \.json or \.toml \(got '\.yaml'\)"):
        hk.HeadSet.from_file(path)


def test_to_dict_written_as_json_reads_back(tmp_path):
    heads = hk.HeadSet.from_file(os.path.join(EXAMPLES, "heads.toml"))
    path = tmp_path / "heads.json"
    path.write_text(json.dumps(heads.to_dict()))
    assert hk.HeadSet.from_file(path) == heads


# ------------------------------------------------------------ properties

names = st.from_regex(NAME_PATTERN, fullmatch=True).filter(
    lambda n: n not in ("loss", "predict", "serving_default")
)
optional_names = st.none() | names


@st.composite
def heads_strategy(draw):
    n = draw(st.integers(1, 4))
    head_names = draw(st.lists(names, min_size=n, max_size=n, unique=True))
    default = draw(st.integers(0, n - 1))
    heads = []
    for index, name in enumerate(head_names):
        kind = draw(st.sampled_from(["classification", "regression"]
                                    + (["predict"] if index else [])))
        is_default = index == default
        if kind == "predict":
            heads.append(hk.Head(name, hk.Predict(), is_default=is_default))
            continue
        if kind == "regression":
            output = hk.Regression(draw(st.integers(1, 4)))
            missing = draw(st.sampled_from([None, float("nan"), -1.0, 0]))
        else:
            n_classes = draw(st.integers(2, 5))
            vocabulary = draw(st.none() | st.lists(
                st.text("abcxyz", min_size=1, max_size=4), min_size=n_classes,
                max_size=n_classes, unique=True))
            output = hk.Classification(n_classes, vocabulary)
            missing = draw(st.sampled_from([None, "" if vocabulary else -1]))
        metric_choices = metric_names(kind) if kind == "regression" or output.n_classes == 2 \
            else ("accuracy",)
        heads.append(hk.Head(
            name, output,
            loss=draw(st.none() | st.sampled_from(loss_names(kind))),
            metrics=draw(st.lists(st.sampled_from(metric_choices), unique=True, max_size=3)),
            weight=draw(st.floats(0, 10, allow_nan=False)),
            is_default=is_default,
            label_key=(draw(optional_names) or name) + f".{index}",  # one reader a key
            missing_label=missing,
            weight_column=draw(optional_names),
        ))
    return hk.HeadSet(heads)


@settings(max_examples=60, deadline=None)
@given(heads_strategy())
def test_from_dict_of_to_dict_is_the_same_headset(heads):
    assert hk.HeadSet.from_dict(heads.to_dict()) == heads


@settings(max_examples=30, deadline=None)
@given(heads_strategy())
def test_to_dict_survives_json(heads):
    text = json.dumps(heads.to_dict())
    assert hk.HeadSet.from_dict(json.loads(text)) == heads


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=70) | st.from_regex(NAME_PATTERN))
def test_head_names_are_accepted_exactly_when_they_match_the_pattern(name):
    if NAME_PATTERN.fullmatch(name):
        assert hk.Head(name, hk.Regression()).name == name
    else:
        with pytest.raises(ValueError, match="Head name must match"):
            hk.Head(name, hk.Regression())
