"""Serving: receivers, the verified SavedModel export, its manifest, and ``load()``.

An export holds, for each head ``N``, the signatures ``N`` and ``N/predict``,
plus ``serving_default`` and ``predict`` (see ``outputs.signature_table``).
Classify and regress signatures read one string tensor of serialized
``tf.Example`` under ``inputs``; predict signatures read raw feature tensors.
Both paths feed one copy of the model: each raw feature is a
``placeholder_with_default`` whose default is the parsed example.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import attrs
import numpy as np
import tensorflow as tf

import headkit
from headkit import outputs as outputs_lib
from headkit.heads import Head
from headkit.headset import HeadSet

__all__ = [
    "export",
    "load",
    "ExportError",
    "LoadedModel",
    "feature_spec_from_body",
    "read_manifest",
    "MANIFEST_PATH",
]

#: Where each export keeps headkit's manifest, relative to the export dir.
MANIFEST_PATH = os.path.join("assets.extra", "headkit.json")
_EXAMPLE_DTYPES = {tf.float32, tf.int64, tf.string}
_DTYPE_NAMES = {v: k for k, v in tf.dtypes.__dict__.items() if isinstance(v, tf.DType)}


class ExportError(RuntimeError):
    """An export that would drop or garble a declared signature; nothing was kept.

    Example:
        >>> raise ExportError(["'species': missing"])  # doctest: +SKIP
    """

    def __init__(self, problems: List[str], export_dir: str = "") -> None:
        self.problems = list(problems)
        where = f" {export_dir!r}" if export_dir else ""
        super().__init__(
            f"Export{where} failed; the export directory was removed. "
            f"{len(problems)} declared signature(s) missing or wrong:\n  - "
            + "\n  - ".join(problems)
        )


# ------------------------------------------------------------------ feature spec


def _example_dtype(dtype: tf.DType) -> tf.DType:
    if dtype == tf.string:
        return tf.string
    if dtype.is_floating:
        return tf.float32
    if dtype.is_integer or dtype == tf.bool:
        return tf.int64
    raise ValueError(f"dtype {dtype.name} cannot be carried by a tf.Example.")


def feature_spec_from_body(body: Any) -> Dict[str, tf.io.FixedLenFeature]:
    """The parsing spec of the body's Keras ``Input``s: name, dtype and shape.

    Floats parse as float32, integers and booleans as int64, strings as
    string: the three types a ``tf.Example`` carries.

    Example:
        >>> def body():
        ...     x = tf.keras.Input((3,), name="x")
        ...     return tf.keras.Model({"x": x}, {"y": tf.keras.layers.Dense(1)(x)})
        >>> feature_spec_from_body(body)
        {'x': FixedLenFeature(shape=(3,), dtype=tf.float32, default_value=None)}
    """
    from headkit.model_fn import _instantiate_body

    with tf.Graph().as_default():
        model = _instantiate_body(body)
        inputs = getattr(model, "inputs", None)
        if not getattr(model, "_is_graph_network", False) or not inputs:
            raise ValueError(
                "feature_spec: the body has no Keras Inputs to read the features from (a "
                "subclassed model?). Pass feature_spec={'name': tf.io.FixedLenFeature(shape, "
                "dtype), ...} to export()."
            )
        spec = {}
        for name, tensor in zip(model.input_names, inputs):
            shape = tuple(tensor.shape[1:])
            if any(d is None for d in shape):
                raise ValueError(
                    f"feature_spec: Input {name!r} has shape {tensor.shape} with an unknown "
                    "dimension; a tf.Example feature needs a fixed shape. Pass feature_spec= "
                    "to export(), e.g. with tf.io.VarLenFeature."
                )
            spec[name] = tf.io.FixedLenFeature(shape, _example_dtype(tensor.dtype))
        return spec


def _body_input_dtypes(body: Any) -> Dict[str, tf.DType]:
    from headkit.model_fn import _instantiate_body

    with tf.Graph().as_default():
        model = _instantiate_body(body)
        if not getattr(model, "_is_graph_network", False):
            return {}
        return {n: t.dtype for n, t in zip(model.input_names, model.inputs)}


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


def _check_spec(spec: Mapping[str, Any]) -> None:
    for name, feature in spec.items():
        if not isinstance(feature, (tf.io.FixedLenFeature, tf.io.VarLenFeature)):
            raise TypeError(
                f"feature_spec[{name!r}]: expected tf.io.FixedLenFeature or VarLenFeature "
                f"(got {feature!r})."
            )
        if feature.dtype not in _EXAMPLE_DTYPES:
            raise ValueError(
                f"feature_spec[{name!r}]: dtype {feature.dtype.name} is not one a tf.Example "
                "carries; use tf.float32, tf.int64 or tf.string."
            )


# ------------------------------------------------------------------ export


def _new_export_dir(base: str) -> Tuple[str, str]:
    os.makedirs(base, exist_ok=True)
    stamp = int(time.time())
    while os.path.exists(os.path.join(base, str(stamp))):
        stamp += 1
    return os.path.join(base, str(stamp)), os.path.join(base, f"temp-{stamp}")


def _declared(heads: HeadSet, export_outputs: Mapping[str, Any], feature_names: List[str]):
    """What each declared signature must hold once written."""
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
        else:  # reported by _signature_defs; nothing to compare against
            outputs = set()
        inputs = {"inputs"} if info["inputs"] == "examples" else set(feature_names)
        expected[key] = {"method": method, "inputs": inputs, "outputs": outputs}
    return table, expected


def _signature_defs(export_outputs, table, serialized, features) -> Tuple[dict, List[str]]:
    defs, problems = {}, []
    for key in table:
        output = export_outputs.get(key)
        if output is None:
            problems.append(f"{key!r}: the model_fn produced no export output for it")
            continue
        receivers = {"inputs": serialized} if table[key]["inputs"] == "examples" else features
        try:
            defs[key] = output.as_signature_def(receivers)
        except ValueError as error:
            problems.append(f"{key!r}: {error}")
    return defs, problems


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


def _serving_rules(key: str, sig: Any, method: str) -> List[str]:
    problems = []
    string, float32 = tf.string.as_datatype_enum, tf.float32.as_datatype_enum
    if method in (outputs_lib.CLASSIFY, outputs_lib.REGRESS):
        info = sig.inputs.get("inputs")
        if info is not None and (info.dtype != string or _shape(info) not in ([-1], None)):
            problems.append(f"{key!r}: input 'inputs' must be a 1-D string tensor")
    if method == outputs_lib.CLASSIFY:
        classes, scores = sig.outputs.get("classes"), sig.outputs.get("scores")
        if classes is not None and classes.dtype != string:
            problems.append(f"{key!r}: 'classes' must be a string tensor")
        if scores is not None and scores.dtype != float32:
            problems.append(f"{key!r}: 'scores' must be a float tensor")
        shapes = [_shape(t) for t in (classes, scores) if t is not None]
        if any(s is None or len(s) != 2 for s in shapes) or len({s[1] for s in shapes if s}) > 1:
            problems.append(f"{key!r}: 'classes' and 'scores' must be [batch, k] with one k "
                            f"(got {shapes})")
    if method == outputs_lib.REGRESS:
        out = sig.outputs.get("outputs")
        if out is not None and (out.dtype != float32 or _shape(out) not in ([-1], [-1, 1])):
            problems.append(f"{key!r}: 'outputs' must be float [batch] or [batch, 1] "
                            f"(got {tf.as_dtype(out.dtype).name} {_shape(out)})")
    return problems


def export(
    estimator: Any,
    export_dir_base: str,
    feature_spec: Optional[Mapping[str, Any]] = None,
    checkpoint_path: Optional[str] = None,
    extra_manifest: Optional[Mapping[str, Any]] = None,
) -> str:
    """Write a SavedModel with every head's signatures, verify it, and return its path.

    The export is built in ``export_dir_base/temp-<stamp>``, reloaded and
    checked against the declared signatures, and only then renamed to
    ``export_dir_base/<stamp>``: an export never half-exists. On any
    missing or wrong signature the temp directory is removed and
    :class:`ExportError` lists each problem.

    Args:
        estimator: a trained ``hk.Estimator``.
        export_dir_base: the folder that receives the timestamped export.
        feature_spec: ``{name: tf.io.FixedLenFeature | VarLenFeature}``;
            by default read from the body's Keras Inputs.
        checkpoint_path: the checkpoint to export; default the latest.
        extra_manifest: more JSON-ready entries for the manifest.

    Example:
        >>> path = hk.serving.export(estimator, "exports/penguins")  # doctest: +SKIP
    """
    heads: HeadSet = estimator.heads
    checkpoint_path = checkpoint_path or estimator.latest_checkpoint()
    if checkpoint_path is None:
        raise ValueError(
            f"export: no checkpoint in {estimator.model_dir!r}. Train the estimator first, "
            "or pass checkpoint_path=."
        )
    spec = dict(feature_spec) if feature_spec is not None else feature_spec_from_body(
        estimator.body
    )
    _check_spec(spec)
    raw_dtypes = _body_input_dtypes(estimator.body)
    export_dir, temp_dir = _new_export_dir(export_dir_base)
    try:
        step = _write_saved_model(estimator, heads, spec, raw_dtypes, checkpoint_path, temp_dir)
        table, expected = step.pop("table"), step.pop("expected")
        manifest = {
            "headkit_version": headkit.__version__,
            "tensorflow_version": tf.__version__,
            "heads": heads.to_dict(),
            "default_head": heads.default_head.name,
            "signatures": {k: dict(v, **{
                "inputs": sorted(expected[k]["inputs"]),
                "outputs": sorted(expected[k]["outputs"]),
                "input_kind": v["inputs"],
            }) for k, v in table.items()},
            "feature_spec": _spec_to_dict(spec),
            "global_step": step["global_step"],
            "checkpoint": os.path.basename(checkpoint_path),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        manifest.update(extra_manifest or {})
        os.makedirs(os.path.join(temp_dir, "assets.extra"), exist_ok=True)
        with open(os.path.join(temp_dir, MANIFEST_PATH), "w") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
        problems = step["problems"] + verify(temp_dir, expected)
        if problems:
            raise ExportError(problems, export_dir)
        os.rename(temp_dir, export_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return export_dir


def _write_saved_model(estimator, heads, spec, raw_dtypes, checkpoint_path, temp_dir) -> dict:
    with tf.Graph().as_default() as graph:
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
        parsed = tf.io.parse_example(serialized, spec)
        features = {}
        for name, tensor in parsed.items():
            if isinstance(tensor, tf.sparse.SparseTensor):
                features[name] = tensor  # VarLen features reach predict signatures parsed
                continue
            tensor = tf.cast(tensor, raw_dtypes.get(name, tensor.dtype))
            features[name] = tf.compat.v1.placeholder_with_default(
                tensor, [None, *spec[name].shape], name=name
            )
        global_step = tf.compat.v1.train.get_or_create_global_step()
        estimator_spec = estimator._call_model_fn(
            features, None, tf.estimator.ModeKeys.PREDICT, estimator.config
        )
        raw_receivers = {k: v for k, v in features.items() if tf.is_tensor(v)
                         and not isinstance(v, tf.sparse.SparseTensor)}
        table, expected = _declared(heads, estimator_spec.export_outputs, sorted(raw_receivers))
        signature_defs, problems = _signature_defs(
            estimator_spec.export_outputs, table, serialized, raw_receivers
        )
        with tf.compat.v1.Session(graph=graph) as session:
            saver = tf.compat.v1.train.Saver(sharded=True)
            saver.restore(session, checkpoint_path)
            builder = tf.compat.v1.saved_model.Builder(temp_dir)
            builder.add_meta_graph_and_variables(
                session,
                [tf.saved_model.SERVING],
                signature_def_map=signature_defs,
                main_op=tf.compat.v1.train.Scaffold.default_local_init_op(),
                strip_default_attrs=True,
                saver=saver,
            )
            builder.save()
            step = int(session.run(global_step))
    return {"table": table, "expected": expected, "problems": problems, "global_step": step}


# ------------------------------------------------------------------ load


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


def _columns(features: Any) -> Dict[str, np.ndarray]:
    """A dict of arrays, a list of row dicts, or a DataFrame -> dict of arrays."""
    if hasattr(features, "to_dict") and hasattr(features, "columns"):
        return {str(c): features[c].to_numpy() for c in features.columns}
    if isinstance(features, Mapping):
        return {k: np.asarray(v) for k, v in features.items()}
    if isinstance(features, (list, tuple)) and all(isinstance(r, Mapping) for r in features):
        keys = list(dict.fromkeys(k for row in features for k in row))
        missing = [(i, k) for i, row in enumerate(features) for k in keys if k not in row]
        if missing:
            row, key = missing[0]
            raise ValueError(f"predict: row {row} has no value for {key!r}.")
        return {k: np.asarray([row[k] for row in features]) for k in keys}
    raise TypeError(
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

    def predict(
        self, features: Any, head: Optional[str] = None
    ) -> Dict[str, Dict[str, np.ndarray]]:
        """Run the predict signature(s) on raw features; return ``{head: {key: array}}``.

        Args:
            features: a dict of arrays, a list of row dicts, or a DataFrame.
            head: one head's name, or None for every head.
        """
        if head is not None and head not in self.heads.names:
            raise KeyError(f"predict: no head {head!r}; heads are {list(self.heads.names)!r}.")
        key = outputs_lib.PREDICT_SIGNATURE if head is None else f"{head}/predict"
        function = self._loaded.signatures[key]
        columns = _columns(features)
        inputs = {}
        for name, entry in self.feature_spec.items():
            if name not in columns:
                raise ValueError(
                    f"predict: feature {name!r} is missing; the export needs "
                    f"{sorted(self.feature_spec)!r} (got {sorted(columns)!r})."
                )
            dtype = tf.as_dtype(function.structured_input_signature[1][name].dtype)
            values = columns[name]
            shape = entry.get("shape", [])
            values = np.asarray(values).reshape([-1, *shape]) if shape else np.asarray(values)
            if dtype == tf.string:
                values = values.astype(str).astype(object)
            inputs[name] = tf.constant(values, dtype=dtype)
        result = function(**inputs)
        arrays = {k: v.numpy() for k, v in result.items()}
        if head is None:
            return outputs_lib.split_flat(arrays)
        return {head: arrays}


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
    heads = HeadSet.from_dict(manifest["heads"])
    loaded = tf.saved_model.load(export_dir, tags=[tf.saved_model.SERVING])
    return LoadedModel(export_dir, manifest, heads, loaded)
