"""The Poisson kind: a count per example, predicted as a rate ``exp(output)`` (a log link).

Labels are counts (numbers >= 0), checked and prepared as a one-value
regression's are, then checked for their sign. The natural signature is
``tensorflow/serving/regress``, with the rate.
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

__all__ = ["Poisson", "KIND"]


class Poisson(Kind):
    """The :class:`~headkit.spec.output_types.Poisson` output type's kind.

    The body output is the log of the rate; ``predictions`` is the rate.

    Example:
        >>> from headkit import spec
        >>> head = spec.Head("visits", spec.Poisson())
        >>> KIND.predictions(head, tf.constant([[0.0]]))["predictions"].numpy().tolist()
        [[1.0]]
    """

    name = "poisson"

    def check_output(self, head: Head, output: Any) -> tf.Tensor:
        return regression.KIND.check_output(head, output)

    def numpy_labels(self, head: Head, column: np.ndarray) -> np.ndarray:
        values = regression.KIND.numpy_labels(head, column)
        negative = labelled_rows(head, values) & (values < 0).any(axis=1)
        if negative.any():
            raise DataError(
                f"Head {head.name!r}: Poisson labels {head.label_key!r} must be counts >= 0; got "
                f"{float32_list(values[negative])} at rows {row_list(negative)}. Fix the labels, "
                "or use hk.Regression() for a target that can be negative."
            )
        return values

    def prepare_labels(self, head: Head,
                       labels: tf.Tensor) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
        labels, mask = regression.KIND.prepare_labels(head, labels)  # unlabelled rows are 0
        check = range_check(head, labels, 0.0, None, "Poisson labels must be counts >= 0; the "
                            "batch holds", "Fix the labels, or use hk.Regression().")
        with tf.control_dependencies([check]):
            return tf.identity(labels), mask

    def predictions(self, head: Head, output: Any) -> Dict[str, tf.Tensor]:
        """``predictions``: the rate ``exp(output)`` ``[batch, 1]``; ``logits``: the output."""
        return {"predictions": tf.exp(output), "logits": output}

    def natural_method(self, head: Head) -> str:
        return REGRESS

    def signature_outputs(self, head: Head,
                          predictions: Mapping[str, tf.Tensor]) -> Dict[str, Any]:
        return {"outputs": predictions["predictions"]}

    def metric_inputs(self, head: Head, metric: Optional[str], labels: tf.Tensor,
                      predictions: Mapping[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
        """Labels and rates, both ``[batch, 1]``, for every metric."""
        return labels, predictions["predictions"]


KIND = Poisson()
