"""Describe an export without running it: signatures, methods, tensors, manifest."""

from __future__ import annotations

import os
from typing import Any, Dict, List

import tensorflow as tf

from headkit.serving.contract import read_signature_defs
from headkit.serving.loading import damaged_export
from headkit.serving.manifest import read_manifest
from headkit.spec.keys import DEFAULT_SIGNATURE

__all__ = ["describe_export", "format_table"]


def _tensor(name: str, info: Any) -> Dict[str, Any]:
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = [d.size for d in info.tensor_shape.dim]
    return {"name": name, "dtype": tf.as_dtype(info.dtype).name, "shape": shape}


def describe_export(export_dir: str) -> Dict[str, Any]:
    """Every signature of an export with its method, inputs and outputs.

    Reads ``saved_model.pb`` and the headkit manifest; loads no variables.

    Example:
        >>> info = describe_export("exports/penguins/1700000000")  # doctest: +SKIP
        >>> info["default_head"], info["signatures"][0]["key"]  # doctest: +SKIP
        ('species', 'body_mass_g')
    """
    if not os.path.isdir(export_dir):
        raise FileNotFoundError(f"{export_dir!r} is not a directory.")
    manifest = read_manifest(export_dir)
    with damaged_export(export_dir, "saved_model.pb"):
        signature_defs = read_signature_defs(export_dir)
    default_head = manifest.get("default_head")
    signatures: List[Dict[str, Any]] = []
    # TensorFlow 2 SavedModels carry an internal `__saved_model_init_op`; no client calls it.
    for key in sorted(k for k in signature_defs if not k.startswith("__")):
        sig = signature_defs[key]
        signatures.append(
            {
                "key": key,
                "method": sig.method_name,
                "inputs": [_tensor(n, sig.inputs[n]) for n in sorted(sig.inputs)],
                "outputs": [_tensor(n, sig.outputs[n]) for n in sorted(sig.outputs)],
                "default": key == DEFAULT_SIGNATURE or key == default_head,
            }
        )
    return {
        "export_dir": os.path.abspath(export_dir),
        "default_head": default_head,
        "global_step": manifest.get("global_step"),
        "heads": [h["name"] for h in manifest["heads"]["heads"]],
        "model_heads": manifest["model_heads"],
        "passthrough": sorted(manifest["passthrough"]),
        "headkit_version": manifest.get("headkit_version"),
        "schema_version": manifest.get("schema_version"),
        "backend": manifest.get("backend", "estimator"),
        "tensorflow_version": manifest.get("tensorflow_version"),
        "signatures": signatures,
    }


def _tensors(tensors: List[Dict[str, Any]], limit: int = 4) -> str:
    def one(t: Dict[str, Any]) -> str:
        shape = "?" if t["shape"] is None else "[" + ",".join(
            "batch" if d == -1 else str(d) for d in t["shape"]
        ) + "]"
        return f"{t['name']}:{t['dtype']}{shape}"

    shown = ", ".join(one(t) for t in tensors[:limit])
    if len(tensors) > limit:
        shown += f", +{len(tensors) - limit} more"
    return shown


def format_table(description: Dict[str, Any]) -> str:
    """A plain-text table of ``describe_export``'s result, one row per signature.

    Example:
        >>> print(format_table(describe_export(export_dir)))  # doctest: +SKIP
    """
    rows = [("signature", "method", "inputs", "outputs")]
    for sig in description["signatures"]:
        marker = " *" if sig["default"] else ""
        rows.append(
            (
                sig["key"] + marker,
                sig["method"].rsplit("/", 1)[-1],
                _tensors(sig["inputs"]),
                _tensors(sig["outputs"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    heads = ", ".join(description["heads"])
    model_heads = description.get("model_heads") or description["heads"]
    if set(model_heads) != set(description["heads"]):
        heads += f" (a subset of the model's {', '.join(model_heads)})"
    lines = [
        f"export: {description['export_dir']}",
        f"heads: {heads}   default head: "
        f"{description['default_head']}   global step: {description['global_step']}",
    ]
    if description.get("passthrough"):
        lines.append(f"pass-through features: {', '.join(description['passthrough'])} "
                     "(in every predict signature)")
    lines.append("")
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    lines.append("")
    lines.append("* serving_default and the default head's own signature")
    return "\n".join(lines)
