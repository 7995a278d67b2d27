"""The session-run hooks behind the Estimator's ``train_and_evaluate`` in one process.

- ``_StoppingSaverHook`` saves every ``eval_every`` steps and stops right
  after the evaluation that decides;
- ``InMemoryEvaluation`` evaluates each save in memory and hands the results
  to the ``Monitor`` (history, early-stopping count, best exports);
- ``_ProgressHook`` feeds the progress line.

The hooks of a ``TF_CONFIG`` cluster are in ``headkit.estimator.distributed``.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional

import tensorflow as tf
from tensorflow_estimator.python.estimator.estimator import _write_dict_to_summary

from headkit.errors import translate_graph_errors
from headkit.training.monitor import Monitor
from headkit.training.progress import ProgressDisplay


class _BoundaryTimer(tf.compat.v1.train.SecondOrStepTimer):
    """Triggers at the first step at or past each multiple of ``every_steps``.

    ``SecondOrStepTimer`` counts from the last trigger, so with several steps
    per run (or a resumed run) its saves drift off the multiples of
    ``eval_every``; this one does not.
    """

    def __init__(self, every_steps: int) -> None:
        super().__init__(every_steps=every_steps)
        self._every = every_steps

    def should_trigger_for_step(self, step):
        last = self.last_triggered_step()
        return last is None or step // self._every > last // self._every


class _StoppingSaverHook(tf.compat.v1.train.CheckpointSaverHook):
    """Saves every ``eval_every`` steps; stops right after the evaluation that decides.

    Train-and-evaluate evaluates inside this hook's save (a saving listener),
    so checking the rule after ``super().after_run`` stops at that step.
    """

    def __init__(self, monitor: Monitor, save_steps: int,
                 listeners: Optional[List[Any]] = None) -> None:
        config = monitor.model.config
        super().__init__(monitor.model.model_dir, save_steps=save_steps,
                         save_graph_def=config.checkpoint_save_graph_def, listeners=listeners)
        self._timer = _BoundaryTimer(save_steps)
        self._set_steps_per_run(getattr(monitor.model, "steps_per_run", 1))
        self._monitor = monitor

    def after_run(self, run_context, run_values):
        saved = self._timer.last_triggered_step()
        super().after_run(run_context, run_values)
        if self._timer.last_triggered_step() != saved:
            if self._monitor.stop_step is not None:
                run_context.request_stop()


class InMemoryEvaluation(tf.compat.v1.train.CheckpointSaverListener):
    """Evaluates each checkpoint right after it is saved, from the training session's values.

    The evaluation graph and one session for it are made once, when training
    begins; each evaluation copies the training variables' current values
    into that session, resets the metrics and the input, and runs it. No
    graph is rebuilt, no session opened and no checkpoint read back, which
    is where ``tf.estimator.train_and_evaluate`` spends most of a short run.
    The metrics are those of ``estimator.evaluate()`` on the same checkpoint:
    the same model_fn, input_fn and values, and the same summaries in
    ``eval/``. (``tf.estimator.experimental.InMemoryEvaluatorHook`` does half
    of this: it opens a session for each evaluation, on a step count of its own.)
    """

    def __init__(self, monitor: Monitor, input_fn: Any, steps: Optional[int],
                 name: Optional[str]) -> None:
        self._monitor, self._input_fn, self._steps = monitor, input_fn, steps
        estimator = monitor.model
        self._eval_dir = os.path.join(estimator.model_dir, "eval" if not name else f"eval_{name}")
        self._session = None

    def begin(self) -> None:
        estimator = self._monitor.model
        self._graph = tf.Graph()
        with self._graph.as_default():
            (_, self._update_op, self._eval_dict,
             hooks) = estimator._evaluate_build_graph(self._input_fn, [])
            # What the input_fn needs at the start of each pass: its iterator's initializer.
            self._input_hooks = list(hooks)
            for hook in self._input_hooks:
                hook.begin()
            variables = tf.compat.v1.global_variables()
            self._placeholders = {v.name: tf.compat.v1.placeholder(v.dtype.base_dtype, v.shape)
                                  for v in variables}
            self._feed = tf.group([v.assign(self._placeholders[v.name]) for v in variables])
            self._global_init = tf.compat.v1.global_variables_initializer()
            self._local_init = tf.compat.v1.train.Scaffold.default_local_init_op()
        self._graph.finalize()
        self._train_variables = None
        self._first = True

    def _eval_session(self) -> Any:
        if self._session is None:
            self._session = tf.compat.v1.Session(graph=self._graph,
                                                 config=self._monitor.model._session_config)
            self._session.run(self._global_init)
        return self._session

    def after_save(self, session, global_step_value) -> bool:
        if self._first:  # the save at session creation: the starting point, nothing new
            self._first = False
            return False
        if self._train_variables is None:
            in_training = {v.name: v for v in tf.compat.v1.global_variables()}
            missing = sorted(set(self._placeholders) - set(in_training))
            if missing:
                raise RuntimeError(
                    f"headkit: the evaluation graph has variables the training graph lacks "
                    f"({missing[:5]}); evaluate from checkpoints instead.")
            self._train_variables = {name: in_training[name] for name in self._placeholders}
        values = session.run(self._train_variables)
        evaluation = self._eval_session()
        evaluation.run(self._feed, feed_dict={self._placeholders[name]: value
                                              for name, value in values.items()})
        evaluation.run(self._local_init)  # the metrics' accumulators start again
        for hook in self._input_hooks:
            hook.after_create_session(evaluation, None)  # the input starts again
        with translate_graph_errors():
            batches = 0
            try:
                while self._steps is None or batches < self._steps:
                    evaluation.run(self._update_op)
                    batches += 1
            except tf.errors.OutOfRangeError:
                pass
            results = evaluation.run(self._eval_dict)
        step = int(results[tf.compat.v1.GraphKeys.GLOBAL_STEP])
        _write_dict_to_summary(self._eval_dir, results, step)
        metrics = {k: float(v) for k, v in results.items()
                   if k != tf.compat.v1.GraphKeys.GLOBAL_STEP}
        self._monitor.record(step, metrics, self._monitor.model.latest_checkpoint())
        return self._monitor.stop_step is not None

    def end(self, session, global_step_value) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class _ProgressHook(tf.compat.v1.train.SessionRunHook):
    """Feeds the progress display each step's loss and global step."""

    def __init__(self, display: ProgressDisplay) -> None:
        self._display = display

    def begin(self):
        # The Estimator adds the training loss to LOSSES just before the hooks begin.
        losses = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.LOSSES)
        self._fetches = {"step": tf.compat.v1.train.get_global_step()}
        if losses:
            self._fetches["loss"] = losses[-1]

    def before_run(self, run_context):
        return tf.compat.v1.train.SessionRunArgs(self._fetches)

    def after_run(self, run_context, run_values):
        results = run_values.results
        step = min(int(results["step"]) + 1, self._display.max_steps)
        loss = results.get("loss")
        self._display.update(step, None if loss is None else float(loss))
