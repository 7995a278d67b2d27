"""The serving contract: what each declared signature must hold, checked against TF Serving's rules.

Backend-neutral: it reads the signature defs of a written SavedModel, whoever
wrote it, and compares them with :func:`declared_signatures`.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import attrs
import tensorflow as tf

from headkit.serving.manifest import MANIFEST_PATH
from headkit.serving.signatures import (
    CLASSIFY,
    EXAMPLE_INPUT,
    PREDICT,
    REGRESS,
    Signature,
    expected_outputs,
    input_names,
    signature_table,
)
from headkit.spec.headset import HeadSet

__all__ = ["Expected", "declared_signatures", "verify", "read_signature_defs",
           "check_signature_defs"]


@attrs.frozen
class Expected:
    """What one declared signature must hold once written.

    ``outputs`` is None when it cannot be known ahead (a Predict head whose
    keys the model did not produce); the export then reports that signature.
    """

    signature: Signature
    inputs: Tuple[str, ...]
    outputs: Optional[Tuple[str, ...]]


def declared_signatures(heads: HeadSet, prediction_keys: Mapping[str, Iterable[str]],
                        feature_names: Iterable[str],
                        passthrough: Iterable[str] = ()) -> Dict[str, Expected]:
    """Each signature of :func:`signature_table` with the inputs and outputs it must hold.

    Args:
        heads: the HeadSet (of the exported heads).
        prediction_keys: head name -> the keys of its predictions.
        feature_names: the raw features predict signatures take (pass-through
            features included).
        passthrough: the pass-through features, which every signature whose
            method is predict also outputs unchanged.

    Example:
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("y", spec.Regression())])
        >>> declared_signatures(heads, {"y": ["predictions"]}, ["x"])["y"].inputs
        ('inputs',)
    """
    features, copied = tuple(feature_names), tuple(passthrough)
    keys = {h: tuple(k) for h, k in prediction_keys.items()}
    declared = {}
    for key, sig in signature_table(heads).items():
        outputs = expected_outputs(sig, keys)
        if outputs is not None and sig.method == PREDICT and copied:
            outputs = tuple(sorted(set(outputs) | set(copied)))
        declared[key] = Expected(sig, input_names(sig, features), outputs)
    return declared


def read_signature_defs(export_dir: str) -> Dict[str, Any]:
    """The signature defs of an export's ``serve`` meta graph, read from ``saved_model.pb``.

    Example:
        >>> sorted(read_signature_defs(export_dir))[:2]  # doctest: +SKIP
        ['flag', 'flag/predict']
    """
    from tensorflow.python.saved_model import loader_impl

    saved_model = loader_impl.parse_saved_model(export_dir)
    for meta in saved_model.meta_graphs:
        if tf.saved_model.SERVING in meta.meta_info_def.tags:
            return dict(meta.signature_def)
    raise ValueError(f"{export_dir!r} has no meta graph tagged 'serve'.")


def _shape(tensor_info: Any) -> Optional[List[int]]:
    if tensor_info.tensor_shape.unknown_rank:
        return None
    return [d.size for d in tensor_info.tensor_shape.dim]


def verify(export_dir: str, expected: Mapping[str, Expected]) -> List[str]:
    """List every declared signature of a written export that is missing or wrong.

    Reads what TensorFlow Serving reads first: ``saved_model.pb`` (parsed in
    full, its ``serve`` signature defs compared with ``expected``) and the
    variables' index (every variable listed, readable). Then TensorFlow
    Serving's rules: method names; a classify or regress signature has the
    one input ``inputs`` (string); ``classes`` string ``[batch, k]`` and
    ``scores`` float ``[batch, k]`` with the same k; ``outputs`` float
    ``[batch]`` or ``[batch, 1]``. (A full reload in a session costs as much
    as the export itself; the tests do it for every kind of export.)

    Example:
        >>> verify("exports/penguins/1700000000", expected)  # doctest: +SKIP
        []
    """
    try:
        signatures = read_signature_defs(export_dir)
    except Exception as error:  # a .pb that does not parse is a failed export
        return [f"the export does not load: saved_model.pb: {error}"]
    index = os.path.join(export_dir, "variables", "variables")
    if os.path.exists(index + ".index"):
        try:
            tf.train.load_checkpoint(index).get_variable_to_dtype_map()
        except Exception as error:  # any unreadable index is a failed export
            return [f"the export does not load: its variables do not read back: {error}"]
    problems = check_signature_defs(signatures, expected)
    if not os.path.exists(os.path.join(export_dir, MANIFEST_PATH)):
        problems.append(f"the manifest {MANIFEST_PATH} is missing")
    return problems


def check_signature_defs(signatures: Mapping[str, Any],
                         expected: Mapping[str, Expected]) -> List[str]:
    """The problems of written signature defs against what was declared (empty: all good).

    Example:
        >>> check_signature_defs(read_signature_defs(export_dir), expected)  # doctest: +SKIP
        []
    """
    problems = []
    for key, want in expected.items():
        method = want.signature.method
        if key not in signatures:
            problems.append(f"{key!r}: missing from the SavedModel")
            continue
        sig = signatures[key]
        if sig.method_name != method:
            problems.append(f"{key!r}: method {sig.method_name!r}, expected {method!r}")
        if tuple(sorted(sig.inputs)) != tuple(sorted(want.inputs)):
            problems.append(
                f"{key!r}: inputs {sorted(sig.inputs)!r}, expected {sorted(want.inputs)!r}"
            )
        if want.outputs is None:
            problems.append(f"{key!r}: the model produced no outputs for it")
        elif tuple(sorted(sig.outputs)) != tuple(sorted(want.outputs)):
            problems.append(
                f"{key!r}: outputs {sorted(sig.outputs)!r}, expected {sorted(want.outputs)!r}"
            )
        problems.extend(_serving_rules(key, sig, method))
    return problems


def _described(info: Any) -> str:
    return f"got {tf.as_dtype(info.dtype).name} {_shape(info)}"


def _serving_rules(key: str, sig: Any, method: str) -> List[str]:
    problems = []
    string, float32 = tf.string.as_datatype_enum, tf.float32.as_datatype_enum
    if method in (CLASSIFY, REGRESS):
        info = sig.inputs.get(EXAMPLE_INPUT)
        if info is not None and (info.dtype != string or _shape(info) not in ([-1], None)):
            problems.append(f"{key!r}: input 'inputs' must be a 1-D string tensor of serialized "
                            f"tf.Example ({_described(info)})")
    if method == CLASSIFY:
        classes, scores = sig.outputs.get("classes"), sig.outputs.get("scores")
        if classes is not None and classes.dtype != string:
            problems.append(f"{key!r}: 'classes' must be a string tensor ({_described(classes)})")
        if scores is not None and scores.dtype != float32:
            problems.append(f"{key!r}: 'scores' must be a float tensor ({_described(scores)})")
        shapes = [_shape(t) for t in (classes, scores) if t is not None]
        if any(s is None or len(s) != 2 for s in shapes) or len({s[1] for s in shapes if s}) > 1:
            problems.append(f"{key!r}: 'classes' and 'scores' must be [batch, k] with one k "
                            f"(got {shapes})")
    if method == REGRESS:
        out = sig.outputs.get("outputs")
        if out is not None and (out.dtype != float32 or _shape(out) not in ([-1], [-1, 1])):
            problems.append(f"{key!r}: 'outputs' must be float [batch] or [batch, 1] "
                            f"({_described(out)})")
    return problems
