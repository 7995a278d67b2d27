"""headkit's errors, and the one place where in-graph check messages are written and read.

Every error headkit raises is a :class:`HeadkitError`, and each subclass keeps
the builtin base it always had (``DataError`` is still a ``ValueError``,
``ExportError`` a ``RuntimeError``), so ``except ValueError`` keeps working.

The data checks that run inside a graph (labels outside the vocabulary, class
ids out of range, bad example weights, non-finite losses) fail as TensorFlow
``InvalidArgumentError``s whose text is buried in a long graph trace. The
functions here write the data those checks carry (``*_assert_data``) and read
it back into headkit errors (:func:`translate_graph_errors`): the format lives
in this module alone.

This module imports no TensorFlow at import time.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator, List, Optional, Sequence

__all__ = [
    "HeadkitError",
    "ConfigError",
    "ConfigTypeError",
    "DataError",
    "DataTypeError",
    "NonFiniteLossError",
    "ExportError",
    "CheckpointError",
    "RecordMismatchError",
    "ClusterError",
    "BackendUnavailableError",
    "translate_graph_errors",
]


class HeadkitError(Exception):
    """The base of every error headkit raises.

    Example:
        >>> issubclass(DataError, HeadkitError), issubclass(DataError, ValueError)
        (True, True)
    """


class ConfigError(HeadkitError, ValueError):
    """A head, a HeadSet, a rule or a file describes something headkit cannot build.

    Raised when the object is built. ``field`` names the field at fault
    (``"weight"``, ``"metrics[1]"``, ``"output.n_classes"``) when one is, so
    that a config file can prefix the path of the head it read.

    Example:
        >>> ConfigError("weight must be >= 0 (got -1).", field="weight").field
        'weight'
    """

    def __init__(self, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigTypeError(ConfigError, TypeError):
    """A :class:`ConfigError` for a value of the wrong type (still a ``TypeError``).

    Example:
        >>> isinstance(ConfigTypeError("output must be hk.Regression()"), TypeError)
        True
    """


class DataError(HeadkitError, ValueError):
    """A batch of data broke a head's contract (e.g. a label outside the vocabulary).

    Example:
        >>> raise DataError("Head 'kind': labels not in the vocabulary ['a', 'b']: [zebra]")
        Traceback (most recent call last):
        ...
        headkit.errors.DataError: Head 'kind': labels not in the vocabulary ['a', 'b']: [zebra]
    """


class DataTypeError(DataError, TypeError):
    """A :class:`DataError` for data of the wrong kind (still a ``TypeError``).

    Example:
        >>> isinstance(DataTypeError("features must be a dict"), TypeError)
        True
    """


class NonFiniteLossError(HeadkitError, FloatingPointError):
    """A head's loss was NaN or inf; no update was applied and no checkpoint written.

    Attributes:
        heads: the names of the heads whose loss was not finite.
        step: the global step of the failing batch, if known.

    Example:
        >>> NonFiniteLossError("non-finite loss", heads=["size"], step=12).heads
        ['size']
    """

    def __init__(self, message: str, heads: Optional[List[str]] = None,
                 step: Optional[int] = None) -> None:
        super().__init__(message)
        self.heads = list(heads or [])
        self.step = step


class ExportError(HeadkitError, RuntimeError):
    """An export that would drop or garble a declared signature; nothing was kept.

    Attributes:
        problems: one line per missing or wrong signature.

    Example:
        >>> ExportError(["'species': missing from the SavedModel"]).problems
        ["'species': missing from the SavedModel"]
    """

    def __init__(self, problems: Sequence[str], export_dir: str = "") -> None:
        self.problems = list(problems)
        where = f" {export_dir!r}" if export_dir else ""
        super().__init__(
            f"Export{where} failed; the export directory was removed. "
            f"{len(self.problems)} declared signature(s) missing or wrong:\n  - "
            + "\n  - ".join(self.problems)
        )


class CheckpointError(HeadkitError, RuntimeError):
    """``model_dir`` holds checkpoints, but none of them is valid; nothing was trained.

    Training from step 0 would silently overwrite them, so headkit stops
    instead. The message names each checkpoint and what is wrong with it.

    Example:
        >>> raise CheckpointError("model_dir 'runs/a': no valid checkpoint ...")  # doctest: +SKIP
    """


class RecordMismatchError(ConfigError):
    """A ``model_dir`` was trained with other heads or another body than the ones given.

    Restoring its weights would mix two models, so nothing is trained. The
    message names each difference and the ways out.

    Example:
        >>> raise RecordMismatchError("model_dir 'runs/a' ...")  # doctest: +SKIP
    """


class ClusterError(HeadkitError, RuntimeError):
    """A task of a ``TF_CONFIG`` cluster died or failed, so this task stops too.

    Attributes:
        task: the task at fault, as ``"ps:0"`` or ``"chief:0"``.
        address: its ``host:port``.

    Example:
        >>> ClusterError("the ps task 0 at h2:2222 is unreachable", task="ps:0",
        ...              address="h2:2222").address
        'h2:2222'
    """

    def __init__(self, message: str, task: str = "", address: str = "") -> None:
        super().__init__(message)
        self.task = task
        self.address = address


class BackendUnavailableError(HeadkitError, ImportError):
    """A backend that this TensorFlow cannot run; the message says what to install.

    ``hk.Estimator`` needs tf.estimator, which ends at TensorFlow 2.15: on a
    newer TensorFlow, or without ``tensorflow-estimator``, building one raises
    this error (still an ``ImportError``).

    Example:
        >>> hk.Estimator(build_body, heads)  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        headkit.errors.BackendUnavailableError: hk.Estimator needs tf.estimator, ...
    """


# ------------------------------------------------------------------ in-graph checks
#
# tf.debugging.Assert prints its data as "[part] [part] ..." on one line. The checks
# carry only strings and int32 (other dtypes cost a per-step cond), so every message
# starts with one of these markers, and the non-finite check carries flags that
# translate_graph_errors turns into head names.

#: Every in-graph data check's message starts with ``Head '<name>':`` or this.
GRAPH_MARKER = "headkit:"
_HEAD_PREFIX = "Head "


def head_assert_data(head_name: str, problem: str, *data: Any) -> list:
    """The data of one head's in-graph check: ``"Head '<name>': <problem>"``, then ``data``.

    ``data`` holds more strings and int32 tensors (the offending values, the fix).

    Example:
        >>> head_assert_data("y", "class ids must be in [0, 2)", "Fix the labels.")
        ["Head 'y': class ids must be in [0, 2)", 'Fix the labels.']
    """
    return [f"{_HEAD_PREFIX}{head_name!r}: {problem}", *data]

_NON_FINITE = "headkit: non-finite loss at global step"
_ASSERTION = re.compile(r"assertion failed: \[(.*?)\]\s*(?:\n|\t|$)", re.S)
_NON_FINITE_DATA = re.compile(r"global step (-?\d+) heads (.*?) finite ([\d ]+)")


def non_finite_assert_data(step: Any, names: Any, finite_flags: Any) -> list:
    """The data of the finite-loss check: step (int32), head names, finite flags (int32).

    Example:
        >>> non_finite_assert_data(3, ["a", "(total)"], [1, 0])[0]
        'headkit: non-finite loss at global step'
    """
    return [_NON_FINITE, step, "heads", names, "finite", finite_flags]


def _assertion_text(message: str) -> Optional[str]:
    match = _ASSERTION.search(message)
    if not match:
        return None
    parts = match.group(1).split("] [")
    return " ".join(p.strip() for p in parts).replace("\\'", "'")


def _non_finite(text: str) -> NonFiniteLossError:
    """The finite-loss check's data (step, head names, finite flags) as a sentence."""
    match = _NON_FINITE_DATA.search(text)
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


