"""The Keras body: built fresh, fed the features its Inputs name, its outputs read per head.

Backend-neutral: the Estimator's model_fn and the Keras backend both call it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import tensorflow as tf

from headkit import kinds
from headkit.errors import ConfigError, ConfigTypeError, DataError
from headkit.spec.headset import HeadSet

__all__ = ["Body", "KERAS_MAJOR", "instantiate_body", "check_body", "body_inputs",
           "outputs_by_head", "input_specs", "model_input_specs"]

#: The major version of the Keras behind ``tf.keras``: 2 on TensorFlow 2.15 (or with
#: tf_keras), 3 on newer TensorFlow. Read from the package that defines ``tf.keras.Model``.
KERAS_MAJOR = int(importlib.import_module(tf.keras.Model.__module__.split(".")[0])
                  .__version__.split(".")[0])

#: A body: a function returning a fresh ``tf.keras.Model``, or a Keras model
#: (functional or Sequential) that is cloned into each graph.
Body = Union[Callable[[], tf.keras.Model], tf.keras.Model]


def check_body(body: Any) -> Body:
    """``body`` if it can be a body (a builder function or a Keras model); else a clear error.

    Example:
        >>> check_body(lambda: None) is not None
        True
    """
    if not (callable(body) or isinstance(body, tf.keras.Model)):
        raise ConfigTypeError(
            f"body must be a function returning a tf.keras.Model, or a Keras model "
            f"(got {body!r}).", field="body",
        )
    return body


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
            raise ConfigTypeError(
                f"body: a subclassed Keras model cannot be cloned into the Estimator's graph "
                f"({error}). Pass a function that builds the model instead: "
                "hk.Estimator(build_body, ...).", field="body",
            ) from error
    model = body()
    if not isinstance(model, tf.keras.Model):
        raise ConfigTypeError(
            f"body: the body function must return a tf.keras.Model (got {type(model).__name__}).",
            field="body",
        )
    return model


def _keras_inputs(model: tf.keras.Model) -> Optional[List[Tuple[str, Any]]]:
    """``(name, Input tensor)`` of a functional or Sequential model; None for a subclassed one.

    tf.keras 2 says a model is functional with ``_is_graph_network`` and names its
    Inputs in ``input_names``; Keras 3 has neither: its functional and built
    Sequential models have ``inputs``, and each Input tensor carries its name.
    """
    if hasattr(model, "_is_graph_network"):  # tf.keras 2
        if not model._is_graph_network or not model.inputs:
            return None
        return list(zip(model.input_names, model.inputs))
    try:  # Keras 3: a subclassed or unbuilt model has no inputs
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return [(tensor.name, tensor) for tensor in inputs] if inputs else None


def _input_structure(model: tf.keras.Model) -> Any:
    """The nest of Inputs the model is called with (a dict, a list or one tensor)."""
    try:
        return model.input
    except AttributeError:  # a Keras 3 Sequential: one input, which it does not expose here
        return None


def body_inputs(model: tf.keras.Model, features: Any) -> Any:
    """Select and arrange the features the body's Keras Inputs ask for.

    Example:
        >>> body_inputs(model, {"x": x, "unused": u})  # doctest: +SKIP
        {'x': x}
    """
    inputs = _keras_inputs(model) if isinstance(features, Mapping) else None
    if inputs is None:
        return features
    names = [name for name, _ in inputs]
    missing = [n for n in names if n not in features]
    if missing:
        raise DataError(
            f"body: the Keras Inputs {missing!r} have no feature of that name. Features given: "
            f"{sorted(features)!r}. Name each tf.keras.Input after its feature."
        )
    structure = _input_structure(model)
    if isinstance(structure, Mapping):
        return {n: features[n] for n in names}
    if isinstance(structure, (list, tuple)):
        return [features[n] for n in names]
    return features[names[0]]


def outputs_by_head(heads: HeadSet, model: tf.keras.Model, raw: Any) -> Dict[str, Any]:
    """The body's outputs keyed by head name, each checked by its head's kind.

    Example:
        >>> outputs_by_head(heads, model, model(inputs))  # doctest: +SKIP
        {'species': <tf.Tensor ...>, 'body_mass_g': <tf.Tensor ...>}
    """
    if not isinstance(raw, Mapping):
        if len(heads) == 1 and tf.is_tensor(raw):
            return {heads.names[0]: kinds.get(heads.heads[0]).check_output(heads.heads[0], raw)}
        if isinstance(raw, (list, tuple)) and len(raw) == len(getattr(model, "output_names", ())):
            raw = dict(zip(model.output_names, raw))
        else:
            raise ConfigError(
                f"body: outputs must be a dict keyed by head name {list(heads.names)!r} "
                f"(got {type(raw).__name__}). Build the model as "
                "tf.keras.Model(inputs, {'<head>': tensor, ...}).", field="body",
            )
    missing = [n for n in heads.names if n not in raw]
    extra = [k for k in raw if k not in heads.names]
    if missing or extra:
        raise ConfigError(
            f"body: outputs {sorted(raw)!r} do not match the heads {list(heads.names)!r}"
            + (f"; no output for head(s) {missing!r}" if missing else "")
            + (f"; output(s) {extra!r} match no head (add a Head or drop them)" if extra else "")
            + ".", field="body",
        )
    return {head.name: kinds.get(head).check_output(head, raw[head.name]) for head in heads}


def input_specs(body: Body) -> Optional[Dict[str, tf.TensorSpec]]:
    """The body's Keras ``Input``s by name (None for a body without them), built in a scratch graph.

    Example:
        >>> input_specs(build_body)  # doctest: +SKIP
        {'x': TensorSpec(shape=(None, 4), dtype=tf.float32, name=None)}
    """
    with tf.Graph().as_default():
        return model_input_specs(instantiate_body(body))


def model_input_specs(model: tf.keras.Model) -> Optional[Dict[str, tf.TensorSpec]]:
    """The Keras ``Input``s of a built model by name (None for a model without them).

    Example:
        >>> x = tf.keras.Input((2,), name="x")
        >>> model_input_specs(tf.keras.Model({"x": x}, {"y": tf.keras.layers.Dense(1)(x)}))
        {'x': TensorSpec(shape=(None, 2), dtype=tf.float32, name=None)}
    """
    inputs = _keras_inputs(model)
    if inputs is None:
        return None
    return {n: tf.TensorSpec(t.shape, t.dtype) for n, t in inputs}
