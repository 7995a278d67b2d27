"""MultiLabel heads: tf.estimator.MultiLabelHead's loss and metrics, multi-hot or named labels."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit import kinds
from headkit.data.checks import prepare
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

RNG = np.random.default_rng(11)
N = 32
VOCABULARY = ("red", "round", "sweet", "sour")
LOGITS = RNG.normal(size=(N, 4)).astype("float32")
MULTI_HOT = RNG.integers(0, 2, size=(N, 4))
HEAD = hk.Head("tags", hk.MultiLabel(vocabulary=VOCABULARY),
               metrics=("auc", "auc_pr", "precision", "recall"))


def numpy_labels(head, column):
    return kinds.get(head).numpy_labels(head, column)


def test_loss_matches_the_canned_head_on_the_same_logits():
    canned = tf.estimator.MultiLabelHead(4, name="tags")
    assert headkit_loss(HEAD, MULTI_HOT, LOGITS) == pytest.approx(
        canned_loss(canned, MULTI_HOT, LOGITS), abs=1e-4)


def test_names_give_the_multi_hot_rows_and_the_canned_loss_of_sparse_names():
    names = [[VOCABULARY[i] for i in np.flatnonzero(row)] for row in MULTI_HOT]
    column = np.empty(N, dtype=object)
    column[:] = [list(n) for n in names]
    ready = numpy_labels(HEAD, column)
    np.testing.assert_array_equal(ready, MULTI_HOT)
    indices = [[r, i] for r, row in enumerate(names) for i in range(len(row))]
    sparse = tf.sparse.SparseTensor(indices, [n for row in names for n in row], [N, 4])
    canned = tf.estimator.MultiLabelHead(4, label_vocabulary=list(VOCABULARY), name="tags")
    expected = float(canned.loss(labels=sparse, logits=tf.constant(LOGITS), features={},
                                 mode=tf.estimator.ModeKeys.TRAIN))
    assert headkit_loss(HEAD, ready, LOGITS) == pytest.approx(expected, abs=1e-4)


def test_every_canned_metric_is_reported_by_name_with_its_value():
    canned = tf.estimator.MultiLabelHead(4, name="tags", thresholds=(0.5,))
    theirs = canned_metrics(canned, MULTI_HOT, LOGITS)
    ours = headkit_metrics(HEAD, MULTI_HOT, LOGITS)
    for name in ("loss", "auc", "auc_pr"):
        assert ours[name] == pytest.approx(theirs[CANNED_NAMES[name]], abs=1e-4), name
    # With thresholds=, the canned head adds micro-averaged precision and recall.
    assert ours["precision"] == pytest.approx(theirs["precision/positive_threshold_0.5"], abs=1e-5)
    assert ours["recall"] == pytest.approx(theirs["recall/positive_threshold_0.5"], abs=1e-5)


def test_predictions_are_the_canned_probabilities_and_classes_over_the_threshold():
    head = hk.Head("tags", hk.MultiLabel(vocabulary=VOCABULARY, threshold=0.7))
    ours = kinds.get(head).predictions(head, tf.constant(LOGITS))
    canned = tf.estimator.MultiLabelHead(4, label_vocabulary=list(VOCABULARY)).predictions(
        tf.constant(LOGITS))
    np.testing.assert_allclose(ours["probabilities"], canned["probabilities"], atol=1e-6)
    np.testing.assert_array_equal(ours["all_classes"], canned["classes"])
    over = canned["probabilities"].numpy() > 0.7
    np.testing.assert_array_equal(ours["class_ids"], over.astype("int64"))
    np.testing.assert_array_equal(ours["classes"], np.where(over, canned["classes"], b""))
    signature = kinds.get(head).signature_outputs(head, ours)
    assert sorted(signature) == ["classes", "scores"] and kinds.get(head).natural_method(
        head) == kinds.CLASSIFY


def test_a_ragged_list_of_names_is_checked_by_input_fn():
    heads = hk.HeadSet([hk.Head("tags", hk.MultiLabel(vocabulary=VOCABULARY))])
    _, labels, _ = prepare({"x": np.zeros(3)}, {"tags": [["sour"], [], ["red", "sweet"]]},
                           heads)
    assert labels["tags"].tolist() == [[0, 0, 0, 1], [0, 0, 0, 0], [1, 0, 1, 0]]
    assert labels["tags"].dtype == np.int64


def test_missing_rows_are_masked_out_of_the_loss():
    head = hk.Head("tags", hk.MultiLabel(4), missing_label=-1)
    column = np.array([[1, 0, 0, 1], [np.nan] * 4, [0, 1, 1, 0]])
    ready = numpy_labels(head, column)
    assert ready[1].tolist() == [-1] * 4
    logits = LOGITS[:3]
    expected = headkit_loss(head, ready[[0, 2]], logits[[0, 2]])
    assert headkit_loss(head, ready, logits) == pytest.approx(expected, abs=1e-6)


BAD_LABELS = [
    ("unknown_name", HEAD, [["red"], ["blue", "sour"]],
     r"Head 'tags': labels 'tags' hold \['blue'\] at rows \[1\], not in the vocabulary "
     r"\('red', 'round', 'sweet', 'sour'\)\. Add them"),
    ("a_name_not_a_list", HEAD, np.array([["red"], "sour"], dtype=object),
     r"must hold a list of class names per row \(e\.g\. \['red'\], or \[\] for none\); rows "
     r"\[1\] hold \['sour'\]\. Wrap each name in a list"),
    ("not_zero_or_one", HEAD, np.array([[0, 1, 0, 0], [0, 2, 1, 0]]),
     r"Head 'tags': multi-hot labels 'tags' must be 0 or 1; got \[2\.0\] at rows \[1\]"),
    ("wrong_width", HEAD, np.zeros((2, 3)),
     r"must be multi-hot rows, shape \[n, 4\] with one 0/1 column per class or a list of "
     r"class names per row \(got shape \(2, 3\)\)"),
    ("one_column", HEAD, np.array([0, 1]), r"shape \[n, 4\].*\(got shape \(2,\)\)"),
    ("names_without_vocabulary", hk.Head("tags", hk.MultiLabel(4)), [["red"], ["sour"]],
     r"hold class names \(e\.g\. \['red', 'sour'\]\) but the head has no vocabulary\. Give it "
     r"one, hk\.MultiLabel\(vocabulary=\(\.\.\.\)\), or pass multi-hot rows \[n, 4\]"),
    ("missing_without_missing_label", HEAD, [["red"], None],
     r"labels 'tags' are missing \(NaN or None\) at rows \[1\].*Set missing_label=-1"),
]


@pytest.mark.parametrize("head, labels, match", [b[1:] for b in BAD_LABELS],
                         ids=[b[0] for b in BAD_LABELS])
def test_bad_labels_are_a_data_error_naming_head_values_rows_and_fix(head, labels, match):
    heads = hk.HeadSet([head])
    with pytest.raises(hk.DataError, match=match):
        hk.input_fn({"x": np.zeros(len(labels))}, {"tags": labels}, heads)


def test_labels_other_than_zero_or_one_fail_in_the_graph_too():
    head = hk.Head("tags", hk.MultiLabel(2), missing_label=-1)
    assert run_in_graph(head, np.array([[1, 0], [-1, -1]])).tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(hk.DataError, match=r"^Head 'tags': multi-hot labels must be 0 or 1; "
                       r"the batch holds 3 -1 Fix the labels"):
        run_in_graph(head, np.array([[1, 3], [-1, 0]]))


def test_string_labels_in_the_graph_name_the_fix():
    with pytest.raises(hk.DataError, match=r"labels must be multi-hot rows of 0 and 1, shape "
                       r"\[batch, 4\] \(got dtype string\)\. hk\.input_fn turns lists"):
        kinds.get(HEAD).prepare_labels(HEAD, tf.constant([["red", "", "", ""]]))


def test_config_round_trip_and_bad_fields():
    data = {"heads": [{"name": "tags", "metrics": ["auc_pr"], "missing_label": -1,
                       "output": {"type": "multi_label", "vocabulary": list(VOCABULARY),
                                  "threshold": 0.3}}]}
    heads = hk.HeadSet.from_dict(data)
    assert heads["tags"].output == hk.MultiLabel(vocabulary=VOCABULARY, threshold=0.3)
    assert hk.HeadSet.from_dict(heads.to_dict()) == heads
    with pytest.raises(hk.ConfigError, match=r"heads\[0\]\.output\.threshold must be a number "
                       r"strictly between 0 and 1 \(got 1\.5\)"):
        hk.HeadSet.from_dict({"heads": [{"name": "tags", "output": {
            "type": "multi_label", "n_classes": 3, "threshold": 1.5}}]})
    with pytest.raises(hk.ConfigError, match=r"n_classes must be an integer >= 2 \(got 1\)\. "
                       r"For one yes/no target use hk\.Classification\(2\)"):
        hk.MultiLabel(1)
    with pytest.raises(hk.ConfigError, match=r"missing_label must be an integer other than 0 "
                       r"and 1, e\.g\. -1 \(got 0\)"):
        hk.Head("tags", hk.MultiLabel(3), missing_label=0)
    with pytest.raises(hk.ConfigError, match=r"unknown metric 'accuracy' for a multi_label "
                       r"head\. Known metrics: auc, precision, recall, auc_pr"):
        hk.Head("tags", hk.MultiLabel(3), metrics=("accuracy",))
