"""Per-head losses, the weighted total and accuracy agree with TensorFlow's canned heads.

The canned heads are tf.estimator's: those comparisons are marked ``estimator``
(TensorFlow 2.15 only); the rest run on every TensorFlow.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit import kinds
from headkit.kinds import losses


def prepare_labels(head, labels):
    return kinds.get(head).prepare_labels(head, labels)


def head_predictions(head, output):
    return kinds.get(head).predictions(head, output)


RNG = np.random.default_rng(7)
N = 16
LOGITS = {
    "kind": RNG.normal(size=(N, 3)).astype("float32"),
    "flag": RNG.normal(size=(N, 1)).astype("float32"),
    "size": RNG.normal(size=(N, 1)).astype("float32"),
}
LABELS = {
    "kind": RNG.integers(0, 3, size=(N, 1)),
    "flag": RNG.integers(0, 2, size=(N, 1)),
    "size": RNG.normal(size=(N, 1)).astype("float32"),
}
HEADS = {
    "kind": hk.Head("kind", hk.Classification(3), metrics=("accuracy",), is_default=True),
    "flag": hk.Head("flag", hk.Classification(2), metrics=("accuracy",)),
    "size": hk.Head("size", hk.Regression()),
}
CANNED = {
    "kind": lambda: tf.estimator.MultiClassHead(3, name="kind"),
    "flag": lambda: tf.estimator.BinaryClassHead(name="flag"),
    "size": lambda: tf.estimator.RegressionHead(name="size"),
}


def _headkit_loss(name):
    head = HEADS[name]
    ready, _ = prepare_labels(head, tf.constant(LABELS[name]))
    per_example = losses.per_example_loss(head, ready, tf.constant(LOGITS[name]))
    return float(losses.head_loss(per_example)), ready, per_example


@pytest.mark.estimator
@pytest.mark.parametrize("name", ["kind", "flag", "size"])
def test_head_loss_matches_the_canned_head(name):
    canned = CANNED[name]()
    expected = canned.loss(
        labels=tf.constant(LABELS[name]), logits=tf.constant(LOGITS[name]), features={},
        mode=tf.estimator.ModeKeys.TRAIN,
    )
    got, _, _ = _headkit_loss(name)
    assert got == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.estimator
@pytest.mark.parametrize("names, weights", [
    (("kind", "size"), (1.0, 0.5)),
    (("kind", "flag", "size"), (2.0, 0.25, 1.5)),
])
def test_weighted_total_matches_multi_head(names, weights):
    multi = tf.estimator.MultiHead([CANNED[n]() for n in names], head_weights=list(weights))
    expected = multi.loss(
        labels={n: tf.constant(LABELS[n]) for n in names},
        logits={n: tf.constant(LOGITS[n]) for n in names},
        features={}, mode=tf.estimator.ModeKeys.TRAIN,
    )
    import attrs

    heads = [attrs.evolve(HEADS[n], weight=w) for n, w in zip(names, weights)]
    head_losses = {n: _headkit_loss(n)[0] for n in names}
    got = losses.total_loss(heads, {n: tf.constant(v) for n, v in head_losses.items()})
    assert float(got) == pytest.approx(float(expected), abs=1e-5)


def _headkit_metric_values(name):
    """Run headkit's eval metric ops over the batch in a graph, as evaluate() does."""
    from headkit.estimator import metrics

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        head = HEADS[name]
        ready, _ = prepare_labels(head, tf.constant(LABELS[name]))
        per_example = losses.per_example_loss(head, ready, tf.constant(LOGITS[name]))
        predictions = head_predictions(head, tf.constant(LOGITS[name]))
        ops = metrics.head_metrics(head, ready, predictions, per_example, None)
        session.run(tf.compat.v1.local_variables_initializer())
        session.run([update for _, update in ops.values()])
        return session.run({key: value for key, (value, _) in ops.items()})


