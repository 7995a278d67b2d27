"""Loading a headkit export for prediction: ``load()`` and ``LoadedModel``."""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional

import attrs
import numpy as np
import tensorflow as tf

from headkit.errors import ConfigError
from headkit.kinds.predictions import split_flat
from headkit.serving.contract import read_signature_defs
from headkit.serving.inputs import check_features
from headkit.serving.manifest import read_manifest
from headkit.spec.head import Head
from headkit.spec.headset import HeadSet
from headkit.spec.keys import PREDICT_SIGNATURE, head_predict_signature

__all__ = ["load", "LoadedModel", "damaged_export"]


def _reason(error: BaseException) -> str:
    """TensorFlow's own words for a failed read, without its graph trace."""
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.splitlines()]
    kept = [line for line in lines if line and not line.startswith(
        ("Graph execution error", "Detected at node", "File ", "[[", "{{"))]
    return (kept[-1] if kept else type(error).__name__).rstrip(". ")


def _variables_files(export_dir: str) -> str:
    """Which of an export's variables files cannot be read, for a damaged-export error."""
    folder = os.path.join(export_dir, "variables")
    if not os.path.isdir(folder):
        return "variables/ (missing)"
    try:
        tf.train.load_checkpoint(os.path.join(folder, "variables"))  # reads only the index
    except (tf.errors.OpError, ValueError):
        return "variables/variables.index"
    data = sorted(name for name in os.listdir(folder) if name.startswith("variables.data-"))
    return ", ".join(f"variables/{name}" for name in data) or "variables/variables.data-*"


@contextlib.contextmanager
def damaged_export(export_dir: str, files: Optional[str] = None) -> Iterator[None]:
    """Turn TensorFlow's errors reading an export's ``files`` into a ConfigError naming them.

    A truncated ``saved_model.pb`` fails with ``OSError: Cannot parse file``, a
    truncated variables file with ``OutOfRangeError`` deep in a graph trace.
    An export is kept only once verified, so either means it was damaged
    afterwards (a copy cut short, a full disk): the fix is to export again.
    ``files=None`` stands for the variables: the one that cannot be read is named.

    Example:
        >>> with damaged_export("exports/p/1700000000", "saved_model.pb"):  # doctest: +SKIP
        ...     read_signature_defs("exports/p/1700000000")
    """
    try:
        yield
    except (OSError, ValueError, tf.errors.OpError) as error:
        named = files or _variables_files(export_dir)
        raise ConfigError(
            f"{export_dir}: the export is damaged: {named} could not be read "
            f"({_reason(error)}). Export the model again, or copy the export again if it was "
            "copied."
        ) from None


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
        self,
        features: Any,
        head: Optional[str] = None,
        *,
        allow_non_finite: bool = False,
        decode: bool = False,
    ) -> Dict[str, Dict[str, np.ndarray]]:
        """Run the predict signature(s) on raw features; return ``{head: {key: array}}``.

        Every value is checked against the export's feature spec first (see
        ``headkit.serving.inputs.check_features``): a ``DataError`` names the
        row (0-based), the feature, the value, what was expected and the fix.
        Features the export does not read are ignored. Each pass-through
        feature comes back unchanged beside the heads:
        ``{"species": {...}, "example_id": array}``.

        Args:
            features: a dict of columns, a list of row dicts, or a DataFrame.
            head: one head's name, or None for every head.
            allow_non_finite: accept NaN and inf in float features, for models
                that expect them (refused by default).
            decode: return strings as ``str`` instead of ``bytes``, and drop a
                last axis of size 1 (``[n, 1]`` becomes ``[n]``). The default
                keeps the signature's own arrays.

        Example:
            >>> model.predict([{"x": [0.1, 0.2, 0.3, 0.4], "tag": "u"}],  # doctest: +SKIP
            ...               head="kind", decode=True)["kind"]["classes"]
            array(['b'], dtype='<U1')
        """
        if head is not None and head not in self.heads.names:
            raise KeyError(f"predict: no head {head!r}; heads are {list(self.heads.names)!r}.")
        key = PREDICT_SIGNATURE if head is None else head_predict_signature(head)
        function = self._loaded.signatures[key]
        needed = self.signatures[key]["inputs"]  # VarLen features reach no predict signature
        spec = {**{name: _checkable(entry) for name, entry in self.passthrough.items()},
                **self.feature_spec}
        checked = check_features(features, spec, needed, allow_non_finite=allow_non_finite)
        signature = function.structured_input_signature[1]
        result = function(**{name: tf.constant(values, dtype=signature[name].dtype)
                             for name, values in checked.items()})
        arrays = {k: _decoded(v.numpy()) if decode else v.numpy() for k, v in result.items()}
        copied = {name: arrays.pop(name) for name in self.passthrough if name in arrays}
        by_head = split_flat(arrays) if head is None else {head: arrays}
        return {**by_head, **copied}


def _checkable(entry: Mapping[str, Any]) -> Dict[str, Any]:
    """A pass-through feature's manifest entry as the input checks read a feature spec's."""
    dtype = tf.as_dtype(entry["dtype"])
    checked = "string" if dtype == tf.string else "float32" if dtype.is_floating else "int64"
    return {"dtype": checked, "kind": "fixed", "shape": list(entry.get("shape", []))}


def _decoded(array: np.ndarray) -> np.ndarray:
    """Bytes as str, and ``[n, 1]`` as ``[n]``: what ``predict(..., decode=True)`` returns."""
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.dtype == object:
        text = [value.decode("utf-8") for value in array.ravel()]
        array = np.array(text, dtype=str).reshape(array.shape)
    return array


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
    with damaged_export(export_dir, "saved_model.pb"):
        read_signature_defs(export_dir)  # a truncated graph fails here, named as such
    with damaged_export(export_dir):  # the variables
        loaded = tf.saved_model.load(export_dir, tags=[tf.saved_model.SERVING])
    return LoadedModel(export_dir, manifest, heads, loaded)
