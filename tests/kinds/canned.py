"""Helpers for comparing a headkit head with tf.estimator's canned head on the same logits."""

from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf

from headkit import kinds
from headkit.errors import translate_graph_errors
from headkit.estimator import metrics
from headkit.kinds import losses

ModeKeys = tf.estimator.ModeKeys

#: headkit's metric name -> the canned heads' key (before "/<head>").
CANNED_NAMES = {
    "loss": "average_loss",
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "auc": "auc",
    "auc_pr": "auc_precision_recall",
    "accuracy_baseline": "accuracy_baseline",
    "label_mean": "label/mean",
    "prediction_mean": "prediction/mean",
}


def headkit_loss(head, labels, logits) -> float:
    """The head's loss (mean over the batch) on numpy labels as the input pipeline feeds them."""
    kind = kinds.get(head)
    ready, mask = kind.prepare_labels(head, tf.constant(labels))
    per_example = kind.per_example_loss(head, ready, tf.constant(logits))
    return float(losses.head_loss(per_example, mask))


def canned_loss(canned, labels, logits) -> float:
    return float(canned.loss(labels=tf.constant(labels), logits=tf.constant(logits), features={},
                             mode=ModeKeys.TRAIN))


def headkit_metrics(head, labels, logits) -> Dict[str, float]:
    """headkit's eval metric values over one batch, run in a graph as evaluate() runs them.

    Keys are the short names (``auc``, not ``tags/auc``).
    """
    kind = kinds.get(head)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        ready, mask = kind.prepare_labels(head, tf.constant(labels))
        per_example = kind.per_example_loss(head, ready, tf.constant(logits))
        predictions = kind.predictions(head, tf.constant(logits))
        ops = metrics.head_metrics(head, ready, predictions, per_example, mask)
        session.run(tf.compat.v1.local_variables_initializer())
        session.run([update for _, update in ops.values()])
        values = session.run({key: value for key, (value, _) in ops.items()})
    return {key.split("/", 1)[1]: float(value) for key, value in values.items()}


def canned_metrics(canned, labels, logits) -> Dict[str, float]:
    """The canned head's eval metrics, keyed by its own names without ``/<head>``."""
    result = canned.update_metrics(canned.metrics(), features={}, logits=tf.constant(logits),
                                   labels=tf.constant(labels))
    suffix = f"/{canned.name}"
    return {key[: -len(suffix)]: float(metric.result()) for key, metric in result.items()}


def run_in_graph(head, labels) -> np.ndarray:
    """``prepare_labels`` run in a graph session, its in-graph checks raising headkit errors."""
    kind = kinds.get(head)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session, translate_graph_errors():
        ready, _ = kind.prepare_labels(head, tf.constant(labels))
        return session.run(ready)
