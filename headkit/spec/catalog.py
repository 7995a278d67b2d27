"""The catalog of loss and metric names: which kinds each fits, and which way a metric improves.

The one home of these facts. ``Head`` checks names against it when it is
built; early stopping and best exports read a metric's direction from it;
``headkit.kinds`` holds the implementations behind each name.
"""

from __future__ import annotations

import difflib
from typing import Dict, Optional, Tuple

import attrs

from headkit.errors import ConfigError
from headkit.spec.keys import TOTAL_LOSS, split_key

__all__ = ["LossInfo", "MetricInfo", "LOSSES", "METRICS", "loss_names", "metric_names",
           "metric_direction", "MODES"]

#: The ways to say which way a metric improves: ``auto`` asks the catalog.
MODES = ("auto", "min", "max")


@attrs.frozen
class LossInfo:
    """A registered loss: the output kinds it fits; the first listed is each kind's default."""

    kinds: Tuple[str, ...]


@attrs.frozen
class MetricInfo:
    """A registered metric.

    Attributes:
        direction: ``"max"`` if higher is better, ``"min"`` if lower is, None
            if neither (it describes the labels or the predictions, not how
            good the model is: early stopping and best exports refuse it
            unless given ``mode=``).
        kinds: the output kinds that report it.
        binary_only: the kinds among ``kinds`` whose heads must be binary
            (``is_binary``: a two-class Classification) for it.
    """

    direction: Optional[str]
    kinds: Tuple[str, ...]
    binary_only: Tuple[str, ...] = ()


#: Loss name -> what it fits. A kind's default loss is the first one listing it.
LOSSES: Dict[str, LossInfo] = {
    "cross_entropy": LossInfo(("classification",)),
    "mse": LossInfo(("regression",)),
    "mae": LossInfo(("regression",)),
    "huber": LossInfo(("regression",)),
    "sigmoid_cross_entropy": LossInfo(("multi_label", "logistic")),
    "log_poisson": LossInfo(("poisson",)),
}

_BINARY = ("classification",)  # binary_only: a two-class Classification head
_VALUES = ("regression", "poisson", "logistic")

#: Metric name -> direction and kinds. ``loss`` is reported for every trained head.
#: The names of tf.estimator's canned heads, with ``_`` for ``/`` (a metric name has
#: no ``/``): ``auc_precision_recall`` is ``auc_pr``, ``label/mean`` is ``label_mean``.
METRICS: Dict[str, MetricInfo] = {
    "accuracy": MetricInfo("max", ("classification",)),
    "auc": MetricInfo("max", ("classification", "multi_label"), binary_only=_BINARY),
    "precision": MetricInfo("max", ("classification", "multi_label"), binary_only=_BINARY),
    "recall": MetricInfo("max", ("classification", "multi_label"), binary_only=_BINARY),
    "mse": MetricInfo("min", _VALUES),
    "rmse": MetricInfo("min", _VALUES),
    "mae": MetricInfo("min", _VALUES),
    "auc_pr": MetricInfo("max", ("classification", "multi_label"), binary_only=_BINARY),
    # Facts about the eval data and the predictions, not scores: no direction.
    "accuracy_baseline": MetricInfo(None, ("classification",), binary_only=_BINARY),
    "label_mean": MetricInfo(None, ("classification", *_VALUES), binary_only=_BINARY),
    "prediction_mean": MetricInfo(None, ("classification", *_VALUES), binary_only=_BINARY),
}


def loss_names(kind: str) -> Tuple[str, ...]:
    """The loss names a kind accepts, its default first.

    Example:
        >>> loss_names("regression")
        ('mse', 'mae', 'huber')
    """
    return tuple(name for name, info in LOSSES.items() if kind in info.kinds)


def metric_names(kind: str) -> Tuple[str, ...]:
    """The metric names a kind accepts.

    Example:
        >>> metric_names("poisson")
        ('mse', 'rmse', 'mae', 'label_mean', 'prediction_mean')
    """
    return tuple(name for name, info in METRICS.items() if kind in info.kinds)


def metric_direction(metric: str, mode: str = "auto") -> str:
    """Whether a metric improves going down (``"min"``) or up (``"max"``).

    ``mode="auto"`` looks the metric's short name (after ``<head>/``) up in
    :data:`METRICS`; ``loss`` goes down. A name the catalog does not know
    (a Keras metric's own name), or one it gives no direction
    (``label_mean``, ``prediction_mean``, ``accuracy_baseline``), needs
    ``mode="min"`` or ``"max"``.

    Example:
        >>> metric_direction("species/accuracy")
        'max'
        >>> metric_direction("species/f1", mode="max")
        'max'
    """
    if mode not in MODES:
        raise ConfigError(
            f"mode must be one of {MODES!r} (got {mode!r}) for metric {metric!r}.", field="mode"
        )
    if mode != "auto":
        return mode
    short = split_key(metric)[1]
    if short == TOTAL_LOSS:
        return "min"
    if short in METRICS and METRICS[short].direction is None:
        raise ConfigError(
            f"metric {metric!r}: {short!r} has no better direction: it describes the eval "
            "labels or the predictions, not how good the model is, so mode='auto' cannot rank "
            "by it. Pick a metric such as 'loss', or pass mode='min' or mode='max' if you "
            "really mean to rank by it.", field="mode",
        )
    if short in METRICS:
        return METRICS[short].direction
    known = [TOTAL_LOSS, *METRICS]
    close = difflib.get_close_matches(short, known, n=1)
    down = [TOTAL_LOSS] + [n for n, i in METRICS.items() if i.direction == "min"]
    up = [n for n, i in METRICS.items() if i.direction == "max"]
    raise ConfigError(
        f"metric {metric!r}: mode='auto' cannot tell whether {short!r} should go up or down "
        f"(it knows {', '.join(down)}: down; {', '.join(up)}: up). "
        + (f"Did you mean {close[0]!r}? Otherwise p" if close else "P")
        + "ass mode='min' or mode='max'.",
        field="mode",
    )
