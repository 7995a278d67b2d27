"""headkit's errors, and the translation of its in-graph checks into them.

The data checks inside the graph (labels outside the vocabulary, class ids
out of range, bad example weights, non-finite losses) fail as TensorFlow
``InvalidArgumentError``s whose text is buried in a long graph trace. The
Estimator methods re-raise them as these errors, with only headkit's words.
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator, Optional

import tensorflow as tf

__all__ = ["DataError", "NonFiniteLossError", "translate_graph_errors"]


class DataError(ValueError):
    """A batch of data broke a head's contract (e.g. a label outside the vocabulary).

    Example:
        >>> raise DataError("Head 'kind': labels not in the vocabulary ['a', 'b']: [zebra]")
        Traceback (most recent call last):
        ...
        headkit.errors.DataError: Head 'kind': labels not in the vocabulary ['a', 'b']: [zebra]
    """


class NonFiniteLossError(FloatingPointError):
    """A head's loss was NaN or inf; no update was applied and no checkpoint written.

    Attributes:
        heads: the names of the heads whose loss was not finite.
        step: the global step of the failing batch, if known.

    Example:
        >>> NonFiniteLossError("non-finite loss", heads=["size"], step=12).heads
        ['size']
    """

    def __init__(self, message: str, heads: Optional[list] = None,
                 step: Optional[int] = None) -> None:
        super().__init__(message)
        self.heads = list(heads or [])
        self.step = step


# tf.debugging.Assert prints its data as "[part] [part] ..." on one line.
_ASSERTION = re.compile(r"assertion failed: \[(.*?)\]\s*(?:\n|\t|$)", re.S)


def _assertion_text(message: str) -> Optional[str]:
    match = _ASSERTION.search(message)
    if not match:
        return None
    parts = match.group(1).split("] [")
    return " ".join(p.strip() for p in parts).replace("\\'", "'")


def _non_finite(text: str) -> NonFiniteLossError:
    """The finite-loss check's data (step, head names, finite flags) as a sentence."""
    match = re.search(r"global step (-?\d+) heads (.*?) finite ([\d ]+)", text)
    if not match:
        return NonFiniteLossError(text)
    step = int(match.group(1))
    names, flags = match.group(2).split(), match.group(3).split()
    bad = [name for name, flag in zip(names, flags) if flag == "0"]
    message = (
        f"headkit: non-finite loss at global step {step} in head(s) {' '.join(bad)}. "
        "No update was applied. Check the labels and features of this batch."
    )
    return NonFiniteLossError(message, heads=[n for n in bad if n != "(total)"], step=step)


@contextlib.contextmanager
def translate_graph_errors() -> Iterator[None]:
    """Re-raise headkit's in-graph assertion failures as ``DataError`` / ``NonFiniteLossError``.

    Other TensorFlow errors pass through unchanged.

    Example:
        >>> with translate_graph_errors():
        ...     estimator.train(input_fn, steps=10)  # doctest: +SKIP
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        text = _assertion_text(error.message or "")
        if text is None or not ("Head '" in text or "headkit:" in text):
            raise
        if text.startswith("headkit: non-finite loss"):
            raise _non_finite(text) from None
        raise DataError(text) from None
