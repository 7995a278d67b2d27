"""Output kinds: one module per kind behind one interface (:class:`headkit.kinds.base.Kind`).

Adding a kind: its output type in ``headkit.spec.output_types``, its names in
``headkit.spec.catalog``, one module here, and one line in :data:`KINDS`.
"""

from __future__ import annotations

from typing import Any, Dict

from headkit.errors import ConfigError
from headkit.kinds import classification, logistic, multi_label, poisson, predict, regression
from headkit.kinds.base import CLASSIFY, PREDICT, REGRESS, Kind

__all__ = ["KINDS", "get", "Kind", "CLASSIFY", "REGRESS", "PREDICT"]

#: Kind name -> its implementation.
KINDS: Dict[str, Kind] = {
    classification.KIND.name: classification.KIND,
    multi_label.KIND.name: multi_label.KIND,
    regression.KIND.name: regression.KIND,
    poisson.KIND.name: poisson.KIND,
    logistic.KIND.name: logistic.KIND,
    predict.KIND.name: predict.KIND,
}


def get(kind: Any) -> Kind:
    """The kind of a head, an output type, or a kind's name.

    Example:
        >>> from headkit import spec
        >>> get(spec.Head("y", spec.Regression())).name, get("classification").name
        ('regression', 'classification')
    """
    name = getattr(getattr(kind, "output", kind), "kind", kind)
    if name not in KINDS:
        raise ConfigError(f"Unknown output kind {name!r}. Known kinds: {', '.join(KINDS)}.")
    return KINDS[name]
