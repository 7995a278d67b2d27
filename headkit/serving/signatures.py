"""The signature table: every signature an export declares, typed, and what each must hold.

The single source for the export, the contract check, the manifest and the
docs. For each head ``N``: ``N`` (its natural signature) and ``N/predict``
(all its tensors); then ``serving_default`` (the default head's ``N``) and
``predict`` (every head's tensors as ``N/key``).
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Tuple

import attrs

from headkit import kinds
from headkit.kinds import CLASSIFY, PREDICT, REGRESS
from headkit.spec.headset import HeadSet
from headkit.spec.keys import (
    DEFAULT_SIGNATURE,
    PREDICT_SIGNATURE,
    head_predict_signature,
    join_key,
)

__all__ = ["Signature", "signature_table", "expected_outputs", "EXAMPLES", "FEATURES",
           "CLASSIFY", "REGRESS", "PREDICT", "DEFAULT_SIGNATURE", "PREDICT_SIGNATURE"]

#: A signature that reads one string tensor of serialized ``tf.Example`` under ``inputs``.
EXAMPLES = "examples"
#: A signature that reads raw feature tensors.
FEATURES = "features"
#: The input of every classify and regress signature.
EXAMPLE_INPUT = "inputs"


@attrs.frozen
class Signature:
    """One declared signature: its key, method, the heads it serves and its input kind.

    Example:
        >>> from headkit import spec
        >>> signature_table(spec.HeadSet([spec.Head("y", spec.Regression())]))["y"].method
        'tensorflow/serving/regress'
    """

    key: str
    method: str
    heads: Tuple[str, ...] = attrs.field(converter=tuple)
    inputs: str  # EXAMPLES or FEATURES

    def to_dict(self) -> Dict[str, object]:
        """The manifest's entry (without the tensor names)."""
        return {"method": self.method, "heads": list(self.heads), "inputs": self.inputs}


def signature_table(heads: HeadSet) -> Dict[str, Signature]:
    """Every signature an export of ``heads`` declares: key -> :class:`Signature`.

    Example:
        >>> from headkit import spec
        >>> sorted(signature_table(spec.HeadSet([spec.Head("y", spec.Regression())])))
        ['predict', 'serving_default', 'y', 'y/predict']
    """
    table: Dict[str, Signature] = {}
    for head in heads:
        method = kinds.get(head).natural_method(head)
        table[head.name] = Signature(head.name, method, (head.name,),
                                     FEATURES if method == PREDICT else EXAMPLES)
        key = head_predict_signature(head.name)
        table[key] = Signature(key, PREDICT, (head.name,), FEATURES)
    default = table[heads.default_head.name]
    table[DEFAULT_SIGNATURE] = attrs.evolve(default, key=DEFAULT_SIGNATURE)
    table[PREDICT_SIGNATURE] = Signature(PREDICT_SIGNATURE, PREDICT, heads.names, FEATURES)
    return table


def expected_outputs(signature: Signature,
                     prediction_keys: Mapping[str, Iterable[str]]) -> Optional[Tuple[str, ...]]:
    """The output names a signature must hold, from each head's prediction keys.

    Classify: ``classes`` and ``scores``; regress: ``outputs``; predict: the
    head's prediction keys (``N/key`` for ``predict``). None when a head's keys
    are unknown.

    Example:
        >>> sig = Signature("y/predict", PREDICT, ("y",), FEATURES)
        >>> expected_outputs(sig, {"y": ["predictions"]})
        ('predictions',)
    """
    if signature.method == CLASSIFY:
        return ("classes", "scores")
    if signature.method == REGRESS:
        return ("outputs",)
    if any(h not in prediction_keys for h in signature.heads):
        return None
    if signature.key == PREDICT_SIGNATURE:
        return tuple(sorted(join_key(h, k) for h in signature.heads for k in prediction_keys[h]))
    return tuple(sorted(prediction_keys[signature.heads[0]]))


def input_names(signature: Signature, feature_names: Iterable[str]) -> Tuple[str, ...]:
    """The input names a signature must hold: ``inputs``, or the raw features.

    Example:
        >>> input_names(Signature("y", REGRESS, ("y",), EXAMPLES), ["x"])
        ('inputs',)
    """
    if signature.inputs == EXAMPLES:
        return (EXAMPLE_INPUT,)
    return tuple(sorted(feature_names))
