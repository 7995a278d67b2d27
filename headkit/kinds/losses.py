"""Losses: the implementations behind the catalog's loss names, per-head and total loss.

Pure functions of (head, tensors); they work eagerly and in graphs. The names
and the kinds each fits are in ``headkit.spec.catalog.LOSSES``.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Union

import tensorflow as tf

from headkit.errors import ConfigError
from headkit.spec import catalog
from headkit.spec.head import Head, LossFn

__all__ = ["LOSSES", "get", "per_example_loss", "head_loss", "total_loss"]


def _cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Softmax cross entropy on class ids, or sigmoid cross entropy for one logit."""
    if logits.shape[-1] == 1:
        return tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.cast(labels, logits.dtype), logits=logits[:, 0]
        )
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def _mse(labels: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.math.squared_difference(predictions, labels), axis=-1)


def _mae(labels: tf.Tensor, predictions: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.abs(predictions - labels), axis=-1)


def _huber(labels: tf.Tensor, predictions: tf.Tensor, delta: float = 1.0) -> tf.Tensor:
    error = tf.abs(predictions - labels)
    quadratic = tf.minimum(error, delta)
    return tf.reduce_mean(0.5 * quadratic**2 + delta * (error - quadratic), axis=-1)


def _sigmoid_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Sigmoid cross entropy per logit, averaged over the logits (MultiLabel, Logistic)."""
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(labels, logits.dtype), logits=logits), axis=-1)


def _log_poisson(labels: tf.Tensor, log_rates: tf.Tensor) -> tf.Tensor:
    """``tf.nn.log_poisson_loss`` with its full loss (Stirling's term), as canned heads use."""
    return tf.reduce_mean(tf.nn.log_poisson_loss(
        targets=tf.cast(labels, log_rates.dtype), log_input=log_rates, compute_full_loss=True),
        axis=-1)


#: Loss registry: name -> ``(labels, outputs) -> per-example loss``.
LOSSES: Dict[str, LossFn] = {
    "cross_entropy": _cross_entropy,
    "mse": _mse,
    "mae": _mae,
    "huber": _huber,
    "sigmoid_cross_entropy": _sigmoid_cross_entropy,
    "log_poisson": _log_poisson,
}
assert set(LOSSES) == set(catalog.LOSSES), "every catalog loss has one implementation"


def get(loss: Union[str, LossFn]) -> LossFn:
    """Look a loss up by name, or return a callable as it is.

    Example:
        >>> get("mse") is LOSSES["mse"]
        True
    """
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ConfigError(f"Unknown loss {loss!r}. Known losses: {', '.join(sorted(LOSSES))}.")
    return LOSSES[loss]


def per_example_loss(head: Head, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """The head's loss for each example, shape ``[batch]``.

    ``labels`` come from the kind's ``prepare_labels``; ``outputs`` are the body's
    logits or predictions for this head.

    Example:
        >>> from headkit.spec import Regression
        >>> per_example_loss(Head("y", Regression()), tf.constant([[1.0]]),
        ...                  tf.constant([[3.0]])).numpy().tolist()
        [4.0]
    """
    values = get(head.loss_name)(labels, outputs)
    values = tf.convert_to_tensor(values)
    if values.shape.rank == 2 and values.shape[-1] == 1:
        values = values[:, 0]
    if values.shape.rank is not None and values.shape.rank != 1:
        raise ConfigError(
            f"Head {head.name!r}: the loss must return one value per example, shape [batch] "
            f"(got shape {values.shape}). Reduce over the other axes inside the loss."
        )
    return tf.cast(values, tf.float32)


def head_loss(losses: tf.Tensor, weights: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Reduce per-example losses to the head's loss: the (weighted) mean.

    With weights (a mask of labelled rows times any example weights) it is
    ``sum(w * loss) / sum(w)``, and 0 for a batch with no weight at all.

    Example:
        >>> head_loss(tf.constant([1.0, 3.0]), tf.constant([1.0, 0.0])).numpy()
        1.0
    """
    if weights is None:
        return tf.reduce_mean(losses)
    return tf.math.divide_no_nan(tf.reduce_sum(losses * weights), tf.reduce_sum(weights))


def total_loss(
    heads: Sequence[Head],
    head_losses: Mapping[str, tf.Tensor],
    regularization: Sequence[tf.Tensor] = (),
) -> tf.Tensor:
    """Sum of ``weight x head loss`` over the trained heads, plus regularization.

    Example:
        >>> from headkit.spec import Regression
        >>> heads = [Head("a", Regression()), Head("b", Regression(), weight=0.5)]
        >>> total_loss(heads, {"a": tf.constant(2.0), "b": tf.constant(4.0)}).numpy()
        4.0
    """
    terms = [head.weight * head_losses[head.name] for head in heads if head.is_trained]
    terms.extend(tf.cast(r, tf.float32) for r in regularization)
    return tf.add_n(terms)
