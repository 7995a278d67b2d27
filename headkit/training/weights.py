"""Body weights matched by layer structure, as numpy values: warm start and migration.

Each weighted layer is owned by the one head whose output it alone reaches, or
is shared body. The source is a live Keras model (:func:`body_structure`) or a
tf.estimator checkpoint (:func:`checkpoint_weights`); no graph names are needed.
"""

from __future__ import annotations

import difflib
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import attrs
import numpy as np
import tensorflow as tf

from headkit.body import KERAS_MAJOR, Body, instantiate_body, outputs_by_head
from headkit.errors import ConfigError
from headkit.spec.headset import HeadSet

__all__ = ["Shape", "LayerWeights", "WeightRecord", "WeightMatch", "body_structure",
           "checkpoint_weights", "match_weights", "apply_weights"]

#: The shape of one weight, e.g. ``(4, 8)`` for a kernel.
Shape = Tuple[int, ...]

_SAME_SHARED = "same class and shapes"
_FIX_SHARED = ("Use the same body as the source, or train from scratch in a new model_dir "
               "(no warm start).")


def _to_shapes(shapes: Sequence[Sequence[Any]]) -> Tuple[Shape, ...]:
    return tuple(tuple(int(d) for d in shape) for shape in shapes)


def _to_values(values: Optional[Sequence[Any]]) -> Optional[Tuple[np.ndarray, ...]]:
    return None if values is None else tuple(np.asarray(v) for v in values)


