"""The Estimator's native ``train_and_evaluate`` loop.

Locally it trains in one session, saves a checkpoint every ``eval_every``
steps and evaluates it in memory right after the save (the evaluation graph
is built once), stopping right after the deciding evaluation; on a
``TF_CONFIG`` cluster each task runs its role
(``headkit.estimator.distributed``).
"""

from __future__ import annotations

from typing import Any

from headkit.estimator import distributed
from headkit.estimator.hooks import InMemoryEvaluation, _ProgressHook, _StoppingSaverHook
from headkit.training.monitor import Monitor
from headkit.training.protocol import LoopPlan

__all__ = ["estimator_loop"]


def estimator_loop(estimator: Any, plan: LoopPlan, monitor: Monitor) -> None:
    """Run ``plan`` on ``estimator`` with the hooks that feed ``monitor``.

    Example:
        >>> estimator_loop(estimator, plan, monitor)  # doctest: +SKIP
    """
    if estimator.cluster is not None:
        distributed.run_cluster(estimator, plan, monitor)
        return
    if monitor.stop_step is not None:
        return  # this run already stopped early
    train_hooks = list(plan.hooks)
    if plan.progress is not None:
        train_hooks.append(_ProgressHook(plan.progress))
    if plan.eval_input_fn is None:
        estimator.train(plan.train_input_fn, max_steps=plan.max_steps, hooks=train_hooks)
        return
    # One process: evaluate each checkpoint in memory, right after it is saved.
    evaluation = InMemoryEvaluation(monitor, plan.eval_input_fn, plan.eval_steps, plan.eval_name)
    train_hooks.append(_StoppingSaverHook(monitor, plan.eval_every, listeners=[evaluation]))
    estimator.train(plan.train_input_fn, max_steps=plan.max_steps, hooks=train_hooks)
