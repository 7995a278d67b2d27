"""The feature spec an export parses: read from the body's Keras Inputs, checked, and written down.

A ``tf.Example`` carries float32, int64 and string features; the spec says
which each body Input becomes, and with what shape.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import numpy as np
import tensorflow as tf

from headkit.body import Body, input_specs
from headkit.errors import ConfigError, ConfigTypeError

__all__ = ["feature_spec_from_body", "spec_of_inputs", "check_spec", "spec_to_dict",
           "EXAMPLE_DTYPES"]

#: The dtypes a ``tf.Example`` carries.
EXAMPLE_DTYPES = (tf.float32, tf.int64, tf.string)


def _example_dtype(name: str, dtype: tf.DType) -> tf.DType:
    if dtype == tf.string:
        return tf.string
    if dtype.is_floating:
        return tf.float32
    if dtype.is_integer or dtype == tf.bool:
        return tf.int64
    raise ConfigError(
        f"feature_spec: Input {name!r} has dtype {dtype.name}, which a tf.Example cannot "
        "carry; use a float, integer, boolean or string Input."
    )


def spec_of_inputs(inputs: Optional[Mapping[str, tf.TensorSpec]]) -> Dict[str, Any]:
    """The parsing spec of Keras Input specs (see :func:`feature_spec_from_body`).

    Example:
        >>> spec_of_inputs({"x": tf.TensorSpec([None, 2], tf.float64)})
        {'x': FixedLenFeature(shape=(2,), dtype=tf.float32, default_value=None)}
    """
    if inputs is None:
        raise ConfigError(
            "feature_spec: the body has no Keras Inputs to read the features from (a "
            "subclassed model?). Pass feature_spec={'name': tf.io.FixedLenFeature(shape, "
            "dtype), ...} to export()."
        )
    spec = {}
    for name, tensor in inputs.items():
        shape = tuple(tensor.shape[1:])
        if any(d is None for d in shape):
            raise ConfigError(
                f"feature_spec: Input {name!r} has shape {tensor.shape} with an unknown "
                "dimension; a tf.Example feature needs a fixed shape. Give the Input a fixed "
                "shape, or pass feature_spec= with a tf.io.FixedLenFeature of the padded shape."
            )
        spec[name] = tf.io.FixedLenFeature(shape, _example_dtype(name, tensor.dtype))
    return spec


def feature_spec_from_body(body: Body) -> Dict[str, tf.io.FixedLenFeature]:
    """The parsing spec of the body's Keras ``Input``s: name, dtype and shape.

    Floats parse as float32, integers and booleans as int64, strings as
    string: the three types a ``tf.Example`` carries.

    Example:
        >>> def body():
        ...     x = tf.keras.Input((3,), name="x")
        ...     return tf.keras.Model({"x": x}, {"y": tf.keras.layers.Dense(1)(x)})
        >>> feature_spec_from_body(body)
        {'x': FixedLenFeature(shape=(3,), dtype=tf.float32, default_value=None)}
    """
    return spec_of_inputs(input_specs(body))


def check_spec(spec: Mapping[str, Any],
               inputs: Optional[Mapping[str, Any]] = None) -> None:
    """Refuse a feature spec entry a ``tf.Example`` cannot carry, naming the feature.

    With the body's ``inputs`` (:func:`headkit.body.input_specs`), a
    ``VarLenFeature`` for a dense Input is refused too: it parses to a
    ``SparseTensor``, which the Input cannot take.

    Example:
        >>> check_spec({"x": tf.io.FixedLenFeature([1], tf.float32)})
    """
    for name, feature in spec.items():
        reference = (inputs or {}).get(name)
        if isinstance(feature, tf.io.VarLenFeature) and isinstance(reference, tf.TensorSpec):
            raise ConfigError(
                f"feature_spec[{name!r}]: a tf.io.VarLenFeature parses to a SparseTensor, but "
                f"the body's Input {name!r} is dense, shape {reference.shape}. Pass "
                f"tf.io.FixedLenFeature(shape, tf.{feature.dtype.name}) of the padded shape "
                "instead (every tf.Example then carries that many values; a default_value "
                "fills the missing ones)."
            )
        if reference is not None and (feature.dtype == tf.string) != (reference.dtype == tf.string):
            raise ConfigError(
                f"feature_spec[{name!r}]: dtype {feature.dtype.name}, but the body's Input "
                f"{name!r} is {reference.dtype.name}; text and numbers do not convert. Use "
                f"dtype tf.{_example_dtype(name, reference.dtype).name} for {name!r}."
            )
        if not isinstance(feature, (tf.io.FixedLenFeature, tf.io.VarLenFeature)):
            raise ConfigTypeError(
                f"feature_spec[{name!r}]: expected tf.io.FixedLenFeature or VarLenFeature "
                f"(got {feature!r})."
            )
        if feature.dtype not in EXAMPLE_DTYPES:
            raise ConfigError(
                f"feature_spec[{name!r}]: dtype {feature.dtype.name} is not one a tf.Example "
                "carries; use tf.float32, tf.int64 or tf.string."
            )


def spec_to_dict(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """The manifest's ``feature_spec``: name -> dtype, kind (``fixed``/``var``) and shape.

    Example:
        >>> spec_to_dict({"x": tf.io.FixedLenFeature([3], tf.float32)})
        {'x': {'dtype': 'float32', 'kind': 'fixed', 'shape': [3]}}
    """
    result = {}
    for name, feature in spec.items():
        entry: Dict[str, Any] = {"dtype": feature.dtype.name}
        if isinstance(feature, tf.io.FixedLenFeature):
            entry.update(kind="fixed", shape=list(feature.shape))
            if feature.default_value is not None:
                entry["default_value"] = np.asarray(feature.default_value).tolist()
        else:
            entry["kind"] = "var"
        result[name] = entry
    return result
