"""The live progress line of a training run, and ``quiet_tensorflow``.

Imports no TensorFlow at module level, so ``quiet_tensorflow()`` can run
before TensorFlow loads (its C++ start-up chatter is decided at import).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Callable, Optional, TextIO

__all__ = [
    "ProgressDisplay",
    "format_duration",
    "quiet_tensorflow",
]

#: TF_CPP_MIN_LOG_LEVEL when quiet: 3 hides C++ INFO, WARNING and ERROR lines. On a
#: CPU-only machine TensorFlow prints CUDA plugin "Unable to register" ERROR lines at
#: every start; failures that matter still raise Python exceptions.
_QUIET_CPP_LEVEL = "3"


def quiet_tensorflow(quiet: bool = True) -> None:
    """Hide TensorFlow's INFO and WARNING chatter (``quiet=False`` brings it back).

    Sets ``TF_CPP_MIN_LOG_LEVEL`` (read when TensorFlow loads, so call this
    first for the C++ start-up lines) and the ``tensorflow`` and ``absl``
    Python loggers; exceptions still raise. The examples and the CLI call
    it; a ``--verbose`` flag calls ``quiet_tensorflow(False)``.

    Args:
        quiet: True to hide the logs (Python errors still raise), False for INFO logs.

    Example:
        >>> import headkit as hk
        >>> hk.quiet_tensorflow()
        >>> import logging; logging.getLogger("tensorflow").level == logging.ERROR
        True
    """
    level = logging.ERROR if quiet else logging.INFO
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = _QUIET_CPP_LEVEL if quiet else "0"
    logging.getLogger("tensorflow").setLevel(level)
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.set_verbosity(absl_logging.ERROR if quiet else absl_logging.INFO)


def format_duration(seconds: float) -> str:
    """A short duration: ``42s``, ``3m05s``, ``2h07m``.

    Example:
        >>> format_duration(185)
        '3m05s'
    """
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _format_value(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"


class ProgressDisplay:
    """One status line: step/max_steps, loss, steps/s, ETA, the watched metric.

    On a terminal the line is redrawn in place (at most ``10`` times a
    second); elsewhere (a log file, a CI job) a line is written every
    ``interval`` seconds, after each evaluation and at the end.

    Args:
        max_steps: the step training ends at.
        metric: the metric to show, e.g. ``species/accuracy``; None for none.
        stream: where to write; default ``sys.stderr`` at the time of writing.
        interval: seconds between lines when not on a terminal.
        clock: the time source (tests pass a fake one).

    Example:
        >>> display = ProgressDisplay(100, metric="y/rmse", stream=sys.stdout, interval=60)
        >>> display.update(50, 0.25)
        >>> print(display.line().split("  ")[0])
        step 50/100
    """

    def __init__(
        self,
        max_steps: int,
        metric: Optional[str] = None,
        stream: Optional[TextIO] = None,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_steps = max_steps
        self.metric = metric
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._first: Optional[tuple] = None  # (step, time) of the first update
        self._step = 0
        self._loss: Optional[float] = None
        self._rate: Optional[float] = None
        self._latest: Optional[float] = None
        self._best: Optional[float] = None
        self._best_step: Optional[int] = None
        self._last_write = float("-inf")
        self._open_line = False
        self._written = ""  # the last line written, so close() does not repeat it

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def _on_terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def update(self, step: int, loss: Optional[float]) -> None:
        """Record a training step and its loss; redraw when due."""
        now = self._clock()
        if self._first is None:
            self._first = (step, now)
        elif now > self._first[1] and step > self._first[0]:
            self._rate = (step - self._first[0]) / (now - self._first[1])
        self._step, self._loss = step, loss
        elapsed = now - self._last_write
        if elapsed >= self._interval or (elapsed >= 0.1 and self._on_terminal()):
            self._write()

    def evaluated(
        self, step: int, value: Optional[float], best: Optional[float], best_step: Optional[int]
    ) -> None:
        """Record an evaluation of the watched metric and its best so far; redraw."""
        self._step = max(self._step, step)
        self._latest, self._best, self._best_step = value, best, best_step
        self._write()

    def close(self, message: str = "") -> None:
        """Draw the last line (unless already shown), then ``message`` on its own line."""
        if self.line() != self._written:
            self._write()
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()

    def line(self) -> str:
        """The current status line."""
        parts = [f"step {self._step}/{self.max_steps}", f"loss {_format_value(self._loss)}"]
        if self._rate:
            parts.append(f"{self._rate:.1f} steps/s")
            remaining = max(0, self.max_steps - self._step) / self._rate
            parts.append(f"ETA {format_duration(remaining)}")
        else:
            parts.append("- steps/s")
        if self.metric is not None:
            best = _format_value(self._best)
            at = f" @ {self._best_step}" if self._best_step is not None else ""
            parts.append(f"{self.metric} {_format_value(self._latest)} (best {best}{at})")
        return "  ".join(parts)

    def _write(self) -> None:
        self._last_write = self._clock()
        self._written = line = self.line()
        if self._on_terminal():
            self.stream.write("\r\x1b[K" + line)
            self._open_line = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
