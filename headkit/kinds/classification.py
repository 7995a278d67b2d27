"""The classification kind: one of ``n_classes`` classes, by softmax (or one sigmoid logit).

Labels are class ids, or names from the head's vocabulary. The natural
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
    missing_rows,
    no_missing_label,
    row_list,
    value_list,
)
from headkit.spec.head import Head

__all__ = ["Classification", "KIND"]


class Classification(Kind):
    """The :class:`~headkit.spec.output_types.Classification` output type's kind.

    Example:
        >>> from headkit import spec
        >>> head = spec.Head("c", spec.Classification(2))
        >>> KIND.predictions(head, tf.constant([[2.0]]))["classes"].numpy().tolist()
        [[b'1']]
    """

    name = "classification"

    def check_output(self, head: Head, output: Any) -> tf.Tensor:
        n = head.output.n_classes
        widths = (1, 2) if n == 2 else (n,)
        expected = "[batch, 1] or [batch, 2]" if n == 2 else f"[batch, {n}]"
        return float_output(head, output, widths, expected)

    # ------------------------------------------------------------------ labels

    def numpy_labels(self, head: Head, column: np.ndarray) -> np.ndarray:
        output = head.output
        if column.ndim == 2 and column.shape[1] == 1:
            column = column[:, 0]
        if column.ndim != 1:
            raise DataError(
                f"Head {head.name!r}: labels {head.label_key!r} must have shape [n] or [n, 1], "
                f"one class per row (got shape {column.shape})."
            )
        missing = missing_rows(column)
        if missing.any() and head.missing_label is None:
            raise no_missing_label(head, missing, "''" if output.vocabulary is not None else "-1")
        if output.vocabulary is not None:
            return _vocabulary_labels(head, column, missing)
        return _id_labels(head, column, missing)

    def prepare_labels(self, head: Head,
                       labels: tf.Tensor) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
        output = head.output
        labels = tf.convert_to_tensor(labels)
        vocabulary = output.vocabulary
        if vocabulary is not None and labels.dtype != tf.string:
            raise DataError(
                f"Head {head.name!r}: labels must be strings from the vocabulary {vocabulary!r} "
                f"(got dtype {labels.dtype.name}). Pass the class names, or drop the vocabulary "
                "to use class ids."
            )
        if vocabulary is None and not labels.dtype.is_integer:
            raise DataError(
                f"Head {head.name!r}: labels must be integer class ids in [0, {output.n_classes}) "
                f"(got dtype {labels.dtype.name}). For string labels give "
                "Classification(vocabulary=(...))."
            )
        labels = flatten_labels(head, labels, 1, flat=True)
        present = mask = None
        if head.missing_label is not None:
            present = tf.not_equal(labels, tf.constant(head.missing_label, labels.dtype))
            mask = tf.cast(present, tf.float32)
        # These checks run on every step, so they are kept to a few ops, and their
        # data is only strings and int32 (other dtypes cost a per-step cond).
        if vocabulary is not None:
            matches = tf.equal(labels[:, None], tf.constant(vocabulary)[None, :])
            unknown = tf.logical_not(tf.reduce_any(matches, axis=1))
            if present is not None:
                unknown = tf.logical_and(present, unknown)
            check = tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(unknown)),
                head_assert_data(
                    head.name, f"labels not in the vocabulary {list(vocabulary)!r}:",
                    tf.boolean_mask(labels, unknown)[:10],
                    "Add them to the vocabulary, or set missing_label for rows without a label."),
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
            head_assert_data(
                head.name, f"class ids must be in [0, {output.n_classes}); the batch holds "
                "ids from", tf.cast(low, tf.int32), "to", tf.cast(high, tf.int32),
                "Fix the labels, or set missing_label for rows without a label."),
        )
        with tf.control_dependencies([check]):
            return tf.identity(ids), mask

    def class_example_weights(self, head: Head, labels: tf.Tensor) -> Optional[tf.Tensor]:
        """The weight of each example's label class (``labels``: class ids from prepare_labels)."""
        weights = head.class_weights
        if weights is None:
            return None
        return tf.gather(tf.constant(weights, tf.float32), tf.reshape(labels, [-1]))

    # ------------------------------------------------------------------ outputs

    def predictions(self, head: Head, output: Any) -> Dict[str, tf.Tensor]:
        """``logits``, ``probabilities`` ``[batch, n]``, ``class_ids`` int64 ``[batch, 1]``,
        ``classes`` string ``[batch, 1]`` and ``all_classes`` string ``[batch, n]``."""
        n_classes = head.output.n_classes
        if output.shape[-1] == 1:
            positive = tf.sigmoid(output)
            probabilities = tf.concat([1.0 - positive, positive], axis=1)
            class_ids = tf.cast(output > 0.0, tf.int64)
        else:
            probabilities = tf.nn.softmax(output)
            class_ids = tf.argmax(output, axis=1, output_type=tf.int64)[:, None]
        vocabulary = head.output.vocabulary
        if vocabulary is not None:
            names = tf.constant(vocabulary)
            classes = tf.gather(names, class_ids)
        else:
            names = tf.strings.as_string(tf.range(n_classes, dtype=tf.int64))
            classes = tf.strings.as_string(class_ids)
        all_classes = tf.tile(names[None, :], [tf.shape(output)[0], 1])
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
        """accuracy: class ids; the binary metrics (auc, auc_pr, precision, recall,
        label_mean, prediction_mean, accuracy_baseline): ids and the probability of class 1;
        a Keras metric: ids ``[batch, 1]`` and probabilities ``[batch, n_classes]``."""
        if metric == "accuracy":
            return labels, tf.reshape(predictions["class_ids"], [-1])
        if metric is not None:  # the catalog's binary-only metrics
            return labels, predictions["probabilities"][:, 1]
        return labels[:, None], predictions["probabilities"]


