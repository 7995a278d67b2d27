"""What a training run adds up to: its evaluations and the :class:`TrainResult`.

Imports no TensorFlow, so ``TrainResult`` and ``Evaluation`` stay light.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import attrs

from headkit.spec.keys import TOTAL_LOSS, split_key
from headkit.training.rules import better

__all__ = ["Evaluation", "TrainResult", "best_evaluation"]


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
        model_dir: the model's model_dir.
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
        rows = []
        for evaluation in self.history:
            if head == TOTAL_LOSS:
                values = {TOTAL_LOSS: evaluation.metrics[TOTAL_LOSS]}
            else:
                values = {short: v for k, v in evaluation.metrics.items()
                          for owner, short in [split_key(k)] if owner == head}
            rows.append({"step": evaluation.step, **values})
        return rows

    @property
    def history_by_head(self) -> Dict[str, List[Dict[str, float]]]:
        """``{head: head_history(head)}`` for every head evaluated, and ``"loss"``."""
        heads = [TOTAL_LOSS]
        for evaluation in self.history[:1]:
            heads += list(dict.fromkeys(h for h, _ in map(split_key, evaluation.metrics) if h))
        return {head: self.head_history(head) for head in heads}


def best_evaluation(history: Sequence[Evaluation], metric: str,
                    direction: str) -> Optional[Evaluation]:
    """The evaluation with the best ``metric`` (the earliest of equals), or None.

    Example:
        >>> best_evaluation([Evaluation(1, {"loss": 2.0}), Evaluation(2, {"loss": 1.0})],
        ...                 "loss", "min").step
        2
    """
    best = None
    for evaluation in history:
        value = evaluation.metrics.get(metric)
        if value is not None and better(value, None if best is None else
                                         best.metrics[metric], direction):
            best = evaluation
    return best
