"""``train_and_evaluate``: early stopping, best exports and progress, declared and checked.

``train_and_evaluate`` runs ``tf.estimator.train_and_evaluate`` (so the
``TF_CONFIG`` distributed modes keep working) with three additions:

- an ``Exporter`` on the EvalSpec, called with each evaluation's results in
  memory (never read back from an ``eval*/`` folder, so the EvalSpec's name
  cannot make it miss them). It records the history, updates the
  early-stopping count and writes the best exports; all of it is kept in
  ``model_dir/headkit_training.json`` (``headkit.run_state.RunState``), so a
  restarted run continues where the last one stopped;
- a ``CheckpointSaverHook`` that saves every ``eval_every`` steps and, right
  after the evaluation of that checkpoint, stops training when the rule says
  so: no step runs after the deciding evaluation (the exporter and the hooks
  are in ``headkit.training_hooks``);
- a progress line (``headkit.progress``).
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import attrs
import tensorflow as tf

from headkit.heads import METRIC_NAMES
from headkit.headset import TOTAL_LOSS, HeadSet
from headkit.progress import ProgressDisplay
from headkit.run_state import (
    STATE_FILE,
    RunState,
    TrainResult,
    _best_evaluation,
    _EvaluatorDone,
)
from headkit.training_hooks import _Exporter, _ProgressHook, _StopFileHook, _StoppingSaverHook

__all__ = [
    "train_and_evaluate",
    "EarlyStopping",
    "BestExport",
    "metric_direction",
]
# Every registered name has a direction: classification metrics go up, regression ones down.
_LOWER_IS_BETTER = (TOTAL_LOSS,) + METRIC_NAMES["regression"]
_HIGHER_IS_BETTER = METRIC_NAMES["classification"]
_MODES = ("auto", "min", "max")

logger = logging.getLogger("headkit.training")


def metric_direction(metric: str, mode: str = "auto") -> str:
    """Whether a metric improves going down (``"min"``) or up (``"max"``).

    ``mode="auto"`` reads the last part of the name: ``loss``, ``mse``,
    ``rmse``, ``mae`` go down; ``accuracy``, ``auc``, ``precision``,
    ``recall`` go up. Any other name needs ``mode="min"`` or ``"max"``.

    Example:
        >>> metric_direction("species/accuracy")
        'max'
        >>> metric_direction("species/f1", mode="max")
        'max'
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES!r} (got {mode!r}) for metric {metric!r}.")
    if mode != "auto":
        return mode
    short = metric.rsplit("/", 1)[-1]
    if short in _LOWER_IS_BETTER:
        return "min"
    if short in _HIGHER_IS_BETTER:
        return "max"
    close = difflib.get_close_matches(short, _LOWER_IS_BETTER + _HIGHER_IS_BETTER, n=1)
    raise ValueError(
        f"metric {metric!r}: mode='auto' cannot tell whether {short!r} should go up or down "
        f"(it knows {', '.join(_LOWER_IS_BETTER)}: down; {', '.join(_HIGHER_IS_BETTER)}: up). "
        + (f"Did you mean {close[0]!r}? Otherwise p" if close else "P")
        + "ass mode='min' or mode='max'."
    )

def _metric_name(instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"{type(instance).__name__}.metric must be a metric name such as 'loss' or "
            f"'species/accuracy' (got {value!r})."
        )


def _check_mode(instance: Any) -> None:
    if instance.mode not in _MODES:
        raise ValueError(
            f"{type(instance).__name__}.mode must be one of {_MODES!r} (got {instance.mode!r}). "
            "'auto' reads the metric's name; 'min' and 'max' say which way is better."
        )


