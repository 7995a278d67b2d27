"""Warm start: a new model_dir starts from the body weights of a trained model, by layer structure.

The source is a model_dir, a checkpoint or a headkit export, of either
backend. Its weights are read through the layout its record or manifest
keeps (``headkit.training.layout``), never through graph names a user must
know, and matched to the new body by :func:`headkit.training.weights.match_weights`:
the shared body must match and is restored whole (batch-norm moving mean and
variance included); each head's own layers are restored when the head exists
in both with the same shapes, and start fresh when it is new, renamed
(unless ``head_map`` maps it) or reshaped.

Sources written before layouts recorded checkpoint keys (headkit 0.1.0) are
read by the new body's own names: the shared body must then carry the same
names as the source's.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional, Sequence, Tuple

import attrs
import tensorflow as tf

from headkit.body import Body, instantiate_body
from headkit.errors import ConfigError, ConfigTypeError
from headkit.serving.manifest import read_manifest
from headkit.spec.headset import HeadSet
from headkit.training.layout import (
    GRAPH_KEYS,
    OBJECT_KEYS,
    body_layout,
    has_keys,
    layers_from_layout,
)
from headkit.training.record import read_record
from headkit.training.weights import LayerWeights, WeightMatch, match_weights

__all__ = ["WarmStartSource", "read_source", "warm_start_match", "check_warm_start"]

logger = logging.getLogger("headkit")
_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
_KINDS = "a model_dir, a checkpoint or a headkit export"


@attrs.frozen
class WarmStartSource:
    """The weights a warm start reads: where from, and each weighted layer with its values.

    Attributes:
        path: the path as given.
        kind: ``"model_dir"``, ``"checkpoint"`` or ``"export"``.
        checkpoint: the checkpoint prefix read (an export's ``variables/variables``).
        layers: the source body's weighted layers, with owners and values.

    Example:
        >>> read_source("runs/a", build_body, heads).describe()  # doctest: +SKIP
        "model_dir 'runs/a'"
    """

    path: str
    kind: str
    checkpoint: str
    layers: Tuple[LayerWeights, ...] = attrs.field(converter=tuple, repr=False)

    def describe(self) -> str:
        """``"<kind> '<path>'"``, as the report and errors name the source."""
        return f"{self.kind} {self.path!r}"


def check_warm_start(warm_start_from: Any, head_map: Any,
                     model_dir: Optional[str]) -> Tuple[Optional[str], dict]:
    """Check the warm-start arguments of a backend; return ``(path or None, head_map)``.

    Example:
        >>> check_warm_start("runs/a", {"mass": "size"}, "runs/b")
        ('runs/a', {'mass': 'size'})
    """
    if head_map is not None and (not isinstance(head_map, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in head_map.items())):
        raise ConfigTypeError(
            f"head_map must be a dict {{'<new head>': '<old head>'}} of head names (got "
            f"{head_map!r}).", field="head_map")
    if warm_start_from is None:
        if head_map:
            raise ConfigError(
                f"head_map={dict(head_map)!r} maps heads of a warm start, but warm_start_from is "
                "None. Pass warm_start_from=<model_dir, checkpoint or export>, or drop head_map.",
                field="head_map")
        return None, {}
    if not isinstance(warm_start_from, (str, os.PathLike)):
        raise ConfigTypeError(
            f"warm_start_from must be the path of {_KINDS} (got {warm_start_from!r}). headkit "
            "matches weights by the body's layer structure, so tf.estimator.WarmStartSettings "
            "and variable names are not needed: pass the path.", field="warm_start_from")
    path = os.fspath(warm_start_from)
    if model_dir is not None and os.path.abspath(path) == os.path.abspath(model_dir):
        raise ConfigError(
            f"warm_start_from {path!r} is this model's own model_dir. A rerun there resumes "
            "from its checkpoints by itself; a warm start goes into a new model_dir.",
            field="warm_start_from")
    return path, dict(head_map or {})


def _reader(checkpoint: str, path: str) -> Any:
    try:
        return tf.train.load_checkpoint(checkpoint)
    except (ValueError, tf.errors.OpError) as error:
        raise ConfigError(
            f"warm_start_from {path!r} cannot be read as {_KINDS} ({error}). Pass a model_dir "
            "that holds a checkpoint, a checkpoint prefix such as 'runs/a/model.ckpt-100', or "
            "an export folder such as 'runs/a/export/best/1700000000'.",
            field="warm_start_from") from None


def _locate(path: str) -> Tuple[str, str, Optional[list]]:
    """(kind, checkpoint prefix, recorded layout or None) of a warm-start path."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        try:
            manifest = read_manifest(path)
        except FileNotFoundError as error:
            raise ConfigError(f"warm_start_from {path!r}: {error}",
                              field="warm_start_from") from None
        return "export", os.path.join(path, "variables", "variables"), manifest.get("body")
    if os.path.isdir(path):
        checkpoint = tf.train.latest_checkpoint(path)
        if checkpoint is None:
            raise ConfigError(
                f"warm_start_from {path!r} is a folder without a checkpoint and is not an export "
                f"(no saved_model.pb). Pass {_KINDS}: train the source model first.",
                field="warm_start_from")
        return "model_dir", checkpoint, (read_record(path) or {}).get("body")
    if not os.path.exists(path + ".index"):
        raise ConfigError(
            f"warm_start_from {path!r} does not exist. Pass {_KINDS}.", field="warm_start_from")
    return "checkpoint", path, (read_record(os.path.dirname(path) or ".") or {}).get("body")


def _by_own_names(body: Body, heads: HeadSet, reader: Any, style: str,
                  where: str) -> Tuple[LayerWeights, ...]:
    """A source without recorded keys, read by the new body's own keys (built in a scratch graph).

    A shared layer must be found; a head's layer that is not found leaves that head out
    of the source (it then starts fresh, as a new head).
    """
    with tf.Graph().as_default():
        layout = body_layout(instantiate_body(body), heads, style)
    stored = reader.get_variable_to_shape_map()
    layers = []
    for entry in layout:
        keys = entry["variables"]
        if all(key in stored for key in keys):
            values = [reader.get_tensor(key) for key in keys]
            layers.append(LayerWeights(index=entry["index"], name=entry["name"],
                                       class_name=entry["class"], owner=entry["head"],
                                       shapes=[v.shape for v in values], values=values))
        elif entry["head"] is None:
            missing = [key for key in keys if key not in stored]
            raise ConfigError(
                f"{where} records no layout (written by an older headkit), so its weights are "
                f"read by this body's names, and it has no weight {missing[0]!r} of the shared "
                f"layer {entry['index']} {entry['name']!r} ({entry['class']}). Use the body the "
                "source was trained with, or train from scratch (no warm start).",
                field="warm_start_from")
    return tuple(layers)


def read_source(path: str, body: Body, heads: HeadSet) -> WarmStartSource:
    """Read the body weights of a model_dir, checkpoint or export, by layer structure.

    ``body`` and ``heads`` (the new model's) are used only for a source
    written before layouts recorded checkpoint keys. Call this before any
    eager Keras model is built: that fallback builds ``body`` in a scratch graph.

    Raises:
        ConfigError: the path is none of the three, or its files do not hold
            the weights its record lists.

    Example:
        >>> source = read_source("runs/penguins", build_body, heads)  # doctest: +SKIP
        >>> source.kind, len(source.layers)  # doctest: +SKIP
        ('model_dir', 5)
    """
    kind, checkpoint, layout = _locate(path)
    where = f"{kind} {path!r}"
    reader = _reader(checkpoint, path)
    if has_keys(layout):
        layers = layers_from_layout(layout, reader, where)
    else:
        style = OBJECT_KEYS if reader.has_tensor(_OBJECT_GRAPH) else GRAPH_KEYS
        layers = _by_own_names(body, heads, reader, style, where)
    return WarmStartSource(path=path, kind=kind, checkpoint=checkpoint, layers=layers)


def warm_start_match(source: WarmStartSource, target: Sequence[LayerWeights],
                     head_map: Optional[Mapping[str, str]] = None) -> WeightMatch:
    """Match a source to the new body's structure; log the report and return it.

    Raises:
        ConfigError: the shared bodies differ (naming the first mismatched
            layers), or ``head_map`` names a head without layers of its own.

    Example:
        >>> match = warm_start_match(source, body_structure(model, heads, False))  # doctest: +SKIP
        >>> print(match.report())  # doctest: +SKIP
        Warm start from model_dir 'runs/a': restored 4 weighted layer(s), skipped 1.
        ...
    """
    match = match_weights(source.layers, target, head_map, source_name=source.describe())
    logger.info("headkit: %s", match.report())
    return match
