"""Where each body weight is stored: the layout a model_dir record and an export manifest keep.

For each weighted layer of the body, in layer order: its index and name, its
class, its weight shapes, the head that owns it (None for the shared body)
and the key of each weight in the checkpoint that backend writes. The keys
let a warm start read any model_dir, checkpoint or export by layer structure
without building the old body and without asking the user for a graph name.

Two styles of keys:

- ``graph`` (the Estimator's checkpoints and exports): each variable's name
  in the graph where the body was built first, e.g. ``dense/kernel``;
- ``object`` (the Keras backend's checkpoints and exports, whose root holds
  the body as ``body``): the object path TensorFlow gives the variable, e.g.
  ``body/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE``.
"""

from __future__ import annotations

import collections
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from headkit.errors import ConfigError
from headkit.spec.headset import HeadSet
from headkit.training.weights import LayerWeights, body_structure

__all__ = ["GRAPH_KEYS", "OBJECT_KEYS", "BODY_ROOT", "weight_keys", "body_layout",
           "layers_from_layout", "has_keys"]

#: Keys are variable names in the graph (tf.estimator).
GRAPH_KEYS = "graph"
#: Keys are object paths from a root that holds the body as ``body`` (tf.train.Checkpoint).
OBJECT_KEYS = "object"
#: The attribute under which both backends' checkpoint and export roots hold the body.
BODY_ROOT = "body"
_ATTRIBUTE = ".ATTRIBUTES/VARIABLE_VALUE"


def _escape(name: str) -> str:
    """TensorFlow's escaping of one object-path step (``.`` -> ``..``, ``/`` -> ``.S``)."""
    return name.replace(".", "..").replace("/", ".S")


def _object_paths(model: tf.keras.Model) -> Dict[int, str]:
    """id(variable) -> its checkpoint key under a root holding ``model`` as ``body``.

    TensorFlow names a variable by the first path that reaches it in a
    breadth-first walk of the object graph; this walks it the same way with
    the public ``tf.train.TrackableView``.
    """
    paths: Dict[int, str] = {}
    seen = {id(model)}
    queue = collections.deque([(model, BODY_ROOT)])
    while queue:
        node, path = queue.popleft()
        for name, child in tf.train.TrackableView.children(node).items():
            if id(child) in seen:
                continue
            seen.add(id(child))
            child_path = f"{path}/{_escape(name)}"
            if isinstance(child, tf.Variable):
                paths[id(child)] = f"{child_path}/{_ATTRIBUTE}"
            queue.append((child, child_path))
    return paths


def weight_keys(model: tf.keras.Model, style: str) -> Dict[int, Tuple[str, ...]]:
    """Layer index -> the checkpoint key of each of its weights, in ``layer.weights`` order.

    Args:
        model: the body, built in a fresh graph (``graph`` keys) or eagerly.
        style: :data:`GRAPH_KEYS` or :data:`OBJECT_KEYS`.

    Example:
        >>> weight_keys(model, OBJECT_KEYS)[1]  # doctest: +SKIP
        ('body/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE', ...)
    """
    if style not in (GRAPH_KEYS, OBJECT_KEYS):
        raise ValueError(f"style must be {GRAPH_KEYS!r} or {OBJECT_KEYS!r} (got {style!r}).")
    paths = _object_paths(model) if style == OBJECT_KEYS else {}
    keys = {}
    for index, layer in enumerate(model.layers):
        if layer.weights:
            keys[index] = tuple(paths.get(id(w), "") if style == OBJECT_KEYS
                                else w.name.split(":")[0] for w in layer.weights)
    return keys


def body_layout(model: tf.keras.Model, heads: HeadSet, style: str) -> List[Dict[str, Any]]:
    """The JSON-ready layout of the body's weighted layers, with their checkpoint keys.

    Example:
        >>> body_layout(model, heads, GRAPH_KEYS)[0]  # doctest: +SKIP
        {'index': 1, 'name': 'dense', 'class': 'Dense', 'shapes': [[4, 8], [8]],
         'head': None, 'variables': ['dense/kernel', 'dense/bias']}
    """
    keys = weight_keys(model, style)
    return [{"index": layer.index, "name": layer.name, "class": layer.class_name,
             "shapes": [list(s) for s in layer.shapes], "head": layer.owner,
             "variables": list(keys[layer.index])}
            for layer in body_structure(model, heads, with_values=False)]


def has_keys(layout: Optional[Sequence[Mapping[str, Any]]]) -> bool:
    """Whether a layout records the checkpoint key of every weight (records before it did not).

    Example:
        >>> has_keys([{"class": "Dense", "shapes": [[2, 1], [1]], "head": None}])
        False
    """
    return bool(layout) and all(
        len(entry.get("variables") or ()) == len(entry.get("shapes") or ())
        and all(entry["variables"]) for entry in layout)


def layers_from_layout(layout: Sequence[Mapping[str, Any]], reader: Any,
                       where: str) -> Tuple[LayerWeights, ...]:
    """The layers a layout lists, with their values read from a checkpoint reader.

    Args:
        layout: what :func:`body_layout` wrote (with ``variables``).
        reader: ``tf.train.load_checkpoint(...)`` of the checkpoint the layout describes.
        where: the source, as error messages name it.

    Raises:
        ConfigError: the checkpoint lacks a listed weight, or holds another shape for it.

    Example:
        >>> reader = tf.train.load_checkpoint(path)  # doctest: +SKIP
        >>> layers_from_layout(record["body"], reader, path)  # doctest: +SKIP
    """
    stored = reader.get_variable_to_shape_map()
    layers = []
    for position, entry in enumerate(layout):
        layer = LayerWeights(index=entry.get("index", position), name=entry.get("name", "?"),
                             class_name=entry["class"], owner=entry.get("head"),
                             shapes=entry["shapes"])
        values = []
        for key, shape in zip(entry["variables"], layer.shapes):
            found = stored.get(key)
            if found is None or tuple(found) != shape:
                what = "has no weight" if found is None else f"holds shape {tuple(found)} for"
                raise ConfigError(
                    f"{where}: {layer.describe()}: the checkpoint {what} {key!r}, which its "
                    f"record lists with shape {shape}. The files were changed after they were "
                    "written; use an untouched model_dir or export.", field="warm_start_from")
            values.append(reader.get_tensor(key))
        layers.append(LayerWeights(index=layer.index, name=layer.name,
                                   class_name=layer.class_name, owner=layer.owner,
                                   shapes=layer.shapes, values=values))
    return tuple(layers)
