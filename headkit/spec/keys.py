"""Names: what a head may be called, and the one spelling of ``"<head>/<key>"`` keys.

Metric keys (``species/accuracy``), flat prediction keys (``species/classes``)
and per-head signature keys (``species/predict``) are all built by
:func:`join_key` and taken apart by :func:`split_key`; nothing else splits them.
"""

from __future__ import annotations

import re
from typing import Tuple

__all__ = [
    "NAME_PATTERN",
    "RESERVED_NAMES",
    "TOTAL_LOSS",
    "LOSS_WEIGHT",
    "PREDICT_SIGNATURE",
    "DEFAULT_SIGNATURE",
    "join_key",
    "split_key",
    "metric_key",
    "head_predict_signature",
]

#: A head name: a letter, then letters, digits, ``_``, ``-`` or ``.``; at most 64.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
#: The key of the weighted total loss in ``evaluate()`` results.
TOTAL_LOSS = "loss"
#: A head's weight in the total under a learned loss weighting: ``"<head>/loss_weight"``.
LOSS_WEIGHT = "loss_weight"
#: The signature holding every head's tensors as ``<head>/<key>``.
PREDICT_SIGNATURE = "predict"
#: TensorFlow Serving's default signature key.
DEFAULT_SIGNATURE = "serving_default"
#: Names no head may take: they are signature keys or metric names of their own.
RESERVED_NAMES = (TOTAL_LOSS, PREDICT_SIGNATURE, DEFAULT_SIGNATURE)
_SEPARATOR = "/"


def join_key(head_name: str, key: str) -> str:
    """``"<head>/<key>"``: a metric, a flat prediction or a per-head signature key.

    Example:
        >>> join_key("species", "classes")
        'species/classes'
    """
    return f"{head_name}{_SEPARATOR}{key}"


def split_key(key: str) -> Tuple[str, str]:
    """``"<head>/<key>"`` -> ``(head, key)``; a key without a head gives ``("", key)``.

    Head names hold no ``/``, so the first one separates; a Predict head's
    own output keys may hold more.

    Example:
        >>> split_key("species/accuracy"), split_key("loss")
        (('species', 'accuracy'), ('', 'loss'))
    """
    head, separator, rest = key.partition(_SEPARATOR)
    return (head, rest) if separator else ("", key)


def metric_key(head_name: str, metric: str) -> str:
    """The one spelling of a head metric's key: ``"<head>/<metric>"``.

    Example:
        >>> metric_key("species", "accuracy")
        'species/accuracy'
    """
    return join_key(head_name, metric)


def head_predict_signature(head_name: str) -> str:
    """The key of a head's own predict signature: ``"<head>/predict"``.

    Example:
        >>> head_predict_signature("species")
        'species/predict'
    """
    return join_key(head_name, PREDICT_SIGNATURE)
