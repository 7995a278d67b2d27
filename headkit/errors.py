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


_ASSERTION = re.compile(r"assertion failed: (\[.*?\])\s*(?:\n|\t|$)", re.S)


def _assertion_text(message: str) -> Optional[str]:
    match = _ASSERTION.search(message)
    if not match:
        return None
    parts = re.findall(r"\[((?:[^\[\]]|\[[^\[\]]*\])*)\]", match.group(1))
    text = " ".join(p.strip() for p in parts)
    return text.replace("\\'", "'")


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
            step_match = re.search(r"global step (\d+)", text)
            heads_match = re.search(r"in head\(s\) (.*?) No update", text)
            heads = heads_match.group(1).split() if heads_match else []
            raise NonFiniteLossError(
                text,
                heads=[h for h in heads if not h.startswith("(")],
                step=int(step_match.group(1)) if step_match else None,
            ) from None
        raise DataError(text) from None
