"""The regression kind: ``dimension`` continuous values per example.

Its natural signature is ``tensorflow/serving/regress`` when ``dimension`` is 1;
a regress signature holds one value per example, so a wider head is served
by a predict signature instead.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from headkit.errors import DataError, DataTypeError
from headkit.kinds.base import (
    PREDICT,
    REGRESS,
    Kind,
    flatten_labels,
    float_output,
    is_missing,
    no_missing_label,
    row_list,
    value_list,
)
from headkit.spec.head import Head

__all__ = ["Regression", "KIND"]


class Regression(Kind):
    """The :class:`~headkit.spec.output_types.Regression` output type's kind.

    Example:
        >>> from headkit import spec
        >>> KIND.natural_method(spec.Head("y", spec.Regression()))
        'tensorflow/serving/regress'
    """

    name = "regression"
    uncertainty_factor = 0.5

    def check_output(self, head: Head, output: Any) -> tf.Tensor:
        dimension = head.output.dimension
        if output.shape.rank == 1 and dimension == 1:
            output = output[:, None]
        return float_output(head, output, (dimension,), f"[batch, {dimension}]")

    def numpy_labels(self, head: Head, column: np.ndarray) -> np.ndarray:
        dimension = head.output.dimension
        if column.ndim == 1 and dimension == 1:
            column = column.reshape(-1, 1)
        if column.ndim != 2 or column.shape[1] != dimension:
            expected = "[n] or [n, 1]" if dimension == 1 else f"[n, {dimension}]"
            raise DataError(
                f"Head {head.name!r}: labels {head.label_key!r} must have shape {expected} "
                f"(got shape {column.shape}). The head predicts {dimension} value(s) per row."
            )
        try:
            if column.dtype.kind not in "fiuO":
                raise TypeError(f"dtype {column.dtype}")
            if column.dtype.kind == "O" and column.size:
                column = np.where(np.vectorize(is_missing, otypes=[bool])(column), np.nan, column)
            values = column.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise DataTypeError(
                f"Head {head.name!r}: regression labels {head.label_key!r} must be numbers "
                f"(got {error}, e.g. {value_list(column[:5])}). Convert the column to float."
            ) from error
        infinite = np.isinf(values).any(axis=1)
        if infinite.any():
            raise DataError(
                f"Head {head.name!r}: labels {head.label_key!r} hold non-finite values (inf) at "
                f"rows {row_list(infinite)}; expected finite numbers. Fix or drop those rows."
            )
        missing = np.isnan(values).any(axis=1)
        if missing.any():
            if head.missing_label is None:
                raise no_missing_label(head, missing, "float('nan')")
            values = np.where(np.isnan(values), head.missing_label, values)
        return values.astype(np.float32)

    def prepare_labels(self, head: Head,
                       labels: tf.Tensor) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
        labels = tf.convert_to_tensor(labels)
        if not (labels.dtype.is_floating or labels.dtype.is_integer):
            raise DataError(
                f"Head {head.name!r}: regression labels must be numbers (got dtype "
                f"{labels.dtype.name}). Convert the column {head.label_key!r} to float."
            )
        labels = flatten_labels(head, tf.cast(labels, tf.float32), head.output.dimension,
                                flat=False)
        missing = head.missing_label
        if missing is None:
            return _normalized(head, labels), None
        if isinstance(missing, float) and math.isnan(missing):
            absent = tf.math.is_nan(labels)
        else:
            absent = tf.equal(labels, float(missing))
        absent_rows = tf.reduce_any(absent, axis=1)
        mask = 1.0 - tf.cast(absent_rows, tf.float32)
        labels = tf.where(absent_rows[:, None], tf.zeros_like(labels), _normalized(head, labels))
        return labels, mask

    def predictions(self, head: Head, output: Any) -> Dict[str, tf.Tensor]:
        """``predictions`` ``[batch, dimension]``, in the labels' units: ``output * std + mean``."""
        return {"predictions": _in_label_units(head, output)}

    def natural_method(self, head: Head) -> str:
        return REGRESS if head.output.dimension == 1 else PREDICT

    def signature_outputs(self, head: Head,
                          predictions: Mapping[str, tf.Tensor]) -> Dict[str, Any]:
        if self.natural_method(head) == PREDICT:
            return dict(predictions)
        return {"outputs": predictions["predictions"]}

    def metric_inputs(self, head: Head, metric: Optional[str], labels: tf.Tensor,
                      predictions: Mapping[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
        """Labels and predictions, both ``[batch, dimension]`` in the labels' units."""
        return _in_label_units(head, labels), predictions["predictions"]


def _normalized(head: Head, labels: tf.Tensor) -> tf.Tensor:
    """``(labels - mean) / std``: what the loss compares with the body's output."""
    output = head.output
    if not getattr(output, "is_normalized", False):  # Poisson and Logistic share these
        return labels
    return (labels - tf.constant(output.means, tf.float32)) / tf.constant(output.stds, tf.float32)


def _in_label_units(head: Head, values: tf.Tensor) -> tf.Tensor:
    """``values * std + mean``: normalised values (body output, loss labels) in label units."""
    output = head.output
    if not getattr(output, "is_normalized", False):  # Poisson and Logistic share these
        return values
    return values * tf.constant(output.stds, tf.float32) + tf.constant(output.means, tf.float32)


KIND = Regression()
