"""The Keras backend's SavedModel writer: the Estimator's signatures, from ``tf.function``s.

``tf.saved_model.save`` writes every signature as ``tensorflow/serving/predict``
(tensorflow/tensorflow#38081). headkit traces each classify and regress
signature as a function of one string tensor of serialized ``tf.Example``
(``inputs``), saves, and then sets the method names with
``MethodNameUpdater``: the export's signature table, inputs, outputs and
dtypes are those of the Estimator backend, and TF Serving's rules are checked
the same way, before the export is kept.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import tensorflow as tf

from headkit import kinds
from headkit.body import body_inputs, outputs_by_head
from headkit.kinds import PREDICT
from headkit.kinds.predictions import flat_predictions, head_predictions
from headkit.serving.contract import Expected, declared_signatures
from headkit.serving.signatures import EXAMPLE_INPUT, EXAMPLES
from headkit.spec.headset import HeadSet
from headkit.spec.keys import PREDICT_SIGNATURE

__all__ = ["write_keras_saved_model"]


class _Serving(tf.Module):
    """What the SavedModel holds: the body, and nothing of training (no optimizer, no loss)."""

    def __init__(self, body: tf.keras.Model) -> None:
        super().__init__()
        self.body = body


def _per_head(heads: HeadSet, body: tf.keras.Model, features: Mapping[str, Any]):
    outputs = outputs_by_head(heads, body, body(body_inputs(body, dict(features)),
                                                training=False))
    return head_predictions(heads, outputs)


def _outputs(heads: HeadSet, per_head: Mapping[str, Mapping[str, Any]], key: str,
             signature: Any) -> Dict[str, Any]:
    if key == PREDICT_SIGNATURE:
        return flat_predictions({name: per_head[name] for name in heads.names})
    head = heads[signature.heads[0]]
    tensors = per_head[head.name]
    if signature.method == PREDICT:
        return dict(tensors)
    return kinds.get(head).signature_outputs(head, tensors)


def _copied(features: Mapping[str, Any], passthrough: Mapping[str, Any]) -> Dict[str, Any]:
    return {name: tf.identity(features[name], name=f"passthrough_{name}") for name in passthrough}


def write_keras_saved_model(heads: HeadSet, body: tf.keras.Model, spec: Mapping[str, Any],
                            raw_specs: Mapping[str, tf.TensorSpec], temp_dir: str,
                            exported: Optional[HeadSet] = None,
                            passthrough: Optional[Mapping[str, tf.TensorSpec]] = None,
                            ) -> Tuple[Dict[str, Expected], List[str]]:
    """Trace and save every declared signature of the ``exported`` heads on ``body``.

    Args:
        heads: the HeadSet of the body (every head).
        body: the Keras body, holding the weights to export.
        spec: the tf.Example parsing spec (``serving.features``).
        raw_specs: each raw feature's ``TensorSpec`` (the body's Inputs).
        temp_dir: the export's temp directory.
        exported: the heads to export (``HeadSet.select``); default every head.
        passthrough: the pass-through features' specs: inputs and outputs of
            every predict signature.

    Returns:
        What each signature must hold, and the problems met (none when all traced).

    Example:
        >>> write_keras_saved_model(heads, body, spec, specs, tmp)  # doctest: +SKIP
    """
    exported = heads if exported is None else exported
    passthrough = dict(passthrough or {})
    raw = {name: raw_specs.get(name, tf.TensorSpec([None, *spec[name].shape], spec[name].dtype))
           for name in spec}
    for name, feature in passthrough.items():
        raw.setdefault(name, feature)
    features_signature = {name: tf.TensorSpec([None, *s.shape[1:]], s.dtype, name=name)
                          for name, s in raw.items()}

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, dict(spec))
        return {name: tf.cast(t, raw[name].dtype) for name, t in parsed.items()}

    probe = _per_head(heads, body, {n: tf.zeros([1, *s.shape[1:]], s.dtype)
                                    if s.dtype != tf.string else tf.fill([1, *s.shape[1:]], "")
                                    for n, s in features_signature.items() if n in spec})
    expected = declared_signatures(exported, {h: list(probe[h]) for h in exported.names},
                                   sorted(features_signature), sorted(passthrough))
    module = _Serving(body)
    functions = {}
    for key, want in expected.items():
        signature = want.signature
        if signature.inputs == EXAMPLES:
            def from_examples(inputs, key=key, signature=signature):
                return _outputs(exported, _per_head(heads, body, parse(inputs)), key, signature)
            function = tf.function(from_examples, input_signature=[
                tf.TensorSpec([None], tf.string, name=EXAMPLE_INPUT)])
        else:
            def from_features(features, key=key, signature=signature):
                outputs = _outputs(exported, _per_head(heads, body, features), key, signature)
                if signature.method == PREDICT:
                    outputs.update(_copied(features, passthrough))
                return outputs
            function = tf.function(from_features, input_signature=[features_signature])
        functions[key] = function.get_concrete_function()
    tf.saved_model.save(module, temp_dir, signatures=functions)
    updater = tf.compat.v1.saved_model.signature_def_utils.MethodNameUpdater(temp_dir)
    for key, want in expected.items():
        if want.signature.method != PREDICT:
            updater.replace_method_name(signature_key=key, method_name=want.signature.method,
                                        tags=tf.saved_model.SERVING)
    updater.save()
    return expected, []
