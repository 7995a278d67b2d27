"""Keras body + HeadSet -> ``model_fn`` -> ``EstimatorSpec``: the Estimator's graph.

Only this package knows modes, the global step, update ops and EstimatorSpec;
what each head does is asked of its kind (``headkit.kinds``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from headkit import kinds
from headkit.body import Body, body_inputs, instantiate_body, outputs_by_head
from headkit.errors import ConfigError
from headkit.estimator import metrics as metrics_lib
from headkit.estimator.optimizers import OptimizerFactory
from headkit.estimator.resume import LoopInput
from headkit.kinds import CLASSIFY, REGRESS, batch
from headkit.kinds.predictions import flat_predictions, head_predictions
from headkit.multitask import LossWeights, step_gradients
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


def _looped_train_spec(body: Body, heads: HeadSet, optimizer: OptimizerFactory,
                       loop_input: Any, steps_per_run: int, last_step: Optional[int],
                       warm_start: Optional[Mapping[int, Sequence[np.ndarray]]],
                       passthrough: Optional[Passthrough]) -> Any:
    """One ``session.run`` trains ``steps_per_run`` batches in a ``tf.while_loop``.

    The last run of ``train(max_steps=...)`` is shorter, so ``max_steps`` is
    met exactly. A non-finite loss at step k stops the loop there, naming k,
    with the updates of the steps before it applied and none after.
    (TPUEstimator's ``iterations_per_loop`` does the same on TPUs.)
    """
    model = instantiate_body(body)  # a functional body: its variables exist now, not in the loop
    train_optimizer = optimizer()
    step = tf.compat.v1.train.get_or_create_global_step()
    first = tf.identity(step.read_value())
    runs = tf.constant(steps_per_run, tf.int64)
    if last_step is not None:
        runs = tf.maximum(tf.minimum(runs, tf.constant(last_step, tf.int64) - first), 0)
    names = [h.name for h in heads.trained_heads]
    regularization = model.get_losses_for(None)
    weighting = LossWeights(heads)  # its variables exist before the loop, as the body's do

    def one_step(index, total, head_losses, loss_weights):
        features, labels = loop_input.next()
        if passthrough and isinstance(features, Mapping):
            passthrough.learn(features)
        inputs = body_inputs(model, features)
        outputs = outputs_by_head(heads, model, model(inputs, training=True))
        terms = batch.head_terms(heads, outputs, labels, features)
        flat_inputs = tf.nest.flatten(inputs)
        losses = regularization + model.get_losses_for(flat_inputs)
        weighted, weights = weighting.weigh({n: t.loss for n, t in terms.items()},
                                            {n: t.labelled for n, t in terms.items()})
        total = weighting.total(weighted, losses)
        total = batch.finite_guard(heads, terms, total, first + index)
        pairs = step_gradients(heads, tf.gradients, total, weighted, losses,
                               model.trainable_variables, weighting.trainable_variables,
                               first + index)
        with tf.control_dependencies([total]):  # after this step's weights were read
            update = weighting.update({n: t.loss for n, t in terms.items()})
        train_op = _train_op(train_optimizer, total, pairs,
                             model.get_updates_for(flat_inputs) + ([update] if update else []),
                             step, model)
        with tf.control_dependencies([train_op]):
            return (index + 1, tf.identity(total),
                    tf.stack([terms[name].loss for name in names]),
                    tf.stack([tf.cast(weights[name], tf.float32) for name in names]))

    zeros = tf.zeros([len(names)])
    _, loss, head_losses, loss_weights = tf.while_loop(
        lambda index, *_: index < runs, one_step,
        [tf.constant(0, tf.int64), tf.constant(0.0), zeros, zeros], parallel_iterations=1)
    for index, name in enumerate(names):  # the run's last step, as TensorBoard shows it
        tf.compat.v1.summary.scalar(metric_key(name, TOTAL_LOSS), head_losses[index])
        if weighting.is_learned:
            tf.compat.v1.summary.scalar(metric_key(name, LOSS_WEIGHT), loss_weights[index])
    scaffold = _warm_start_scaffold(model, warm_start) if warm_start else None
    return tf.estimator.EstimatorSpec(ModeKeys.TRAIN, loss=loss, train_op=tf.group(loss),
                                      scaffold=scaffold)


def make_model_fn(body: Body, heads: HeadSet, optimizer: OptimizerFactory,
                  steps_per_run: int = 1,
                  last_step: Callable[[], Optional[int]] = lambda: None,
                  warm_start: Optional[Mapping[int, Sequence[np.ndarray]]] = None,
                  passthrough: Optional[Passthrough] = None) -> Callable:
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
        if isinstance(features, LoopInput):  # steps_per_run > 1, in training
            return _looped_train_spec(body, heads, optimizer, features, steps_per_run,
                                      last_step(), warm_start, passthrough)
        training = mode == ModeKeys.TRAIN
        model = instantiate_body(body)
        inputs = body_inputs(model, features)
        outputs = outputs_by_head(heads, model, model(inputs, training=training))
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
        learned = {metric_key(n, LOSS_WEIGHT): w for n, w in loss_weights.items()
                   if weighting.is_learned}
        eval_metrics: Dict[str, Any] = {}
        if mode == ModeKeys.EVAL:
            for head in heads.trained_heads:
                term = terms[head.name]
                with tf.name_scope(head.name):
                    eval_metrics.update(metrics_lib.head_metrics(
                        head, term.labels, per_head[head.name], term.example_losses,
                        term.weights))
            # The checkpoint's values: constant over the evaluation.
            eval_metrics.update({k: (w, tf.no_op()) for k, w in learned.items()})
        regularization = model.get_losses_for(None) + model.get_losses_for(flat_inputs)
        step = tf.compat.v1.train.get_or_create_global_step()
        loss = weighting.total(weighted, regularization)

        if mode == ModeKeys.EVAL:
            return tf.estimator.EstimatorSpec(
                mode, loss=loss, predictions=predictions, eval_metric_ops=eval_metrics)

        if passthrough:
            passthrough.learn(named)
        loss = batch.finite_guard(heads, terms, loss, step)
        for name, term in terms.items():
            tf.compat.v1.summary.scalar(metric_key(name, TOTAL_LOSS), term.loss)
        for key, value in learned.items():
            tf.compat.v1.summary.scalar(key, value)
        update_ops = model.get_updates_for(None) + model.get_updates_for(flat_inputs)
        pairs = step_gradients(heads, tf.gradients, loss, weighted, regularization,
                               model.trainable_variables, weighting.trainable_variables, step)
        with tf.control_dependencies([loss]):  # after this step's weights were read
            update = weighting.update({n: t.loss for n, t in terms.items()})
        train_op = _train_op(optimizer(), loss, pairs, update_ops + ([update] if update else []),
                             step, model)
        scaffold = _warm_start_scaffold(model, warm_start) if warm_start else None
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op,
                                          predictions=predictions, scaffold=scaffold)

    return model_fn
