"""The manifest: what headkit records in each export, where it lives, and reading it back.

Written by ``headkit.serving.export`` as ``assets.extra/headkit.json``: the
heads, the default head, every signature with its inputs and outputs, the
feature spec, the global step and the versions that wrote it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Mapping, Optional

import numpy as np
import tensorflow as tf

import headkit
from headkit import config
from headkit.headset import HeadSet

__all__ = ["MANIFEST_PATH", "read_manifest", "write_manifest"]

#: Where each export keeps headkit's manifest, relative to the export dir.
MANIFEST_PATH = os.path.join("assets.extra", "headkit.json")


def read_manifest(export_dir: str) -> Dict[str, Any]:
    """The headkit manifest of an export, as a dict.

    Example:
        >>> read_manifest(export_dir)["default_head"]  # doctest: +SKIP
        'species'
    """
    path = os.path.join(export_dir, MANIFEST_PATH)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{export_dir!r} is not a headkit export: {MANIFEST_PATH} is missing. "
            "Export with hk.Estimator.export()."
        )
    with open(path) as handle:
        return json.load(handle)


def write_manifest(
    export_dir: str,
    heads: HeadSet,
    table: Mapping[str, Mapping[str, Any]],
    expected: Mapping[str, Mapping[str, Any]],
    spec: Mapping[str, Any],
    global_step: int,
    checkpoint_path: str,
    extra_manifest: Optional[Mapping[str, Any]] = None,
) -> None:
    """Write the manifest of an export being built in ``export_dir``.

    ``table`` is ``outputs.signature_table(heads)``, ``expected`` what each
    signature holds (``contract.declared_signatures``), ``spec`` the feature
    spec the export parses; ``extra_manifest`` adds JSON-ready entries.

    Example:
        >>> write_manifest(temp_dir, heads, table, expected, spec, 200, path)  # doctest: +SKIP
        >>> read_manifest(temp_dir)["global_step"]  # doctest: +SKIP
        200
    """
    manifest = {
        "headkit_version": headkit.__version__,
        "tensorflow_version": tf.__version__,
        "heads": config.to_dict(heads, strict=False),
        "default_head": heads.default_head.name,
        "signatures": {k: dict(v, **{
            "inputs": sorted(expected[k]["inputs"]),
            "outputs": sorted(expected[k]["outputs"]),
            "input_kind": v["inputs"],
        }) for k, v in table.items()},
        "feature_spec": _spec_to_dict(spec),
        "global_step": global_step,
        "checkpoint": os.path.basename(checkpoint_path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest.update(extra_manifest or {})
    os.makedirs(os.path.join(export_dir, "assets.extra"), exist_ok=True)
    with open(os.path.join(export_dir, MANIFEST_PATH), "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)


def _spec_to_dict(spec: Mapping[str, Any]) -> Dict[str, Any]:
    result = {}
    for name, feature in spec.items():
        entry: Dict[str, Any] = {"dtype": feature.dtype.name}
        if isinstance(feature, tf.io.FixedLenFeature):
            entry.update(kind="fixed", shape=list(feature.shape))
            if feature.default_value is not None:
                entry["default_value"] = np.asarray(feature.default_value).tolist()
        else:
            entry["kind"] = "var"
        result[name] = entry
    return result
