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

from typing import Any, Dict, List, Mapping, Tuple

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
        return flat_predictions(per_head)
    head = heads[signature.heads[0]]
    tensors = per_head[head.name]
    if signature.method == PREDICT:
        return dict(tensors)
    return kinds.get(head).signature_outputs(head, tensors)


def write_keras_saved_model(heads: HeadSet, body: tf.keras.Model, spec: Mapping[str, Any],
                            raw_specs: Mapping[str, tf.TensorSpec],
                            temp_dir: str) -> Tuple[Dict[str, Expected], List[str]]:
    """Trace and save every declared signature of ``heads`` on ``body`` into ``temp_dir``.

    Args:
        heads: the HeadSet.
        body: the Keras body, holding the weights to export.
        spec: the tf.Example parsing spec (``serving.features``).
        raw_specs: each raw feature's ``TensorSpec`` (the body's Inputs).
        temp_dir: the export's temp directory.

    Returns:
        What each signature must hold, and the problems met (none when all traced).

    Example:
        >>> write_keras_saved_model(heads, body, spec, specs, tmp)  # doctest: +SKIP
    """
    raw = {name: raw_specs.get(name, tf.TensorSpec([None, *spec[name].shape], spec[name].dtype))
           for name in spec}
    features_signature = {name: tf.TensorSpec([None, *s.shape[1:]], s.dtype, name=name)
                          for name, s in raw.items()}

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, dict(spec))
        return {name: tf.cast(t, raw[name].dtype) for name, t in parsed.items()}

    probe = _per_head(heads, body, {n: tf.zeros([1, *s.shape[1:]], s.dtype)
                                    if s.dtype != tf.string else tf.fill([1, *s.shape[1:]], "")
                                    for n, s in features_signature.items()})
    expected = declared_signatures(heads, {h: list(t) for h, t in probe.items()},
                                   sorted(features_signature))
    module = _Serving(body)
    functions = {}
    for key, want in expected.items():
        signature = want.signature
        if signature.inputs == EXAMPLES:
            def from_examples(inputs, key=key, signature=signature):
                return _outputs(heads, _per_head(heads, body, parse(inputs)), key, signature)
            function = tf.function(from_examples, input_signature=[
                tf.TensorSpec([None], tf.string, name=EXAMPLE_INPUT)])
        else:
            def from_features(features, key=key, signature=signature):
                return _outputs(heads, _per_head(heads, body, features), key, signature)
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