@attrs.frozen
class LayerWeights:
    """One layer with weights: where it sits, who owns it, its weight shapes and values.

    Attributes:
        index: the layer's position in ``model.layers``.
        name: the layer's name (names differ between models; matching ignores them).
        class_name: the layer's class, e.g. ``"Dense"``.
        owner: the head whose output is the only one the layer reaches; None for
            the shared body.
        shapes: one shape per weight, in ``layer.weights`` order (trainable then
            non-trainable: batch norm's moving mean and variance included).
        values: one numpy array per weight, or None when only the structure is known.

    Example:
        >>> layer = LayerWeights(index=1, name="dense", class_name="Dense", owner=None,
        ...                      shapes=[(4, 8), (8,)])
        >>> layer.describe()
        "layer 1 'dense' (Dense, shapes [(4, 8), (8,)])"
    """

    index: int
    name: str
    class_name: str
    owner: Optional[str]
    shapes: Tuple[Shape, ...] = attrs.field(converter=_to_shapes)
    values: Optional[Tuple[np.ndarray, ...]] = attrs.field(
        default=None, converter=_to_values, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        given = None if self.values is None else _to_shapes(v.shape for v in self.values)
        if given is not None and given != self.shapes:
            raise ConfigError(
                f"{self.describe()}: values of shapes {list(given)} were given; one array per "
                "weight, of the listed shapes, is expected.")

    def describe(self) -> str:
        """``"layer <index> '<name>' (<class>, shapes [...])"``, as error messages name a layer."""
        return f"layer {self.index} {self.name!r} ({self.class_name}, shapes {list(self.shapes)})"


@attrs.frozen
class WeightRecord:
    """What happened to one target layer: restored, or skipped and why.

    Example:
        >>> str(WeightRecord(index=4, name="flag", owner="flag", reason="new head"))
        "layer 4 'flag' (head 'flag'): new head"
    """

    index: int
    name: str
    owner: Optional[str]
    reason: str

    def __str__(self) -> str:
        where = "shared body" if self.owner is None else f"head {self.owner!r}"
        return f"layer {self.index} {self.name!r} ({where}): {self.reason}"


@attrs.frozen
class WeightMatch:
    """The weights to set on a target model, and a record of every target layer.

    The warm-start report: ``hk.Estimator(...).warm_start_report`` and
    ``hk.KerasModel(...).warm_start_report`` are one.

    Attributes:
        assignments: target layer index -> the numpy arrays for ``layer.set_weights``.
        restored: the target layers that receive source weights.
        skipped: the target layers that keep their fresh weights, each with the reason.
        dropped_heads: source heads that no target head takes weights from.
        source: where the weights come from, as the report names it (or None).

    Example:
        >>> match = WeightMatch(assignments={}, restored=(), skipped=(), dropped_heads=("old",))
        >>> print(match.report())
        Restored 0 weighted layer(s), skipped 0.
        Source head(s) not used: 'old'.
    """

    assignments: Mapping[int, Tuple[np.ndarray, ...]] = attrs.field(
        converter=lambda pairs: MappingProxyType(dict(pairs)), eq=False, repr=False)
    restored: Tuple[WeightRecord, ...] = attrs.field(converter=tuple)
    skipped: Tuple[WeightRecord, ...] = attrs.field(converter=tuple)
    dropped_heads: Tuple[str, ...] = attrs.field(default=(), converter=tuple)
    source: Optional[str] = None

    @property
    def restored_heads(self) -> Tuple[str, ...]:
        """The target heads whose layers took the source's weights."""
        return tuple(dict.fromkeys(r.owner for r in self.restored if r.owner is not None))

    @property
    def fresh_heads(self) -> Tuple[str, ...]:
        """The target heads whose layers start fresh (new, renamed or reshaped heads)."""
        return tuple(dict.fromkeys(r.owner for r in self.skipped if r.owner is not None))

    def report(self) -> str:
        """Lines for the log: counts, each restored and skipped layer (with why), unused heads."""
        counts = f"restored {len(self.restored)} weighted layer(s), skipped {len(self.skipped)}."
        lines = [f"Warm start from {self.source}: {counts}" if self.source
                 else counts[0].upper() + counts[1:]]
        lines += [f"  restored {record}" for record in self.restored]
        lines += [f"  skipped {record}" for record in self.skipped]
        if self.dropped_heads:
            lines.append(f"Source head(s) not used: {', '.join(map(repr, self.dropped_heads))}.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def _outputs_by_head(model: tf.keras.Model, heads: HeadSet) -> Dict[str, Any]:
    fix = "Build the body as tf.keras.Model(inputs, {'<head>': tensor, ...})."
    structure = getattr(model, "_outputs_struct", None)  # Keras 3 keeps the nest here
    try:
        structure = model.output if structure is None else structure  # tf.keras 2
    except (AttributeError, ValueError) as error:  # subclassed: no graph of layers
        raise ConfigError(f"body: {type(model).__name__} {model.name!r} has no graph of "
                          f"layers to read head ownership from. {fix}", field="body") from error
    if isinstance(structure, Mapping):
        by_head = dict(structure)
    elif isinstance(structure, (list, tuple)) and len(structure) == len(model.output_names):
        by_head = dict(zip(model.output_names, structure))
    elif len(heads) == 1 and not isinstance(structure, (list, tuple)):
        by_head = {heads.names[0]: structure}
    else:
        by_head = {}
    if sorted(by_head) != sorted(heads.names):
        outputs_by_head(heads, model, structure)  # raises the error that names each head
        raise ConfigError(f"body: outputs {sorted(by_head)!r} do not match the heads "
                          f"{list(heads.names)!r}. {fix}", field="body")
    return by_head


def _owners(model: tf.keras.Model, heads: HeadSet) -> Dict[int, str]:
    """id(layer) -> head name, for the layers that reach one head's output only.

    Departure: Keras has no public API for the tensors a layer call consumed, so
    this walks ``tensor._keras_history`` and ``layer._inbound_nodes``, which
    tf.keras 2 and Keras 3 both keep (and Keras' own functional code relies on).
    """
    reached: Dict[int, Set[str]] = {}
    for head_name, output in _outputs_by_head(model, heads).items():
        seen: Set[Tuple[int, int]] = set()
        stack = tf.nest.flatten(output)
        while stack:
            history = getattr(stack.pop(), "_keras_history", None)
            if history is None:
                continue
            layer, node_index = history[0], history[1]
            if (id(layer), node_index) in seen:
                continue
            seen.add((id(layer), node_index))
            reached.setdefault(id(layer), set()).add(head_name)
            stack.extend(tf.nest.flatten(layer._inbound_nodes[node_index].input_tensors))
    return {key: next(iter(names)) for key, names in reached.items() if len(names) == 1}


def body_structure(model: tf.keras.Model, heads: HeadSet,
                   with_values: bool = True) -> Tuple[LayerWeights, ...]:
    """The weighted layers of a functional Keras body, in layer order, with their owners.

    A layer belongs to head ``N`` when every model output it reaches is ``N``'s;
    otherwise it is shared body (owner None). Layers without weights are left out.

    Args:
        model: a functional Keras model whose outputs are keyed by head name.
        heads: the model's heads.
        with_values: read each layer's weights (eager models); False lists the
            structure only, which also works for a model built inside a ``tf.Graph``.

    Example:
        >>> [(w.class_name, w.owner) for w in body_structure(model, heads)]  # doctest: +SKIP
        [('Dense', None), ('BatchNormalization', None), ('Dense', 'kind'), ('Dense', 'size')]
    """
    owners = _owners(model, heads)
    layers = []
    for index, layer in enumerate(model.layers):
        if not layer.weights:
            continue
        layers.append(LayerWeights(
            index=index, name=layer.name, class_name=type(layer).__name__,
            owner=owners.get(id(layer)), shapes=[w.shape for w in layer.weights],
            values=layer.get_weights() if with_values else None))
    return tuple(layers)


def checkpoint_weights(body: Body, heads: HeadSet,
                       checkpoint_path: str) -> Tuple[LayerWeights, ...]:
    """The body's weighted layers with their values read from a tf.estimator checkpoint.

    The body is built in a scratch ``tf.Graph``, as the Estimator backend
    builds it, so each variable's name there is its name in the checkpoint.

    Args:
        body: the body the checkpoint was trained with (builder function or Keras model).
        heads: its heads.
        checkpoint_path: a model_dir (its latest checkpoint is read) or a checkpoint prefix.

    Raises:
        ConfigError: the checkpoint cannot be read, or lacks (or has another shape
            for) a variable of the body; or this is Keras 3, which cannot name the
            variables as the Estimator's tf.keras 2 graph did (read it on TensorFlow 2.15).

    Example:
        >>> source = checkpoint_weights(build_body, heads, "runs/estimator")  # doctest: +SKIP
        >>> target = body_structure(keras_model, heads)  # doctest: +SKIP
        >>> apply_weights(keras_model, match_weights(source, target))  # doctest: +SKIP
    """
    if KERAS_MAJOR >= 3:
        raise ConfigError(
            f"checkpoint {checkpoint_path!r}: a tf.estimator checkpoint names each variable as "
            "tf.keras 2 named it in the Estimator's graph, and Keras 3 (TensorFlow "
            f"{tf.__version__}) builds other names. Read it on TensorFlow 2.15 with "
            "headkit[estimator]: hk.KerasModel.from_estimator there, then export (exports "
            "load on every TensorFlow headkit supports).", field="checkpoint_path")
    try:
        reader = tf.train.load_checkpoint(checkpoint_path)
    except (ValueError, tf.errors.OpError) as error:
        raise ConfigError(
            f"checkpoint {checkpoint_path!r} cannot be read ({error}). Pass a model_dir that "
            "holds a checkpoint, or a checkpoint prefix such as 'runs/a/model.ckpt-100'.",
            field="checkpoint_path") from error
    stored = reader.get_variable_to_shape_map()
    layers = []
    with tf.Graph().as_default():
        model = instantiate_body(body)
        for structure in body_structure(model, heads, with_values=False):
            values = []
            for variable, shape in zip(model.layers[structure.index].weights, structure.shapes):
                name = variable.name.split(":")[0]
                if name not in stored or tuple(stored[name]) != shape:
                    close = difflib.get_close_matches(name, list(stored), n=3)
                    found = (f"holds {name!r} with shape {tuple(stored[name])}" if name in stored
                             else f"has no variable {name!r} (close: {close!r})")
                    raise ConfigError(
                        f"{structure.describe()}: checkpoint {checkpoint_path!r} {found}; "
                        f"shape {shape} was expected. The checkpoint was written by another "
                        "body: pass the body it was trained with.", field="checkpoint_path")
                values.append(reader.get_tensor(name))
            layers.append(attrs.evolve(structure, values=values))
    return tuple(layers)


def _by_owner(layers: Sequence[LayerWeights]) -> Dict[Optional[str], List[LayerWeights]]:
    grouped: Dict[Optional[str], List[LayerWeights]] = {}
    for layer in layers:
        grouped.setdefault(layer.owner, []).append(layer)
    return grouped


def _check_head_map(head_map: Mapping[str, str], target_heads: Sequence[Optional[str]],
                    source_heads: Sequence[Optional[str]]) -> None:
    for new, old in head_map.items():
        for role, name, known in (("target", new, target_heads), ("source", old, source_heads)):
            if name not in known:
                raise ConfigError(
                    f"head_map maps {new!r} -> {old!r}, but the {role} has no layers with weights "
                    f"owned by head {name!r} (heads with layers of their own: "
                    f"{sorted(h for h in known if h is not None)!r}). Fix the name or drop the "
                    "entry; head_map is {'<new head>': '<old head>'}.", field="head_map")


def _head_mismatch(origin: str, source: Optional[List[LayerWeights]],
                   target: List[LayerWeights]) -> Optional[str]:
    """Why a target head's layers cannot take the source head's weights, or None if they can."""
    if source is None:
        return "new head"
    if len(source) != len(target):
        return (f"layers differ: source head {origin!r} has {len(source)} weighted layer(s), "
                f"the target {len(target)}")
    for old, new in zip(source, target):
        if old.class_name != new.class_name:
            return f"layer classes differ: {new.class_name} (target) vs {old.describe()} (source)"
        if old.shapes != new.shapes:
            return f"shapes differ: {list(new.shapes)} (target) vs {old.describe()} (source)"
    return None


def match_weights(source: Sequence[LayerWeights], target: Sequence[LayerWeights],
                  head_map: Optional[Mapping[str, str]] = None,
                  source_name: Optional[str] = None) -> WeightMatch:
    """Which source values go to which target layers, by structure.

    Shared-body layers are matched in order and must agree in class and shapes.
    A target head takes the layers of the source head of the same name (or of
    ``head_map[name]``) when they agree in classes and shapes; else its layers
    are skipped with the reason.

    Args:
        source: the old body's layers, with values.
        target: the new body's layers (values are not needed).
        head_map: ``{"<new head>": "<old head>"}`` for renamed heads.
        source_name: where the source weights come from, for the report and errors.

    Raises:
        ConfigError: the shared bodies differ (the first mismatched layer is
            named), the source has no values, or head_map names an unknown head.

    Example:
        >>> match = match_weights(body_structure(old, heads), body_structure(new, new_heads),
        ...                       head_map={"mass": "body_mass_g"})  # doctest: +SKIP
        >>> print(match.report())  # doctest: +SKIP
        Restored 5 weighted layer(s), skipped 1.
          restored layer 1 'dense' (shared body): same class and shapes
          ...
          skipped layer 6 'flag' (head 'flag'): new head
    """
    missing = [layer.describe() for layer in source if layer.values is None]
    if missing:
        raise ConfigError(f"source {missing[0]} has no values. Read the source with "
                          "body_structure(model, heads) or checkpoint_weights(...), not "
                          "with_values=False.", field="source")
    sources, targets = _by_owner(source), _by_owner(target)
    head_map = dict(head_map or {})
    _check_head_map(head_map, list(targets), list(sources))
    assignments: Dict[int, Tuple[np.ndarray, ...]] = {}
    restored: List[WeightRecord] = []
    skipped: List[WeightRecord] = []

    old_shared, new_shared = sources.get(None, []), targets.get(None, [])
    for position in range(max(len(old_shared), len(new_shared))):
        old = old_shared[position] if position < len(old_shared) else None
        new = new_shared[position] if position < len(new_shared) else None
        same = old and new and (old.class_name, old.shapes) == (new.class_name, new.shapes)
        if not same:
            raise ConfigError(
                (f"warm_start_from {source_name}: the" if source_name else "The")
                + f" shared bodies differ at shared layer #{position}: target "
                f"{new.describe() if new else '(none: the target body has fewer layers)'} vs "
                f"source {old.describe() if old else '(none: the source body has fewer layers)'}"
                f". {_FIX_SHARED}", field="body")
        assignments[new.index] = old.values
        restored.append(WeightRecord(new.index, new.name, None, _SAME_SHARED))

    used = set()
    for head, layers in targets.items():
        if head is None:
            continue
        origin = head_map.get(head, head)
        reason = _head_mismatch(origin, sources.get(origin), layers)
        if reason is not None:
            skipped += [WeightRecord(layer.index, layer.name, head, reason) for layer in layers]
            continue
        used.add(origin)
        why = f"from head {origin!r}"
        for old, new in zip(sources[origin], layers):
            assignments[new.index] = old.values
            restored.append(WeightRecord(new.index, new.name, head, why))
    dropped = [h for h in sources if h is not None and h not in used]
    return WeightMatch(assignments=assignments, restored=restored, skipped=skipped,
                       dropped_heads=dropped, source=source_name)


def apply_weights(model: tf.keras.Model, match: WeightMatch) -> None:
    """Set the matched weights on ``model`` (the target), layer by layer in index order.

    Raises:
        ConfigError: ``model`` is not the model the target structure was read from.

    Example:
        >>> match = match_weights(source, body_structure(new_model, heads))  # doctest: +SKIP
        >>> apply_weights(new_model, match)  # doctest: +SKIP
    """
    fix = "Apply a match to the model whose body_structure was its target."
    for index in sorted(match.assignments):
        if index >= len(model.layers):
            raise ConfigError(f"apply_weights: the match sets layer {index}, but "
                              f"{model.name!r} has {len(model.layers)} layers. {fix}",
                              field="model")
        layer = model.layers[index]
        try:
            layer.set_weights(list(match.assignments[index]))
        except ValueError as error:
            raise ConfigError(f"apply_weights: layer {index} {layer.name!r} cannot take the "
                              f"matched weights ({error}). {fix}", field="model") from error
