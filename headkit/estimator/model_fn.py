"""Keras body + HeadSet -> ``model_fn`` -> ``EstimatorSpec``: the Estimator's graph.

Only this package knows modes, the global step, update ops and EstimatorSpec;
what each head does is asked of its kind (``headkit.kinds``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional

import tensorflow as tf

from headkit import kinds
from headkit.body import Body, body_inputs, instantiate_body, outputs_by_head
from headkit.errors import ConfigError, DataError, head_assert_data, non_finite_assert_data
from headkit.estimator import metrics as metrics_lib
from headkit.estimator.optimizers import OptimizerFactory
from headkit.kinds import CLASSIFY, REGRESS, losses
from headkit.kinds.predictions import flat_predictions, head_predictions
from headkit.spec.head import Head
from headkit.spec.headset import HeadSet
from headkit.spec.keys import (
    DEFAULT_SIGNATURE,
    PREDICT_SIGNATURE,
    head_predict_signature,
    metric_key,
)

__all__ = ["make_model_fn", "export_outputs"]

ModeKeys = tf.estimator.ModeKeys


def _labels_by_head(heads: HeadSet, labels: Any) -> Dict[str, Any]:
    keys = heads.label_keys
    if not isinstance(labels, Mapping):
        if len(keys) == 1 and labels is not None:
            return {keys[0]: labels}
        raise DataError(
            f"labels: expected a dict with keys {list(keys)!r} (got {type(labels).__name__}). "
            "Return (features, {label_key: tensor, ...}) from the input_fn."
        )
    missing = [k for k in keys if k not in labels]
    extra = [k for k in labels if k not in keys]
    problems = []
    if missing:
        problems.append(f"missing {missing!r}: every trained head needs its labels")
    if extra:
        problems.append(f"{extra!r} would be ignored: remove them, or add a Head")
    if problems:
        raise DataError(
            f"labels: keys {sorted(labels)!r} do not match the trained heads' label keys "
            f"{list(keys)!r}; " + "; ".join(problems) + "."
        )
    return dict(labels)


def _example_weights(head: Head, features: Any) -> Optional[tf.Tensor]:
    column = head.weight_column
    if column is None:
        return None
    if not isinstance(features, Mapping) or column not in features:
        given = sorted(features) if isinstance(features, Mapping) else type(features).__name__
        raise DataError(
            f"Head {head.name!r}: weight_column {column!r} is not among the features "
            f"{given!r}. Add the column to the features the input_fn returns, or drop "
            "weight_column from the head."
        )
    weights = tf.reshape(tf.cast(features[column], tf.float32), [-1])
    valid = tf.logical_and(tf.math.is_finite(weights), weights >= 0.0)
    check = tf.debugging.Assert(
        tf.reduce_all(valid),
        head_assert_data(
            head.name, f"weight_column {column!r} must hold finite weights >= 0; got",
            # as strings: an Assert whose data is only strings and int32 needs no per-step cond
            tf.strings.as_string(tf.boolean_mask(weights, tf.logical_not(valid))[:10])),
        summarize=10,
    )
    with tf.control_dependencies([check]):
        return tf.identity(weights)


def _combine(mask: Optional[tf.Tensor], weights: Optional[tf.Tensor]) -> Optional[tf.Tensor]:
    if mask is None:
        return weights
    if weights is None:
        return mask
    return mask * weights


def _finite_guard(
    heads: HeadSet, head_losses: Mapping[str, tf.Tensor], total: tf.Tensor, step: tf.Tensor
) -> tf.Tensor:
    """``total``, behind a check that every head's loss is finite (NaN and inf)."""
    names = [h.name for h in heads.trained_heads] + ["(total)"]
    values = tf.stack([head_losses[h.name] for h in heads.trained_heads] + [total])
    finite = tf.math.is_finite(values)
    check = tf.debugging.Assert(
        tf.reduce_all(finite),
        # Only strings and int32, and no work but a cast: this runs on every step.
        non_finite_assert_data(tf.cast(step, tf.int32), tf.constant(names),
                               tf.cast(finite, tf.int32)),
        summarize=len(names),
        name="headkit_finite_loss_check",
    )
    with tf.control_dependencies([check]):
        return tf.identity(total)


def _train_op(optimizer: Any, loss: tf.Tensor, variables: List[tf.Variable],
              update_ops: List[Any], step: tf.Tensor) -> Any:
    grads = tf.gradients(loss, variables)
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
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
        label_tensors = _labels_by_head(heads, labels)
        head_losses: Dict[str, tf.Tensor] = {}
        eval_metrics: Dict[str, Any] = {}
        for head in heads.trained_heads:
            kind = kinds.get(head)
            with tf.name_scope(head.name):  # NAME_PATTERN names are valid scope names
                ready, mask = kind.prepare_labels(head, label_tensors[head.label_key])
                weights = _combine(mask, _example_weights(head, features))
                example_losses = kind.per_example_loss(head, ready, outputs[head.name])
                head_losses[head.name] = losses.head_loss(example_losses, weights)
                if mode == ModeKeys.EVAL:
                    eval_metrics.update(metrics_lib.head_metrics(
                        head, ready, per_head[head.name], example_losses, weights))
        regularization = model.get_losses_for(None) + model.get_losses_for(flat_inputs)
        step = tf.compat.v1.train.get_or_create_global_step()
        loss = losses.total_loss(heads.trained_heads, head_losses, regularization)

        if mode == ModeKeys.EVAL:
            return tf.estimator.EstimatorSpec(
                mode, loss=loss, predictions=predictions, eval_metric_ops=eval_metrics)

        loss = _finite_guard(heads, head_losses, loss, step)
        for name, value in head_losses.items():
            tf.compat.v1.summary.scalar(metric_key(name, "loss"), value)
        update_ops = model.get_updates_for(None) + model.get_updates_for(flat_inputs)
        train_op = _train_op(optimizer(), loss, model.trainable_variables, update_ops, step)
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op,
                                          predictions=predictions)

    return model_fn
