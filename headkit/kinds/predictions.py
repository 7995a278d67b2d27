"""Per-head predictions, and the flat ``"<head>/<key>"`` layout every backend's ``predict()`` uses.

Pure functions of (HeadSet, tensors).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from headkit import kinds
from headkit.spec.headset import HeadSet
from headkit.spec.keys import join_key, split_key

__all__ = ["head_predictions", "flat_predictions", "split_flat"]


def head_predictions(heads: HeadSet, outputs: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``{head: {key: tensor}}``: each head's predictions from its checked body output.

    Example:
        >>> import tensorflow as tf
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("y", spec.Regression())])
        >>> sorted(head_predictions(heads, {"y": tf.zeros([2, 1])})["y"])
        ['predictions']
    """
    return {head.name: kinds.get(head).predictions(head, outputs[head.name]) for head in heads}


def flat_predictions(per_head: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """``{head: {key: t}}`` -> ``{"<head>/<key>": t}``, the predictions ``predict()`` yields.

    Example:
        >>> flat_predictions({"y": {"predictions": 1}})
        {'y/predictions': 1}
    """
    return {
        join_key(head, key): tensor
        for head, tensors in per_head.items()
        for key, tensor in tensors.items()
    }


def split_flat(flat: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``{"<head>/<key>": v}`` -> ``{head: {key: v}}``; inverse of :func:`flat_predictions`.

    Example:
        >>> split_flat({"y/predictions": 1})
        {'y': {'predictions': 1}}
    """
    result: Dict[str, Dict[str, Any]] = {}
    for name, value in flat.items():
        head, key = split_key(name)
        result.setdefault(head, {})[key] = value
    return result
