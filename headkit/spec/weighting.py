"""Loss weighting and gradient surgery: how a HeadSet combines its heads' losses and gradients.

Plain configuration, checked when it is built; no TensorFlow. The math, and
the variables it keeps, are in ``headkit.multitask``; the formulas are on the
docs page ``docs/multitask.md``.

- :class:`FixedWeighting` (``"fixed"``, the default): each head's loss times
  its ``weight``;
- :class:`UncertaintyWeighting` (``"uncertainty"``): each head learns the log
  of its loss's variance (Kendall, Gal & Cipolla 2018);
- :class:`DynamicWeightAverage` (``"dynamic_weight_average"``): weights from
  how fast each head's training loss falls (Liu, Johns & Davison 2019);
- :class:`PCGrad` (``gradient_surgery=``): each head's gradient loses its
  components that conflict with the others' (Yu et al. 2020).
"""

from __future__ import annotations

import difflib
import math
from typing import Any, ClassVar, Dict, Optional, Union

import attrs

from headkit.errors import ConfigError, ConfigTypeError
from headkit.spec.scalars import as_float, as_int

__all__ = ["FixedWeighting", "UncertaintyWeighting", "DynamicWeightAverage", "PCGrad",
           "LossWeighting", "LOSS_WEIGHTINGS", "GRADIENT_SURGERIES", "loss_weighting",
           "gradient_surgery"]


def _positive_number(owner: str):
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value <= 0):
            raise ConfigError(
                f"{attribute.name} must be a finite number > 0 (got {value!r}): {owner} divides "
                f"by it. Use e.g. {attribute.name}={attribute.default!r}, the paper's value.",
                field=attribute.name,
            )
    return check


def _whole_number(minimum: int, meaning: str):
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(
                f"{attribute.name} must be an integer >= {minimum} (got {value!r}): {meaning}",
                field=attribute.name,
            )
    return check


@attrs.frozen
class FixedWeighting:
    """The total loss is ``sum(weight_i * loss_i)``: today's behaviour, and the default.

    Written ``loss_weighting="fixed"``.

    Example:
        >>> FixedWeighting().to_dict()
        {'type': 'fixed'}
    """

    name: ClassVar[str] = "fixed"
    #: Whether the weights change in training (and are reported as ``<head>/loss_weight``).
    is_learned: ClassVar[bool] = False

    def to_dict(self) -> Dict[str, Any]:
        return {"type": self.name}


@attrs.frozen
class UncertaintyWeighting:
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018).

    Each trained head learns ``s = log(sigma^2)``, starting at 0, with the
    body's optimizer. Its term in the total loss is
    ``weight * f * (exp(-s) * loss + s)``, where ``f`` is 1/2 for regression
    (a Gaussian likelihood) and 1 for classification. The head's
    ``<head>/loss_weight`` is ``weight * f * exp(-s)``.

    Example:
        >>> import headkit as hk
        >>> heads = hk.HeadSet([hk.Head("y", hk.Regression())],
        ...                    loss_weighting=hk.UncertaintyWeighting())
        >>> heads.metric_names
        ('loss', 'y/loss', 'y/loss_weight')
    """

    name: ClassVar[str] = "uncertainty"
    is_learned: ClassVar[bool] = True

    def to_dict(self) -> Dict[str, Any]:
        return {"type": self.name}


@attrs.frozen
class DynamicWeightAverage:
    """Dynamic Weight Average (Liu, Johns & Davison 2019), over windows of ``period`` steps.

    Training is cut in windows of ``period`` steps. At the end of each window
    every head's mean training loss ``L_i(t)`` is kept, and the heads'
    weights for the next window become ``K * softmax(r / temperature)`` with
    ``r_i = L_i(t-1) / L_i(t-2)`` (``K`` heads with ``weight > 0``; 1 for the
    first two windows). A head's term is ``weight * w_i * loss``.

    Args:
        temperature: softens the weights (> 0); large values make them equal.
        period: training steps per window (>= 1): the paper's epoch.

    Example:
        >>> DynamicWeightAverage(temperature=2.0, period=50).to_dict()
        {'type': 'dynamic_weight_average', 'temperature': 2.0, 'period': 50}
    """

    temperature: float = attrs.field(default=2.0, converter=as_float,
                                     validator=_positive_number("DynamicWeightAverage"))
    period: int = attrs.field(default=100, converter=as_int, validator=_whole_number(
        1, "the training steps over which each head's loss is averaged (the paper's epoch)."))

    name: ClassVar[str] = "dynamic_weight_average"
    is_learned: ClassVar[bool] = True

    def to_dict(self) -> Dict[str, Any]:
        return {"type": self.name, "temperature": self.temperature, "period": self.period}


@attrs.frozen
class PCGrad:
    """Projecting conflicting gradients (Yu et al. 2020), for ``HeadSet(gradient_surgery=...)``.

    Each trained head's gradient is computed on its own (one backward pass
    per head); where it conflicts with another head's (a negative dot
    product), its component along that gradient is removed, the other heads
    taken in a random order; then the projected gradients are summed. The
    order is drawn from ``(seed, global step)`` alone, so a resumed run
    repeats it.

    Args:
        seed: seeds the order of the heads (an integer >= 0).

    Example:
        >>> PCGrad().to_dict()
        {'type': 'pcgrad', 'seed': 0}
    """

    seed: int = attrs.field(default=0, converter=as_int, validator=_whole_number(
        0, "it seeds the random order of the heads at each step."))

    name: ClassVar[str] = "pcgrad"

    def to_dict(self) -> Dict[str, Any]:
        return {"type": self.name, "seed": self.seed}


LossWeighting = Union[FixedWeighting, UncertaintyWeighting, DynamicWeightAverage]

#: What ``loss_weighting=`` and config files may name -> the class.
LOSS_WEIGHTINGS = {cls.name: cls for cls in (FixedWeighting, UncertaintyWeighting,
                                             DynamicWeightAverage)}
#: What ``gradient_surgery=`` and config files may name -> the class.
GRADIENT_SURGERIES = {PCGrad.name: PCGrad}


def _lookup(value: Any, registry: Dict[str, type], field: str, example: str) -> Any:
    if isinstance(value, tuple(registry.values())):
        return value
    if isinstance(value, str):
        if value in registry:
            return registry[value]()
        close = difflib.get_close_matches(value, list(registry), n=1)
        raise ConfigError(
            f"{field}: unknown name {value!r}. Known names: {', '.join(map(repr, registry))}"
            + (f"; did you mean {close[0]!r}?" if close else ".")
            + f" Or pass an object, e.g. {field}={example}.", field=field,
        )
    known = ", ".join(f"hk.{cls.__name__}()" for cls in registry.values())
    raise ConfigTypeError(
        f"{field} must be a name ({', '.join(map(repr, registry))}) or one of {known} "
        f"(got {value!r}).", field=field,
    )


def loss_weighting(value: Any) -> LossWeighting:
    """A ``loss_weighting`` given by name or object, as an object.

    Example:
        >>> loss_weighting("uncertainty")
        UncertaintyWeighting()
    """
    if value is None:
        return FixedWeighting()
    return _lookup(value, LOSS_WEIGHTINGS, "loss_weighting", "hk.UncertaintyWeighting()")


def gradient_surgery(value: Any) -> Optional[PCGrad]:
    """A ``gradient_surgery`` given by name or object, as an object; None for none.

    Example:
        >>> gradient_surgery("pcgrad")
        PCGrad(seed=0)
    """
    if value is None:
        return None
    return _lookup(value, GRADIENT_SURGERIES, "gradient_surgery", "hk.PCGrad()")
