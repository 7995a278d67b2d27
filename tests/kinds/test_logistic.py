"""Logistic heads: tf.estimator.LogisticRegressionHead's loss and metrics, labels in [0, 1]."""

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

RNG = np.random.default_rng(3)
N = 32
LOGITS = RNG.normal(size=(N, 1)).astype("float32")
SHARES = np.concatenate([[[0.0], [1.0]], RNG.uniform(size=(N - 2, 1))]).astype("float32")
HEAD = hk.Head("share", hk.Logistic(), metrics=("label_mean", "prediction_mean", "mae"))


def test_loss_matches_the_canned_head_on_the_same_logits():
    canned = tf.estimator.LogisticRegressionHead(name="share")
    assert headkit_loss(HEAD, SHARES, LOGITS) == pytest.approx(
        canned_loss(canned, SHARES, LOGITS), abs=1e-4)


def test_every_canned_metric_is_reported_by_name_with_its_value():
    canned = tf.estimator.LogisticRegressionHead(name="share")
    theirs = canned_metrics(canned, SHARES, LOGITS)
    ours = headkit_metrics(HEAD, SHARES, LOGITS)
    assert {CANNED_NAMES[name] for name in ("loss", "label_mean", "prediction_mean")} == set(
        theirs)
    for name in ("loss", "label_mean", "prediction_mean"):
        assert ours[name] == pytest.approx(theirs[CANNED_NAMES[name]], abs=1e-4), name


def test_predictions_and_the_regress_signature_give_the_sigmoid():
    kind = kinds.get(HEAD)
    ours = kind.predictions(HEAD, tf.constant(LOGITS))
    canned = tf.estimator.LogisticRegressionHead().predictions(tf.constant(LOGITS))
    np.testing.assert_allclose(ours["predictions"], canned["predictions"], rtol=1e-6)
    assert kind.natural_method(HEAD) == kinds.REGRESS
    np.testing.assert_array_equal(kind.signature_outputs(HEAD, ours)["outputs"],
                                  ours["predictions"])


def test_labels_outside_zero_one_are_a_data_error_before_and_in_the_graph():
    heads = hk.HeadSet([HEAD])
    with pytest.raises(hk.DataError, match=r"^Head 'share': logistic labels 'share' must be in "
                       r"\[0, 1\]; got \[1\.5, -0\.1\] at rows \[1, 2\]\. Scale the target to "
                       r"\[0, 1\], or use hk\.Regression\(\)"):
        hk.input_fn({"x": np.zeros(4)}, {"share": [0.0, 1.5, -0.1, 1.0]}, heads)
    with pytest.raises(hk.DataError, match=r"^Head 'share': logistic labels must be in \[0, 1\]; "
                       r"the batch holds 2 Scale the target"):
        run_in_graph(HEAD, np.array([[1.0], [2.0]], "float32"))


def test_missing_labels_are_masked_and_a_missing_label_cannot_be_a_share():
    head = hk.Head("share", hk.Logistic(), missing_label=-1.0)
    ready = kinds.get(head).numpy_labels(head, np.array([0.25, np.nan, 1.0]))
    assert ready[:, 0].tolist() == [0.25, -1.0, 1.0]
    assert run_in_graph(head, ready).tolist() == [[0.25], [0.0], [1.0]]
    expected = headkit_loss(head, ready[[0, 2]], LOGITS[[0, 2]])
    assert headkit_loss(head, ready, LOGITS[:3]) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(hk.ConfigError, match=r"missing_label must be float\('nan'\) or a number "
                       r"outside \[0, 1\], e\.g\. -1\.0 \(got 0\.5\)"):
        hk.Head("share", hk.Logistic(), missing_label=0.5)


def test_config_round_trip_and_the_default_loss():
    heads = hk.HeadSet.from_dict({"heads": [{"name": "share", "output": {"type": "logistic"},
                                             "metrics": ["label_mean", "mae"]}]})
    assert heads["share"].output == hk.Logistic()
    assert heads["share"].loss_name == "sigmoid_cross_entropy"
    assert hk.HeadSet.from_dict(heads.to_dict()) == heads
