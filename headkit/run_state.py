"""A training run's durable state in model_dir, and the result it adds up to.

The state is ``model_dir/headkit_training.json``: every evaluation, the
early-stopping count and the kept exports, replaced atomically after each
evaluation, so a restarted run continues where the last one stopped.
Imports no TensorFlow at module level (``headkit.serving`` loads only when
a model is exported), so ``TrainResult`` and ``Evaluation`` stay light.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from headkit.headset import TOTAL_LOSS
from headkit.progress import ProgressDisplay

__all__ = [
    "STATE_FILE",
    "Evaluation",
    "RunState",
    "TrainResult",
]

#: The training state file in ``model_dir``: history, early-stopping count, exports.
STATE_FILE = "headkit_training.json"

logger = logging.getLogger("headkit.training")


def _better(value: float, than: Optional[float], direction: str, min_delta: float = 0.0) -> bool:
    if math.isnan(value):
        return False
    if than is None:
        return True
    return value < than - min_delta if direction == "min" else value > than + min_delta


@attrs.frozen
class Evaluation:
    """One evaluation: the global step and every metric ``evaluate()`` reported.

    Example:
        >>> Evaluation(100, {"loss": 0.3, "y/loss": 0.3}).metrics["loss"]
        0.3
    """

    step: int
    metrics: Mapping[str, float]


@attrs.frozen
class TrainResult:
    """What ``train_and_evaluate`` did, and where the best model is.

    Attributes:
        model_dir: the Estimator's model_dir.
        steps: the global step training ended at.
        max_steps: the step it was allowed to reach.
        stopped_early: whether early stopping ended it.
        stop_reason: why training ended, in words.
        metric: the metric that ranks evaluations (the export's, else the
            early-stopping one, else ``loss``).
        best_step, best_metrics: the best evaluation by ``metric``.
        history: every evaluation, in step order, across restarts.
        exports: the kept best exports, best first.
        best_export: ``exports[0]``, the model to ship; None without exports.
        final_export: the export of the last checkpoint, if asked for.

    Example:
        >>> result.best_export  # doctest: +SKIP
        'runs/penguins/export/best/1700000000'
        >>> result.head_history("species")[0]  # doctest: +SKIP
        {'step': 100, 'loss': 0.61, 'accuracy': 0.78}
    """

    model_dir: str
    steps: int
    max_steps: int
    stopped_early: bool
    stop_reason: str
    metric: str
    best_step: Optional[int]
    best_metrics: Mapping[str, float]
    history: Tuple[Evaluation, ...]
    exports: Tuple[str, ...] = ()
    final_export: Optional[str] = None

    @property
    def best_export(self) -> Optional[str]:
        """The best kept export (by ``metric``), or None."""
        return self.exports[0] if self.exports else None

    @property
    def best_value(self) -> Optional[float]:
        """``best_metrics[metric]``, or None before any evaluation."""
        return self.best_metrics.get(self.metric)

    def head_history(self, head: str) -> List[Dict[str, float]]:
        """One head's evaluations: ``[{"step": s, "<metric>": value, ...}, ...]``.

        ``"loss"`` (the weighted total, not a head) gives the total's history.
        """
        prefix = head + "/"
        rows = []
        for evaluation in self.history:
            if head == TOTAL_LOSS:
                values = {TOTAL_LOSS: evaluation.metrics[TOTAL_LOSS]}
            else:
                values = {k[len(prefix):]: v for k, v in evaluation.metrics.items()
                          if k.startswith(prefix)}
            rows.append({"step": evaluation.step, **values})
        return rows

    @property
    def history_by_head(self) -> Dict[str, List[Dict[str, float]]]:
        """``{head: head_history(head)}`` for every head evaluated, and ``"loss"``."""
        heads = [TOTAL_LOSS]
        for evaluation in self.history[:1]:
            heads += list(dict.fromkeys(k.split("/")[0] for k in evaluation.metrics if "/" in k))
        return {head: self.head_history(head) for head in heads}


def _best_evaluation(history: Sequence[Evaluation], metric: str, direction: str):
    best = None
    for evaluation in history:
        value = evaluation.metrics.get(metric)
        if value is not None and _better(value, None if best is None else
                                         best.metrics[metric], direction):
            best = evaluation
    return best

# ------------------------------------------------------------------ state


class _EvaluatorDone(Exception):
    """Raised in a distributed evaluator once early stopping has fired: it ends the loop."""


class RunState:
    """The training state in ``model_dir``; updated after each evaluation.

    The state is a JSON file replaced atomically: the history, the
    early-stopping count and the kept exports never half-exist.
    """

    def __init__(self, estimator: Any, early_stopping: Any, export: Any,
                 ranking: Tuple[str, str],
                 progress: Optional[ProgressDisplay]) -> None:
        self.estimator = estimator
        self.early_stopping = early_stopping
        self.export = export
        self.ranking = ranking
        self.progress = progress
        self.path = os.path.join(estimator.model_dir, STATE_FILE)
        self.state = self._load()

    # -- file
    def _load(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"version": 1, "history": []}
        if os.path.exists(self.path):
            with open(self.path) as handle:
                try:
                    state.update(json.load(handle))
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{self.path}: not valid JSON ({error}). It is headkit's training "
                        "record; delete it to start the record afresh (checkpoints are kept)."
                    ) from error
        stopping = self.early_stopping
        saved = state.get("early_stopping")
        config = None if stopping is None else {
            "metric": stopping.metric, "mode": stopping.direction, "min_delta": stopping.min_delta}
        if saved is not None and config is not None and any(
                saved.get(k) != v for k, v in config.items()):
            logger.warning("headkit: early stopping changed from %s to %s; its count starts "
                           "afresh.", {k: saved.get(k) for k in config}, config)
            saved = None
        if config is not None:
            state["early_stopping"] = saved or dict(
                config, best_value=None, best_step=None, evals_without_improvement=0,
                stop_step=None)
        if self.export is not None and self.export.keep:
            kept = state.get("best_exports") or {}
            if (kept.get("metric"), kept.get("mode")) != self.ranking:
                kept = {"metric": self.ranking[0], "mode": self.ranking[1], "kept": []}
            kept["kept"] = [e for e in kept.get("kept", []) if os.path.isdir(e["path"])]
            state["best_exports"] = kept
        return state

    def save(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=".headkit_training.", dir=directory)
        with os.fdopen(handle, "w") as out:
            json.dump(self.state, out, indent=2, sort_keys=True)
        os.replace(temp, self.path)

    def reload(self) -> None:
        self.state = self._load()

    # -- queries
    @property
    def history(self) -> Tuple[Evaluation, ...]:
        return tuple(Evaluation(e["step"], e["metrics"]) for e in self.state["history"])

    @property
    def stop_step(self) -> Optional[int]:
        stopping = self.state.get("early_stopping")
        if self.early_stopping is None or stopping is None:
            return None
        if stopping["evals_without_improvement"] < self.early_stopping.patience:
            return None
        return stopping["stop_step"]

    @property
    def kept(self) -> List[Dict[str, Any]]:
        return self.state.get("best_exports", {}).get("kept", [])

    def stop_reason(self) -> str:
        stopping, rule = self.state["early_stopping"], self.early_stopping
        best = ("none: every value was NaN" if stopping["best_value"] is None
                else f"{stopping['best_value']:.6g} at step {stopping['best_step']}")
        return (f"early stopping: {rule.metric} did not improve by more than {rule.min_delta} "
                f"for {stopping['evals_without_improvement']} evaluations (best {best})")

    # -- updates
    def record(self, step: int, metrics: Dict[str, float], checkpoint_path: str) -> Optional[str]:
        """Add one evaluation; update the count and the exports; save. Return a new export."""
        history = self.state["history"]
        if history and step <= history[-1]["step"]:
            logger.info("headkit: step %d was already evaluated; the state is unchanged.", step)
            return None
        history.append({"step": step, "metrics": metrics})
        self._count(step, metrics)
        new_export, pruned = self._export_if_best(step, metrics, checkpoint_path)
        self.save()
        for entry in pruned:
            shutil.rmtree(entry["path"], ignore_errors=True)
        self._report(step, metrics, new_export)
        if self.stop_step is not None and self.estimator.config.task_type == "evaluator":
            raise _EvaluatorDone()
        return new_export

    def _count(self, step: int, metrics: Mapping[str, float]) -> None:
        rule, stopping = self.early_stopping, self.state.get("early_stopping")
        if rule is None or self.stop_step is not None:
            return
        value = metrics[rule.metric]
        if _better(value, stopping["best_value"], rule.direction, rule.min_delta):
            stopping.update(best_value=value, best_step=step, evals_without_improvement=0)
        else:
            stopping["evals_without_improvement"] += 1
        if stopping["evals_without_improvement"] >= rule.patience:
            stopping["stop_step"] = step

    def _export_if_best(self, step, metrics, checkpoint_path):
        if self.export is None or not self.export.keep:
            return None, []
        metric, direction = self.ranking
        value = metrics[metric]
        if math.isnan(value):
            return None, []
        sign = 1.0 if direction == "min" else -1.0
        kept = self.kept
        rank = sum(1 for e in kept if sign * e["value"] <= sign * value)  # ties: earlier first
        if rank >= self.export.keep:
            return None, []
        from headkit import serving  # TensorFlow loads only when a model is exported

        path = serving.export(
            self.estimator, os.path.join(self._export_base(), "best"),
            feature_spec=self.export.feature_spec, checkpoint_path=checkpoint_path,
            extra_manifest={"best_export": {"metric": metric, "mode": direction, "value": value,
                                            "step": step, "metrics": metrics}},
        )
        kept.insert(rank, {"path": path, "step": step, "value": value})
        self.state["best_exports"]["kept"] = kept[: self.export.keep]
        return path, kept[self.export.keep:]

    def _export_base(self) -> str:
        return self.export.export_dir_base or os.path.join(self.estimator.model_dir, "export")

    def _report(self, step: int, metrics: Mapping[str, float], new_export: Optional[str]) -> None:
        metric, direction = self.ranking
        best = _best_evaluation(self.history, metric, direction)
        logger.info("headkit: step %d: %s=%.6g (best %.6g at step %d)%s", step, metric,
                    metrics[metric], best.metrics[metric] if best else float("nan"),
                    best.step if best else -1,
                    f"; new best export {new_export}" if new_export else "")
        if self.progress is not None and self.progress.metric is not None:
            rule = self.state.get("early_stopping")
            if rule is not None:
                self.progress.evaluated(step, metrics[rule["metric"]], rule["best_value"],
                                        rule["best_step"])
            elif best is not None:
                self.progress.evaluated(step, metrics[metric], best.metrics[metric], best.step)

    def final_export(self, checkpoint_path: str, step: int) -> str:
        latest = next((e["metrics"] for e in reversed(self.state["history"])
                       if e["step"] == step), None)
        from headkit import serving

        path = serving.export(
            self.estimator, os.path.join(self._export_base(), "final"),
            feature_spec=self.export.feature_spec, checkpoint_path=checkpoint_path,
            extra_manifest={"final_export": {"step": step, "metrics": latest}},
        )
        self.state["final_export"] = {"path": path, "step": step}
        self.save()
        return path
