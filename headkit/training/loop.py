"""``train_and_evaluate``: train, evaluate, stop early and keep the best exports, for any backend.

Every metric name is checked against the HeadSet before anything is written.
The evaluations go through a :class:`~headkit.training.monitor.Monitor`
(rules, state file, exports). A backend with a native loop
(``train_and_evaluate_loop``, as ``hk.Estimator`` has for ``TF_CONFIG``
clusters and in-graph hooks) runs it; any other backend is driven through
the protocol by :func:`generic_loop`.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from typing import Any, Callable, Optional, Sequence

import attrs

from headkit.errors import ConfigError, ConfigTypeError
from headkit.spec.headset import HeadSet
from headkit.spec.keys import TOTAL_LOSS
from headkit.spec.scalars import as_int
from headkit.training.monitor import Monitor
from headkit.training.progress import ProgressDisplay
from headkit.training.protocol import LoopPlan
from headkit.training.result import TrainResult, best_evaluation
from headkit.training.rules import BestExport, EarlyStopping
from headkit.training.state import STATE_FILE

__all__ = ["train_and_evaluate", "generic_loop", "owns_training_state"]

logger = logging.getLogger("headkit.training")
_PROTOCOL = ("train", "evaluate", "export", "latest_checkpoint", "global_step", "model_dir")


def _check_metric(what: str, metric: str, heads: HeadSet) -> None:
    names = heads.metric_names
    if metric not in names:
        close = difflib.get_close_matches(metric, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{what}: evaluation produces no metric {metric!r}. The HeadSet's metrics are "
            f"{list(names)!r}.{hint}"
        )


_UNKNOWN = object()


def _endless_dataset(input_fn: Callable, estimator: Any) -> bool:
    """Whether an input_fn's dataset repeats forever, read by calling it once, eagerly.

    Only when that is cheap and safe: outside a graph, with no argument but
    those tf.estimator passes by name. Any failure means "cannot tell" (False).
    """
    try:
        import tensorflow as tf  # not at module level: headkit.training loads without it
    except ImportError:  # pragma: no cover
        return False
    if not tf.executing_eagerly():
        return False
    passed = {"mode": "eval", "params": {}, "config": getattr(estimator, "config", None),
              "input_context": None}
    try:
        parameters = inspect.signature(input_fn).parameters
    except (TypeError, ValueError):
        return False
    kwargs = {}
    for name, parameter in parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in passed:
            kwargs[name] = passed[name]
        elif parameter.default is parameter.empty:
            return False
    try:
        dataset = input_fn(**kwargs)
        return isinstance(dataset, tf.data.Dataset) and (
            int(dataset.cardinality()) == int(tf.data.INFINITE_CARDINALITY))
    except Exception:  # the user's input_fn: it will be called again, and fail there
        return False


def _check_eval_ends(estimator: Any, eval_input_fn: Optional[Callable],
                     eval_steps: Optional[int]) -> None:
    """An evaluation without eval_steps reads its input to the end: refuse one that has none."""
    if eval_input_fn is None or eval_steps is not None:
        return
    epochs = getattr(eval_input_fn, "headkit_num_epochs", _UNKNOWN)  # hk.input_fn sets it
    if epochs is _UNKNOWN:
        endless = _endless_dataset(eval_input_fn, estimator)
        what = "its dataset repeats forever (a .repeat() with no count?)"
    else:
        endless = epochs is None
        what = "it was made with num_epochs=None, which repeats forever"
    if endless:
        raise ConfigError(
            f"eval_input_fn never ends: {what}, and eval_steps is None, so the first "
            "evaluation would read it forever and training would hang. Make the evaluation "
            "input end (hk.input_fn(..., num_epochs=1), the default, or no .repeat()), or pass "
            "eval_steps=N to evaluate N batches.", field="eval_input_fn",
        )


def _check_arguments(estimator, eval_input_fn, max_steps, eval_every, early_stopping, export,
                     eval_steps=None):
    heads = getattr(estimator, "heads", None)
    lacking = [name for name in _PROTOCOL if not hasattr(estimator, name)]
    if not isinstance(heads, HeadSet) or lacking:
        raise ConfigTypeError(
            f"train_and_evaluate needs a headkit model such as hk.Estimator, whose HeadSet "
            f"names the metrics (got {type(estimator).__name__}"
            + (f", which lacks {lacking!r}" if lacking else "") + "). Build it with "
            "hk.Estimator(body, heads).", field="model",
        )
    for name, value in (("max_steps", max_steps), ("eval_every", eval_every),
                        ("eval_steps", eval_steps)):
        if name == "eval_steps" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            got = repr(value) if type(value) in (int, float) else (
                f"{value!r}, a {type(value).__name__}")
            raise ConfigError(f"train_and_evaluate: {name} must be an int >= 1 (got {got}).",
                              field=name)
    if early_stopping is not None:
        if not isinstance(early_stopping, EarlyStopping):
            raise ConfigTypeError(
                f"early_stopping must be an hk.EarlyStopping (got {early_stopping!r}).",
                field="early_stopping")
        _check_metric("EarlyStopping", early_stopping.metric, heads)
        if eval_input_fn is None:
            raise ConfigError(
                f"early_stopping on {early_stopping.metric!r} needs evaluations, but "
                "eval_input_fn is None. Pass an eval_input_fn, or drop early_stopping."
            )
        evaluations = -(-max_steps // eval_every)
        if evaluations <= early_stopping.patience:
            raise ConfigError(
                f"EarlyStopping(patience={early_stopping.patience}) can never stop: "
                f"max_steps={max_steps} with eval_every={eval_every} gives {evaluations} "
                "evaluation(s), and stopping needs patience + 1. Lower eval_every or patience."
            )
    if export is not None:
        if not isinstance(export, BestExport):
            raise ConfigTypeError(f"export must be an hk.BestExport (got {export!r}).",
                                  field="export")
        if export.metric is not None:
            _check_metric("BestExport", export.metric, heads)
        if export.heads is not None or export.default is not None:
            try:
                heads.select(export.heads, export.default)
            except ConfigError as error:
                raise type(error)(f"BestExport: {error}", field=error.field) from None
        if export.keep and eval_input_fn is None:
            raise ConfigError(
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
    hooks: Sequence[Any] = (),
    progress: Any = True,
) -> TrainResult:
    """Train, evaluate every ``eval_every`` steps, stop early, keep the best exports.

    A checkpoint is saved and evaluated every ``eval_every`` steps and at the
    end. With ``hk.Estimator`` on one process each checkpoint is evaluated in
    memory right after it is saved (the same metrics as ``evaluate()`` on it);
    under a ``TF_CONFIG`` cluster every task runs its role, and the evaluator
    (or the chief) alone writes the state file in ``model_dir``
    (docs/distributed.md). Every metric name is checked against the HeadSet
    before anything is written. Rerunning with the same ``model_dir``
    resumes: training from the last checkpoint, the early-stopping count and
    the kept exports from ``model_dir/headkit_training.json``; a run that
    already stopped early returns its result at once.

    Args:
        estimator: an ``hk.Estimator``, or any model of the backend protocol
            (:class:`headkit.training.protocol.Backend`).
        train_input_fn: the training input (repeat it; ``max_steps`` ends training).
        eval_input_fn: the evaluation input; it must end (no ``repeat()``)
            unless ``eval_steps`` is given: one that never ends is refused
            before training. Required by early stopping.
        max_steps: the global step to train to.
        eval_every: steps between evaluations (and checkpoints).
        early_stopping: an :class:`EarlyStopping` rule, or None.
        export: a :class:`BestExport`, or None for no export.
        eval_steps: batches per evaluation; None for the whole input.
        eval_name: the EvalSpec name; metrics go to ``model_dir/eval_<name>``.
        hooks: more ``SessionRunHook``s for training (``hk.Estimator``).
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
    # NumPy integers (np.int64(3000), read from a config array) are integers.
    max_steps, eval_every, eval_steps = as_int(max_steps), as_int(eval_every), as_int(eval_steps)
    _check_arguments(estimator, eval_input_fn, max_steps, eval_every, early_stopping, export,
                     eval_steps)
    if not (progress is True or progress is False or progress is None
            or callable(getattr(progress, "write", None))):
        raise ConfigTypeError(
            f"progress must be True, False or a stream with write() (got {progress!r}). Use "
            "progress=True for a progress line on stderr, progress=False for none, or "
            "progress=sys.stdout.", field="progress")
    _check_eval_ends(estimator, eval_input_fn, eval_steps)
    ranking = _ranking(early_stopping, export)
    if export is not None and export.metric is None:
        export = attrs.evolve(export, metric=ranking[0], mode=ranking[1])
    display = None
    if progress:
        stream = None if progress is True else progress
        watched = early_stopping.metric if early_stopping is not None else (
            ranking[0] if eval_input_fn is not None else None)
        display = ProgressDisplay(max_steps, metric=watched, stream=stream)
    monitor = Monitor(estimator, early_stopping, export, ranking, display,
                      read_only=not owns_training_state(estimator))
    plan = LoopPlan(train_input_fn, eval_input_fn, max_steps, eval_every, eval_steps, eval_name,
                    tuple(hooks), display)
    if monitor.stop_step is not None:
        logger.info("headkit: this run already stopped early at step %d (see %s); nothing "
                    "to train. Raise patience, or delete %s, to train further.",
                    monitor.stop_step, monitor.path, STATE_FILE)
    native = getattr(estimator, "train_and_evaluate_loop", None)
    if native is not None:
        native(plan, monitor)  # it trains nothing after an early stop, but still ends its role
    elif monitor.stop_step is None:
        generic_loop(estimator, plan, monitor)
    return _finish(estimator, monitor, max_steps, export, display)


