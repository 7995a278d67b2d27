"""The logistic kind: a value in [0, 1] per example, predicted as ``sigmoid(output)``.

Labels are numbers in ``[0, 1]`` (a share, a probability, or 0/1), checked and
prepared as a one-value regression's are, then checked for their range. The
natural signature is ``tensorflow/serving/regress``, with the sigmoid.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from headkit.errors import DataError
from headkit.kinds import regression
from headkit.kinds.base import (
    REGRESS,
    Kind,
    float32_list,
    labelled_rows,
    range_check,
    row_list,
)
from headkit.spec.head import Head

__all__ = ["Logistic", "KIND"]


class Logistic(Kind):
    """The :class:`~headkit.spec.output_types.Logistic` output type's kind.

    The body output is a logit; ``predictions`` is its sigmoid.

    Example:
        >>> from headkit import spec
        >>> head = spec.Head("share", spec.Logistic())
        >>> KIND.predictions(head, tf.constant([[0.0]]))["predictions"].numpy().tolist()
        [[0.5]]
    """

    name = "logistic"

    def check_output(self, head: Head, output: Any) -> tf.Tensor:
        return regression.KIND.check_output(head, output)

    def numpy_labels(self, head: Head, column: np.ndarray) -> np.ndarray:
        values = regression.KIND.numpy_labels(head, column)
        outside = labelled_rows(head, values) & ((values < 0) | (values > 1)).any(axis=1)
        if outside.any():
            raise DataError(
                f"Head {head.name!r}: logistic labels {head.label_key!r} must be in [0, 1]; got "
                f"{float32_list(values[outside])} at rows {row_list(outside)}. Scale the target to "
                "[0, 1], or use hk.Regression() for an unbounded one."
            )
        return values

    def prepare_labels(self, head: Head,
                       labels: tf.Tensor) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
        labels, mask = regression.KIND.prepare_labels(head, labels)  # unlabelled rows are 0
        check = range_check(head, labels, 0.0, 1.0, "logistic labels must be in [0, 1]; the "
                            "batch holds", "Scale the target to [0, 1], or use hk.Regression().")
        with tf.control_dependencies([check]):
            return tf.identity(labels), mask

    def predictions(self, head: Head, output: Any) -> Dict[str, tf.Tensor]:
        """``predictions``: ``sigmoid(output)`` ``[batch, 1]``; ``logits``: the output."""
        return {"predictions": tf.sigmoid(output), "logits": output}

    def natural_method(self, head: Head) -> str:
        return REGRESS

    def signature_outputs(self, head: Head,
                          predictions: Mapping[str, tf.Tensor]) -> Dict[str, Any]:
        return {"outputs": predictions["predictions"]}

    def metric_inputs(self, head: Head, metric: Optional[str], labels: tf.Tensor,
                      predictions: Mapping[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
        """Labels and sigmoids, both ``[batch, 1]``, for every metric."""
        return labels, predictions["predictions"]


KIND = Logistic()
