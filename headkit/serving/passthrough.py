"""Pass-through features: features copied unchanged into predictions and every predict signature.

``passthrough=("example_id",)`` on a backend copies the feature ``example_id``
into ``predict()``'s output and into each signature whose method is predict
(``N/predict``, ``predict``, and ``N`` when it is a predict signature), as an
input and as an output of that name. Classify and regress signatures are left
as TensorFlow Serving requires them.

A signature input needs a dtype and a shape. A body Input has both; another
feature has them declared (``passthrough={"example_id": tf.TensorSpec([None],
tf.string)}``) or taken from the training data, and the manifest records them.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import attrs
import tensorflow as tf

from headkit.body import body_inputs, model_input_specs, outputs_by_head
from headkit.errors import ConfigError, ConfigTypeError, DataError
from headkit.kinds.predictions import head_predictions
from headkit.spec.headset import HeadSet
from headkit.spec.keys import RESERVED_NAMES, split_key

__all__ = ["Passthrough", "prediction_keys", "DECLARED", "BODY_INPUT", "TRAINING_DATA"]

#: Where a pass-through feature's dtype and shape came from.
DECLARED, BODY_INPUT, TRAINING_DATA = "declared", "body input", "training data"
_EXAMPLE = "passthrough={'example_id': tf.TensorSpec([None], tf.string)}"


def _spec_entry(spec: tf.TensorSpec, source: str) -> Dict[str, Any]:
    return {"dtype": spec.dtype.name, "shape": list(spec.shape[1:]), "source": source}


def _check_declared(name: str, spec: Any) -> tf.TensorSpec:
    if spec is None:
        return None
    if not isinstance(spec, tf.TensorSpec):
        raise ConfigTypeError(
            f"passthrough[{name!r}] must be a tf.TensorSpec with the batch dimension first, or "
            f"None to take it from the body or the training data (got {spec!r}); e.g. "
            f"{_EXAMPLE}.", field="passthrough")
    if spec.shape.rank is None or spec.shape.rank < 1 or spec.shape[0] is not None:
        raise ConfigError(
            f"passthrough[{name!r}]: the shape {spec.shape} must start with the batch "
            f"dimension None, as a signature input's does; e.g. {_EXAMPLE}.",
            field="passthrough")
    return tf.TensorSpec(spec.shape, spec.dtype, name=name)


@attrs.define
class Passthrough:
    """The pass-through features of one model: names, and each one's spec once known.

    ``specs`` maps each name to its ``tf.TensorSpec`` (batch dimension first),
    or None while unknown; ``sources`` says where each came from.

    Example:
        >>> pt = Passthrough.of(("example_id",), heads, inputs)  # doctest: +SKIP
        >>> pt.names  # doctest: +SKIP
        ('example_id',)
    """

    specs: Dict[str, Optional[tf.TensorSpec]] = attrs.field(factory=dict)
    sources: Dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def of(cls, passthrough: Any, heads: HeadSet,
           inputs: Optional[Mapping[str, tf.TensorSpec]]) -> "Passthrough":
        """Check a backend's ``passthrough=`` argument against the heads and the body's Inputs.

        Raises:
            ConfigError: a name that is not a string, repeats, or clashes with a
                head's name, a signature key or a flat prediction key.
        """
        if passthrough is None:
            return cls()
        if isinstance(passthrough, str):
            raise ConfigTypeError(
                f"passthrough must be a tuple of feature names (got the string "
                f"{passthrough!r}); write passthrough=({passthrough!r},).", field="passthrough")
        declared = (dict(passthrough) if isinstance(passthrough, Mapping)
                    else {name: None for name in passthrough})
        if not isinstance(passthrough, Mapping) and len(declared) != len(list(passthrough)):
            raise ConfigError(f"passthrough names a feature twice ({list(passthrough)!r}).",
                              field="passthrough")
        result = cls()
        for name, spec in declared.items():
            _check_name(name, heads)
            spec = _check_declared(name, spec)
            if spec is not None:
                result.specs[name], result.sources[name] = spec, DECLARED
            elif inputs and name in inputs:
                result.specs[name] = tf.TensorSpec(inputs[name].shape, inputs[name].dtype, name)
                result.sources[name] = BODY_INPUT
            else:
                result.specs[name] = None
        return result

    @property
    def names(self) -> Tuple[str, ...]:
        """The pass-through feature names, in the order given."""
        return tuple(self.specs)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def learn(self, features: Mapping[str, Any]) -> bool:
        """Take unknown specs from training features (tensors or TensorSpecs); True if any new.

        Raises:
            DataError: a pass-through feature with no spec yet is not among the features.
        """
        new = False
        for name, spec in self.specs.items():
            if spec is not None:
                continue
            if name not in features:
                raise DataError(
                    f"passthrough {name!r} is not a feature of the training data (features: "
                    f"{sorted(features)!r}), and it is not a body Input, so its dtype and "
                    f"shape are unknown. Add the column to the data, declare it with "
                    f"{_EXAMPLE}, or drop it from passthrough.")
            found = features[name]
            self.specs[name] = tf.TensorSpec([None, *found.shape[1:]], found.dtype, name=name)
            self.sources[name] = TRAINING_DATA
            new = True
        return new

    def restore(self, recorded: Optional[Mapping[str, Mapping[str, Any]]]) -> None:
        """Fill unknown specs from what a model_dir record kept (``to_dict``'s entries)."""
        for name, entry in (recorded or {}).items():
            if name in self.specs and self.specs[name] is None:
                self.specs[name] = tf.TensorSpec([None, *entry["shape"]],
                                                 tf.as_dtype(entry["dtype"]), name=name)
                self.sources[name] = entry.get("source", TRAINING_DATA)

    def required(self, where: str) -> Dict[str, tf.TensorSpec]:
        """Every spec, or a ConfigError naming a feature whose dtype and shape are unknown."""
        unknown = [name for name, spec in self.specs.items() if spec is None]
        if unknown:
            raise ConfigError(
                f"{where}: passthrough {unknown[0]!r} is not a body Input, was not declared, and "
                "no training run of this model_dir has seen it, so its dtype and shape are "
                f"unknown. Declare it ({_EXAMPLE}), or train with data that holds it.",
                field="passthrough")
        return dict(self.specs)

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """The manifest's (and the record's) ``passthrough``: name -> dtype, shape, source."""
        return {name: _spec_entry(spec, self.sources.get(name, TRAINING_DATA))
                for name, spec in self.specs.items() if spec is not None}

    def check_outputs(self, keys_by_head: Mapping[str, Iterable[str]]) -> None:
        """Refuse a name that is also a prediction key of a head (its predict signatures hold both).

        Example:
            >>> Passthrough({"classes": None}).check_outputs({"kind": ["classes"]})
            Traceback (most recent call last):
            ...
            headkit.errors.ConfigError: passthrough 'classes' clashes with the output ...
        """
        for name in self.specs:
            for head, keys in keys_by_head.items():
                if name in set(keys):
                    raise ConfigError(
                        f"passthrough {name!r} clashes with the output {name!r} of head "
                        f"{head!r}: its predict signatures would hold both under one key. "
                        "Rename the feature, or drop it from passthrough.", field="passthrough")

    def copy_into(self, outputs: Dict[str, Any], features: Mapping[str, Any]) -> Dict[str, Any]:
        """``outputs`` with each pass-through feature added, unchanged (``tf.identity``).

        Raises:
            DataError: a pass-through feature is not among ``features``.
        """
        result = dict(outputs)
        for name in self.specs:
            if name not in features:
                raise DataError(
                    f"passthrough {name!r} is not a feature of this input (features: "
                    f"{sorted(features)!r}). Add the column, or drop it from passthrough.")
            result[name] = tf.identity(features[name], name=f"passthrough_{name}")
        return result


def _check_name(name: Any, heads: HeadSet) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigTypeError(f"passthrough names must be feature names (got {name!r}).",
                              field="passthrough")
    clash: List[str] = []
    if name in heads.names:
        clash.append(f"the head {name!r} (predict() results are keyed by head and feature)")
    if name in RESERVED_NAMES:
        clash.append(f"the reserved name {name!r}")
    head = split_key(name)[0]
    if head in heads.names:
        clash.append(f"the flat prediction keys '{head}/<key>' of head {head!r}")
    if clash:
        raise ConfigError(
            f"passthrough {name!r} clashes with {clash[0]}. Rename the feature, or drop it "
            "from passthrough.", field="passthrough")


def prediction_keys(heads: HeadSet, model: tf.keras.Model) -> Optional[Dict[str, List[str]]]:
    """Each head's prediction keys, from one call of ``model`` on a batch of zeros.

    None for a body without Keras Inputs (its keys are known at the first graph build).

    Example:
        >>> prediction_keys(heads, build_body())["size"]  # doctest: +SKIP
        ['predictions']
    """
    specs = model_input_specs(model)
    if specs is None:
        return None
    batch = {}
    for name, spec in specs.items():
        shape = [1, *(1 if d is None else d for d in spec.shape[1:])]
        batch[name] = tf.fill(shape, "") if spec.dtype == tf.string else tf.zeros(shape, spec.dtype)
    raw = model(body_inputs(model, batch), training=False)
    per_head = head_predictions(heads, outputs_by_head(heads, model, raw))
    return {head: list(tensors) for head, tensors in per_head.items()}
