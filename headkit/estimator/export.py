"""The Estimator's SavedModel writer, run inside ``headkit.serving``'s write-then-verify export.

Classify and regress signatures read one string tensor of serialized
``tf.Example`` under ``inputs``; predict signatures read raw feature tensors.
Both paths feed one copy of the model: each raw feature is a
``placeholder_with_default`` whose default is the parsed example.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from headkit.body import model_input_specs
from headkit.errors import ConfigError
from headkit.estimator import model_fn as model_fn_lib
from headkit.kinds.predictions import split_flat
from headkit.serving.contract import Expected, declared_signatures
from headkit.serving.export_dir import write_export
from headkit.serving.features import check_spec, spec_of_inputs, spec_to_dict
from headkit.serving.manifest import write_manifest
from headkit.serving.signatures import EXAMPLE_INPUT, EXAMPLES
from headkit.spec.headset import HeadSet
from headkit.training.layout import GRAPH_KEYS, body_layout

__all__ = ["export_estimator"]


def export_estimator(
    estimator: Any,
    export_dir_base: str,
    feature_spec: Optional[Mapping[str, Any]] = None,
    checkpoint_path: Optional[str] = None,
    extra_manifest: Optional[Mapping[str, Any]] = None,
    heads: Optional[Sequence[str]] = None,
    default: Optional[str] = None,
) -> str:
    """Write a verified SavedModel of an ``hk.Estimator``; return its path.

    See ``hk.Estimator.export``.

    Example:
        >>> export_estimator(estimator, "exports/penguins")  # doctest: +SKIP
        'exports/penguins/1700000000'
    """
    exported = estimator.heads.select(heads, default)  # checked before anything is built
    checkpoint_path = checkpoint_path or estimator.latest_checkpoint()
    if checkpoint_path is None:
        raise ConfigError(
            f"export: no checkpoint in {estimator.model_dir!r}. Train the estimator first, "
            "or pass checkpoint_path=."
        )
    passthrough = estimator.passthrough_specs("export")
    graph, model = estimator._scratch_body()  # the spec, the raw dtypes and the layout
    with graph.as_default():
        inputs = model_input_specs(model)
        layout = body_layout(model, estimator.heads, GRAPH_KEYS)
    spec = dict(feature_spec) if feature_spec is not None else spec_of_inputs(inputs)
    check_spec(spec, inputs)
    raw_dtypes = {name: tensor.dtype for name, tensor in (inputs or {}).items()}

    def write(temp_dir: str) -> Tuple[Dict[str, Expected], List[str]]:
        expected, problems, step = _write_saved_model(
            estimator, exported, spec, raw_dtypes, passthrough, checkpoint_path, temp_dir)
        write_manifest(temp_dir, exported, expected, spec_to_dict(spec), step,
                       checkpoint_path, "estimator", extra_manifest,
                       model_heads=estimator.heads.names,
                       passthrough=estimator.passthrough.to_dict(), body=layout)
        return expected, problems

    return write_export(export_dir_base, write)


def _signature_defs(export_outputs, expected, serialized, features) -> Tuple[dict, List[str]]:
    defs, problems = {}, []
    for key, want in expected.items():
        output = export_outputs.get(key)
        if output is None:
            problems.append(f"{key!r}: the model_fn produced no export output for it")
            continue
        receivers = ({EXAMPLE_INPUT: serialized} if want.signature.inputs == EXAMPLES
                     else features)
        try:
            defs[key] = output.as_signature_def(receivers)
        except ValueError as error:
            problems.append(f"{key!r}: {error}")
    return defs, problems


def _write_saved_model(estimator, exported: HeadSet, spec, raw_dtypes, passthrough,
                       checkpoint_path, temp_dir) -> tuple:
    """Build the serving graph and save it: ``(expected, problems, global_step)``."""
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
        for name, feature in passthrough.items():  # predict signatures' inputs only
            if name not in features:
                features[name] = tf.compat.v1.placeholder(feature.dtype, feature.shape, name=name)
        global_step = tf.compat.v1.train.get_or_create_global_step()
        estimator_spec = estimator._call_model_fn(
            features, None, tf.estimator.ModeKeys.PREDICT, estimator.config
        )
        raw_receivers = {k: v for k, v in features.items() if tf.is_tensor(v)
                         and not isinstance(v, tf.sparse.SparseTensor)}
        predictions = dict(estimator_spec.predictions)
        copied = {name: predictions.pop(name) for name in passthrough}
        per_head = split_flat(predictions)
        outputs = model_fn_lib.export_outputs(exported, per_head, copied)
        expected = declared_signatures(exported, {h: list(per_head[h]) for h in exported.names},
                                       sorted(raw_receivers), sorted(copied))
        signature_defs, problems = _signature_defs(outputs, expected, serialized, raw_receivers)
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
    return expected, problems, step
