"""The backend-neutral rules of a training run: early stopping and best-export ranking.

The rules are frozen attrs classes checked when they are built, and pure
functions of the evaluations: :func:`count_evaluation` updates the
early-stopping count, :func:`export_rank` says where an evaluation ranks
among the kept exports. No TensorFlow, no files: the state file is
``headkit.training.state``, the glue ``headkit.training.monitor``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import attrs

from headkit.errors import ConfigError, ConfigTypeError
from headkit.spec.catalog import MODES, metric_direction
from headkit.spec.keys import TOTAL_LOSS
from headkit.spec.scalars import as_bool, as_float, as_int, plain

__all__ = ["EarlyStopping", "BestExport", "better", "count_evaluation", "export_rank",
           "new_count", "is_stopped"]


def _metric_name(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigTypeError(
            f"{type(instance).__name__}.metric must be a metric name such as 'loss' or "
            f"'species/accuracy' (got {value!r}).", field="metric",
        )


def _check_mode(instance: Any) -> None:
    if instance.mode not in MODES:
        raise ConfigError(
            f"{type(instance).__name__}.mode must be one of {MODES!r} (got {instance.mode!r}). "
            "'auto' reads the metric's name; 'min' and 'max' say which way is better.",
            field="mode",
        )


def _int_at_least(low: int) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(
                f"{type(instance).__name__}.{attribute.name} must be an int >= {low} "
                f"(got {plain(value)!r}).", field=attribute.name,
            )

    return check


def _head_names(value: Any) -> Optional[Tuple[str, ...]]:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) for v in value) or not value:
        raise ConfigTypeError(
            f"BestExport.heads must be a non-empty list of head names (got {value!r}); e.g. "
            "heads=['species', 'sex'].", field="heads")
    return tuple(value)


@attrs.frozen
class EarlyStopping:
    """Stop training when ``metric`` has not improved for ``patience`` evaluations.

    An evaluation improves when the metric beats the best so far by more
    than ``min_delta``. The count lives in ``model_dir``, so a restarted run
    continues it. A name the HeadSet does not produce fails before training.

    Args:
        metric: any name in ``heads.metric_names``: ``loss``,
            ``"<head>/loss"``, ``"<head>/<metric>"``.
        mode: ``"auto"`` (see :func:`metric_direction`), ``"min"`` or ``"max"``.
        patience: evaluations without improvement before stopping, >= 1.
        min_delta: the smallest change that counts as an improvement, >= 0.

    Example:
        >>> EarlyStopping("species/accuracy", patience=3).direction
        'max'
    """

    metric: str = attrs.field(validator=_metric_name)
    mode: str = "auto"
    patience: int = attrs.field(default=3, converter=as_int, validator=_int_at_least(1))
    min_delta: float = attrs.field(default=0.0, converter=as_float)

    def __attrs_post_init__(self) -> None:
        _check_mode(self)
        metric_direction(self.metric, self.mode)
        delta = self.min_delta
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not delta >= 0 \
                or math.isinf(delta):
            raise ConfigError(
                f"EarlyStopping.min_delta must be a finite number >= 0 (got {delta!r}): the "
                "smallest change that counts as an improvement.", field="min_delta",
            )

    @property
    def direction(self) -> str:
        """``"min"`` or ``"max"``: the mode, with ``"auto"`` resolved."""
        return metric_direction(self.metric, self.mode)


@attrs.frozen
class BestExport:
    """Keep the ``keep`` best exports by one metric, plus a final export.

    Each evaluation that ranks among the ``keep`` best is exported through
    the verified export (:func:`headkit.serving.export`) to
    ``<export_dir_base>/best/<timestamp>``; an export pushed out of the
    ranking is deleted. Ties keep the earlier step. Each manifest records
    ``best_export``: the metric, its value, the step and every metric of
    that evaluation. With ``final=True`` the last checkpoint is exported to
    ``<export_dir_base>/final/<timestamp>`` when training ends.

    Args:
        metric: the ranking metric; default the early-stopping metric, else ``loss``.
        mode: ``"auto"``, ``"min"`` or ``"max"``, as for :class:`EarlyStopping`.
        keep: how many best exports to keep, >= 0 (0: final export only).
        final: also export the last checkpoint at the end.
        export_dir_base: default ``<model_dir>/export``.
        feature_spec: passed to the export; default read from the body.
        heads: export these heads only (a subset export); default every head.
        default: the head behind ``serving_default`` of each export; required
            when the HeadSet's default head is not among ``heads``.

    Example:
        >>> BestExport("species/accuracy", keep=2).keep
        2
        >>> BestExport(keep=1, heads=["species", "sex"], default="species").heads
        ('species', 'sex')
    """

    metric: Optional[str] = None
    mode: str = "auto"
    keep: int = attrs.field(default=3, converter=as_int, validator=_int_at_least(0))
    final: bool = attrs.field(default=True, converter=as_bool)
    export_dir_base: Optional[str] = None
    feature_spec: Optional[Mapping[str, Any]] = attrs.field(default=None, eq=False)
    heads: Optional[Tuple[str, ...]] = attrs.field(default=None, converter=_head_names)
    default: Optional[str] = None

    def __attrs_post_init__(self) -> None:
        _check_mode(self)
        if self.default is not None and (not isinstance(self.default, str) or (
                self.heads is not None and self.default not in self.heads)):
            raise ConfigError(
                f"BestExport.default={self.default!r} must be one of the exported heads "
                f"{list(self.heads or ())!r}: it serves 'serving_default'.", field="default")
        if self.metric is not None:
            _metric_name(self, None, self.metric)
            metric_direction(self.metric, self.mode)
        elif self.mode != "auto":
            raise ConfigError(
                f"BestExport(mode={self.mode!r}) needs a metric to apply to (got metric=None, "
                "which ranks by the early-stopping metric or 'loss' in their own direction). "
                "Pass BestExport('<head>/<metric>', mode=...), or leave mode='auto'.",
                field="mode",
            )

    @property
    def direction(self) -> str:
        """``"min"`` or ``"max"`` for the (resolved) metric."""
        return metric_direction(self.metric or TOTAL_LOSS, self.mode)


def better(value: float, than: Optional[float], direction: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``than`` by more than ``min_delta`` (NaN never does).

    Example:
        >>> better(0.5, 0.6, "min"), better(0.5, None, "max"), better(float("nan"), None, "min")
        (True, True, False)
    """
    if math.isnan(value):
        return False
    if than is None:
        return True
    return value < than - min_delta if direction == "min" else value > than + min_delta


