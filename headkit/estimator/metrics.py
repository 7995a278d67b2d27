"""The Estimator's eval metric ops: the catalog's metric names as ``tf.compat.v1.metrics`` ops.

Registered names build ``tf.compat.v1.metrics`` ops: plain graph ops, quick
to build in the Estimator's eval graph. Keras metrics given by the user are
built fresh for each graph (Keras ``update_state`` goes through AutoGraph,
which costs graph-building time, so headkit's own names avoid it).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import tensorflow as tf

from headkit import kinds
from headkit.errors import ConfigError, ConfigTypeError, HeadkitError
from headkit.spec import catalog
from headkit.spec.head import Head, metric_name
from headkit.spec.keys import metric_key

__all__ = ["METRICS", "get", "head_metrics"]

MetricOp = Tuple[tf.Tensor, tf.Operation]  # (value, update_op), as eval_metric_ops take
MetricFn = Callable[[tf.Tensor, tf.Tensor, Optional[tf.Tensor], str], MetricOp]

_v1 = tf.compat.v1.metrics


def _accuracy_baseline(labels: tf.Tensor, weights: Optional[tf.Tensor], name: str) -> MetricOp:
    """The accuracy of always predicting the commoner class: ``max(mean, 1 - mean)`` of 0/1
    labels, as ``BinaryClassHead`` reports it."""
    mean, update = _v1.mean(labels, weights, name=name)
    return tf.maximum(mean, 1.0 - mean), tf.maximum(update, 1.0 - update)


#: Metric name -> ``(y_true, y_pred, weights, name) -> (value, update_op)``. What
#: ``y_true`` and ``y_pred`` are is the head's kind's ``metric_inputs``.
METRICS: Dict[str, MetricFn] = {
    "accuracy": lambda y, p, w, name: _v1.accuracy(y, p, w, name=name),
    "auc": lambda y, p, w, name: _v1.auc(
        y, p, w, summation_method="careful_interpolation", name=name),
    "precision": lambda y, p, w, name: _v1.precision(y, p > 0.5, w, name=name),
    "recall": lambda y, p, w, name: _v1.recall(y, p > 0.5, w, name=name),
    "mse": lambda y, p, w, name: _v1.mean_squared_error(y, p, w, name=name),
    "rmse": lambda y, p, w, name: _v1.root_mean_squared_error(y, p, w, name=name),
    "mae": lambda y, p, w, name: _v1.mean_absolute_error(y, p, w, name=name),
    "auc_pr": lambda y, p, w, name: _v1.auc(
        y, p, w, curve="PR", summation_method="careful_interpolation", name=name),
    "accuracy_baseline": lambda y, p, w, name: _accuracy_baseline(y, w, name),
    "label_mean": lambda y, p, w, name: _v1.mean(y, w, name=name),
    "prediction_mean": lambda y, p, w, name: _v1.mean(p, w, name=name),
}
assert set(METRICS) == set(catalog.METRICS), "every catalog metric has one implementation"


def get(metric: Any, key: str) -> tf.keras.metrics.Metric:
    """A fresh Keras metric named ``key`` from a Keras instance, class or factory.

    Example:
        >>> get(tf.keras.metrics.AUC(curve="PR"), "flag/auc_pr").name
        'flag/auc_pr'
    """
    if isinstance(metric, tf.keras.metrics.Metric):
        config = dict(metric.get_config(), name=key)
        return type(metric).from_config(config)
    built = metric()
    if not isinstance(built, tf.keras.metrics.Metric):
        raise ConfigTypeError(
            f"Metric factory {metric!r} returned {built!r}, not a Keras metric. Return a "
            "tf.keras.metrics.Metric instance.")
    config = dict(built.get_config(), name=key)
    return type(built).from_config(config)


def head_metrics(
    head: Head,
    labels: tf.Tensor,
    predictions: Mapping[str, tf.Tensor],
    losses: tf.Tensor,
    weights: Optional[tf.Tensor],
) -> Dict[str, Any]:
    """Eval metric ops for one trained head, keyed ``"<head>/<metric>"``.

    Values are ``(value, update_op)`` pairs for registered names and
    ``<head>/loss``, and updated Keras metrics for Keras specs; both are
    what ``EstimatorSpec(eval_metric_ops=...)`` takes.

    Args:
        head: a trained head.
        labels: loss-ready labels from ``losses.prepare_labels``.
        predictions: the head's predictions from ``outputs.head_predictions``.
        losses: per-example losses, shape ``[batch]``.
        weights: per-example weights (mask of labelled rows x example weights)
            or None.

    Keras metrics given by the user see ``y_true`` = class ids ``[batch, 1]``
    and ``y_pred`` = probabilities ``[batch, n_classes]`` for classification,
    multi-hot labels and probabilities ``[batch, n_classes]`` for multi-label,
    and labels and predictions ``[batch, dimension]`` for regression (Poisson:
    the rates; logistic: the sigmoids).

    Example:
        >>> with tf.Graph().as_default():  # doctest: +SKIP
        ...     ops = head_metrics(head, labels, predictions, losses, None)
    """
    loss_key = metric_key(head.name, "loss")
    result: Dict[str, Any] = {loss_key: _v1.mean(losses, weights, name=loss_key)}
    kind = kinds.get(head)
    for spec in head.metrics:
        key = metric_key(head.name, metric_name(head.name, spec))
        y_true, y_pred = kind.metric_inputs(
            head, spec if isinstance(spec, str) else None, labels, predictions)
        try:
            if isinstance(spec, str):
                row_weights = weights
                if weights is not None and y_true.shape.rank == 2:  # a weight per row, all columns
                    row_weights = weights[:, None] * tf.ones_like(y_true)
                result[key] = METRICS[spec](y_true, y_pred, row_weights, key)
            else:
                metric = get(spec, key)
                metric.update_state(y_true, y_pred, sample_weight=weights)
                result[key] = metric
        except HeadkitError:
            raise
        except Exception as error:  # a Keras metric that does not fit: name the head and it
            raise _metric_error(head, key, spec, error, y_true, y_pred) from error
    return result


def _metric_error(head: Head, key: str, spec: Any, error: Exception, y_true: tf.Tensor,
                  y_pred: tf.Tensor) -> ConfigError:
    """The error for a metric that failed while the eval graph was built: head, metric, shapes."""
    what = repr(spec) if isinstance(spec, str) else (
        f"{spec.__name__ if isinstance(spec, type) else type(spec).__name__}")
    text = " ".join(str(error).split())[:300]
    hint = ""
    if (y_true.dtype.is_integer and y_true.shape[-1] == 1 and y_pred.shape.rank == 2
            and y_pred.shape[-1] not in (None, 1)):
        hint = (" Here y_true holds class ids and y_pred one probability per class: e.g. "
                "tf.keras.metrics.SparseCategoricalAccuracy() or "
                "SparseTopKCategoricalAccuracy(k=2) take them; Accuracy() and AUC() compare "
                "y_true and y_pred of one shape.")
    error_type = ConfigTypeError if isinstance(error, TypeError) else ConfigError
    return error_type(
        f"Head {head.name!r}: metric {key!r} ({what}) does not fit the head; building it in "
        f"the evaluation graph failed ({type(error).__name__}: {text}). headkit calls "
        f"update_state(y_true, y_pred) with y_true {y_true.shape} {y_true.dtype.name} and "
        f"y_pred {y_pred.shape} {y_pred.dtype.name}. Pass a metric that takes these, or a "
        f"registered metric name.{hint}",
        field="metrics",
    )