@pytest.mark.estimator
@pytest.mark.parametrize("name", ["kind", "flag"])
def test_accuracy_and_eval_loss_match_the_canned_head(name):
    canned = CANNED[name]()
    canned_metrics = canned.update_metrics(
        canned.metrics(), features={}, logits=tf.constant(LOGITS[name]),
        labels=tf.constant(LABELS[name]),
    )
    ours = _headkit_metric_values(name)
    assert ours[f"{name}/accuracy"] == pytest.approx(
        float(canned_metrics[f"accuracy/{name}"].result()), abs=1e-5)
    assert ours[f"{name}/loss"] == pytest.approx(
        float(canned_metrics[f"average_loss/{name}"].result()), abs=1e-5)


@pytest.mark.estimator
def test_canned_head_class_ids_match_headkit_predictions():
    canned = CANNED["kind"]()
    expected = canned.predictions(tf.constant(LOGITS["kind"]))
    ours = head_predictions(HEADS["kind"], tf.constant(LOGITS["kind"]))
    np.testing.assert_array_equal(ours["class_ids"], expected["class_ids"])
    np.testing.assert_allclose(ours["probabilities"], expected["probabilities"], atol=1e-6)


def test_masked_rows_leave_the_mean_and_weights_weigh_it():
    per_example = tf.constant([1.0, 2.0, 3.0, 10.0])
    mask = tf.constant([1.0, 1.0, 1.0, 0.0])
    assert float(losses.head_loss(per_example, mask)) == pytest.approx(2.0)
    weights = tf.constant([1.0, 0.0, 3.0, 0.0])
    assert float(losses.head_loss(per_example, weights)) == pytest.approx((1 + 9) / 4)
    assert float(losses.head_loss(per_example, tf.zeros(4))) == 0.0


def test_missing_regression_label_nan_is_masked():
    head = hk.Head("size", hk.Regression(), missing_label=float("nan"))
    ready, mask = prepare_labels(head, tf.constant([1.0, np.nan, 3.0]))
    assert mask.numpy().tolist() == [1.0, 0.0, 1.0]
    assert np.isfinite(ready.numpy()).all()


def test_callable_loss_returning_batch_by_one_is_accepted():
    def absolute(labels, outputs):
        return tf.abs(labels - outputs)

    head = hk.Head("size", hk.Regression(), loss=absolute)
    value = losses.per_example_loss(head, tf.constant([[1.0], [2.0]]), tf.constant([[0.0], [0.0]]))
    assert value.numpy().tolist() == [1.0, 2.0]


def test_callable_loss_of_the_wrong_shape_names_the_head():
    head = hk.Head("size", hk.Regression(dimension=2), loss=lambda labels, outputs: labels)
    with pytest.raises(ValueError, match=r"Head 'size': the loss must return one value per "
                       r"example, shape \[batch\] \(got shape \(2, 2\)\)"):
        losses.per_example_loss(head, tf.zeros([2, 2]), tf.zeros([2, 2]))


def test_integer_labels_for_a_vocabulary_head_are_refused_with_the_fix():
    head = hk.Head("kind", hk.Classification(vocabulary=("a", "b")))
    with pytest.raises(ValueError, match=r"Head 'kind': labels must be strings from the "
                       r"vocabulary \('a', 'b'\) \(got dtype int64\)"):
        prepare_labels(head, tf.constant([0, 1], dtype=tf.int64))


@pytest.mark.parametrize("name, metric_names", [
    ("flag", ("accuracy", "auc", "auc_pr", "precision", "recall", "accuracy_baseline",
              "label_mean", "prediction_mean")),
    ("size", ("label_mean", "prediction_mean")),
])
@pytest.mark.estimator
def test_every_metric_the_canned_head_reports_is_available_by_name(name, metric_names):
    from tests.kinds.canned import CANNED_NAMES, canned_metrics, headkit_metrics

    head = hk.Head(name, HEADS[name].output, metrics=metric_names)
    theirs = canned_metrics(CANNED[name](), LABELS[name], LOGITS[name])
    ours = headkit_metrics(head, LABELS[name], LOGITS[name])
    assert {CANNED_NAMES[m] for m in ("loss", *metric_names)} == set(theirs)
    for metric in ("loss", *metric_names):
        assert ours[metric] == pytest.approx(theirs[CANNED_NAMES[metric]], abs=1e-4), metric
