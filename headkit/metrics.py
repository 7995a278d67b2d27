"""Metrics: the registry of metric names and the per-head Keras metric objects.

Each call builds fresh Keras metrics, so one Head can serve many graphs.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional

import tensorflow as tf

from headkit.heads import METRIC_NAMES, Head, metric_name
from headkit.headset import metric_key

__all__ = ["METRICS", "get", "head_metrics"]

MetricFactory = Callable[[str], tf.keras.metrics.Metric]

#: Metric registry: name -> (kind of input, factory taking the metric's key).
#: ``ids`` metrics compare class ids; ``positive`` ones take the probability
#: of class 1; ``values`` ones compare regression predictions with labels.
METRICS: Dict[str, tuple] = {
    "accuracy": ("ids", lambda key: tf.keras.metrics.Accuracy(name=key)),
    "auc": ("positive", lambda key: tf.keras.metrics.AUC(name=key)),
    "precision": ("positive", lambda key: tf.keras.metrics.Precision(name=key)),
    "recall": ("positive", lambda key: tf.keras.metrics.Recall(name=key)),
    "mse": ("values", lambda key: tf.keras.metrics.MeanSquaredError(name=key)),
    "rmse": ("values", lambda key: tf.keras.metrics.RootMeanSquaredError(name=key)),
    "mae": ("values", lambda key: tf.keras.metrics.MeanAbsoluteError(name=key)),
}
assert set(METRICS) == {n for names in METRIC_NAMES.values() for n in names}


def get(metric: Any, key: str) -> tf.keras.metrics.Metric:
    """A fresh Keras metric for a spec: a registered name, instance, class or factory.

    Example:
        >>> get("rmse", "mass/rmse").name
        'mass/rmse'
    """
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(
                f"Unknown metric {metric!r}. Known metrics: {', '.join(sorted(METRICS))}."
            )
        return METRICS[metric][1](key)
    if isinstance(metric, tf.keras.metrics.Metric):
        config = dict(metric.get_config(), name=key)
        return type(metric).from_config(config)
    built = metric()
    if not isinstance(built, tf.keras.metrics.Metric):
        raise TypeError(f"Metric factory {metric!r} returned {built!r}, not a Keras metric.")
    config = dict(built.get_config(), name=key)
    return type(built).from_config(config)


def head_metrics(
    head: Head,
    labels: tf.Tensor,
    predictions: Mapping[str, tf.Tensor],
    losses: tf.Tensor,
    weights: Optional[tf.Tensor],
) -> Dict[str, tf.keras.metrics.Metric]:
    """Updated Keras metrics for one trained head, keyed ``"<head>/<metric>"``.

    Args:
        head: a trained head.
        labels: loss-ready labels from ``losses.prepare_labels``.
        predictions: the head's predictions from ``outputs.head_predictions``.
        losses: per-example losses, shape ``[batch]``.
        weights: per-example weights (mask of labelled rows x example weights)
            or None.

    Keras metrics given by the user see ``y_true`` = class ids ``[batch, 1]``
    and ``y_pred`` = probabilities ``[batch, n_classes]`` for classification,
    and labels and predictions ``[batch, dimension]`` for regression.
    """
    sample_weight = None if weights is None else weights
    loss_metric = tf.keras.metrics.Mean(name=metric_key(head.name, "loss"))
    loss_metric.update_state(losses, sample_weight=sample_weight)
    result = {loss_metric.name: loss_metric}
    for spec in head.metrics:
        key = metric_key(head.name, metric_name(head.name, spec))
        metric = get(spec, key)
        y_true, y_pred = _metric_inputs(head, spec, labels, predictions)
        metric.update_state(y_true, y_pred, sample_weight=sample_weight)
        result[key] = metric
    return result


def _metric_inputs(head: Head, spec: Any, labels: tf.Tensor, predictions: Mapping[str, tf.Tensor]):
    if head.output.kind == "regression":
        return labels, predictions["predictions"]
    kind = METRICS[spec][0] if isinstance(spec, str) else "keras"
    if kind == "ids":
        return labels, tf.reshape(predictions["class_ids"], [-1])
    if kind == "positive":
        return labels, predictions["probabilities"][:, 1]
    return labels[:, None], predictions["probabilities"]
