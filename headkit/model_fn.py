"""Keras body + HeadSet -> ``model_fn`` -> ``EstimatorSpec``: the one graph-mode module.

Only this module knows modes, the global step, update ops and EstimatorSpec.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import tensorflow as tf

from headkit import losses as losses_lib
from headkit import metrics as metrics_lib
from headkit import outputs as outputs_lib
from headkit.heads import Head
from headkit.headset import HeadSet, metric_key

__all__ = ["make_model_fn", "resolve_optimizer", "instantiate_body", "Body", "OPTIMIZERS"]

ModeKeys = tf.estimator.ModeKeys
#: A body: a function returning a fresh ``tf.keras.Model``, or a Keras model
#: (functional or Sequential) that is cloned into each graph.
Body = Union[Callable[[], tf.keras.Model], tf.keras.Model]

#: Optimizer names -> (tf.compat.v1.train class, default learning rate).
OPTIMIZERS: Dict[str, Tuple[type, float]] = {
    "adam": (tf.compat.v1.train.AdamOptimizer, 0.001),
    "sgd": (tf.compat.v1.train.GradientDescentOptimizer, 0.01),
    "adagrad": (tf.compat.v1.train.AdagradOptimizer, 0.01),
    "rmsprop": (tf.compat.v1.train.RMSPropOptimizer, 0.001),
    "ftrl": (tf.compat.v1.train.FtrlOptimizer, 0.01),
}

OptimizerFactory = Callable[[], Any]
_KERAS_OPTIMIZERS = (tf.keras.optimizers.Optimizer, tf.keras.optimizers.legacy.Optimizer)


def resolve_optimizer(optimizer: Any, learning_rate: Optional[float] = None) -> OptimizerFactory:
    """Check an optimizer spec now; return a factory making a fresh one per graph.

    Accepts a name from ``OPTIMIZERS`` (with ``learning_rate``), a
    ``tf.compat.v1.train.Optimizer``, a Keras optimizer (new or legacy; a new
    one is run as its legacy twin, since new Keras optimizers do not work in
    graph mode), or a zero-argument callable returning one of those.

    Example:
        >>> resolve_optimizer("sgd", 0.1)()._learning_rate
        0.1
    """
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in OPTIMIZERS:
            raise ValueError(
                f"optimizer: unknown name {optimizer!r}. Known names: "
                f"{', '.join(OPTIMIZERS)}; or pass an optimizer object."
            )
        cls, default_rate = OPTIMIZERS[key]
        rate = default_rate if learning_rate is None else learning_rate
        return lambda: cls(learning_rate=rate)
    if learning_rate is not None:
        raise ValueError(
            f"optimizer: learning_rate={learning_rate!r} applies only to an optimizer name "
            f"(got {optimizer!r}). Set the rate on the optimizer object instead."
        )
    if isinstance(optimizer, tf.compat.v1.train.Optimizer):
        return lambda: optimizer
    if isinstance(optimizer, _KERAS_OPTIMIZERS):
        return _legacy_keras_factory(optimizer)
    if callable(optimizer) and not isinstance(optimizer, type):
        sample = optimizer()  # called once now, so a bad factory fails at construction
        if isinstance(sample, tf.compat.v1.train.Optimizer):
            return optimizer
        if isinstance(sample, _KERAS_OPTIMIZERS):
            return _legacy_keras_factory(sample)
        raise TypeError(
            f"optimizer: the factory {optimizer!r} returned {sample!r}, not a "
            "tf.compat.v1.train.Optimizer or a Keras optimizer."
        )
    raise TypeError(
        f"optimizer must be a name ({', '.join(OPTIMIZERS)}), a tf.compat.v1.train.Optimizer, "
        f"a Keras optimizer or a zero-argument factory (got {optimizer!r})."
    )


def _legacy_keras_factory(optimizer: Any) -> OptimizerFactory:
    """Fresh legacy Keras optimizers with ``optimizer``'s settings, one per graph.

    The settings are read now: the optimizer's variables may be eager ones.
    """
    name = type(optimizer).__name__
    legacy_cls = getattr(tf.keras.optimizers.legacy, name, None)
    if legacy_cls is None:
        raise TypeError(
            f"optimizer: Keras {name} has no legacy (graph-mode) version. Use one of "
            "tf.keras.optimizers.legacy.* or an optimizer name."
        )
    accepted = set(inspect.signature(legacy_cls.__init__).parameters)
    config = {k: v for k, v in optimizer.get_config().items() if k in accepted}
    if isinstance(config.get("learning_rate"), dict):  # a schedule, serialized
        config["learning_rate"] = tf.keras.optimizers.schedules.deserialize(
            config["learning_rate"]
        )
    return lambda: legacy_cls(**config)


def instantiate_body(body: Body) -> tf.keras.Model:
    """A fresh Keras model for the current graph: the builder's result, or a clone.

    Example:
        >>> with tf.Graph().as_default():  # doctest: +SKIP
        ...     model = instantiate_body(build_body)
    """
    if isinstance(body, tf.keras.Model):
        try:
            return tf.keras.models.clone_model(body)
        except ValueError as error:
            raise TypeError(
                f"body: a subclassed Keras model cannot be cloned into the Estimator's graph "
                f"({error}). Pass a function that builds the model instead: "
                "hk.Estimator(build_body, ...)."
            ) from error
    model = body()
    if not isinstance(model, tf.keras.Model):
        raise TypeError(
            f"body: the body function must return a tf.keras.Model (got {type(model).__name__})."
        )
    return model


def _body_inputs(model: tf.keras.Model, features: Any) -> Any:
    """Select and arrange the features the body's Keras Inputs ask for."""
    if not isinstance(features, Mapping) or not getattr(model, "_is_graph_network", False):
        return features
    names = list(model.input_names)
    missing = [n for n in names if n not in features]
    if missing:
        raise ValueError(
            f"body: the Keras Inputs {missing!r} have no feature of that name. Features given: "
            f"{sorted(features)!r}. Name each tf.keras.Input after its feature."
        )
    structure = model.input
    if isinstance(structure, Mapping):
        return {n: features[n] for n in names}
    if isinstance(structure, (list, tuple)):
        return [features[n] for n in names]
    return features[names[0]]


