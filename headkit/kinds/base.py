"""The interface every output kind implements, and the helpers kinds share.

A kind is the TensorFlow side of an output type (``headkit.spec.output_types``):
what the body must output for it, how its labels are checked and prepared,
its per-example loss, its predictions (with the inverse link), the outputs
of its natural signature and what its metrics compare. One module per kind
implements :class:`Kind`; ``headkit.kinds.KINDS`` lists them.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from headkit.errors import DataError, head_assert_data
from headkit.kinds import losses
from headkit.spec.head import Head

__all__ = ["Kind", "CLASSIFY", "REGRESS", "PREDICT", "flatten_labels", "float_output",
           "row_list", "value_list", "no_missing_label", "labelled_rows", "float32_list",
           "range_check"]

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
PREDICT = "tensorflow/serving/predict"
_SHOWN = 5  # offending values / rows quoted in an error


class Kind:
    """One output kind. Subclasses implement each method for their heads.

    Example:
        >>> from headkit.kinds import get
        >>> get("regression").name
        'regression'
    """

    #: The ``kind`` of the output types this implements.
    name: str = ""
    #: ``f`` in a head's term under uncertainty weighting, ``f * (exp(-s) * loss + s)``: 1/2
    #: for a Gaussian likelihood (regression), 1 otherwise (Kendall, Gal & Cipolla 2018).
    uncertainty_factor: float = 1.0

    def check_output(self, head: Head, output: Any) -> Any:
        """The body's output for ``head`` as the kind needs it (a ``ConfigError`` if unfit)."""
        raise NotImplementedError

    def numpy_labels(self, head: Head, column: np.ndarray) -> np.ndarray:
        """Check one head's label column in numpy; return it ready for the input pipeline.

        Missing labels (NaN, None) become ``head.missing_label``. Errors are
        ``DataError``s naming the head, the values, their rows and the fix.
        """
        raise NotImplementedError

    def prepare_labels(self, head: Head,
                       labels: tf.Tensor) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
        """Loss-ready labels and a mask of labelled rows (None when every row is labelled)."""
        raise NotImplementedError

    def class_example_weights(self, head: Head, labels: tf.Tensor) -> Optional[tf.Tensor]:
        """Each example's weight from the head's ``class_weight``, ``[batch]``; None without one.

        A kind whose loss is a sum of per-class terms (multi-label) weights
        those terms in ``per_example_loss`` instead, and returns None here.
        """
        return None

    def per_example_loss(self, head: Head, labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        """The head's loss per example, shape ``[batch]`` (see :func:`losses.per_example_loss`)."""
        return losses.per_example_loss(head, labels, outputs)

    def predictions(self, head: Head, output: Any) -> Dict[str, tf.Tensor]:
        """The head's prediction tensors from its (checked) body output."""
        raise NotImplementedError

    def natural_method(self, head: Head) -> str:
        """The method of the head's own signature ``N``: classify, regress or predict."""
        raise NotImplementedError

    def signature_outputs(self, head: Head,
                          predictions: Mapping[str, tf.Tensor]) -> Dict[str, Any]:
        """The outputs of the head's own signature, as TensorFlow Serving names them."""
        if self.natural_method(head) == PREDICT:
            return dict(predictions)
        raise NotImplementedError

    def metric_inputs(self, head: Head, metric: Optional[str], labels: tf.Tensor,
                      predictions: Mapping[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
        """``(y_true, y_pred)`` for a registered metric name, or for a Keras metric (None)."""
        raise NotImplementedError


def flatten_labels(head: Head, labels: tf.Tensor, width: int, flat: bool) -> tf.Tensor:
    """Labels as ``[batch]`` (``flat``) or ``[batch, width]``; a wrong shape names the head."""
    rank = labels.shape.rank
    expected = "[batch] or [batch, 1]" if width == 1 else f"[batch, {width}]"
    if (rank is not None and (rank == 0 or rank > 2)) or (
            rank == 2 and labels.shape[-1] is not None and labels.shape[-1] != width):
        raise DataError(
            f"Head {head.name!r}: labels must have shape {expected} (got {labels.shape}). "
            f"Check the label column {head.label_key!r}."
        )
    return tf.reshape(labels, [-1] if flat else [-1, width])


def float_output(head: Head, output: Any, widths: Tuple[int, ...], expected: str) -> tf.Tensor:
    """Check that a body output is ``[batch, w]`` floats for a ``w`` in ``widths``."""
    from headkit.errors import ConfigError

    shape = output.shape
    if shape.rank != 2 or shape[-1] not in widths:
        raise ConfigError(
            f"Head {head.name!r}: the body output has shape {shape}, expected {expected}. "
            f"Give the head's output layer {widths[-1]} unit(s)."
        )
    if not output.dtype.is_floating:
        raise ConfigError(
            f"Head {head.name!r}: the body output has dtype {output.dtype.name}, expected a "
            "float (logits or values). Remove any argmax or cast from the output layer."
        )
    return tf.cast(output, tf.float32)


def row_list(bad: np.ndarray) -> str:
    """The first row indices where ``bad`` holds, for an error message: ``[3, 7, ...]``."""
    rows = np.flatnonzero(bad)
    text = ", ".join(str(r) for r in rows[:_SHOWN])
    more = f", ... ({len(rows)} rows in all)" if len(rows) > _SHOWN else ""
    return f"[{text}{more}]"


def value_list(values: np.ndarray) -> str:
    """The first distinct values, for an error message: ``['x', 3, ...]``."""
    unique = list(dict.fromkeys(v.item() if hasattr(v, "item") else v for v in values.ravel()))
    shown = ", ".join(repr(v) for v in unique[:_SHOWN])
    return f"[{shown}{', ...' if len(unique) > _SHOWN else ''}]"


def is_missing(value: Any) -> bool:
    """NaN or None: a value that stands for a missing label."""
    return value is None or (isinstance(value, float) and value != value)


def missing_rows(column: np.ndarray) -> np.ndarray:
    """Rows holding NaN or None (any entry of the row)."""
    if column.size == 0:
        return np.zeros(len(column), bool)
    if column.dtype.kind == "f":
        missing = np.isnan(column)
    elif column.dtype.kind == "O":
        missing = np.vectorize(is_missing, otypes=[bool])(column)
    else:
        missing = np.zeros(column.shape, bool)
    return missing.reshape(len(column), -1).any(axis=1)


def no_missing_label(head: Head, missing: np.ndarray, example: str) -> DataError:
    """The error for labels missing in a head that has no ``missing_label``."""
    return DataError(
        f"Head {head.name!r}: labels {head.label_key!r} are missing (NaN or None) at rows "
        f"{row_list(missing)}, but the head has no missing_label. Set missing_label="
        f"{example} on the head so those rows are masked out of its loss and metrics, "
        "or drop the rows."
    )


def labelled_rows(head: Head, values: np.ndarray) -> np.ndarray:
    """Rows of checked numeric labels ``[n, d]`` that are not ``head.missing_label``."""
    missing = head.missing_label
    if missing is None:
        return np.ones(len(values), bool)
    if isinstance(missing, float) and missing != missing:
        return ~np.isnan(values).any(axis=1)
    return ~(values == missing).any(axis=1)


def float32_list(values: np.ndarray) -> str:
    """:func:`value_list` of float32 values, shortest form: ``-0.1``, not ``-0.100000001``."""
    shortest = [float(np.format_float_positional(v, trim="-")) for v in values.ravel()]
    return value_list(np.array(shortest))


def range_check(head: Head, labels: tf.Tensor, low: Optional[float], high: Optional[float],
                problem: str, fix: str) -> tf.Operation:
    """An in-graph check that float ``labels`` lie in ``[low, high]`` (a bound may be None).

    Its data is strings only: it runs on every step, and other dtypes cost a
    per-step cond.
    """
    bad = tf.zeros_like(labels, tf.bool)
    if low is not None:
        bad = tf.logical_or(bad, labels < low)
    if high is not None:
        bad = tf.logical_or(bad, labels > high)
    return tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        head_assert_data(head.name, problem,
                         tf.strings.as_string(tf.boolean_mask(labels, bad)[:10], shortest=True),
                         fix),
        summarize=10,
    )
