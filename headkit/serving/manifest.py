"""The manifest: what headkit records in each export, where it lives, and reading it back.

Written into every export as ``assets.extra/headkit.json``: a schema version,
the exported heads and every head of the model (``model_heads``: more than
the exported ones when an export serves a subset), the default head, every
signature with its inputs and outputs, the feature spec, the pass-through
features, the body's weight layout (what a warm start reads), the global
step, the backend and the versions that wrote it.
Exports of headkit 0.1.0 carry no ``schema_version``; they read as version 1.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from headkit.errors import ConfigError
from headkit.spec import config
from headkit.spec.headset import HeadSet

__all__ = ["MANIFEST_PATH", "SCHEMA_VERSION", "read_manifest", "write_manifest"]

#: Where each export keeps headkit's manifest, relative to the export dir.
MANIFEST_PATH = os.path.join("assets.extra", "headkit.json")
#: The manifest's schema: 1 for headkit 0.1.0 (which wrote none), 2 since.
SCHEMA_VERSION = 2


def read_manifest(export_dir: str) -> Dict[str, Any]:
    """The headkit manifest of an export, as a dict (``schema_version`` filled in).

    Example:
        >>> read_manifest(export_dir)["default_head"]  # doctest: +SKIP
        'species'
    """
    path = os.path.join(export_dir, MANIFEST_PATH)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{export_dir!r} is not a headkit export: {MANIFEST_PATH} is missing. "
            "Export with the model's export() or hk.BestExport."
        )
    with open(path, "rb") as handle:
        try:
            manifest = json.loads(handle.read().decode("utf-8"))
        except ValueError as error:
            raise ConfigError(
                f"{path}: the manifest is not valid JSON ({error}). The export is damaged; "
                "export the model again."
            ) from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path}: the manifest must be a JSON object (got "
                          f"{type(manifest).__name__}). Export the model again.")
    missing = [k for k in ("heads", "signatures", "feature_spec", "default_head")
               if k not in manifest]
    if missing:
        raise ConfigError(
            f"{path}: the manifest lacks {missing!r}; it is not one headkit wrote, or it was "
            "edited. Export the model again."
        )
    manifest.setdefault("schema_version", 1)
    manifest.setdefault("model_heads", [h.get("name") for h in _head_list(manifest)])
    manifest.setdefault("passthrough", {})
    version = manifest["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: manifest schema_version {version!r} is newer than this "
            f"headkit reads ({SCHEMA_VERSION}). Upgrade headkit to load this export."
        )
    return manifest


def _head_list(manifest: Mapping[str, Any]) -> List[Dict[str, Any]]:
    heads = manifest.get("heads")
    heads = heads.get("heads") if isinstance(heads, Mapping) else None
    return [h for h in heads or [] if isinstance(h, Mapping)]


def write_manifest(
    export_dir: str,
    heads: HeadSet,
    signatures: Mapping[str, Any],
    spec: Mapping[str, Any],
    global_step: int,
    checkpoint: str,
    backend: str,
    extra_manifest: Optional[Mapping[str, Any]] = None,
    *,
    model_heads: Optional[Sequence[str]] = None,
    passthrough: Optional[Mapping[str, Any]] = None,
    body: Optional[Sequence[Mapping[str, Any]]] = None,
) -> None:
    """Write the manifest of an export being built in ``export_dir``.

    ``heads`` are the exported heads; ``model_heads`` every head's name of
    the model (default: the exported ones). ``signatures`` maps each key to
    its ``contract.Expected``; ``spec`` is the feature spec as
    ``features.spec_to_dict`` writes it; ``passthrough`` the pass-through
    features' dtypes and shapes; ``body`` the body's weight layout.

    Example:
        >>> write_manifest(temp_dir, heads, expected, spec, 200,
        ...                "model.ckpt-200", "estimator")  # doctest: +SKIP
        >>> read_manifest(temp_dir)["global_step"]  # doctest: +SKIP
        200
    """
    import tensorflow as tf

    import headkit

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "headkit_version": headkit.__version__,
        "tensorflow_version": tf.__version__,
        "backend": backend,
        "heads": config.headset_to_dict(heads, strict=False),
        "default_head": heads.default_head.name,
        "model_heads": list(model_heads if model_heads is not None else heads.names),
        "signatures": {k: dict(e.signature.to_dict(), **{
            "inputs": sorted(e.inputs),
            "outputs": sorted(e.outputs or ()),
            "input_kind": e.signature.inputs,
        }) for k, e in signatures.items()},
        "feature_spec": dict(spec),
        "passthrough": dict(passthrough or {}),
        "global_step": global_step,
        "checkpoint": os.path.basename(checkpoint),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if body is not None:
        manifest["body"] = [dict(entry) for entry in body]
    manifest.update(extra_manifest or {})
    os.makedirs(os.path.join(export_dir, "assets.extra"), exist_ok=True)
    with open(os.path.join(export_dir, MANIFEST_PATH), "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
