"""Serving: receivers and the verified SavedModel export.

An export holds, for each head ``N``, the signatures ``N`` and ``N/predict``,
plus ``serving_default`` and ``predict`` (see ``outputs.signature_table``).
Classify and regress signatures read one string tensor of serialized
``tf.Example`` under ``inputs``; predict signatures read raw feature tensors.
Both paths feed one copy of the model: each raw feature is a
``placeholder_with_default`` whose default is the parsed example.

The manifest is in ``headkit.manifest``, the checks of the written export in
``headkit.contract``, and ``load()`` in ``headkit.loading``; all are
re-exported here.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import tensorflow as tf

from headkit.checkpoints import clean_export_leftovers
from headkit.contract import declared_signatures, verify
from headkit.headset import HeadSet
from headkit.loading import LoadedModel, load
from headkit.manifest import MANIFEST_PATH, read_manifest, write_manifest
from headkit.model_fn import instantiate_body

__all__ = [
    "export",
    "load",
    "ExportError",
    "LoadedModel",
    "feature_spec_from_body",
    "read_manifest",
    "MANIFEST_PATH",
]

_EXAMPLE_DTYPES = {tf.float32, tf.int64, tf.string}


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


def _body_input_specs(body: Any) -> Optional[Dict[str, tf.TensorSpec]]:
    """The body's Keras ``Input``s by name (None for a body without them), built once."""
    with tf.Graph().as_default():
        model = instantiate_body(body)
        if not getattr(model, "_is_graph_network", False) or not model.inputs:
            return None
        return {n: tf.TensorSpec(t.shape, t.dtype) for n, t in zip(model.input_names, model.inputs)}


def _spec_of_inputs(inputs: Optional[Mapping[str, tf.TensorSpec]]) -> Dict[str, Any]:
    if inputs is None:
        raise ValueError(
            "feature_spec: the body has no Keras Inputs to read the features from (a "
            "subclassed model?). Pass feature_spec={'name': tf.io.FixedLenFeature(shape, "
            "dtype), ...} to export()."
        )
    spec = {}
    for name, tensor in inputs.items():
        shape = tuple(tensor.shape[1:])
        if any(d is None for d in shape):
            raise ValueError(
                f"feature_spec: Input {name!r} has shape {tensor.shape} with an unknown "
                "dimension; a tf.Example feature needs a fixed shape. Pass feature_spec= "
                "to export(), e.g. with tf.io.VarLenFeature."
            )
        spec[name] = tf.io.FixedLenFeature(shape, _example_dtype(tensor.dtype))
    return spec


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
    return _spec_of_inputs(_body_input_specs(body))


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
    """The final and the temp path of a new export; leftovers of killed exports go first."""
    os.makedirs(base, exist_ok=True)
    clean_export_leftovers(base)
    stamp = int(time.time())
    while os.path.exists(os.path.join(base, str(stamp))):
        stamp += 1
    return os.path.join(base, str(stamp)), os.path.join(base, f"temp-{stamp}")


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
    inputs = _body_input_specs(estimator.body)  # built once: the spec and the raw dtypes
    spec = dict(feature_spec) if feature_spec is not None else _spec_of_inputs(inputs)
    _check_spec(spec)
    raw_dtypes = {name: tensor.dtype for name, tensor in (inputs or {}).items()}
    export_dir, temp_dir = _new_export_dir(export_dir_base)
    try:
        table, expected, problems, global_step = _write_saved_model(
            estimator, heads, spec, raw_dtypes, checkpoint_path, temp_dir
        )
        write_manifest(temp_dir, heads, table, expected, spec, global_step,
                       checkpoint_path, extra_manifest)
        problems += verify(temp_dir, expected)
        if problems:
            raise ExportError(problems, export_dir)
        os.rename(temp_dir, export_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return export_dir


def _write_saved_model(estimator, heads, spec, raw_dtypes, checkpoint_path, temp_dir) -> tuple:
    """Build the serving graph and save it: ``(table, expected, problems, global_step)``."""
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
        table, expected = declared_signatures(
            heads, estimator_spec.export_outputs, sorted(raw_receivers)
        )
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
    return table, expected, problems, step


