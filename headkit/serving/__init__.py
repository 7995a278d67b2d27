"""Serving: the signature table, the write-then-verify export, the contract, manifest, ``load``.

Backend-neutral: a backend writes the SavedModel into the temp directory that
:func:`headkit.serving.export_dir.write_export` gives it; everything else here
reads only what is on disk.
"""

from __future__ import annotations

from typing import Any

from headkit.errors import ExportError
from headkit.serving.features import feature_spec_from_body
from headkit.serving.loading import LoadedModel, load
from headkit.serving.manifest import MANIFEST_PATH, read_manifest
from headkit.serving.signatures import Signature, signature_table

__all__ = ["export", "load", "LoadedModel", "ExportError", "feature_spec_from_body",
           "read_manifest", "MANIFEST_PATH", "signature_table", "Signature"]


def export(model: Any, export_dir_base: str, **options: Any) -> str:
    """Export a trained model (any backend) as a verified SavedModel; return its path.

    The same as ``model.export(export_dir_base, ...)``: every head's
    signatures, written to ``temp-<stamp>``, checked against TensorFlow
    Serving's rules, then renamed to ``<stamp>``.

    Args:
        model: a trained ``hk.Estimator`` (or another backend's model).
        export_dir_base: the folder that receives the timestamped export.
        **options: ``feature_spec``, ``checkpoint_path``, ``extra_manifest``, and
            ``heads`` / ``default`` to export a subset of the heads.

    Example:
        >>> path = hk.export(estimator, "exports/penguins")  # doctest: +SKIP
    """
    return model.export(export_dir_base, **options)