def _outputs_by_head(heads: HeadSet, model: tf.keras.Model, raw: Any) -> Dict[str, Any]:
    if not isinstance(raw, Mapping):
        if len(heads) == 1 and tf.is_tensor(raw):
            return {heads.names[0]: raw}
        if isinstance(raw, (list, tuple)) and len(raw) == len(getattr(model, "output_names", ())):
            raw = dict(zip(model.output_names, raw))
        else:
            raise ValueError(
                f"body: outputs must be a dict keyed by head name {list(heads.names)!r} "
                f"(got {type(raw).__name__}). Build the model as "
                "tf.keras.Model(inputs, {'<head>': tensor, ...})."
            )
    missing = [n for n in heads.names if n not in raw]
    extra = [k for k in raw if k not in heads.names]
    if missing or extra:
        raise ValueError(
            f"body: outputs {sorted(raw)!r} do not match the heads {list(heads.names)!r}"
            + (f"; no output for head(s) {missing!r}" if missing else "")
            + (f"; output(s) {extra!r} match no head (add a Head or drop them)" if extra else "")
            + "."
        )
    return {name: _check_output(heads[name], raw[name]) for name in heads.names}


def _check_output(head: Head, output: Any) -> Any:
    kind = head.output.kind
    if kind == "predict":
        return output
    if kind == "classification":
        n = head.output.n_classes
        widths = (1, 2) if n == 2 else (n,)
        expected = "[batch, 1] or [batch, 2]" if n == 2 else f"[batch, {n}]"
    else:
        widths = (head.output.dimension,)
        expected = f"[batch, {head.output.dimension}]"
        if output.shape.rank == 1 and head.output.dimension == 1:
            output = output[:, None]
    shape = output.shape
    if shape.rank != 2 or shape[-1] not in widths:
        raise ValueError(
            f"Head {head.name!r}: the body output has shape {shape}, expected {expected}. "
            f"Give the head's output layer {widths[-1]} unit(s)."
        )
    if not output.dtype.is_floating:
        raise ValueError(
            f"Head {head.name!r}: the body output has dtype {output.dtype.name}, expected a "
            "float (logits or values). Remove any argmax or cast from the output layer."
        )
    return tf.cast(output, tf.float32)


