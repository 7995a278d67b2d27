"""The Estimator's native ``train_and_evaluate`` loop, on ``tf.estimator.train_and_evaluate``.

Locally it trains in one session, saves a checkpoint every ``eval_every``
steps and evaluates it in memory right after the save (the evaluation graph
is built once), stopping right after the deciding evaluation; with
``TF_CONFIG`` the distributed roles work as ``tf.estimator`` runs them,
sharing the training record in ``model_dir``.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from headkit.estimator.hooks import (
    EvaluatorDone,
    InMemoryEvaluation,
    _Exporter,
    _ProgressHook,
    _StopFileHook,
    _StoppingSaverHook,
)
from headkit.training.monitor import Monitor
from headkit.training.protocol import LoopPlan

__all__ = ["estimator_loop"]


def estimator_loop(estimator: Any, plan: LoopPlan, monitor: Monitor) -> None:
    """Run ``plan`` on ``estimator`` with the hooks that feed ``monitor``.

    Example:
        >>> estimator_loop(estimator, plan, monitor)  # doctest: +SKIP
    """
    config = estimator.config
    train_hooks = list(plan.hooks)
    if plan.progress is not None:
        train_hooks.append(_ProgressHook(plan.progress))
    if plan.eval_input_fn is None:
        estimator.train(plan.train_input_fn, max_steps=plan.max_steps, hooks=train_hooks)
        return
    if not config.cluster_spec:
        # One process: evaluate each checkpoint in memory, right after it is saved.
        evaluation = InMemoryEvaluation(monitor, plan.eval_input_fn, plan.eval_steps,
                                        plan.eval_name)
        train_hooks.append(_StoppingSaverHook(monitor, plan.eval_every, reload=False,
                                              listeners=[evaluation]))
        estimator.train(plan.train_input_fn, max_steps=plan.max_steps, hooks=train_hooks)
        return
    if config.is_chief:
        train_hooks.append(_StoppingSaverHook(monitor, plan.eval_every,
                                              reload=bool(config.cluster_spec)))
    elif monitor.early_stopping is not None:
        train_hooks.append(_StopFileHook(monitor))
    train_spec = tf.estimator.TrainSpec(plan.train_input_fn, max_steps=plan.max_steps,
                                        hooks=train_hooks)
    eval_spec = tf.estimator.EvalSpec(
        plan.eval_input_fn, steps=plan.eval_steps, name=plan.eval_name,
        exporters=[_Exporter(monitor)], start_delay_secs=0, throttle_secs=0,
    )
    try:
        tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
    except EvaluatorDone:  # a distributed evaluator: early stopping has fired
        pass
