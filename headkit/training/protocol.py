"""The backend protocol: the small interface that ``train_and_evaluate``, export and the CLI drive.

``hk.Estimator`` implements it; any backend that does can be trained by
:func:`headkit.training.train_and_evaluate`, with early stopping, best
exports and resume, without ``headkit.training`` knowing how it trains.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import attrs

try:  # Python 3.8+: typing.Protocol; runtime_checkable lets isinstance() check the names
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable

from headkit.spec.headset import HeadSet

__all__ = ["Backend", "LoopPlan"]


@runtime_checkable
class Backend(Protocol):
    """What a headkit backend offers. ``hk.Estimator`` is one.

    Attributes:
        model_dir: the folder of checkpoints, the training record and exports.
        heads: the HeadSet it trains.
        body: the body as given (a builder function or a Keras model).
        is_chief: False on a task of a cluster that must not write exports.

    Example:
        >>> isinstance(hk.Estimator(build_body, heads), Backend)  # doctest: +SKIP
        True
    """

    model_dir: str
    heads: HeadSet
    body: Any
    is_chief: bool

    def train(self, input_fn: Callable, max_steps: Optional[int] = None) -> Any:
        """Train until the global step reaches ``max_steps`` (or the input ends)."""

    def evaluate(self, input_fn: Callable, steps: Optional[int] = None) -> Dict[str, Any]:
        """``loss``, ``<head>/<metric>`` and ``global_step`` on ``input_fn``."""

    def predict(self, input_fn: Callable) -> Iterable[Dict[str, Any]]:
        """Yield ``{"<head>/<key>": array}`` per example."""

    def export(self, export_dir_base: str, **options: Any) -> str:
        """Write a verified export into ``export_dir_base``; return its path."""

    def latest_checkpoint(self) -> Optional[str]:
        """The newest checkpoint's path, or None before any training."""

    def global_step(self) -> int:
        """The global step of the newest checkpoint, 0 before any training."""


@attrs.frozen
class LoopPlan:
    """What ``train_and_evaluate`` asks a training loop to do (checked before it is made).

    A backend may run it with a native loop of its own (a method
    ``train_and_evaluate_loop(plan, monitor)``); otherwise
    :func:`headkit.training.loop.generic_loop` runs it through the protocol.
    """

    train_input_fn: Callable
    eval_input_fn: Optional[Callable]
    max_steps: int
    eval_every: int
    eval_steps: Optional[int] = None
    eval_name: Optional[str] = None
    hooks: Sequence[Any] = ()
    progress: Any = None  # a ProgressDisplay, or None
