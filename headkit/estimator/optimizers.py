"""Optimizers for the Estimator's graph: a name, a TF1 or Keras optimizer, or a factory.

Each spec is checked when the Estimator is built and becomes a factory that
makes a fresh optimizer in each graph.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, Tuple

import tensorflow as tf

from headkit.errors import ConfigError, ConfigTypeError

__all__ = ["resolve_optimizer", "OPTIMIZERS", "OptimizerFactory"]

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
            raise ConfigError(
                f"optimizer: unknown name {optimizer!r}. Known names: "
                f"{', '.join(OPTIMIZERS)}; or pass an optimizer object.", field="optimizer",
            )
        cls, default_rate = OPTIMIZERS[key]
        rate = default_rate if learning_rate is None else learning_rate
        return lambda: cls(learning_rate=rate)
    if learning_rate is not None:
        raise ConfigError(
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
        raise ConfigTypeError(
            f"optimizer: the factory {optimizer!r} returned {sample!r}, not a "
            "tf.compat.v1.train.Optimizer or a Keras optimizer."
        )
    raise ConfigTypeError(
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
        raise ConfigTypeError(
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
