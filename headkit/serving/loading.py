"""Loading a headkit export for prediction: ``load()`` and ``LoadedModel``."""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Mapping, Optional

import attrs
import numpy as np
import tensorflow as tf

from headkit.data.checks import series_to_numpy
from headkit.errors import DataError, DataTypeError
from headkit.kinds.predictions import split_flat
from headkit.serving.manifest import read_manifest
from headkit.spec.head import Head
from headkit.spec.headset import HeadSet
from headkit.spec.keys import PREDICT_SIGNATURE, head_predict_signature

__all__ = ["load", "LoadedModel"]


def _columns(features: Any) -> Dict[str, np.ndarray]:
    """A dict of arrays, a list of row dicts, or a DataFrame -> dict of arrays."""
    if hasattr(features, "to_dict") and hasattr(features, "columns"):
        return {str(c): series_to_numpy(features[c]) for c in features.columns}
    if isinstance(features, Mapping):
        return {k: np.asarray(v) for k, v in features.items()}
    if isinstance(features, (list, tuple)) and all(isinstance(r, Mapping) for r in features):
        keys = list(dict.fromkeys(k for row in features for k in row))
        missing = [(i, k) for i, row in enumerate(features) for k in keys if k not in row]
        if missing:
            row, key = missing[0]
            raise DataError(f"predict: row {row} has no value for {key!r}; every row needs "
                            f"every feature ({keys!r}).")
        return {k: np.asarray([row[k] for row in features]) for k in keys}
    raise DataTypeError(
        "predict: features must be a dict of arrays, a list of row dicts, or a pandas "
        f"DataFrame (got {type(features).__name__})."
    )


@attrs.define
class LoadedModel:
    """An export loaded for prediction, with every head reachable by name.

    Example:
        >>> model = hk.load(export_dir)  # doctest: +SKIP
        >>> model.predict([{"bill_length_mm": 39.1, ...}], head="species")  # doctest: +SKIP
        {'species': {'classes': array([[b'Adelie']]), ...}}
    """

    export_dir: str
    manifest: Dict[str, Any]
    heads: HeadSet
    _loaded: Any = attrs.field(repr=False)

    @property
    def default_head(self) -> Head:
        """The head behind ``serving_default``."""
        return self.heads[self.manifest["default_head"]]

    @property
    def signatures(self) -> Dict[str, Dict[str, Any]]:
        """Signature key -> method, heads, inputs and outputs, as the manifest records."""
        return self.manifest["signatures"]

    @property
    def feature_spec(self) -> Dict[str, Dict[str, Any]]:
        """Feature name -> dtype, shape and kind, as the export parses them."""
        return self.manifest["feature_spec"]

    @property
    def passthrough(self) -> Dict[str, Dict[str, Any]]:
        """Pass-through feature name -> dtype and shape: copied into ``predict()``'s results."""
        return self.manifest["passthrough"]

    @property
    def model_heads(self) -> List[str]:
        """Every head of the model that was exported; more than ``heads`` for a subset export."""
        return list(self.manifest["model_heads"])

    @property
    def is_subset(self) -> bool:
        """Whether this export serves only some of the model's heads."""
        return set(self.model_heads) != set(self.heads.names)

    def predict(
        self, features: Any, head: Optional[str] = None
    ) -> Dict[str, Dict[str, np.ndarray]]:
        """Run the predict signature(s) on raw features; return ``{head: {key: array}}``.

        Each pass-through feature comes back unchanged beside the heads:
        ``{"species": {...}, "example_id": array}``.

        Args:
            features: a dict of arrays, a list of row dicts, or a DataFrame.
            head: one head's name, or None for every head.
        """
        if head is not None and head not in self.heads.names:
            raise KeyError(f"predict: no head {head!r}; heads are {list(self.heads.names)!r}.")
        key = PREDICT_SIGNATURE if head is None else head_predict_signature(head)
        function = self._loaded.signatures[key]
        columns = _columns(features)
        needed = self.signatures[key]["inputs"]  # VarLen features reach no predict signature
        inputs = {}
        for name in needed:
            if name not in columns:
                raise DataError(
                    f"predict: feature {name!r} is missing; the export needs "
                    f"{sorted(needed)!r} (got {sorted(columns)!r})."
                )
            dtype = tf.as_dtype(function.structured_input_signature[1][name].dtype)
            values = columns[name]
            entry = self.feature_spec.get(name) or self.passthrough.get(name) or {}
            shape = entry.get("shape", [])
            fixed = shape and all(isinstance(d, int) for d in shape)
            values = np.asarray(values).reshape([-1, *shape]) if fixed else np.asarray(values)
            if dtype == tf.string:
                values = values.astype(str).astype(object)
            inputs[name] = tf.constant(values, dtype=dtype)
        result = function(**inputs)
        arrays = {k: v.numpy() for k, v in result.items()}
        copied = {name: arrays.pop(name) for name in self.passthrough if name in arrays}
        by_head = split_flat(arrays) if head is None else {head: arrays}
        return {**by_head, **copied}


def _serving_heads(data: Dict[str, Any], export_dir: str) -> HeadSet:
    """The manifest's HeadSet, with custom losses and metrics left out.

    Loading never imports or calls anything a file names (a manifest could
    name ``os:abort``), and serving needs no loss and no metric: a custom
    loss becomes the head's default, a custom metric is left out, with a
    warning naming them. Keras metrics named by class stay.
    """
    dropped: List[str] = []
    heads = []
    for head in data["heads"]:
        head = dict(head)
        loss = head.get("loss")
        if isinstance(loss, dict):
            dropped.append(f"{head.get('name')}.loss={loss.get('callable')}")
            head["loss"] = None
        metrics = []
        for metric in head.get("metrics", []):
            if isinstance(metric, dict) and "callable" in metric:
                dropped.append(f"{head.get('name')}.metrics: {metric['callable']}")
            else:
                metrics.append(metric)
        head["metrics"] = metrics
        heads.append(head)
    if dropped:
        warnings.warn(
            f"hk.load({export_dir!r}): custom losses and metrics are not loaded, since headkit "
            f"never imports code named in a file ({'; '.join(dropped)}); prediction does not "
            "use them.",
            stacklevel=3,
        )
    return HeadSet.from_dict({**data, "heads": heads})


def load(export_dir: str) -> LoadedModel:
    """Load a headkit export: ``.heads``, ``.default_head``, ``.signatures``, ``.predict``.

    Example:
        >>> model = hk.load("exports/penguins/1700000000")  # doctest: +SKIP
        >>> model.default_head.name  # doctest: +SKIP
        'species'
    """
    if not os.path.isdir(export_dir):
        raise FileNotFoundError(f"load: {export_dir!r} is not a directory.")
    manifest = read_manifest(export_dir)
    heads = _serving_heads(manifest["heads"], export_dir)
    loaded = tf.saved_model.load(export_dir, tags=[tf.saved_model.SERVING])
    return LoadedModel(export_dir, manifest, heads, loaded)
