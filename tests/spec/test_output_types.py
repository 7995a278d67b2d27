"""Output types: normalised regression targets and class weights, checked when built. No TF."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import headkit as hk


def test_from_labels_computes_the_mean_and_population_std():
    labels = np.array([3000.0, 4000.0, 5000.0, 6000.0])
    output = hk.Regression.from_labels(labels)
    assert output.mean == pytest.approx(labels.mean()) and isinstance(output.mean, float)
    assert output.std == pytest.approx(labels.std())  # ddof=0
    assert output.is_normalized and output.dimension == 1


def test_from_labels_skips_missing_labels_in_a_series():
    series = pd.Series([1.0, None, 3.0, float("nan")])
    output = hk.Regression.from_labels(series)
    assert (output.mean, output.std) == (2.0, 1.0)


def test_from_labels_of_rows_gives_one_statistic_per_dimension():
    output = hk.Regression.from_labels(np.array([[1.0, 10.0], [3.0, 30.0]]))
    assert output.dimension == 2
    assert output.mean == (2.0, 20.0) and output.std == (1.0, 10.0)
    assert output.means == (2.0, 20.0) and output.stds == (1.0, 10.0)


def test_from_labels_passes_other_fields_on_and_checks_the_dimension():
    with pytest.raises(hk.ConfigError, match=r"dimension=3, but the labels have 2 column\(s\)"):
        hk.Regression.from_labels([[1.0, 2.0], [2.0, 3.0]], dimension=3)
    with pytest.raises(hk.ConfigError, match=r"dimension=2, but the labels have 1 column\(s\)\. "
                                             r"Pass rows of 2 values") as raised:
        hk.Regression.from_labels([1.0, 2.0, 3.0], dimension=2)  # no silent broadcast
    assert raised.value.field == "dimension"
    with pytest.raises(hk.ConfigError, match=r"from_labels computes mean and std from the "
                                             r"labels, so it takes no \['std'\] \(got std=3\.0\)"):
        hk.Regression.from_labels([1.0, 2.0], std=3.0)


def test_from_labels_leaves_the_heads_missing_label_out():
    output = hk.Regression.from_labels([4000.0, 5000.0, -1.0], missing_label=-1)
    assert (output.mean, output.std) == (4500.0, 500.0)


def test_from_labels_reads_a_dataframe_and_a_zero_d_array_is_one_number():
    frame = pd.DataFrame({"a": [1.0, 3.0], "b": [10.0, 30.0]})
    assert hk.Regression.from_labels(frame).mean == (2.0, 20.0)
    assert hk.Regression.from_labels(frame[["a"]]).mean == 2.0
    assert hk.Regression(std=np.array(800.0), mean=np.array(4200.0)).std == 800.0
    with pytest.raises(hk.ConfigError, match=r"labels must be a column of values \(got 5\.0\)"):
        hk.Regression.from_labels(5.0)


@pytest.mark.parametrize("labels, message", [
    ([], r"no label values"),
    ([float("nan"), None], r"no label values"),
    ([5.0, 5.0, 5.0], r"no spread .* every value is the same"),
    (["a", "b"], r"labels must be finite numbers \(got 'a' in row 0\)"),
    ([1.0, float("inf")], r"labels must be finite numbers \(got inf in row 1\)"),
])
def test_from_labels_refuses_labels_it_cannot_normalise(labels, message):
    with pytest.raises(hk.ConfigError, match=message):
        hk.Regression.from_labels(labels)


def test_statistics_default_to_none_and_the_identity():
    output = hk.Regression(dimension=2)
    assert not output.is_normalized
    assert output.means == (0.0, 0.0) and output.stds == (1.0, 1.0)


def test_one_number_applies_to_every_dimension():
    output = hk.Regression(3, mean=np.float32(2.0), std=4)
    assert output.means == (2.0, 2.0, 2.0) and output.stds == (4.0, 4.0, 4.0)


@pytest.mark.parametrize("fields, message", [
    (dict(std=0.0), r"std must be a finite number > 0, or one per dimension \(got 0\.0\)"),
    (dict(std=-800.0), r"std must be a finite number > 0.*\(got -800\.0\)"),
    (dict(std=float("inf")), r"std must be a finite number > 0.*\(got inf\)"),
    (dict(mean=float("nan")), r"mean must be a finite number, or one per dimension \(got nan\)"),
    (dict(mean="4200"), r"mean must be a finite number.*\(got '4200'\)"),
    (dict(dimension=2, std=(1.0, 0.0)), r"std must be a finite number > 0.*\(got \(1\.0, 0\.0\)"),
])
def test_bad_statistics_are_refused_naming_the_field_the_value_and_the_fix(fields, message):
    with pytest.raises(hk.ConfigError, match=message) as raised:
        hk.Regression(**fields)
    assert "from_labels" in str(raised.value) and raised.value.field in ("mean", "std")


def test_statistics_are_written_only_when_set():
    assert hk.Regression().to_dict() == {"type": "regression", "dimension": 1}
    assert hk.Regression(2, mean=(1.0, 2.0), std=3.0).to_dict() == {
        "type": "regression", "dimension": 2, "mean": [1.0, 2.0], "std": 3.0}


# ------------------------------------------------------------------ class weights


def test_class_weights_by_name_fill_the_other_classes_with_one():
    head = hk.Head("species", hk.Classification(vocabulary=("Adelie", "Chinstrap", "Gentoo")),
                   class_weight={"Chinstrap": 2.5})
    assert head.class_weights == (1.0, 2.5, 1.0)


def test_class_weights_by_id_accept_numpy_numbers():
    head = hk.Head("flag", hk.Classification(2), class_weight={np.int64(1): np.float32(0.5)})
    assert head.class_weight == {1: 0.5} and head.class_weights == (1.0, 0.5)


def test_a_head_without_class_weights_has_none():
    assert hk.Head("flag", hk.Classification(2)).class_weights is None


@pytest.mark.parametrize("output, class_weight, message", [
    (hk.Classification(vocabulary=("a", "b")), {"c": 1.0},
     r"class_weight names \['c'\], not in the vocabulary \('a', 'b'\)\. Key class weights by "
     r"the vocabulary's names, e\.g\. class_weight=\{'b': 2\.0\}"),
    (hk.Classification(vocabulary=("a", "b")), {0: 1.0}, r"names \[0\], not in the vocabulary"),
    (hk.Classification(3), {"a": 1.0}, r"keys must be class ids in \[0, 3\).*\(got \['a'\]\)"),
    (hk.Classification(3), {-1: 1.0}, r"class ids in \[0, 3\).*\(got \[-1\]\)"),
    (hk.Classification(2), {0: -0.5}, r"class weights must be finite numbers >= 0 \(got "
                                      r"\{0: -0\.5\}\)"),
    (hk.Classification(2), {0: math.nan}, r"finite numbers >= 0 \(got \{0: nan\}\)"),
    (hk.Regression(), {0: 1.0}, r"class_weight applies to heads with classes .* a regression "
                                r"head has none.*weight_column"),
])
def test_bad_class_weights_are_refused_when_the_head_is_built(output, class_weight, message):
    with pytest.raises(hk.ConfigError, match=message) as raised:
        hk.Head("y", output, class_weight=class_weight)
    assert raised.value.field == "class_weight"


def test_a_predict_head_takes_no_class_weight():
    with pytest.raises(hk.ConfigError, match=r"Predict head .* no class_weight"):
        hk.Head("e", hk.Predict(), class_weight={0: 1.0})


def test_heads_with_equal_class_weights_are_equal():
    assert hk.Head("c", hk.Classification(2), class_weight={1: 2.0}) == hk.Head(
        "c", hk.Classification(2), class_weight={1: 2.0})
