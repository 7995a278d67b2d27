"""Poisson heads: tf.estimator.PoissonRegressionHead's loss and metrics, counts checked."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit import kinds
from tests.kinds.canned import (
    CANNED_NAMES,
    canned_loss,
    canned_metrics,
    headkit_loss,
    headkit_metrics,
    run_in_graph,
)

# Compares with tf.estimator (canned heads, hk.Estimator): TensorFlow 2.15 only
# (tests/conftest.py leaves the module out where tf.estimator cannot run).
pytestmark = pytest.mark.estimator

RNG = np.random.default_rng(5)
N = 32
LOGITS = RNG.normal(size=(N, 1)).astype("float32")  # log-rates
COUNTS = RNG.poisson(3.0, size=(N, 1)).astype("float32")  # 0, 1 and > 1 (Stirling's term)
HEAD = hk.Head("visits", hk.Poisson(), metrics=("label_mean", "prediction_mean", "rmse"))


def test_loss_matches_the_canned_head_on_the_same_logits():
    assert (COUNTS == 0).any() and (COUNTS > 1).any()
    canned = tf.estimator.PoissonRegressionHead(name="visits")
    assert headkit_loss(HEAD, COUNTS, LOGITS) == pytest.approx(
        canned_loss(canned, COUNTS, LOGITS), abs=1e-4)


def test_every_canned_metric_is_reported_by_name_with_its_value():
    canned = tf.estimator.PoissonRegressionHead(name="visits")
    theirs = canned_metrics(canned, COUNTS, LOGITS)
    ours = headkit_metrics(HEAD, COUNTS, LOGITS)
    assert {CANNED_NAMES[name] for name in ("loss", "label_mean", "prediction_mean")} == set(
        theirs)
    for name in ("loss", "label_mean", "prediction_mean"):
        assert ours[name] == pytest.approx(theirs[CANNED_NAMES[name]], abs=1e-4), name


def test_predictions_and_the_regress_signature_give_the_rate():
    kind = kinds.get(HEAD)
    ours = kind.predictions(HEAD, tf.constant(LOGITS))
    canned = tf.estimator.PoissonRegressionHead().predictions(tf.constant(LOGITS))
    np.testing.assert_allclose(ours["predictions"], canned["predictions"], rtol=1e-6)
    np.testing.assert_array_equal(ours["logits"], LOGITS)
    assert kind.natural_method(HEAD) == kinds.REGRESS
    np.testing.assert_array_equal(kind.signature_outputs(HEAD, ours)["outputs"],
                                  ours["predictions"])


def test_negative_counts_are_a_data_error_before_and_in_the_graph():
    heads = hk.HeadSet([HEAD])
    with pytest.raises(hk.DataError, match=r"^Head 'visits': Poisson labels 'visits' must be "
                       r"counts >= 0; got \[-1\.0, -0\.5\] at rows \[1, 3\]\. Fix the labels, or "
                       r"use hk\.Regression\(\)"):
        hk.input_fn({"x": np.zeros(4)}, {"visits": [0, -1, 2, -0.5]}, heads)
    with pytest.raises(hk.DataError, match=r"^Head 'visits': Poisson labels must be counts >= 0; "
                       r"the batch holds -2 Fix the labels"):
        run_in_graph(HEAD, np.array([[1.0], [-2.0]], "float32"))


def test_missing_counts_are_masked_and_a_missing_label_cannot_be_a_count():
    head = hk.Head("visits", hk.Poisson(), missing_label=float("nan"))
    ready = kinds.get(head).numpy_labels(head, np.array([2.0, np.nan, 0.0]))
    assert np.isnan(ready[1, 0])
    assert run_in_graph(head, ready).tolist() == [[2.0], [0.0], [0.0]]
    expected = headkit_loss(head, ready[[0, 2]], LOGITS[[0, 2]])
    assert headkit_loss(head, ready, LOGITS[:3]) == pytest.approx(expected, abs=1e-6)
    assert hk.Head("visits", hk.Poisson(), missing_label=-1).missing_label == -1
    with pytest.raises(hk.ConfigError, match=r"missing_label must be float\('nan'\) or a "
                       r"negative number, e\.g\. -1\.0 \(a count is >= 0\) \(got 0\)"):
        hk.Head("visits", hk.Poisson(), missing_label=0)


def test_config_round_trip_and_the_default_loss():
    heads = hk.HeadSet.from_dict({"heads": [{"name": "visits", "output": {"type": "poisson"},
                                             "metrics": ["prediction_mean"]}]})
    assert heads["visits"].output == hk.Poisson() and heads["visits"].loss_name == "log_poisson"
    assert hk.HeadSet.from_dict(heads.to_dict()) == heads
    with pytest.raises(hk.ConfigError, match=r"heads\[0\]\.output: unknown key\(s\) "
                       r"\['dimension'\]"):
        hk.HeadSet.from_dict({"heads": [{"name": "visits",
                                         "output": {"type": "poisson", "dimension": 2}}]})
