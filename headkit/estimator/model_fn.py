"""Keras body + HeadSet -> ``model_fn`` -> ``EstimatorSpec``: the Estimator's graph.

Only this package knows modes, the global step, update ops and EstimatorSpec;
what each head does is asked of its kind (``headkit.kinds``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import attrs
import numpy as np
import tensorflow as tf

from headkit import kinds
from headkit.body import (
    Body,
    body_inputs,
    check_compilable,
    instantiate_body,
    outputs_by_head,
)
from headkit.errors import ConfigError
from headkit.estimator import metrics as metrics_lib
from headkit.estimator.optimizers import OptimizerFactory
from headkit.estimator.resume import LoopInput
from headkit.kinds import CLASSIFY, REGRESS, batch
from headkit.kinds.predictions import flat_predictions, head_predictions
from headkit.multitask import LossWeights, step_gradients, step_orders
from headkit.serving.passthrough import Passthrough
from headkit.spec.headset import HeadSet
from headkit.spec.keys import (
    DEFAULT_SIGNATURE,
    LOSS_WEIGHT,
    PREDICT_SIGNATURE,
    TOTAL_LOSS,
    head_predict_signature,
    metric_key,
)

__all__ = ["make_model_fn", "export_outputs"]

ModeKeys = tf.estimator.ModeKeys


def _train_op(optimizer: Any, loss: tf.Tensor, pairs: List[Tuple[Any, tf.Variable]],
              update_ops: List[Any], step: tf.Tensor, body: tf.keras.Model) -> Any:
    reached = {id(v) for _, v in pairs}
    if not any(id(v) in reached for v in body.trainable_variables):  # learned loss weights
        # always get a gradient: the body must get one too
        raise ConfigError(
            "No trainable variable of the body receives a gradient from the loss. Check that "
            "the trained heads' outputs depend on the body's layers.", field="body",
        )
    # `loss` carries the finite check: without this dependency the updates would not wait
    # for it (the gradients do not depend on the check) and could apply NaN gradients.
    with tf.control_dependencies(update_ops + [loss]):
        if isinstance(optimizer, tf.compat.v1.train.Optimizer):
            return optimizer.apply_gradients(pairs, global_step=step)
        optimizer.iterations = step  # Keras optimizers advance their `iterations`
        return optimizer.apply_gradients(pairs)


def _export_output(method: str, outputs: Mapping[str, Any], copied: Mapping[str, Any]) -> Any:
    if method == CLASSIFY:
        return tf.estimator.export.ClassificationOutput(
            scores=outputs["scores"], classes=outputs["classes"])
    if method == REGRESS:
        return tf.estimator.export.RegressionOutput(value=outputs["outputs"])
    return tf.estimator.export.PredictOutput({**outputs, **copied})


def export_outputs(
    heads: HeadSet, per_head: Mapping[str, Mapping[str, tf.Tensor]],
    passthrough: Optional[Mapping[str, tf.Tensor]] = None,
) -> Dict[str, Any]:
    """The ``export_outputs`` of the EstimatorSpec, following ``serving.signature_table``.

    ``passthrough`` (feature name -> tensor) is added to every predict output.

    Example:
        >>> from headkit import spec
        >>> hs = spec.HeadSet([spec.Head("y", spec.Regression())])
        >>> outs = export_outputs(hs, {"y": {"predictions": tf.zeros([1, 1])}})
        >>> type(outs["serving_default"]).__name__
        'RegressionOutput'
    """
    copied = dict(passthrough or {})
    result: Dict[str, Any] = {}
    for head in heads:
        kind, tensors = kinds.get(head), per_head[head.name]
        result[head.name] = _export_output(kind.natural_method(head),
                                           kind.signature_outputs(head, tensors), copied)
        result[head_predict_signature(head.name)] = tf.estimator.export.PredictOutput(
            {**tensors, **copied})
    result[DEFAULT_SIGNATURE] = result[heads.default_head.name]
    result[PREDICT_SIGNATURE] = tf.estimator.export.PredictOutput(
        {**flat_predictions({h: per_head[h] for h in heads.names}), **copied})
    return result


def _warm_start_scaffold(model: tf.keras.Model,
                         assignments: Mapping[int, Sequence[np.ndarray]]) -> Any:
    """A Scaffold whose variable initialization takes the warm-start values.

    The values are fed to the body variables' initializers: they apply only
    when the session starts without a checkpoint to restore (the first run
    of a new model_dir), and the step-0 checkpoint holds them.
    """
    feed = {}
    for index, values in assignments.items():
        for variable, value in zip(model.layers[index].weights, values):
            feed[variable.initializer.inputs[1]] = value
    return tf.compat.v1.train.Scaffold(init_feed_dict=feed)


@attrs.frozen
class _StepResult:
    """What one training step leaves in the graph.

    ``done`` runs the step: after it, the update is applied (or the step
    failed its checks). ``outputs`` are the body's outputs by head, None when
    the step is compiled (they stay inside the compiled function).
    """

    total: tf.Tensor
    head_losses: Dict[str, tf.Tensor]
    loss_weights: Dict[str, tf.Tensor]
    done: Any
    outputs: Optional[Mapping[str, Any]]


class _TrainStep:
    """One training step: the body's forward pass, the loss, the gradients and the update.

    With ``jit_compile`` the forward and backward pass, the loss and the
    update are one XLA-compiled function. XLA drops ``Assert`` ops, so the
    checks stay outside it: the labels' and weight columns' checks run
    before it (``batch.prepare_batch``), and the finite-loss check after
    it, on the flags it returns. Inside, the update is applied only when
    every loss is finite; otherwise the body's non-trainable variables
    (batch-norm statistics) are put back, so a failing batch changes nothing.
    """

    def __init__(self, model: tf.keras.Model, heads: HeadSet, optimizer: Any,
                 passthrough: Optional[Passthrough], jit_compile: bool) -> None:
        self.model, self.heads, self.optimizer = model, heads, optimizer
        self.passthrough = passthrough
        self.names = [h.name for h in heads.trained_heads]
        # Its variables exist before any step (or loop) is built, as the body's do.
        self.weighting = LossWeights(heads)
        self.global_step = tf.compat.v1.train.get_or_create_global_step()
        self.jit_compile = jit_compile
        self._compiled = None
        if jit_compile:
            check_compilable(model)
            self._compiled = tf.function(self._compiled_step, jit_compile=True,
                                         autograph=False)

    def __call__(self, features: Any, labels: Any, step: Any) -> _StepResult:
        """The step on one batch; ``step`` is its global step (named by the finite check)."""
        if self.passthrough:
            self.passthrough.learn(features if isinstance(features, Mapping) else {})
        inputs = body_inputs(self.model, features)
        prepared = batch.prepare_batch(self.heads, labels, features)  # the labels' checks
        if not self.jit_compile:
            return self._guarded_step(inputs, prepared, step)
        # PCGrad's random head orders, drawn by TensorFlow: XLA's random numbers differ.
        orders = step_orders(self.heads, step)
        total, head_losses, loss_weights, finite = self._compiled(inputs, prepared, step, orders)
        check = batch.assert_finite(self.heads, finite, step)
        return _StepResult(total, dict(zip(self.names, tf.unstack(head_losses))),
                           dict(zip(self.names, tf.unstack(loss_weights))), check, None)

    def _forward(self, inputs: Any, prepared: Any) -> Tuple[Any, ...]:
        model = self.model
        outputs = outputs_by_head(self.heads, model, model(inputs, training=True))
        terms = batch.prepared_terms(self.heads, outputs, prepared)
        flat_inputs = tf.nest.flatten(inputs)
        # Read here, in the step's graph: a regularization loss read outside a
        # loop would be a constant of the loop, with no gradient.
        regularization = model.get_losses_for(None) + model.get_losses_for(flat_inputs)
        weighted, loss_weights = self.weighting.weigh(
            {n: t.loss for n, t in terms.items()}, {n: t.labelled for n, t in terms.items()})
        total = self.weighting.total(weighted, regularization)
        updates = model.get_updates_for(None) + model.get_updates_for(flat_inputs)
        return outputs, terms, regularization, weighted, loss_weights, total, updates

    def _apply(self, terms: Any, regularization: Any, weighted: Any, total: tf.Tensor,
               updates: List[Any], step: Any, orders: Any = None) -> Any:
        pairs = step_gradients(self.heads, tf.gradients, total, weighted, regularization,
                               self.model.trainable_variables,
                               self.weighting.trainable_variables, step, orders)
        with tf.control_dependencies([total]):  # after this step's weights were read
            update = self.weighting.update({n: t.loss for n, t in terms.items()})
        return _train_op(self.optimizer, total, pairs, updates + ([update] if update else []),
                         self.global_step, self.model)

    def _guarded_step(self, inputs: Any, prepared: Any, step: Any) -> _StepResult:
        outputs, terms, regularization, weighted, loss_weights, total, updates = self._forward(
            inputs, prepared)
        total = batch.finite_guard(self.heads, terms, total, step)
        train_op = self._apply(terms, regularization, weighted, total, updates, step)
        return _StepResult(total, {n: terms[n].loss for n in self.names},
                           {n: tf.cast(loss_weights[n], tf.float32) for n in self.names},
                           train_op, outputs)

    # Its name is errors.COMPILED_STEP: XLA names it when it cannot compile a step.
    def _compiled_step(self, inputs: Any, prepared: Any, step: Any,
                       orders: Any) -> Tuple[tf.Tensor, ...]:
        state = self.model.non_trainable_variables
        before = [variable.read_value() for variable in state]
        _, terms, regularization, weighted, loss_weights, total, updates = self._forward(
            inputs, prepared)
        finite = batch.finite_flags(self.heads, terms, total)

        def commit():
            return self._apply(terms, regularization, weighted, total, [], step, orders)

        applied = batch.commit_if_finite(finite, commit, state, before)
        # The body's updates (batch norm) run on every step; put_back undoes them.
        with tf.control_dependencies([applied] + updates):
            return (tf.identity(total), tf.stack([terms[n].loss for n in self.names]),
                    tf.stack([tf.cast(loss_weights[n], tf.float32) for n in self.names]),
                    tf.cast(finite, tf.int32))


def _looped_train_spec(train_step: _TrainStep, loop_input: Any, steps_per_run: int,
                       last_step: Optional[int], scaffold: Any) -> Any:
    """One ``session.run`` trains ``steps_per_run`` batches in a ``tf.while_loop``.

    The last run of ``train(max_steps=...)`` is shorter, so ``max_steps`` is
    met exactly. A non-finite loss at step k stops the loop there, naming k,
    with the updates of the steps before it applied and none after.
    (TPUEstimator's ``iterations_per_loop`` does the same on TPUs.)
    """
    first = tf.identity(train_step.global_step.read_value())
    runs = tf.constant(steps_per_run, tf.int64)
    if last_step is not None:
        runs = tf.maximum(tf.minimum(runs, tf.constant(last_step, tf.int64) - first), 0)
    names = train_step.names

    def one_step(index, total, head_losses, loss_weights):
        features, labels = loop_input.next()
        result = train_step(features, labels, first + index)
        with tf.control_dependencies([result.done]):
            return (index + 1, tf.identity(result.total),
                    tf.stack([result.head_losses[name] for name in names]),
                    tf.stack([result.loss_weights[name] for name in names]))

    zeros = tf.zeros([len(names)])
    _, loss, head_losses, loss_weights = tf.while_loop(
        lambda index, *_: index < runs, one_step,
        [tf.constant(0, tf.int64), tf.constant(0.0), zeros, zeros], parallel_iterations=1)
    # the run's last step, as TensorBoard shows it
    _loss_summaries(train_step, dict(zip(names, tf.unstack(head_losses))),
                    dict(zip(names, tf.unstack(loss_weights))))
    return tf.estimator.EstimatorSpec(ModeKeys.TRAIN, loss=loss, train_op=tf.group(loss),
                                      scaffold=scaffold)


def _loss_summaries(train_step: _TrainStep, head_losses: Mapping[str, Any],
                    loss_weights: Mapping[str, Any]) -> None:
    for name in train_step.names:
        tf.compat.v1.summary.scalar(metric_key(name, TOTAL_LOSS), head_losses[name])
        if train_step.weighting.is_learned:
            tf.compat.v1.summary.scalar(metric_key(name, LOSS_WEIGHT), loss_weights[name])


def make_model_fn(body: Body, heads: HeadSet, optimizer: OptimizerFactory,
                  steps_per_run: int = 1,
                  last_step: Callable[[], Optional[int]] = lambda: None,
                  warm_start: Optional[Mapping[int, Sequence[np.ndarray]]] = None,
                  passthrough: Optional[Passthrough] = None,
                  jit_compile: bool = False) -> Callable:
    """A ``model_fn(features, labels, mode, config)`` for ``tf.estimator.Estimator``.

    Each call builds the body fresh in the current graph, calls it with
    ``training`` following the mode, and returns an ``EstimatorSpec`` with
    the weighted loss, a train_op that runs the body's update ops (batch
    norm) and advances the global step, per-head eval metrics, flat
    predictions ``"<head>/<key>"`` and the export outputs. With
    ``steps_per_run > 1``, training reads a :class:`LoopInput` and runs that
    many steps per ``session.run`` (``last_step()`` gives ``max_steps``).

    ``warm_start`` (body layer index -> weight values) initializes those
    layers when training starts without a checkpoint. ``passthrough``
    features are copied into the predictions and predict export outputs;
    training takes the specs it lacks from the training features.
    ``jit_compile`` compiles each training step with XLA (the checks stay
    outside the compiled function: see ``_TrainStep``).

    Example:
        >>> import headkit as hk
        >>> from headkit.estimator.optimizers import resolve_optimizer
        >>> heads = hk.HeadSet([hk.Head("y", hk.Regression())])
        >>> def body():
        ...     x = tf.keras.Input((2,), name="x")
        ...     return tf.keras.Model({"x": x}, {"y": tf.keras.layers.Dense(1)(x)})
        >>> est = tf.estimator.Estimator(make_model_fn(body, heads, resolve_optimizer("sgd")))
    """


    def model_fn(features: Any, labels: Any, mode: str, config: Any = None):
        training = mode == ModeKeys.TRAIN
        model = instantiate_body(body)
        if training:
            scaffold = _warm_start_scaffold(model, warm_start) if warm_start else None
            train_step = _TrainStep(model, heads, optimizer(), passthrough, jit_compile)
            if isinstance(features, LoopInput):  # steps_per_run > 1
                return _looped_train_spec(train_step, features, steps_per_run, last_step(),
                                          scaffold)
            result = train_step(features, labels, train_step.global_step.read_value())
            _loss_summaries(train_step, result.head_losses, result.loss_weights)
            predictions = None
            if result.outputs is not None:
                predictions = flat_predictions(head_predictions(heads, result.outputs))
            return tf.estimator.EstimatorSpec(mode, loss=result.total, train_op=result.done,
                                              predictions=predictions, scaffold=scaffold)
        inputs = body_inputs(model, features)
        outputs = outputs_by_head(heads, model, model(inputs, training=False))
        per_head = head_predictions(heads, outputs)
        predictions = flat_predictions(per_head)
        named = features if isinstance(features, Mapping) else {}
        if mode == ModeKeys.PREDICT:
            copied = {}
            if passthrough:
                passthrough.check_outputs({h: list(t) for h, t in per_head.items()})
                copied = passthrough.copy_into({}, named)
            return tf.estimator.EstimatorSpec(
                mode, predictions={**predictions, **copied},
                export_outputs=export_outputs(heads, per_head, copied))

        flat_inputs = tf.nest.flatten(inputs)
        terms = batch.head_terms(heads, outputs, labels, features)
        # The loss weighting's variables exist in TRAIN and EVAL graphs only, so the
        # default Saver keeps them in checkpoints and no export holds them.
        weighting = LossWeights(heads)
        weighted, loss_weights = weighting.weigh({n: t.loss for n, t in terms.items()},
                                                 {n: t.labelled for n, t in terms.items()})
        eval_metrics: Dict[str, Any] = {}
        for head in heads.trained_heads:
            term = terms[head.name]
            with tf.name_scope(head.name):
                eval_metrics.update(metrics_lib.head_metrics(
                    head, term.labels, per_head[head.name], term.example_losses, term.weights))
        if weighting.is_learned:  # the checkpoint's values: constant over the evaluation
            eval_metrics.update({metric_key(n, LOSS_WEIGHT): (w, tf.no_op())
                                 for n, w in loss_weights.items()})
        regularization = model.get_losses_for(None) + model.get_losses_for(flat_inputs)
        tf.compat.v1.train.get_or_create_global_step()
        loss = weighting.total(weighted, regularization)
        return tf.estimator.EstimatorSpec(
            mode, loss=loss, predictions=predictions, eval_metric_ops=eval_metrics)

    return model_fn
