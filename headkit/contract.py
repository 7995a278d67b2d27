"""The serving contract: the signatures an export declares, checked against TF Serving's rules."""

from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional

import tensorflow as tf

from headkit import outputs as outputs_lib
from headkit.headset import HeadSet
from headkit.manifest import MANIFEST_PATH

__all__ = ["declared_signatures", "verify"]


def declared_signatures(
    heads: HeadSet, export_outputs: Mapping[str, Any], feature_names: List[str]
):
    """What each declared signature must hold once written: method, inputs and outputs.

    Returns ``(outputs.signature_table(heads), expected)``; ``expected`` is what
    :func:`verify` checks the written export against.

    Example:
        >>> table, expected = declared_signatures(heads, export_outputs, ["x"])  # doctest: +SKIP
        >>> expected["serving_default"]["inputs"]  # doctest: +SKIP
        {'inputs'}
    """
    table = outputs_lib.signature_table(heads)
    expected = {}
    for key, info in table.items():
        method = info["method"]
        if method == outputs_lib.CLASSIFY:
            outputs = {"classes", "scores"}
        elif method == outputs_lib.REGRESS:
            outputs = {"outputs"}
        elif key in export_outputs:
            outputs = set(export_outputs[key].outputs)
        else:  # reported by serving._signature_defs; nothing to compare against
            outputs = set()
        inputs = {"inputs"} if info["inputs"] == "examples" else set(feature_names)
        expected[key] = {"method": method, "inputs": inputs, "outputs": outputs}
    return table, expected


def _shape(tensor_info: Any) -> Optional[List[int]]:
    if tensor_info.tensor_shape.unknown_rank:
        return None
    return [d.size for d in tensor_info.tensor_shape.dim]


def verify(export_dir: str, expected: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """Reload an export and list every declared signature that is missing or wrong.

    Checks TensorFlow Serving's rules: method names; a classify or regress
    signature has the one input ``inputs`` (string); ``classes`` string
    ``[batch, k]`` and ``scores`` float ``[batch, k]`` with the same k;
    ``outputs`` float ``[batch]`` or ``[batch, 1]``.

    Example:
        >>> verify("exports/penguins/1700000000", expected)  # doctest: +SKIP
        []
    """
    problems = []
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        try:
            meta = tf.compat.v1.saved_model.loader.load(
                session, [tf.saved_model.SERVING], export_dir
            )
        except Exception as error:  # any load failure is a failed export
            return [f"the export does not load: {error}"]
    signatures = meta.signature_def
    for key, want in expected.items():
        if key not in signatures:
            problems.append(f"{key!r}: missing from the SavedModel")
            continue
        sig = signatures[key]
        if sig.method_name != want["method"]:
            problems.append(f"{key!r}: method {sig.method_name!r}, expected {want['method']!r}")
        if set(sig.inputs) != want["inputs"]:
            problems.append(
                f"{key!r}: inputs {sorted(sig.inputs)!r}, expected {sorted(want['inputs'])!r}"
            )
        if set(sig.outputs) != want["outputs"]:
            problems.append(
                f"{key!r}: outputs {sorted(sig.outputs)!r}, expected {sorted(want['outputs'])!r}"
            )
        problems.extend(_serving_rules(key, sig, want["method"]))
    if not os.path.exists(os.path.join(export_dir, MANIFEST_PATH)):
        problems.append(f"the manifest {MANIFEST_PATH} is missing")
    return problems


def _described(info: Any) -> str:
    return f"got {tf.as_dtype(info.dtype).name} {_shape(info)}"


def _serving_rules(key: str, sig: Any, method: str) -> List[str]:
    problems = []
    string, float32 = tf.string.as_datatype_enum, tf.float32.as_datatype_enum
    if method in (outputs_lib.CLASSIFY, outputs_lib.REGRESS):
        info = sig.inputs.get("inputs")
        if info is not None and (info.dtype != string or _shape(info) not in ([-1], None)):
            problems.append(f"{key!r}: input 'inputs' must be a 1-D string tensor of serialized "
                            f"tf.Example ({_described(info)})")
    if method == outputs_lib.CLASSIFY:
        classes, scores = sig.outputs.get("classes"), sig.outputs.get("scores")
        if classes is not None and classes.dtype != string:
            problems.append(f"{key!r}: 'classes' must be a string tensor ({_described(classes)})")
        if scores is not None and scores.dtype != float32:
            problems.append(f"{key!r}: 'scores' must be a float tensor ({_described(scores)})")
        shapes = [_shape(t) for t in (classes, scores) if t is not None]
        if any(s is None or len(s) != 2 for s in shapes) or len({s[1] for s in shapes if s}) > 1:
            problems.append(f"{key!r}: 'classes' and 'scores' must be [batch, k] with one k "
                            f"(got {shapes})")
    if method == outputs_lib.REGRESS:
        out = sig.outputs.get("outputs")
        if out is not None and (out.dtype != float32 or _shape(out) not in ([-1], [-1, 1])):
            problems.append(f"{key!r}: 'outputs' must be float [batch] or [batch, 1] "
                            f"({_described(out)})")
    return problems
