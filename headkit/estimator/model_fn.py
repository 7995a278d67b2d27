"""Keras body + HeadSet -> ``model_fn`` -> ``EstimatorSpec``: the Estimator's graph.

Only this package knows modes, the global step, update ops and EstimatorSpec;
what each head does is asked of its kind (``headkit.kinds``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Tuple

import tensorflow as tf

from headkit import kinds
from headkit.body import Body, body_inputs, instantiate_body, outputs_by_head
from headkit.errors import ConfigError
from headkit.estimator import metrics as metrics_lib
from headkit.estimator.optimizers import OptimizerFactory
from headkit.kinds import CLASSIFY, REGRESS, batch
from headkit.kinds.predictions import flat_predictions, head_predictions
from headkit.multitask import LossWeights, step_gradients
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
              update_ops: List[Any], step: tf.Tensor) -> Any:
    if not pairs:
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


def _export_output(method: str, outputs: Mapping[str, Any]) -> Any:
    if method == CLASSIFY:
        return tf.estimator.export.ClassificationOutput(
            scores=outputs["scores"], classes=outputs["classes"])
    if method == REGRESS:
        return tf.estimator.export.RegressionOutput(value=outputs["outputs"])
    return tf.estimator.export.PredictOutput(dict(outputs))


def export_outputs(
    heads: HeadSet, per_head: Mapping[str, Mapping[str, tf.Tensor]]
) -> Dict[str, Any]:
    """The ``export_outputs`` of the EstimatorSpec, following ``serving.signature_table``.

    Example:
        >>> from headkit import spec
        >>> hs = spec.HeadSet([spec.Head("y", spec.Regression())])
        >>> outs = export_outputs(hs, {"y": {"predictions": tf.zeros([1, 1])}})
        >>> type(outs["serving_default"]).__name__
        'RegressionOutput'
    """
    result: Dict[str, Any] = {}
    for head in heads:
        kind, tensors = kinds.get(head), per_head[head.name]
        result[head.name] = _export_output(kind.natural_method(head),
                                           kind.signature_outputs(head, tensors))
        result[head_predict_signature(head.name)] = tf.estimator.export.PredictOutput(dict(tensors))
    result[DEFAULT_SIGNATURE] = result[heads.default_head.name]
    result[PREDICT_SIGNATURE] = tf.estimator.export.PredictOutput(flat_predictions(per_head))
    return result


def make_model_fn(body: Body, heads: HeadSet, optimizer: OptimizerFactory) -> Callable:
    """A ``model_fn(features, labels, mode, config)`` for ``tf.estimator.Estimator``.

    Each call builds the body fresh in the current graph, calls it with
    ``training`` following the mode, and returns an ``EstimatorSpec`` with
    the weighted loss, a train_op that runs the body's update ops (batch
    norm) and advances the global step, per-head eval metrics, flat
    predictions ``"<head>/<key>"`` and the export outputs.

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
        inputs = body_inputs(model, features)
        outputs = outputs_by_head(heads, model, model(inputs, training=training))
        per_head = head_predictions(heads, outputs)
        predictions = flat_predictions(per_head)
        if mode == ModeKeys.PREDICT:
            return tf.estimator.EstimatorSpec(
                mode, predictions=predictions, export_outputs=export_outputs(heads, per_head))

        flat_inputs = tf.nest.flatten(inputs)
        terms = batch.head_terms(heads, outputs, labels, features)
        # The loss weighting's variables exist in TRAIN and EVAL graphs only, so the
        # default Saver keeps them in checkpoints and no export holds them.
        weighting = LossWeights(heads)
        weighted, loss_weights = weighting.weigh({n: t.loss for n, t in terms.items()})
        learned = {metric_key(n, LOSS_WEIGHT): w for n, w in loss_weights.items()
                   if weighting.is_learned}
        eval_metrics: Dict[str, Any] = {}
        if mode == ModeKeys.EVAL:
            for head in heads.trained_heads:
                term = terms[head.name]
                with tf.name_scope(head.name):
                    eval_metrics.update(metrics_lib.head_metrics(
                        head, term.labels, per_head[head.name], term.example_losses,
                        term.weights, term.loss_weights))
            # The checkpoint's values: constant over the evaluation.
            eval_metrics.update({k: (w, tf.no_op()) for k, w in learned.items()})
        regularization = model.get_losses_for(None) + model.get_losses_for(flat_inputs)
        step = tf.compat.v1.train.get_or_create_global_step()
        loss = weighting.total(weighted, regularization)

        if mode == ModeKeys.EVAL:
            return tf.estimator.EstimatorSpec(
                mode, loss=loss, predictions=predictions, eval_metric_ops=eval_metrics)

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
                             step)
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op,
                                          predictions=predictions)

    return model_fn