def _id_labels(head: Head, column: np.ndarray, missing: np.ndarray) -> np.ndarray:
    n_classes = head.output.n_classes
    present = ~missing
    if column.dtype.kind in "USO" and any(isinstance(v, (str, bytes)) for v in column[present]):
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} must be integer class ids in "
            f"[0, {n_classes}) (got strings such as {value_list(column[present][:5])}). "
            "Give the head a vocabulary: Classification(vocabulary=(...))."
        )
    try:
        numbers = np.where(missing, 0, column).astype(np.float64)
    except (TypeError, ValueError) as error:
        raise DataTypeError(
            f"Head {head.name!r}: labels {head.label_key!r} must be integer class ids "
            f"(got dtype {column.dtype}: {error})."
        ) from error
    fractional = present & (numbers != np.round(numbers))
    if fractional.any():
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} must be whole class ids; got "
            f"{value_list(numbers[fractional])} at rows {row_list(fractional)}. For a continuous "
            "target use hk.Regression()."
        )
    ids = np.where(missing, head.missing_label if missing.any() else 0, numbers).astype(np.int64)
    labelled = present if head.missing_label is None else present & (ids != head.missing_label)
    out = labelled & ((ids < 0) | (ids >= n_classes))
    if out.any():
        raise DataError(
            f"Head {head.name!r}: class ids must be in [0, {n_classes}); labels "
            f"{head.label_key!r} hold {value_list(ids[out])} at rows {row_list(out)}. Fix the "
            "labels, raise n_classes, or set missing_label for rows without a label."
        )
    return ids


def _vocabulary_labels(head: Head, column: np.ndarray, missing: np.ndarray) -> np.ndarray:
    vocabulary = head.output.vocabulary
    if column.dtype.kind not in "USO":
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} must be strings from the "
            f"vocabulary {vocabulary!r} (got dtype {column.dtype}, e.g. "
            f"{value_list(column[:5])}). Map the ids to names, or drop the vocabulary."
        )
    values = np.array(
        [head.missing_label if m else (v.decode() if isinstance(v, bytes) else v)
         for v, m in zip(column, missing)],
        dtype=object,
    )
    allowed = set(vocabulary) | {head.missing_label}
    unknown = np.array([v not in allowed for v in values], dtype=bool)
    if unknown.any():
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} hold {value_list(values[unknown])} at "
            f"rows {row_list(unknown)}, not in the vocabulary {vocabulary!r}. Add them to the "
            "vocabulary, or set missing_label for rows without a label."
        )
    return values.astype(str)


KIND = Classification()
