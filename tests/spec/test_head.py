"""Head and output types: what a head accepts, and what it derives. No TensorFlow."""

from __future__ import annotations

import pytest

import headkit as hk


def test_label_key_defaults_to_the_name():
    assert hk.Head("species", hk.Classification(3)).label_key == "species"
    assert hk.Head("mass", hk.Regression(), label_key="body_mass_g").label_key == "body_mass_g"


def test_vocabulary_sets_n_classes():
    assert hk.Classification(vocabulary=["a", "b", "c"]).n_classes == 3


def test_vocabulary_given_as_one_string_is_rejected():
    with pytest.raises(TypeError, match=r"not one string \(got 'abc'\)"):
        hk.Classification(vocabulary="abc")


def test_default_loss_follows_the_output_type():
    assert hk.Head("c", hk.Classification(2)).loss_name == "cross_entropy"
    assert hk.Head("y", hk.Regression()).loss_name == "mse"
    assert hk.Head("e", hk.Predict()).loss_name is None


def test_metric_names_put_loss_first_and_predict_heads_have_none():
    assert hk.Head("y", hk.Regression(), metrics=["rmse"]).metric_names == ("loss", "rmse")
    assert hk.Head("e", hk.Predict()).metric_names == ()


def test_a_name_ending_in_a_newline_is_rejected():
    with pytest.raises(ValueError, match=r"Head name must match .* \(got 'y\\n'\)"):
        hk.Head("y\n", hk.Regression())


def test_nan_missing_labels_compare_equal_and_hash_alike():
    a = hk.Head("y", hk.Regression(), missing_label=float("nan"))
    b = hk.Head("y", hk.Regression(), missing_label=float("nan"))
    assert a == b and hash(a) == hash(b)
    assert a != hk.Head("y", hk.Regression(), missing_label=-1.0)
    assert a != hk.Head("y", hk.Regression())


@pytest.mark.parametrize(
    "output, missing, expected",
    [
        (hk.Classification(vocabulary=("a", "b")), "", ""),
        (hk.Classification(3), -1, -1),
        (hk.Regression(), -999.0, -999.0),
    ],
)
def test_missing_label_outside_the_label_space_is_kept(output, missing, expected):
    assert hk.Head("h", output, missing_label=missing).missing_label == expected


def test_missing_label_of_the_wrong_kind_names_the_head_and_the_fix():
    with pytest.raises(ValueError, match=r"Head 'c': missing_label must be an integer outside "
                                         r"\[0, 3\), e.g. -1 \(got 'none'\)"):
        hk.Head("c", hk.Classification(3), missing_label="none")


def test_output_of_the_wrong_type_shows_an_example():
    with pytest.raises(TypeError, match=r"Head 'y': output must be .* \(got 'regression'\)\. "
                                        r"For example hk\.Head\('y', hk\.Regression\(\)\)"):
        hk.Head("y", "regression")
