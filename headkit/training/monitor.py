"""The monitor: each evaluation goes through the rules, into the state file, and to the exports.

A thin adapter between a backend's training loop and the pure rules
(``headkit.training.rules``): it records the evaluation, updates the
early-stopping count, exports when the evaluation ranks among the best
(through the model's own ``export``), prunes the ones pushed out, saves the
state and reports progress.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Dict, List, Mapping, Optional, Tuple

from headkit.training.progress import ProgressDisplay
from headkit.training.result import Evaluation, best_evaluation
from headkit.training.rules import (
    BestExport,
    EarlyStopping,
    count_evaluation,
    export_rank,
    is_stopped,
)
from headkit.training.state import STATE_FILE, load_state, save_state

__all__ = ["Monitor"]

logger = logging.getLogger("headkit.training")


class Monitor:
    """The training state of one ``model_dir``, updated after each evaluation.

    Args:
        model: the backend's model (its ``model_dir`` and ``export`` are used).
        early_stopping: the stopping rule, or None.
        export: the best-export rule, or None.
        ranking: ``(metric, direction)`` that ranks evaluations.
        progress: the progress line, or None.
        read_only: True on a task of a cluster that only reads the state
            (another task writes it): recording or exporting is refused.

    Example:
        >>> rule = hk.EarlyStopping("loss")
        >>> monitor = Monitor(model, rule, None, ("loss", "min"), None)  # doctest: +SKIP
        >>> monitor.record(100, {"loss": 0.5}, checkpoint_path)  # doctest: +SKIP
    """

    def __init__(self, model: Any, early_stopping: Optional[EarlyStopping],
                 export: Optional[BestExport], ranking: Tuple[str, str],
                 progress: Optional[ProgressDisplay], read_only: bool = False) -> None:
        self.model = model
        self.read_only = read_only
        self.early_stopping = early_stopping
        self.export = export
        self.ranking = ranking
        self.progress = progress
        self.path = os.path.join(model.model_dir, STATE_FILE)
        self.state = self._load()

    def _load(self) -> Dict[str, Any]:
        return load_state(self.path, self.early_stopping, self.export, self.ranking)

    def reload(self) -> None:
        """Read the state file again (another task may have written it)."""
        self.state = self._load()

    def save(self) -> None:
        self._check_writable()
        save_state(self.path, self.state)

    def _check_writable(self) -> None:
        if self.read_only:  # every file in model_dir has one writer
            raise RuntimeError(f"headkit: this task only reads {self.path} and the exports; "
                               "another task of the cluster writes them.")

    # -- queries
    @property
    def history(self) -> Tuple[Evaluation, ...]:
        """Every evaluation recorded, in step order."""
        return tuple(Evaluation(e["step"], e["metrics"]) for e in self.state["history"])

    @property
    def stop_step(self) -> Optional[int]:
        """The step of the evaluation that stopped training, or None while it goes on."""
        count = self.state.get("early_stopping")
        return count["stop_step"] if is_stopped(self.early_stopping, count) else None

    @property
    def kept(self) -> List[Dict[str, Any]]:
        """The kept best exports, best first: ``{"path", "step", "value"}``."""
        return self.state.get("best_exports", {}).get("kept", [])

    def stop_reason(self) -> str:
        """Why early stopping fired, in words."""
        count, rule = self.state["early_stopping"], self.early_stopping
        best = ("none: every value was NaN" if count["best_value"] is None
                else f"{count['best_value']:.6g} at step {count['best_step']}")
        return (f"early stopping: {rule.metric} did not improve by more than {rule.min_delta} "
                f"for {count['evals_without_improvement']} evaluations (best {best})")

    # -- updates
    def record(self, step: int, metrics: Dict[str, float], checkpoint_path: str) -> Optional[str]:
        """Add one evaluation; update the count and the exports; save. Return a new export."""
        self._check_writable()
        history = self.state["history"]
        if history and step <= history[-1]["step"]:
            logger.info("headkit: step %d was already evaluated; the state is unchanged.", step)
            return None
        history.append({"step": step, "metrics": metrics})
        if self.early_stopping is not None and self.stop_step is None:
            self.state["early_stopping"] = count_evaluation(
                self.early_stopping, self.state["early_stopping"], step, metrics)
        new_export, pruned = self._export_if_best(step, metrics, checkpoint_path)
        self.save()
        for entry in pruned:
            shutil.rmtree(entry["path"], ignore_errors=True)
        self._report(step, metrics, new_export)
        return new_export

    def _export_if_best(self, step, metrics, checkpoint_path):
        if self.export is None or not self.export.keep:
            return None, []
        metric, direction = self.ranking
        value = metrics[metric]
        kept = self.kept
        rank = export_rank([e["value"] for e in kept], value, direction, self.export.keep)
        if rank is None:
            return None, []
        path = self.model.export(
            os.path.join(self.export_base(), "best"),
            feature_spec=self.export.feature_spec, checkpoint_path=checkpoint_path,
            extra_manifest={"best_export": {"metric": metric, "mode": direction, "value": value,
                                            "step": step, "metrics": metrics}},
            **self._subset(),
        )
        kept.insert(rank, {"path": path, "step": step, "value": value})
        self.state["best_exports"]["kept"] = kept[: self.export.keep]
        return path, kept[self.export.keep:]

    def _subset(self) -> Dict[str, Any]:
        """``heads=`` and ``default=`` for the exports, when the rule names a subset."""
        options = {"heads": self.export.heads, "default": self.export.default}
        return {k: v for k, v in options.items() if v is not None}

    def export_base(self) -> str:
        """Where exports go: ``BestExport.export_dir_base`` or ``<model_dir>/export``."""
        return self.export.export_dir_base or os.path.join(self.model.model_dir, "export")

    def _report(self, step: int, metrics: Mapping[str, float], new_export: Optional[str]) -> None:
        metric, direction = self.ranking
        best = best_evaluation(self.history, metric, direction)
        logger.info("headkit: step %d: %s=%.6g (best %.6g at step %d)%s", step, metric,
                    metrics[metric], best.metrics[metric] if best else float("nan"),
                    best.step if best else -1,
                    f"; new best export {new_export}" if new_export else "")
        if self.progress is not None and self.progress.metric is not None:
            count = self.state.get("early_stopping")
            if count is not None:
                self.progress.evaluated(step, metrics[count["metric"]], count["best_value"],
                                        count["best_step"])
            elif best is not None:
                self.progress.evaluated(step, metrics[metric], best.metrics[metric], best.step)

    def final_export(self, checkpoint_path: str, step: int) -> str:
        """Export the last checkpoint to ``<export base>/final``; remember it in the state."""
        self._check_writable()
        latest = next((e["metrics"] for e in reversed(self.state["history"])
                       if e["step"] == step), None)
        path = self.model.export(
            os.path.join(self.export_base(), "final"),
            feature_spec=self.export.feature_spec, checkpoint_path=checkpoint_path,
            extra_manifest={"final_export": {"step": step, "metrics": latest}},
            **self._subset(),
        )
        self.state["final_export"] = {"path": path, "step": step}
        self.save()
        return path
