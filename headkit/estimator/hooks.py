"""The session-run hooks and the EvalSpec exporter behind the Estimator's ``train_and_evaluate``.

- ``_Exporter`` hands each evaluation's results, in memory, to the
  ``Monitor`` (history, early-stopping count, best exports);
- ``_StoppingSaverHook`` saves every ``eval_every`` steps and stops right
  after the evaluation that decides;
- ``_ProgressHook`` feeds the progress line.

The hooks of a ``TF_CONFIG`` cluster are in ``headkit.estimator.distributed``.
"""

from __future__ import annotations

import tensorflow as tf

from headkit.training.monitor import Monitor
from headkit.training.progress import ProgressDisplay


class _Exporter(tf.estimator.Exporter):
    """The EvalSpec exporter: hands each evaluation's results to the monitor."""

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    @property
    def name(self) -> str:
        return "headkit"

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        step = int(eval_result[tf.compat.v1.GraphKeys.GLOBAL_STEP])
        metrics = {k: float(v) for k, v in eval_result.items()
                   if k != tf.compat.v1.GraphKeys.GLOBAL_STEP}
        return self._monitor.record(step, metrics, checkpoint_path)


class _StoppingSaverHook(tf.compat.v1.train.CheckpointSaverHook):
    """Saves every ``eval_every`` steps; stops right after the evaluation that decides.

    Train-and-evaluate evaluates inside this hook's save (a saving listener),
    so checking the rule after ``super().after_run`` stops at that step.
    """

    def __init__(self, monitor: Monitor, save_steps: int) -> None:
        config = monitor.model.config
        super().__init__(monitor.model.model_dir, save_steps=save_steps,
                         save_graph_def=config.checkpoint_save_graph_def)
        self._monitor = monitor

    def after_run(self, run_context, run_values):
        saved = self._timer.last_triggered_step()
        super().after_run(run_context, run_values)
        if self._timer.last_triggered_step() != saved and self._monitor.stop_step is not None:
            run_context.request_stop()


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
