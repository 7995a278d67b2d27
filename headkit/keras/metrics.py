"""The Keras backend's metrics: the catalog's names as Keras metric objects, streamed over batches.

What each metric compares (``y_true``, ``y_pred``) is the head's kind's
``metric_inputs``, as for the Estimator; the numbers agree with the
Estimator's ``tf.compat.v1.metrics`` (see ``docs/keras.md`` for ``auc``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping

import tensorflow as tf

from headkit import kinds
from headkit.errors import ConfigTypeError
from headkit.spec import catalog
from headkit.spec.head import metric_name
from headkit.spec.keys import TOTAL_LOSS, metric_key

__all__ = ["METRICS", "HeadMetrics", "keras_metric"]

_keras = tf.keras.metrics


class _LabelMean(_keras.Mean):
    """The weighted mean of the labels (``y_pred`` is not read)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(tf.cast(y_true, tf.float32), sample_weight)


class _PredictionMean(_keras.Mean):
    """The weighted mean of the predictions."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(tf.cast(y_pred, tf.float32), sample_weight)


class _AccuracyBaseline(_LabelMean):
    """The accuracy of always predicting the commoner class: ``max(mean, 1 - mean)``."""

    def result(self):
        mean = super().result()
        return tf.maximum(mean, 1.0 - mean)


#: Metric name -> a factory of the Keras metric named ``key``.
METRICS: Dict[str, Callable[[str], Any]] = {
    "accuracy": lambda key: _keras.Accuracy(name=key),
    "auc": lambda key: _keras.AUC(num_thresholds=200, name=key),
    "precision": lambda key: _keras.Precision(thresholds=0.5, name=key),
    "recall": lambda key: _keras.Recall(thresholds=0.5, name=key),
    "mse": lambda key: _keras.MeanSquaredError(name=key),
    "rmse": lambda key: _keras.RootMeanSquaredError(name=key),
    "mae": lambda key: _keras.MeanAbsoluteError(name=key),
    "auc_pr": lambda key: _keras.AUC(num_thresholds=200, curve="PR", name=key),
    "accuracy_baseline": lambda key: _AccuracyBaseline(name=key),
    "label_mean": lambda key: _LabelMean(name=key),
    "prediction_mean": lambda key: _PredictionMean(name=key),
}
#: Metrics that count every (row, column) pair of a ``[batch, n]`` label: a row's
#: weight goes to each of its columns, as the Estimator's do.
_PER_ELEMENT = ("auc", "auc_pr", "precision", "recall", "accuracy", "label_mean",
                "prediction_mean", "accuracy_baseline")
assert set(METRICS) == set(catalog.METRICS), "every catalog metric has one Keras implementation"


def keras_metric(metric: Any, key: str) -> Any:
    """A fresh Keras metric named ``key`` from a Keras instance, class or factory.

    Example:
        >>> keras_metric(tf.keras.metrics.AUC(curve="PR"), "flag/auc_pr").name
        'flag/auc_pr'
    """
    built = metric if isinstance(metric, _keras.Metric) else metric()
    if not isinstance(built, _keras.Metric):
        raise ConfigTypeError(
            f"Metric factory {metric!r} returned {built!r}, not a Keras metric. Return a "
            "tf.keras.metrics.Metric instance.")
    return type(built).from_config(dict(built.get_config(), name=key))


class HeadMetrics:
    """Every metric ``evaluate()`` reports, as streaming Keras metrics.

    ``loss`` is the mean of the batches' total losses (as the Estimator's);
    ``<head>/loss`` the weighted mean of the head's per-example losses.

    Example:
        >>> metrics = HeadMetrics(heads)  # doctest: +SKIP
        >>> metrics.update(terms, per_head, total)  # doctest: +SKIP
        >>> metrics.results()["loss"]  # doctest: +SKIP
    """

    def __init__(self, heads: Any) -> None:
        self.heads = heads
        self.total = _keras.Mean(name=TOTAL_LOSS)
        self.by_head: Dict[str, List[tuple]] = {}
        for head in heads.trained_heads:
            entries = [(None, _keras.Mean(name=metric_key(head.name, TOTAL_LOSS)))]
            for spec in head.metrics:
                key = metric_key(head.name, metric_name(head.name, spec))
                if isinstance(spec, str):
                    entries.append((spec, METRICS[spec](key)))
                else:
                    entries.append(("keras", keras_metric(spec, key)))
            self.by_head[head.name] = entries

    @property
    def all(self) -> List[Any]:
        """Every metric object, ``loss`` first."""
        return [self.total] + [m for entries in self.by_head.values() for _, m in entries]

    def update(self, terms: Mapping[str, Any], per_head: Mapping[str, Mapping[str, Any]],
               total: Any) -> None:
        """Add one batch: the heads' terms (``kinds.batch.head_terms``) and predictions."""
        self.total.update_state(total)
        for head in self.heads.trained_heads:
            term, kind = terms[head.name], kinds.get(head)
            for name, metric in self.by_head[head.name]:
                if name is None:
                    metric.update_state(term.example_losses, sample_weight=term.weights)
                    continue
                y_true, y_pred = kind.metric_inputs(
                    head, None if name == "keras" else name, term.labels, per_head[head.name])
                weights = term.weights
                if weights is not None and name in _PER_ELEMENT and y_true.shape.rank == 2:
                    weights = weights[:, None] * tf.ones_like(tf.cast(y_true, tf.float32))
                metric.update_state(y_true, y_pred, sample_weight=weights)

    def results(self) -> Dict[str, Any]:
        """``{"loss": ..., "<head>/<metric>": ...}``, as tensors."""
        return {m.name: m.result() for m in self.all}
