"""The multi-label kind: any number of ``n_classes`` classes per example, one sigmoid per class.

Labels are multi-hot rows ``[n, n_classes]``, or lists of names from the head's
vocabulary, which the numpy check turns into multi-hot rows. The natural
signature is ``tensorflow/serving/classify`` with every class and its score.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from headkit.errors import DataError, DataTypeError, head_assert_data
from headkit.kinds.base import (
    CLASSIFY,
    Kind,
    flatten_labels,
    float_output,
    is_missing,
    no_missing_label,
    row_list,
    value_list,
)
from headkit.spec.head import Head

__all__ = ["MultiLabel", "KIND"]


class MultiLabel(Kind):
    """The :class:`~headkit.spec.output_types.MultiLabel` output type's kind.

    Example:
        >>> from headkit import spec
        >>> head = spec.Head("tags", spec.MultiLabel(vocabulary=("a", "b", "c")))
        >>> KIND.predictions(head, tf.constant([[2.0, -1.0, 0.5]]))["classes"].numpy().tolist()
        [[b'a', b'', b'c']]
    """

    name = "multi_label"

    def check_output(self, head: Head, output: Any) -> tf.Tensor:
        n = head.output.n_classes
        return float_output(head, output, (n,), f"[batch, {n}]")

    # ------------------------------------------------------------------ labels

    def numpy_labels(self, head: Head, column: np.ndarray) -> np.ndarray:
        """Multi-hot int64 ``[n, n_classes]``; a row without a label is all ``missing_label``."""
        if _holds_names(column):
            hot, missing = _name_rows(head, column)
        else:
            hot, missing = _multi_hot_rows(head, column)
        if missing.any():
            if head.missing_label is None:
                raise no_missing_label(head, missing, "-1")
            hot[missing] = head.missing_label
        return hot

    def prepare_labels(self, head: Head,
                       labels: tf.Tensor) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
        """Float32 multi-hot ``[batch, n_classes]`` (0 in unlabelled rows) and the row mask."""
        n_classes = head.output.n_classes
        labels = tf.convert_to_tensor(labels)
        if not (labels.dtype.is_integer or labels.dtype.is_floating or labels.dtype.is_bool):
            raise DataError(
                f"Head {head.name!r}: labels must be multi-hot rows of 0 and 1, shape "
                f"[batch, {n_classes}] (got dtype {labels.dtype.name}). hk.input_fn turns lists "
                "of class names into such rows; an input_fn of your own must do the same."
            )
        if labels.shape.rank is not None and labels.shape.rank != 2:
            raise DataError(
                f"Head {head.name!r}: labels must be multi-hot rows, shape [batch, {n_classes}] "
                f"(got {labels.shape}). Check the label column {head.label_key!r}."
            )
        values = tf.cast(flatten_labels(head, labels, n_classes, flat=False), tf.float32)
        mask = None
        if head.missing_label is not None:
            absent = tf.reduce_all(tf.equal(values, float(head.missing_label)), axis=1)
            mask = 1.0 - tf.cast(absent, tf.float32)
            values = tf.where(absent[:, None], tf.zeros_like(values), values)
        bad = tf.logical_and(tf.not_equal(values, 0.0), tf.not_equal(values, 1.0))
        # Runs on every step: a few ops, and only strings in the check's data.
        check = tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(bad)),
            head_assert_data(
                head.name, "multi-hot labels must be 0 or 1; the batch holds",
                tf.strings.as_string(tf.boolean_mask(values, bad)[:10], shortest=True),
                "Fix the labels, or set missing_label=-1 and give rows without a label as -1."),
            summarize=10,
        )
        with tf.control_dependencies([check]):
            return tf.identity(values), mask

    # ------------------------------------------------------------------ outputs

    def per_example_loss(self, head: Head, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        """The sigmoid cross entropy averaged over the classes; with ``class_weight``, each
        class's term is multiplied by its class's weight before the average.

        Example:
            >>> from headkit import spec
            >>> head = spec.Head("tags", spec.MultiLabel(2), class_weight={1: 3.0})
            >>> loss = KIND.per_example_loss(head, tf.constant([[0.0, 1.0]]),
            ...                              tf.constant([[0.0, 0.0]]))
            >>> round(float(loss[0]), 4)  # (1 + 3) * log(2) / 2
            1.3863
        """
        weights = head.class_weights
        if weights is None:
            return super().per_example_loss(head, labels, outputs)
        terms = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.cast(labels, tf.float32), logits=tf.cast(outputs, tf.float32))
        return tf.reduce_mean(terms * tf.constant(weights, tf.float32), axis=-1)

    def predictions(self, head: Head, output: Any) -> Dict[str, tf.Tensor]:
        """``logits`` and ``probabilities`` (sigmoid) ``[batch, n]``; ``class_ids`` int64
        ``[batch, n]``, 1 where the probability is above the threshold; ``classes`` string
        ``[batch, n]``, the class's name there and ``""`` elsewhere; ``all_classes`` string
        ``[batch, n]``, every class's name."""
        n_classes = head.output.n_classes
        probabilities = tf.sigmoid(output)
        class_ids = tf.cast(probabilities > head.output.threshold, tf.int64)
        vocabulary = head.output.vocabulary
        if vocabulary is not None:
            names = tf.constant(vocabulary)
        else:
            names = tf.strings.as_string(tf.range(n_classes, dtype=tf.int64))
        all_classes = tf.tile(names[None, :], [tf.shape(output)[0], 1])
        classes = tf.where(class_ids > 0, all_classes, tf.fill(tf.shape(all_classes), ""))
        return {
            "logits": output,
            "probabilities": probabilities,
            "class_ids": class_ids,
            "classes": classes,
            "all_classes": all_classes,
        }

    def natural_method(self, head: Head) -> str:
        return CLASSIFY

    def signature_outputs(self, head: Head,
                          predictions: Mapping[str, tf.Tensor]) -> Dict[str, Any]:
        return {"classes": predictions["all_classes"], "scores": predictions["probabilities"]}

    def metric_inputs(self, head: Head, metric: Optional[str], labels: tf.Tensor,
                      predictions: Mapping[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
        """Multi-hot labels ``[batch, n]`` against: for precision and recall, ``class_ids``
        as 0.0/1.0 (so the threshold is the head's); otherwise the probabilities. The
        catalog's metrics pool every (row, class) pair: micro-averaged."""
        if metric in ("precision", "recall"):
            return labels, tf.cast(predictions["class_ids"], tf.float32)
        return labels, predictions["probabilities"]


def _holds_names(column: np.ndarray) -> bool:
    """Whether a label column holds class names (strings, or a list per row)."""
    if column.dtype.kind in "US":
        return True
    if column.dtype.kind != "O":
        return False
    return any(isinstance(v, (str, bytes, list, tuple, set, frozenset, np.ndarray))
               for v in column.ravel())


def _name_rows(head: Head, column: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Lists of class names, one per row -> multi-hot int64 rows, and the missing rows."""
    output = head.output
    vocabulary = output.vocabulary
    if vocabulary is None:
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} hold class names (e.g. "
            f"{value_list(_first_names(column))}) but the head has no vocabulary. Give it one, "
            f"hk.MultiLabel(vocabulary=(...)), or pass multi-hot rows [n, {output.n_classes}]."
        )
    index = {name: i for i, name in enumerate(vocabulary)}
    hot = np.zeros((len(column), output.n_classes), np.int64)
    missing = np.zeros(len(column), bool)
    not_lists = np.zeros(len(column), bool)
    unknown = np.zeros(len(column), bool)
    unknown_names = []
    for row, entry in enumerate(column):
        if is_missing(entry):
            missing[row] = True
            continue
        if isinstance(entry, (str, bytes)) or not hasattr(entry, "__iter__"):
            not_lists[row] = True
            continue
        for name in entry:
            name = name.decode() if isinstance(name, bytes) else name
            if isinstance(name, str) and name in index:
                hot[row, index[name]] = 1
            else:
                unknown[row] = True
                unknown_names.append(name if isinstance(name, (str, int, float)) else str(name))
    if not_lists.any():
        raise DataTypeError(
            f"Head {head.name!r}: labels {head.label_key!r} must hold a list of class names per "
            f"row (e.g. ['{vocabulary[0]}'], or [] for none); rows {row_list(not_lists)} hold "
            f"{value_list(_objects(column[not_lists]))}. Wrap each name in a list."
        )
    if unknown.any():
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} hold "
            f"{value_list(_objects(unknown_names))} at rows {row_list(unknown)}, not in the "
            f"vocabulary {vocabulary!r}. Add them to the vocabulary, or fix the labels."
        )
    return hot, missing


def _multi_hot_rows(head: Head, column: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Multi-hot rows of 0 and 1 (ints, booleans or floats) -> int64, and the missing rows."""
    n_classes = head.output.n_classes
    if column.ndim != 2 or column.shape[1] != n_classes:
        names = " or a list of class names per row" if head.output.vocabulary else ""
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} must be multi-hot rows, shape "
            f"[n, {n_classes}] with one 0/1 column per class{names} (got shape {column.shape})."
        )
    try:
        if column.dtype.kind not in "biufO":
            raise TypeError(f"dtype {column.dtype}")
        if column.dtype.kind == "O" and column.size:
            column = np.where(np.vectorize(is_missing, otypes=[bool])(column), np.nan, column)
        values = column.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise DataTypeError(
            f"Head {head.name!r}: multi-hot labels {head.label_key!r} must be 0 or 1 (got "
            f"{error}, e.g. {value_list(column[:2])}). Convert the column to int."
        ) from error
    missing = np.isnan(values).any(axis=1)
    present = ~missing
    if head.missing_label is not None:  # rows given as missing_label already
        present &= ~(values == head.missing_label).all(axis=1)
    bad = present[:, None] & (values != 0) & (values != 1)
    if bad.any():
        raise DataError(
            f"Head {head.name!r}: multi-hot labels {head.label_key!r} must be 0 or 1; got "
            f"{value_list(values[bad])} at rows {row_list(bad.any(axis=1))}. Fix the labels; "
            "for a row without a label give NaN or None and set missing_label=-1 on the head."
        )
    return np.where(np.isnan(values), 0, values).astype(np.int64), missing


def _objects(values: Any) -> np.ndarray:
    """Values (lists among them) as a 1-D object array, for :func:`value_list`."""
    array = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        array[i] = value
    return array


def _first_names(column: np.ndarray) -> np.ndarray:
    names = []
    for entry in column.ravel():
        if isinstance(entry, (str, bytes)):
            names.append(entry)
        elif isinstance(entry, (list, tuple, np.ndarray)):
            names.extend(entry)
        if len(names) >= 5:
            break
    return _objects(names)


KIND = MultiLabel()
