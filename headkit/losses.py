"""Losses: labels made ready per head, per-example losses, per-head and total loss.

Pure functions of (head, tensors); they work eagerly and in graphs.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf

from headkit.heads import LOSS_NAMES, Head

__all__ = ["LOSSES", "get", "prepare_labels", "per_example_loss", "head_loss", "total_loss"]

LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


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


#: Loss registry: name -> ``(labels, outputs) -> per-example loss``.
LOSSES: Dict[str, LossFn] = {
    "cross_entropy": _cross_entropy,
    "mse": _mse,
    "mae": _mae,
    "huber": _huber,
}
assert set(LOSSES) == {n for names in LOSS_NAMES.values() for n in names}


def get(loss: Union[str, LossFn]) -> LossFn:
    """Look a loss up by name, or return a callable as it is.

    Example:
        >>> get("mse") is LOSSES["mse"]
        True
    """
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r}. Known losses: {', '.join(sorted(LOSSES))}.")
    return LOSSES[loss]


def _flatten_labels(head: Head, labels: tf.Tensor, width: int) -> tf.Tensor:
    """Labels as [batch] (classification) or [batch, width] (regression)."""
    rank = labels.shape.rank
    expected = "[batch] or [batch, 1]" if width == 1 else f"[batch, {width}]"
    if rank is not None and (rank == 0 or rank > 2):
        raise ValueError(
            f"Head {head.name!r}: labels must have shape {expected} (got {labels.shape}). "
            f"Check the label column {head.label_key!r}."
        )
    if rank == 2 and labels.shape[-1] is not None and labels.shape[-1] != width:
        raise ValueError(
            f"Head {head.name!r}: labels must have shape {expected} (got {labels.shape})."
        )
    if head.output.kind == "classification":
        return tf.reshape(labels, [-1])
    return tf.reshape(labels, [-1, width])


def prepare_labels(head: Head, labels: tf.Tensor) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
    """Turn one head's raw labels into loss-ready labels and a mask of labelled rows.

    Classification gives int64 class ids ``[batch]`` (strings are looked up
    in the vocabulary); regression gives float32 ``[batch, dimension]``.
    Rows holding ``head.missing_label`` are masked (mask 0.0) and their
    label is replaced by a harmless value. An unknown class string or an
    out-of-range id fails at the first batch, naming the head.

    Example:
        >>> from headkit.heads import Classification
        >>> head = Head("s", Classification(vocabulary=("a", "b")), missing_label="")
        >>> ids, mask = prepare_labels(head, tf.constant(["b", "", "a"]))
        >>> ids.numpy().tolist(), mask.numpy().tolist()
        ([1, 0, 0], [1.0, 0.0, 1.0])
    """
    output = head.output
    labels = tf.convert_to_tensor(labels)
    if output.kind == "regression":
        return _prepare_regression(head, labels)
    vocabulary = output.vocabulary
    if vocabulary is not None and labels.dtype != tf.string:
        raise ValueError(
            f"Head {head.name!r}: labels must be strings from the vocabulary {vocabulary!r} "
            f"(got dtype {labels.dtype.name}). Pass the class names, or drop the vocabulary "
            "to use class ids."
        )
    if vocabulary is None and not labels.dtype.is_integer:
        raise ValueError(
            f"Head {head.name!r}: labels must be integer class ids in [0, {output.n_classes}) "
            f"(got dtype {labels.dtype.name}). For string labels give "
            "Classification(vocabulary=(...))."
        )
    labels = _flatten_labels(head, labels, 1)
    present = mask = None
    if head.missing_label is not None:
        present = tf.not_equal(labels, tf.constant(head.missing_label, labels.dtype))
        mask = tf.cast(present, tf.float32)
    # These checks run on every step, so they are kept to a few ops, and their
    # messages carry only strings and int32 (other dtypes cost a per-step cond).
    if vocabulary is not None:
        matches = tf.equal(labels[:, None], tf.constant(vocabulary)[None, :])
        unknown = tf.logical_not(tf.reduce_any(matches, axis=1))
        if present is not None:
            unknown = tf.logical_and(present, unknown)
        check = tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(unknown)),
            [f"Head {head.name!r}: labels not in the vocabulary {list(vocabulary)!r}:",
             tf.boolean_mask(labels, unknown)[:10],
             "Add them to the vocabulary, or set missing_label for rows without a label."],
            summarize=10,
        )
        with tf.control_dependencies([check]):
            ids = tf.argmax(tf.cast(matches, tf.int32), axis=1)
        return ids, mask
    ids = tf.cast(labels, tf.int64)
    if present is not None:
        ids = tf.where(present, ids, tf.zeros_like(ids))  # masked rows: any valid id
    low, high = tf.reduce_min(ids), tf.reduce_max(ids)
    check = tf.debugging.Assert(
        tf.logical_and(low >= 0, high < output.n_classes),
        [f"Head {head.name!r}: class ids must be in [0, {output.n_classes}); the batch holds "
         "ids from", tf.cast(low, tf.int32), "to", tf.cast(high, tf.int32),
         "Fix the labels, or set missing_label for rows without a label."],
    )
    with tf.control_dependencies([check]):
        return tf.identity(ids), mask


def _prepare_regression(head: Head, labels: tf.Tensor) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
    if not (labels.dtype.is_floating or labels.dtype.is_integer):
        raise ValueError(
            f"Head {head.name!r}: regression labels must be numbers (got dtype "
            f"{labels.dtype.name}). Convert the column {head.label_key!r} to float."
        )
    labels = _flatten_labels(head, tf.cast(labels, tf.float32), head.output.dimension)
    missing = head.missing_label
    if missing is None:
        return labels, None
    if isinstance(missing, float) and math.isnan(missing):
        absent = tf.math.is_nan(labels)
    else:
        absent = tf.equal(labels, float(missing))
    absent_rows = tf.reduce_any(absent, axis=1)
    mask = 1.0 - tf.cast(absent_rows, tf.float32)
    labels = tf.where(absent_rows[:, None], tf.zeros_like(labels), labels)
    return labels, mask


def per_example_loss(head: Head, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """The head's loss for each example, shape ``[batch]``.

    ``labels`` come from :func:`prepare_labels`; ``outputs`` are the body's
    logits or predictions for this head.

    Example:
        >>> from headkit.heads import Regression
        >>> per_example_loss(Head("y", Regression()), tf.constant([[1.0]]),
        ...                  tf.constant([[3.0]])).numpy().tolist()
        [4.0]
    """
    values = get(head.loss_name)(labels, outputs)
    values = tf.convert_to_tensor(values)
    if values.shape.rank == 2 and values.shape[-1] == 1:
        values = values[:, 0]
    if values.shape.rank is not None and values.shape.rank != 1:
        raise ValueError(
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
        >>> from headkit.heads import Regression
        >>> heads = [Head("a", Regression()), Head("b", Regression(), weight=0.5)]
        >>> total_loss(heads, {"a": tf.constant(2.0), "b": tf.constant(4.0)}).numpy()
        4.0
    """
    terms = [head.weight * head_losses[head.name] for head in heads if head.is_trained]
    terms.extend(tf.cast(r, tf.float32) for r in regularization)
    return tf.add_n(terms)
