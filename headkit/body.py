"""The Keras body: built fresh, fed the features its Inputs name, its outputs read per head.

Backend-neutral: the Estimator's model_fn and the Keras backend both call it.
"""

from __future__ import annotations

import difflib
import importlib
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import tensorflow as tf

from headkit import kinds
from headkit.errors import ConfigError, ConfigTypeError, DataError, DataTypeError, HeadkitError
from headkit.spec.headset import HeadSet

__all__ = ["Body", "KERAS_MAJOR", "instantiate_body", "check_body", "body_inputs",
           "outputs_by_head", "input_specs", "model_input_specs", "INPUT_NAME_PATTERN",
           "suggest_input_name", "check_compilable"]

#: The major version of the Keras behind ``tf.keras``: 2 on TensorFlow 2.15 (or with
#: tf_keras), 3 on newer TensorFlow. Read from the package that defines ``tf.keras.Model``.
KERAS_MAJOR = int(importlib.import_module(tf.keras.Model.__module__.split(".")[0])
                  .__version__.split(".")[0])

#: What a Keras Input may be called in a graph: TensorFlow's pattern for a root scope name.
INPUT_NAME_PATTERN = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")


def suggest_input_name(column: Any) -> str:
    """A Keras Input name for a column whose name cannot be one.

    Example:
        >>> suggest_input_name("bill length (mm)")
        'bill_length_mm'
    """
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(column)).strip("_")
    return name if name and INPUT_NAME_PATTERN.fullmatch(name) else f"feature_{name}".rstrip("_")


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
    model = _build(body)
    if not isinstance(model, tf.keras.Model):
        raise ConfigTypeError(
            f"body: the body function must return a tf.keras.Model (got {type(model).__name__}).",
            field="body",
        )
    return model


_GRAPH_MODE = (
    "headkit builds the body in graph mode: tf.estimator calls the body function in a new "
    "tf.Graph, so its layers see symbolic tensors, never values."
)


def _graph_inputs(graph: Optional[tf.Graph], first_op: int) -> List[Tuple[str, str]]:
    """(name, dtype) of the placeholders (Keras Inputs) made in ``graph`` since ``first_op``."""
    if graph is None:
        return []
    return [(op.name, op.get_attr("dtype").name) for op in graph.get_operations()[first_op:]
            if op.type == "Placeholder"]


def _build_hint(message: str, inputs: List[Tuple[str, str]]) -> str:
    """The fix for a Keras error raised while the body function runs, from its message."""
    listed = ", ".join(f"{name!r} ({dtype})" for name, dtype in inputs)
    scope = re.search(r"'(.*)' is not a valid (?:root )?scope name", message)
    if scope:
        column, name = scope.group(1), suggest_input_name(scope.group(1))
        return (f"{column!r} cannot name a Keras Input in a graph (a name has letters, digits, "
                f"'_', '.' and '-', no spaces or brackets). Name the Input {name!r} and map the "
                f"column to it: hk.input_fn_from_dataframe(df, heads, "
                f"input_names={{{column!r}: {name!r}}}), or rename the feature.")
    if re.search(r"types \[.*string.*\] that don't all match|string.*float|float.*string",
                 message):
        return (f"A string Input meets a number Input in one layer (the body's Inputs: "
                f"{listed or 'none'}). Turn the text into numbers first: "
                "tf.keras.layers.StringLookup(vocabulary=...) then an Embedding or "
                "CategoryEncoding, and concatenate the result.")
    if "Dimension value must be integer" in message or "__index__" in message:
        return (f"{_GRAPH_MODE} A layer that needs a size as a number then fails, e.g. "
                "StringLookup(output_mode='one_hot'): use StringLookup(vocabulary=v) (ids), then "
                "tf.keras.layers.CategoryEncoding(num_tokens=len(v) + 1, output_mode='one_hot') "
                "or an Embedding.")
    return (f"{_GRAPH_MODE} Check the body function" + (f" (its Inputs: {listed})" if listed
                                                          else "") + ".")


def _build(body: Callable[[], Any]) -> Any:
    """``body()``; a Keras error while it builds names the Inputs and the fix."""
    graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
    first_op = len(graph.get_operations()) if graph is not None else 0
    try:
        return body()
    except HeadkitError:
        raise
    except (TypeError, ValueError) as error:
        message = " ".join(str(error).split())[:400] or repr(error)
        error_type = ConfigTypeError if isinstance(error, TypeError) else ConfigError
        raise error_type(
            f"body: building the Keras model failed ({type(error).__name__}: {message}). "
            + _build_hint(str(error), _graph_inputs(graph, first_op)), field="body",
        ) from error


