"""The catalog of loss and metric names: which kinds each fits, and which way a metric improves.

The one home of these facts. ``Head`` checks names against it when it is
built; early stopping and best exports read a metric's direction from it;
``headkit.kinds`` holds the implementations behind each name.
"""

from __future__ import annotations

import difflib
from typing import Dict, Tuple

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
        direction: ``"max"`` if higher is better, ``"min"`` if lower is.
        kinds: the output kinds that report it.
        binary_only: it needs a two-class head (``n_classes=2``).
    """

    direction: str
    kinds: Tuple[str, ...]
    binary_only: bool = False


#: Loss name -> what it fits. A kind's default loss is the first one listing it.
LOSSES: Dict[str, LossInfo] = {
    "cross_entropy": LossInfo(("classification",)),
    "mse": LossInfo(("regression",)),
    "mae": LossInfo(("regression",)),
    "huber": LossInfo(("regression",)),
}

#: Metric name -> direction and kinds. ``loss`` is reported for every trained head.
METRICS: Dict[str, MetricInfo] = {
    "accuracy": MetricInfo("max", ("classification",)),
    "auc": MetricInfo("max", ("classification",), binary_only=True),
    "precision": MetricInfo("max", ("classification",), binary_only=True),
    "recall": MetricInfo("max", ("classification",), binary_only=True),
    "mse": MetricInfo("min", ("regression",)),
    "rmse": MetricInfo("min", ("regression",)),
    "mae": MetricInfo("min", ("regression",)),
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
        >>> metric_names("regression")
        ('mse', 'rmse', 'mae')
    """
    return tuple(name for name, info in METRICS.items() if kind in info.kinds)


def metric_direction(metric: str, mode: str = "auto") -> str:
    """Whether a metric improves going down (``"min"``) or up (``"max"``).

    ``mode="auto"`` looks the metric's short name (after ``<head>/``) up in
    :data:`METRICS`; ``loss`` goes down. A name the catalog does not know
    (a Keras metric's own name) needs ``mode="min"`` or ``"max"``.

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