#: The name of the XLA-compiled training step (``jit_compile=True``) in TensorFlow's errors.
COMPILED_STEP = "_compiled_step"
_XLA_UNSUPPORTED = re.compile(
    r"Detected unsupported operations when trying to compile graph \S*" + COMPILED_STEP)
_XLA_OP = re.compile(r"(\w+) \(No registered '\w+' OpKernel for XLA_\w+ devices[^)]*\)"
                     r"(?:.*?Requested Attributes: ([^{\n]*))?", re.S)


def _not_compiled(message: str) -> ConfigError:
    """XLA's refusal of the compiled training step, as the ops it cannot compile."""
    found = []
    for op, attributes in _XLA_OP.findall(message):
        types = sorted(set(re.findall(r"DT_\w+", attributes or "")))
        entry = f"{op} ({', '.join(t[3:].lower() for t in types)})" if types else op
        if entry not in found:
            found.append(entry)
    ops = ", ".join(found[:8]) or " ".join(message.split())[:300]
    return ConfigError(
        f"jit_compile=True: XLA cannot compile this training step; it uses ops XLA has no "
        f"kernel for: {ops}. String features, lookup tables and Python ops cannot be "
        "compiled. Turn them into numbers in the input_fn, or use jit_compile=False.",
        field="jit_compile")


def graph_error(message: str) -> Optional[HeadkitError]:
    """The headkit error behind a TensorFlow error message, or None for another error.

    Example:
        >>> graph_error("assertion failed: [Head 'y': class ids must be in [0, 2)]\\n")
        DataError("Head 'y': class ids must be in [0, 2)")
    """
    if _XLA_UNSUPPORTED.search(message or ""):
        return _not_compiled(message)
    text = _assertion_text(message or "")
    if text is None or not (text.startswith(_HEAD_PREFIX + "'") or text.startswith(GRAPH_MARKER)):
        return None
    if text.startswith(_NON_FINITE):
        return _non_finite(text)
    return DataError(text)


@contextlib.contextmanager
def translate_graph_errors() -> Iterator[None]:
    """Re-raise headkit's in-graph check failures as ``DataError`` / ``NonFiniteLossError``.

    A training step that XLA cannot compile (``jit_compile=True``) becomes a
    ``ConfigError`` naming the ops.

    Other TensorFlow errors pass through unchanged.

    Example:
        >>> with translate_graph_errors():
        ...     estimator.train(input_fn, steps=10)  # doctest: +SKIP
    """
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        translated = graph_error(error.message)
        if translated is None:
            raise
        raise translated from None