def _labels_by_head(heads: HeadSet, labels: Any) -> Dict[str, Any]:
    keys = heads.label_keys
    if not isinstance(labels, Mapping):
        if len(keys) == 1 and labels is not None:
            return {keys[0]: labels}
        raise ValueError(
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
        raise ValueError(
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
        raise ValueError(
            f"Head {head.name!r}: weight_column {column!r} is not among the features "
            f"{given!r}. Add the column to the features the input_fn returns, or drop "
            "weight_column from the head."
        )
    weights = tf.reshape(tf.cast(features[column], tf.float32), [-1])
    valid = tf.logical_and(tf.math.is_finite(weights), weights >= 0.0)
    check = tf.debugging.Assert(
        tf.reduce_all(valid),
        [f"Head {head.name!r}: weight_column {column!r} must hold finite weights >= 0; got",
         # as strings: an Assert whose data is only strings and int32 needs no per-step cond
         tf.strings.as_string(tf.boolean_mask(weights, tf.logical_not(valid))[:10])],
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
        [
            # Only strings and int32, and no work but a cast: this runs on every step.
            # errors.translate_graph_errors turns it into a sentence.
            "headkit: non-finite loss at global step",
            tf.cast(step, tf.int32),
            "heads",
            tf.constant(names),
            "finite",
            tf.cast(finite, tf.int32),
        ],
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
        raise ValueError(
            "No trainable variable of the body receives a gradient from the loss. Check that "
            "the trained heads' outputs depend on the body's layers."
        )
    # `loss` carries the finite check: without this dependency the updates would not wait
    # for it (the gradients do not depend on the check) and could apply NaN gradients.
    with tf.control_dependencies(update_ops + [loss]):
        if isinstance(optimizer, tf.compat.v1.train.Optimizer):
            return optimizer.apply_gradients(pairs, global_step=step)
        optimizer.iterations = step  # Keras optimizers advance their `iterations`
        return optimizer.apply_gradients(pairs)


def make_model_fn(body: Body, heads: HeadSet, optimizer: OptimizerFactory) -> Callable:
    """A ``model_fn(features, labels, mode, config)`` for ``tf.estimator.Estimator``.

    Each call builds the body fresh in the current graph, calls it with
    ``training`` following the mode, and returns an ``EstimatorSpec`` with
    the weighted loss, a train_op that runs the body's update ops (batch
    norm) and advances the global step, per-head eval metrics, flat
    predictions ``"<head>/<key>"`` and the export outputs.

    Example:
        >>> import headkit as hk
        >>> heads = hk.HeadSet([hk.Head("y", hk.Regression())])
        >>> def body():
        ...     x = tf.keras.Input((2,), name="x")
        ...     return tf.keras.Model({"x": x}, {"y": tf.keras.layers.Dense(1)(x)})
        >>> est = tf.estimator.Estimator(make_model_fn(body, heads, resolve_optimizer("sgd")))
    """

    def model_fn(features: Any, labels: Any, mode: str, config: Any = None):
        training = mode == ModeKeys.TRAIN
        model = instantiate_body(body)
        inputs = _body_inputs(model, features)
        raw_outputs = model(inputs, training=training)
        outputs = _outputs_by_head(heads, model, raw_outputs)
        per_head = {
            head.name: outputs_lib.head_predictions(head, outputs[head.name]) for head in heads
        }
        predictions = outputs_lib.flat_predictions(per_head)
        if mode == ModeKeys.PREDICT:
            return tf.estimator.EstimatorSpec(
                mode,
                predictions=predictions,
                export_outputs=outputs_lib.export_outputs(heads, per_head),
            )

        flat_inputs = tf.nest.flatten(inputs)
        label_tensors = _labels_by_head(heads, labels)
        head_losses: Dict[str, tf.Tensor] = {}
        eval_metrics: Dict[str, Any] = {}
        for head in heads.trained_heads:
            with tf.name_scope(head.name):  # NAME_PATTERN names are valid scope names
                ready, mask = losses_lib.prepare_labels(head, label_tensors[head.label_key])
                weights = _combine(mask, _example_weights(head, features))
                example_losses = losses_lib.per_example_loss(head, ready, outputs[head.name])
                head_losses[head.name] = losses_lib.head_loss(example_losses, weights)
                if mode == ModeKeys.EVAL:
                    eval_metrics.update(
                        metrics_lib.head_metrics(
                            head, ready, per_head[head.name], example_losses, weights
                        )
                    )
        regularization = model.get_losses_for(None) + model.get_losses_for(flat_inputs)
        step = tf.compat.v1.train.get_or_create_global_step()
        loss = losses_lib.total_loss(heads.trained_heads, head_losses, regularization)

        if mode == ModeKeys.EVAL:
            return tf.estimator.EstimatorSpec(
                mode, loss=loss, predictions=predictions, eval_metric_ops=eval_metrics
            )

        loss = _finite_guard(heads, head_losses, loss, step)
        for name, value in head_losses.items():
            tf.compat.v1.summary.scalar(metric_key(name, "loss"), value)
        update_ops = model.get_updates_for(None) + model.get_updates_for(flat_inputs)
        train_op = _train_op(optimizer(), loss, model.trainable_variables, update_ops, step)
        return tf.estimator.EstimatorSpec(
            mode, loss=loss, train_op=train_op, predictions=predictions
        )

    return model_fn