def owns_training_state(model: Any) -> bool:
    """Whether this process evaluates and writes the training state and the exports.

    A backend on a cluster says so with ``owns_training_state`` (one task
    does); without it, ``is_chief`` decides.

    Example:
        >>> owns_training_state(object())
        True
    """
    return bool(getattr(model, "owns_training_state", getattr(model, "is_chief", True)))


def generic_loop(model: Any, plan: LoopPlan, monitor: Monitor) -> None:
    """Run a plan through the backend protocol: train to each evaluation step, evaluate, record.

    Stops at ``max_steps``, when the monitor says early stopping fired, or
    when the training input ends before the next evaluation step.

    Example:
        >>> generic_loop(model, plan, monitor)  # doctest: +SKIP
    """
    step = model.global_step()
    while step < plan.max_steps and monitor.stop_step is None:
        target = min(plan.max_steps, (step // plan.eval_every + 1) * plan.eval_every)
        model.train(plan.train_input_fn, max_steps=target)
        reached = model.global_step()
        if plan.progress is not None:
            plan.progress.update(reached, None)
        if plan.eval_input_fn is not None:
            metrics = model.evaluate(plan.eval_input_fn, steps=plan.eval_steps)
            monitor.record(reached, {k: float(v) for k, v in metrics.items()
                                     if k != "global_step"}, model.latest_checkpoint())
        if reached < target:  # the training input ended
            break
        step = reached


def _finish(estimator, state: Monitor, max_steps: int, export, display) -> TrainResult:
    owner = owns_training_state(estimator)
    if not owner:
        state.reload()  # another task wrote it
    checkpoint = estimator.latest_checkpoint()
    steps = estimator.global_step()
    stopped = state.stop_step is not None
    if stopped:
        reason = state.stop_reason()
    elif steps >= max_steps:
        reason = f"reached max_steps={max_steps}"
    else:
        reason = f"the training input ended at step {steps}, before max_steps={max_steps}"
    final = state.state.get("final_export") or {}
    final_export = final.get("path")
    wants_final = export is not None and export.final and owner
    if wants_final and checkpoint and (final.get("step") != steps
                                       or not os.path.isdir(final_export)):  # noqa: E127
        final_export = state.final_export(checkpoint, steps)
    metric, direction = state.ranking
    best = best_evaluation(state.history, metric, direction)
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