def _check_feature(name: str, feature: Any, reference: Any) -> None:
    """Refuse a feature whose dtype or shape cannot feed the body's Input of that name."""
    dtype, expected = getattr(feature, "dtype", None), getattr(reference, "dtype", None)
    if dtype is None or expected is None:
        return
    dtype, expected = tf.as_dtype(dtype), tf.as_dtype(expected)  # Keras 3 names dtypes by string
    if (dtype == tf.string) != (expected == tf.string):
        shape = tuple(reference.shape[1:])
        if expected == tf.string:
            fix = (f"Feed it text (the column as strings), or declare the Input as numbers: "
                   f"tf.keras.Input({shape}, name={name!r}).")
        else:
            fix = (f"Declare the Input as text, tf.keras.Input({shape}, name={name!r}, "
                   "dtype=tf.string), and turn it into numbers inside the body "
                   "(tf.keras.layers.StringLookup, then an Embedding or CategoryEncoding); or "
                   "convert the column to numbers before the input_fn.")
        raise DataTypeError(
            f"feature {name!r} is {dtype.name}, but the body's Keras Input {name!r} is "
            f"{expected.name}. {fix}"
        )
    # tf.TensorShape: Keras 3 gives shapes as tuples
    given, wanted = tf.TensorShape(feature.shape), tf.TensorShape(reference.shape)
    if given.rank is not None and given.rank == wanted.rank and any(
            a is not None and b is not None and a != b for a, b in zip(given[1:], wanted[1:])):
        raise DataError(
            f"feature {name!r} has shape {given}, but the body's Keras Input {name!r} expects "
            f"{wanted} (the first dimension is the batch). Declare the Input as "
            f"tf.keras.Input({tuple(given[1:])}, name={name!r}), or reshape the column."
        )


def _missing_inputs_hint(missing: List[str], features: Mapping[str, Any]) -> str:
    """A feature that could be meant for a missing Input: renamed, or misspelled."""
    for name in missing:
        for feature in features:
            if suggest_input_name(feature) == name and feature != name:
                return (f" The column {feature!r} cannot name an Input; map it to {name!r}: "
                        f"hk.input_fn_from_dataframe(df, heads, input_names={{{feature!r}: "
                        f"{name!r}}}).")
        close = difflib.get_close_matches(name, [str(f) for f in features], n=1)
        if close:
            return f" Did you mean {close[0]!r} for the Input {name!r}?"
    return ""


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

    Each feature's dtype and shape are checked against its Input: text fed
    to a number Input (or numbers to a text Input) and a shape that differs
    are ``hk.DataError``s naming the feature, both dtypes or shapes, and the
    fix, instead of an error deep inside the Keras graph.

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
            f"{sorted(features, key=str)!r}. Name each tf.keras.Input after its feature."
            + _missing_inputs_hint(missing, features)
        )
    for name, reference in inputs:
        _check_feature(name, features[name], reference)
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
    return {n: (tf.SparseTensorSpec if isinstance(t, tf.SparseTensor) else tf.TensorSpec)(
        t.shape, t.dtype) for n, t in inputs}


def check_compilable(model: tf.keras.Model) -> None:
    """Refuse, for ``jit_compile=True``, a body that takes strings: XLA compiles numbers only.

    Other ops XLA cannot compile are named when the step first runs
    (``headkit.errors.translate_graph_errors``).

    Example:
        >>> x = tf.keras.Input((1,), name="word", dtype=tf.string)
        >>> check_compilable(tf.keras.Model({"word": x}, {"y": x}))
        Traceback (most recent call last):
        ...
        headkit.errors.ConfigError: jit_compile=True: the body takes string input(s) ['word'], ...
    """
    strings = [name for name, tensor in _keras_inputs(model) or ()
               if tf.as_dtype(tensor.dtype) == tf.string]
    if strings:
        raise ConfigError(
            f"jit_compile=True: the body takes string input(s) {strings!r}, and XLA compiles "
            "numbers only. Turn the strings into ids or vectors in the input_fn (e.g. a "
            "tf.keras.layers.StringLookup in Dataset.map) so the body takes numbers, or use "
            "jit_compile=False.", field="jit_compile")
