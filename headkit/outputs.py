"""Head outputs -> predictions and ExportOutputs (the signature layout).

Pure functions of (HeadSet, tensors). The layout, for each head ``N``:
``N`` (its natural signature), ``N/predict`` (all its tensors),
``serving_default`` (the default head's ``N``) and ``predict`` (every head).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import tensorflow as tf

from headkit.heads import Head
from headkit.headset import HeadSet, metric_key

__all__ = [
    "head_predictions",
    "flat_predictions",
    "export_outputs",
    "natural_method",
    "signature_table",
    "split_flat",
    "head_predict_signature",
    "DEFAULT_SIGNATURE",
    "PREDICT_SIGNATURE",
]

DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
PREDICT_SIGNATURE = "predict"
CLASSIFY = tf.saved_model.CLASSIFY_METHOD_NAME  # "tensorflow/serving/classify"
REGRESS = tf.saved_model.REGRESS_METHOD_NAME  # "tensorflow/serving/regress"
PREDICT = tf.saved_model.PREDICT_METHOD_NAME  # "tensorflow/serving/predict"


def head_predict_signature(head_name: str) -> str:
    """The key of a head's own predict signature: ``"<head>/predict"``.

    Example:
        >>> head_predict_signature("species")
        'species/predict'
    """
    return metric_key(head_name, PREDICT_SIGNATURE)


def natural_method(head: Head) -> str:
    """The method of a head's own signature ``N``.

    Classification -> classify; Regression with one value -> regress;
    a wider Regression or a Predict head -> predict.

    Example:
        >>> from headkit.heads import Regression
        >>> natural_method(Head("y", Regression()))
        'tensorflow/serving/regress'
    """
    kind = head.output.kind
    if kind == "classification":
        return CLASSIFY
    if kind == "regression" and head.output.dimension == 1:
        return REGRESS
    return PREDICT


def signature_table(heads: HeadSet) -> Dict[str, Dict[str, Any]]:
    """Every signature an export of ``heads`` declares: key -> method, head(s), inputs.

    ``inputs`` is ``"examples"`` (one string tensor of serialized
    ``tf.Example`` under ``inputs``) or ``"features"`` (raw feature tensors).

    Example:
        >>> from headkit.heads import Regression
        >>> sorted(signature_table(HeadSet([Head("y", Regression())])))
        ['predict', 'serving_default', 'y', 'y/predict']
    """
    table: Dict[str, Dict[str, Any]] = {}
    for head in heads:
        method = natural_method(head)
        table[head.name] = {"method": method, "heads": [head.name], "inputs": _inputs(method)}
        table[head_predict_signature(head.name)] = {
            "method": PREDICT,
            "heads": [head.name],
            "inputs": "features",
        }
    default = dict(table[heads.default_head.name])
    table[DEFAULT_SIGNATURE] = default
    table[PREDICT_SIGNATURE] = {"method": PREDICT, "heads": list(heads.names), "inputs": "features"}
    return table


def _inputs(method: str) -> str:
    return "features" if method == PREDICT else "examples"


def head_predictions(head: Head, output: Any) -> Dict[str, tf.Tensor]:
    """One head's prediction tensors from its body output.

    Classification: ``logits``, ``probabilities`` ``[batch, n_classes]``,
    ``class_ids`` int64 ``[batch, 1]``, ``classes`` string ``[batch, 1]`` and
    ``all_classes`` string ``[batch, n_classes]``. Regression: ``predictions``
    ``[batch, dimension]``. Predict: the output under ``outputs``, or the
    output's own keys when it is a dict.

    Example:
        >>> from headkit.heads import Classification
        >>> p = head_predictions(Head("c", Classification(2)), tf.constant([[2.0]]))
        >>> p["classes"].numpy().tolist()
        [[b'1']]
    """
    kind = head.output.kind
    if kind == "predict":
        if isinstance(output, Mapping):
            return dict(output)
        return {"outputs": output}
    if kind == "regression":
        return {"predictions": output}
    n_classes = head.output.n_classes
    if output.shape[-1] == 1:
        positive = tf.sigmoid(output)
        probabilities = tf.concat([1.0 - positive, positive], axis=1)
        class_ids = tf.cast(output > 0.0, tf.int64)
    else:
        probabilities = tf.nn.softmax(output)
        class_ids = tf.argmax(output, axis=1, output_type=tf.int64)[:, None]
    vocabulary = head.output.vocabulary
    if vocabulary is not None:
        names = tf.constant(vocabulary)
        classes = tf.gather(names, class_ids)
    else:
        names = tf.strings.as_string(tf.range(n_classes, dtype=tf.int64))
        classes = tf.strings.as_string(class_ids)
    all_classes = tf.tile(names[None, :], [tf.shape(output)[0], 1])
    return {
        "logits": output,
        "probabilities": probabilities,
        "class_ids": class_ids,
        "classes": classes,
        "all_classes": all_classes,
    }


def flat_predictions(per_head: Mapping[str, Mapping[str, tf.Tensor]]) -> Dict[str, tf.Tensor]:
    """``{head: {key: t}}`` -> ``{"<head>/<key>": t}``, the Estimator's predictions.

    Example:
        >>> flat_predictions({"y": {"predictions": 1}})
        {'y/predictions': 1}
    """
    return {
        metric_key(head, key): tensor
        for head, tensors in per_head.items()
        for key, tensor in tensors.items()
    }


def _natural_output(head: Head, tensors: Mapping[str, tf.Tensor]):
    method = natural_method(head)
    if method == CLASSIFY:
        return tf.estimator.export.ClassificationOutput(
            scores=tensors["probabilities"], classes=tensors["all_classes"]
        )
    if method == REGRESS:
        return tf.estimator.export.RegressionOutput(value=tensors["predictions"])
    return tf.estimator.export.PredictOutput(dict(tensors))


def export_outputs(
    heads: HeadSet, per_head: Mapping[str, Mapping[str, tf.Tensor]]
) -> Dict[str, Any]:
    """The ``export_outputs`` of the EstimatorSpec, following ``signature_table``.

    Example:
        >>> from headkit.heads import Regression
        >>> hs = HeadSet([Head("y", Regression())])
        >>> outs = export_outputs(hs, {"y": {"predictions": tf.zeros([1, 1])}})
        >>> type(outs["serving_default"]).__name__
        'RegressionOutput'
    """
    result: Dict[str, Any] = {}
    for head in heads:
        tensors = per_head[head.name]
        result[head.name] = _natural_output(head, tensors)
        result[head_predict_signature(head.name)] = tf.estimator.export.PredictOutput(dict(tensors))
    result[DEFAULT_SIGNATURE] = result[heads.default_head.name]
    result[PREDICT_SIGNATURE] = tf.estimator.export.PredictOutput(flat_predictions(per_head))
    return result


def split_flat(flat: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``{"<head>/<key>": v}`` -> ``{head: {key: v}}``; inverse of ``flat_predictions``.

    Example:
        >>> split_flat({"y/predictions": 1})
        {'y': {'predictions': 1}}
    """
    result: Dict[str, Dict[str, Any]] = {}
    for name, value in flat.items():
        head, _, key = name.partition("/")
        result.setdefault(head, {})[key] = value
    return result