def _int_at_least(low: int) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"{type(instance).__name__}.{attribute.name} must be an int >= {low} "
                f"(got {value!r})."
            )

    return check


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
    patience: int = attrs.field(default=3, validator=_int_at_least(1))
    min_delta: float = 0.0

    def __attrs_post_init__(self) -> None:
        _check_mode(self)
        metric_direction(self.metric, self.mode)
        if not isinstance(self.min_delta, (int, float)) or not self.min_delta >= 0:
            raise ValueError(
                f"EarlyStopping.min_delta must be a number >= 0 (got {self.min_delta!r})."
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

    Example:
        >>> BestExport("species/accuracy", keep=2).keep
        2
    """

    metric: Optional[str] = None
    mode: str = "auto"
    keep: int = attrs.field(default=3, validator=_int_at_least(0))
    final: bool = True
    export_dir_base: Optional[str] = None
    feature_spec: Optional[Mapping[str, Any]] = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        _check_mode(self)
        if self.metric is not None:
            _metric_name(self, None, self.metric)
            metric_direction(self.metric, self.mode)
        elif self.mode != "auto":
            raise ValueError(
                f"BestExport(mode={self.mode!r}) needs a metric to apply to (got metric=None, "
                "which ranks by the early-stopping metric or 'loss' in their own direction). "
                "Pass BestExport('<head>/<metric>', mode=...), or leave mode='auto'."
            )

    @property
    def direction(self) -> str:
        """``"min"`` or ``"max"`` for the (resolved) metric."""
        return metric_direction(self.metric or TOTAL_LOSS, self.mode)

# ------------------------------------------------------------------ train_and_evaluate


def _check_metric(what: str, metric: str, heads: HeadSet) -> None:
    names = heads.metric_names
    if metric not in names:
        close = difflib.get_close_matches(metric, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{what}: evaluation produces no metric {metric!r}. The HeadSet's metrics are "
            f"{list(names)!r}.{hint}"
        )


def _check_arguments(estimator, eval_input_fn, max_steps, eval_every, early_stopping, export):
    heads = getattr(estimator, "heads", None)
    if not isinstance(heads, HeadSet):
        raise TypeError(
            f"train_and_evaluate needs an hk.Estimator, whose HeadSet names the metrics "
            f"(got {type(estimator).__name__}). Build it with hk.Estimator(body, heads)."
        )
    for name, value in (("max_steps", max_steps), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"train_and_evaluate: {name} must be an int >= 1 (got {value!r}).")
    if early_stopping is not None:
        if not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping must be an hk.EarlyStopping (got {early_stopping!r}).")
        _check_metric("EarlyStopping", early_stopping.metric, heads)
        if eval_input_fn is None:
            raise ValueError(
                f"early_stopping on {early_stopping.metric!r} needs evaluations, but "
                "eval_input_fn is None. Pass an eval_input_fn, or drop early_stopping."
            )
        evaluations = -(-max_steps // eval_every)
        if evaluations <= early_stopping.patience:
            raise ValueError(
                f"EarlyStopping(patience={early_stopping.patience}) can never stop: "
                f"max_steps={max_steps} with eval_every={eval_every} gives {evaluations} "
                "evaluation(s), and stopping needs patience + 1. Lower eval_every or patience."
            )
    if export is not None:
        if not isinstance(export, BestExport):
            raise TypeError(f"export must be an hk.BestExport (got {export!r}).")
        if export.metric is not None:
            _check_metric("BestExport", export.metric, heads)
        if export.keep and eval_input_fn is None:
            raise ValueError(
                f"BestExport(keep={export.keep}) ranks evaluations, but eval_input_fn is None. "
                "Pass an eval_input_fn, or BestExport(keep=0) for the final export only."
            )


def _ranking(early_stopping, export) -> tuple:
    """(metric, direction) that picks the best evaluation."""
    if export is not None and export.metric is not None:
        return export.metric, export.direction
    if early_stopping is not None:
        return early_stopping.metric, early_stopping.direction
    return TOTAL_LOSS, "min"


def train_and_evaluate(
    estimator: Any,
    train_input_fn: Callable,
    eval_input_fn: Optional[Callable] = None,
    *,
    max_steps: int,
    eval_every: int = 100,
    early_stopping: Optional[EarlyStopping] = None,
    export: Optional[BestExport] = None,
    eval_steps: Optional[int] = None,
    eval_name: Optional[str] = None,
    hooks: Sequence[tf.compat.v1.train.SessionRunHook] = (),
    progress: Any = True,
) -> TrainResult:
    """Train, evaluate every ``eval_every`` steps, stop early, keep the best exports.

    Built on ``tf.estimator.train_and_evaluate``: locally, a checkpoint is
    saved and evaluated every ``eval_every`` steps (this replaces the
    RunConfig's checkpoint schedule during the call) and at the end;
    with ``TF_CONFIG`` the distributed roles work as usual, sharing the state
    file in ``model_dir``. Every metric name is checked against the HeadSet
    before anything is written. Rerunning with the same ``model_dir``
    resumes: training from the last checkpoint, the early-stopping count and
    the kept exports from ``model_dir/headkit_training.json``; a run that
    already stopped early returns its result at once.

    Args:
        estimator: an ``hk.Estimator``.
        train_input_fn: the training input (repeat it; ``max_steps`` ends training).
        eval_input_fn: the evaluation input; it must end (no ``repeat()``)
            unless ``eval_steps`` is given. Required by early stopping.
        max_steps: the global step to train to.
        eval_every: steps between evaluations (and checkpoints).
        early_stopping: an :class:`EarlyStopping` rule, or None.
        export: a :class:`BestExport`, or None for no export.
        eval_steps: batches per evaluation; None for the whole input.
        eval_name: the EvalSpec name; metrics go to ``model_dir/eval_<name>``.
        hooks: more ``SessionRunHook``s for training.
        progress: True for a progress line on stderr, False for none, or a
            stream to write it to.

    Returns:
        A :class:`headkit.run_state.TrainResult`: steps, whether and why it
        stopped, the best step and its metrics, the history per head, the
        exports (best first) and the final export.

    Example:
        >>> result = hk.train_and_evaluate(
        ...     estimator, train_input, eval_input, max_steps=2000, eval_every=100,
        ...     early_stopping=hk.EarlyStopping("species/accuracy", patience=5),
        ...     export=hk.BestExport(keep=3))  # doctest: +SKIP
        >>> result.stop_reason, result.best_export  # doctest: +SKIP
    """
    _check_arguments(estimator, eval_input_fn, max_steps, eval_every, early_stopping, export)
    ranking = _ranking(early_stopping, export)
    if export is not None and export.metric is None:
        export = attrs.evolve(export, metric=ranking[0], mode=ranking[1])
    display = None
    if progress:
        stream = None if progress is True else progress
        watched = early_stopping.metric if early_stopping is not None else (
            ranking[0] if eval_input_fn is not None else None)
        display = ProgressDisplay(max_steps, metric=watched, stream=stream)
    state = RunState(estimator, early_stopping, export, ranking, display)
    config = estimator.config
    if state.stop_step is None:
        train_hooks = list(hooks)
        if display is not None:
            train_hooks.append(_ProgressHook(display))
        if eval_input_fn is None:
            estimator.train(train_input_fn, max_steps=max_steps, hooks=train_hooks)
        else:
            if config.is_chief:
                train_hooks.append(_StoppingSaverHook(state, eval_every,
                                                      reload=bool(config.cluster_spec)))
            elif early_stopping is not None:
                train_hooks.append(_StopFileHook(state))
            train_spec = tf.estimator.TrainSpec(train_input_fn, max_steps=max_steps,
                                                hooks=train_hooks)
            eval_spec = tf.estimator.EvalSpec(
                eval_input_fn, steps=eval_steps, name=eval_name, exporters=[_Exporter(state)],
                start_delay_secs=0, throttle_secs=0,
            )
            try:
                tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
            except _EvaluatorDone:  # a distributed evaluator: early stopping has fired
                pass
    else:
        logger.info("headkit: this run already stopped early at step %d (see %s); nothing "
                    "to train. Raise patience, or delete %s, to train further.",
                    state.stop_step, state.path, STATE_FILE)
    return _finish(estimator, state, max_steps, export, display)


def _finish(estimator, state: RunState, max_steps: int, export, display) -> TrainResult:
    checkpoint = estimator.latest_checkpoint()
    steps = int(tf.train.load_variable(checkpoint, "global_step")) if checkpoint else 0
    stopped = state.stop_step is not None
    if stopped:
        reason = state.stop_reason()
    elif steps >= max_steps:
        reason = f"reached max_steps={max_steps}"
    else:
        reason = f"the training input ended at step {steps}, before max_steps={max_steps}"
    final = state.state.get("final_export") or {}
    final_export = final.get("path")
    wants_final = export is not None and export.final and estimator.config.is_chief
    if wants_final and checkpoint and (final.get("step") != steps
                                       or not os.path.isdir(final_export)):
        final_export = state.final_export(checkpoint, steps)
    metric, direction = state.ranking
    best = _best_evaluation(state.history, metric, direction)
    result = TrainResult(
        model_dir=estimator.model_dir,
        steps=steps,
        max_steps=max_steps,
        stopped_early=stopped,
        stop_reason=reason,
        metric=metric,
        best_step=None if best is None else best.step,
        best_metrics={} if best is None else dict(best.metrics),
        history=state.history,
        exports=tuple(e["path"] for e in state.kept),
        final_export=final_export,
    )
    summary = f"headkit: training ended at step {steps}: {reason}."
    if best is not None:
        summary += f" Best: step {best.step}, {metric}={best.metrics[metric]:.6g}"
        summary += f", export {result.best_export}." if result.best_export else "."
    logger.info(summary)
    if display is not None:
        display.close(summary)
    return result