def new_count(rule: EarlyStopping) -> Dict[str, Any]:
    """A fresh early-stopping count for ``rule``, as the state file stores it.

    Example:
        >>> new_count(EarlyStopping("loss"))["evals_without_improvement"]
        0
    """
    return {"metric": rule.metric, "mode": rule.direction, "min_delta": rule.min_delta,
            "best_value": None, "best_step": None, "evals_without_improvement": 0,
            "stop_step": None}


def is_stopped(rule: Optional[EarlyStopping], count: Optional[Mapping[str, Any]]) -> bool:
    """Whether the count says training stops.

    Example:
        >>> is_stopped(EarlyStopping("loss", patience=1), dict(new_count(
        ...     EarlyStopping("loss")), evals_without_improvement=1, stop_step=20))
        True
    """
    if rule is None or count is None:
        return False
    return count["evals_without_improvement"] >= rule.patience


def count_evaluation(rule: EarlyStopping, count: Mapping[str, Any], step: int,
                     metrics: Mapping[str, float]) -> Dict[str, Any]:
    """The early-stopping count after one more evaluation (a new dict; ``count`` is kept).

    Example:
        >>> rule = EarlyStopping("loss", patience=2)
        >>> count = count_evaluation(rule, new_count(rule), 10, {"loss": 1.0})
        >>> count = count_evaluation(rule, count, 20, {"loss": 1.5})
        >>> count["best_step"], count["evals_without_improvement"]
        (10, 1)
    """
    count = dict(count)
    if is_stopped(rule, count):
        return count
    value = metrics[rule.metric]
    if better(value, count["best_value"], rule.direction, rule.min_delta):
        count.update(best_value=value, best_step=step, evals_without_improvement=0)
    else:
        count["evals_without_improvement"] += 1
    if count["evals_without_improvement"] >= rule.patience:
        count["stop_step"] = step
    return count


def export_rank(kept_values: Sequence[float], value: float, direction: str,
                keep: int) -> Optional[int]:
    """Where an evaluation's value ranks among the kept exports' values, or None if it is not kept.

    Ties keep the earlier export first; NaN is never kept.

    Example:
        >>> export_rank([0.9, 0.8], 0.85, "max", keep=2), export_rank([0.9, 0.8], 0.7, "max", 2)
        (1, None)
    """
    if math.isnan(value):
        return None
    sign = 1.0 if direction == "min" else -1.0
    rank = sum(1 for kept in kept_values if sign * kept <= sign * value)
    return rank if rank < keep else None
