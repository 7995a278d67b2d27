"""The model_dir record: what a model_dir was trained with, so a rerun cannot mix two models.

``model_dir/headkit_model.json`` (schema version :data:`RECORD_SCHEMA`) holds
the HeadSet, the body's layer structure (class and weight shapes of each
layer) and the backend that trains it. A rerun is checked against it before anything is written:

- fatal: head names, kinds, ``n_classes``/vocabulary/dimension, ``label_key``,
  turning a regression's normalisation on or off, the ``loss_weighting`` type
  and, under a learned one, which heads have weight > 0 (and for DWA their
  order: its variables in the checkpoints belong to those heads), and the
  body's layers and shapes.
  Restoring the checkpoints would put one model's weights into another, so
  :class:`~headkit.errors.RecordMismatchError` names each difference and the
  ways out (a new model_dir, or a warm start);
- logged: metrics, ``weight``, ``loss``, ``missing_label``, ``weight_column``,
  ``class_weight``, ``is_default``, ``gradient_surgery`` and DWA's
  ``temperature`` and ``period``, which change no weight;
- recorded wins: a regression's ``mean`` and ``std`` (computed from the
  labels, they move with the data). The body learned the recorded ones, so
  :func:`recorded_heads` gives the rerun those, and logs the difference.

A model_dir of headkit 0.1.0 has no record: its training record's head names
are checked instead, and the record is written by the next training run.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Dict, List, Optional

import attrs
import tensorflow as tf

from headkit.body import Body, instantiate_body
from headkit.errors import ConfigError, RecordMismatchError
from headkit.spec import config
from headkit.spec.headset import HeadSet
from headkit.spec.keys import TOTAL_LOSS, split_key
from headkit.training.layout import GRAPH_KEYS, OBJECT_KEYS, body_layout
from headkit.training.state import STATE_FILE

__all__ = ["RECORD_FILE", "RECORD_SCHEMA", "model_record", "read_record", "check_model_dir",
           "write_record", "key_style", "recorded_heads"]

#: The record of what a model_dir was trained with.
RECORD_FILE = "headkit_model.json"
#: Its schema version; a newer one is refused.
RECORD_SCHEMA = 1
_LOGGED_HEAD_FIELDS = ("loss", "metrics", "weight", "missing_label", "weight_column",
                       "class_weight", "is_default")
#: What the body's record must keep for a model_dir to be the same model.
_BODY_FIELDS = ("class", "shapes", "head")
#: Output fields computed from the labels: on a rerun the recorded values are used.
_STATISTICS = ("mean", "std")
_FIXED = {"type": "fixed"}

logger = logging.getLogger("headkit")


def key_style(backend: str) -> str:
    """How ``backend``'s checkpoints and exports name the body's weights (see ``layout``).

    Example:
        >>> key_style("keras"), key_style("estimator")
        ('object', 'graph')
    """
    return OBJECT_KEYS if backend == "keras" else GRAPH_KEYS


def model_record(heads: HeadSet, body: Body, backend: str = "estimator",
                 model: Optional[tf.keras.Model] = None) -> Dict[str, Any]:
    """The record of ``heads`` and ``body``: JSON-ready, with its schema version.

    ``model`` is the body already built (the Keras backend builds it eagerly:
    a Keras 2 model built inside a ``tf.Graph`` afterwards would invalidate it);
    without it the body is built in a scratch graph. Each weighted layer of
    ``body`` lists its class, shapes, owner head and the checkpoint key of
    each weight (``headkit.training.layout``).

    Example:
        >>> model_record(heads, build_body)["schema_version"]  # doctest: +SKIP
        1
    """
    import headkit

    style = key_style(backend)
    if model is not None:
        layout = body_layout(model, heads, style)
    else:
        with tf.Graph().as_default():
            layout = body_layout(instantiate_body(body), heads, style)
    return {
        "schema_version": RECORD_SCHEMA,
        "headkit_version": headkit.__version__,
        "backend": backend,
        "heads": config.heads_to_dict(heads, strict=False)["heads"],
        "loss_weighting": heads.loss_weighting.to_dict(),
        "gradient_surgery": (None if heads.gradient_surgery is None
                             else heads.gradient_surgery.to_dict()),
        "body": layout,
    }


def read_record(model_dir: str) -> Optional[Dict[str, Any]]:
    """The record in ``model_dir``, or None when it has none.

    Example:
        >>> read_record("runs/new") is None  # doctest: +SKIP
        True
    """
    path = os.path.join(model_dir, RECORD_FILE)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as handle:
        try:
            record = json.loads(handle.read().decode("utf-8"))
        except ValueError as error:
            raise ConfigError(
                f"{path}: not valid JSON ({error}). It records what this model_dir was trained "
                "with; restore it from a backup, or use a new model_dir."
            ) from None
    version = record.get("schema_version") if isinstance(record, dict) else None
    if not isinstance(version, int) or version > RECORD_SCHEMA:
        raise ConfigError(
            f"{path}: schema_version {version!r} is not one this headkit reads (up to "
            f"{RECORD_SCHEMA}). Upgrade headkit, or use a new model_dir."
        )
    return record


def write_record(model_dir: str, record: Dict[str, Any]) -> None:
    """Write the record atomically (the chief alone writes it).

    Example:
        >>> write_record("runs/a", model_record(heads, build_body))  # doctest: +SKIP
    """
    os.makedirs(model_dir, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".headkit_model.", dir=model_dir)
    with os.fdopen(handle, "w") as out:
        json.dump(record, out, indent=2, sort_keys=True)
    os.replace(temp, os.path.join(model_dir, RECORD_FILE))


def _head_differences(old: List[Dict[str, Any]], new: List[Dict[str, Any]]):
    fatal, logged = [], []
    old_by_name = {h["name"]: h for h in old}
    new_by_name = {h["name"]: h for h in new}
    removed = [n for n in old_by_name if n not in new_by_name]
    added = [n for n in new_by_name if n not in old_by_name]
    if removed or added:
        fatal.append(f"heads {sorted(old_by_name)} became {sorted(new_by_name)}"
                     + (f" (removed {removed})" if removed else "")
                     + (f" (added {added})" if added else ""))
    for name in (n for n in new_by_name if n in old_by_name):
        before, after = old_by_name[name], new_by_name[name]
        old_output, new_output = before.get("output") or {}, after.get("output") or {}
        for field in sorted(set(old_output) | set(new_output), key=lambda f: f != "type"):
            if field in _STATISTICS:
                continue
            if old_output.get(field) != new_output.get(field):
                fatal.append(f"head {name!r}: {field} {old_output.get(field)!r} -> "
                             f"{new_output.get(field)!r}")
        if _normalized(old_output) != _normalized(new_output):
            fatal.append(f"head {name!r}: normalised targets "
                         f"{_statistics(old_output) or 'none'} -> "
                         f"{_statistics(new_output) or 'none'}")
        if before.get("label_key") != after.get("label_key"):
            fatal.append(f"head {name!r}: label_key {before.get('label_key')!r} -> "
                         f"{after.get('label_key')!r}")
        for field in _LOGGED_HEAD_FIELDS:
            if not _same(before.get(field), after.get(field)):
                logged.append(f"head {name!r}: {field} {before.get(field)!r} -> "
                              f"{after.get(field)!r}")
    return fatal, logged


def _normalized(output: Dict[str, Any]) -> bool:
    return any(output.get(field) is not None for field in _STATISTICS)


def _statistics(output: Dict[str, Any]) -> Dict[str, Any]:
    return {f: output[f] for f in _STATISTICS if output.get(f) is not None}


def recorded_heads(model_dir: Optional[str], heads: HeadSet) -> HeadSet:
    """``heads`` with each regression's ``mean`` and ``std`` as ``model_dir``'s record has them.

    Statistics computed from labels move with the data (another split, new
    rows), but the body's weights learned the recorded ones: a rerun uses
    those, and the difference is logged. A head that turns normalisation on
    or off is left as it is, for :func:`check_model_dir` to refuse.

    Example:
        >>> heads = recorded_heads("runs/penguins", heads)  # doctest: +SKIP
    """
    previous = read_record(model_dir) if model_dir and os.path.isdir(model_dir) else None
    if previous is None:
        return heads
    recorded = {h.get("name"): h.get("output") or {} for h in previous.get("heads", [])}
    changed = []
    for head in heads.trained_heads:
        old, output = recorded.get(head.name), head.output
        if old is None or old.get("type") != output.kind or not hasattr(output, "is_normalized"):
            continue
        new = output.to_dict()
        if _normalized(old) and _normalized(new) and _statistics(old) != _statistics(new):
            logger.warning(
                "headkit: %s: head %r: normalisation statistics %s differ from the recorded "
                "%s, which the model learned: the recorded ones are used. To use new ones, "
                "train in a new model_dir.", model_dir, head.name, _statistics(new),
                _statistics(old))
            changed.append((head.name, attrs.evolve(output, mean=old.get("mean"),
                                                    std=old.get("std"))))
    if not changed:
        return heads
    outputs = dict(changed)
    return attrs.evolve(heads, heads=[
        attrs.evolve(h, output=outputs[h.name]) if h.name in outputs else h for h in heads])


def _weighted_heads(heads: List[Dict[str, Any]]) -> List[str]:
    """The names of the recorded trained heads with weight > 0, in order."""
    return [h.get("name") for h in heads
            if (h.get("output") or {}).get("type") != "predict" and h.get("weight", 1.0) > 0]


def _weighting_differences(previous: Dict[str, Any], record: Dict[str, Any]):
    """(fatal, logged) differences of the loss weighting between two records.

    Its type decides which variables the checkpoints hold: another type is
    fatal. Uncertainty keeps one variable per weighted head, DWA vectors in
    the weighted heads' order, so under a learned weighting another set of
    weighted heads (a weight moving from or to 0), or for DWA another order, is
    fatal too. DWA's ``temperature`` and ``period`` change no variable: logged.
    """
    old = previous.get("loss_weighting") or _FIXED  # older records: fixed
    new = record["loss_weighting"]
    if old.get("type") != new.get("type"):
        return [f"loss_weighting {old!r} -> {new!r}"], []
    fatal: List[str] = []
    logged = [f"loss_weighting {old!r} -> {new!r}"] if old != new else []
    if new.get("type") != "fixed":
        before, after = _weighted_heads(previous["heads"]), _weighted_heads(record["heads"])
        ordered = new.get("type") == "dynamic_weight_average"
        if (before != after) if ordered else (sorted(before) != sorted(after)):
            fatal.append(
                f"the heads weighted by the {new.get('type')} loss weighting (weight > 0"
                f"{', in this order' if ordered else ''}) {before!r} -> {after!r}: its "
                "variables in the checkpoints belong to those heads"
                + (". List the heads in the recorded order" if ordered
                   and sorted(before) == sorted(after) else ""))
    return fatal, logged


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (a missing_label of NaN reads back as NaN)."""
    return a == b or (a != a and b != b)


def _body_difference(old: List[Dict[str, Any]], new: List[Dict[str, Any]]) -> Optional[str]:
    for index, (before, after) in enumerate(zip(old, new)):
        if any(before.get(f) != after.get(f) for f in _BODY_FIELDS):
            return (f"body layer {index}: {before['class']} {before['shapes']} -> "
                    f"{after['class']} {after['shapes']}")
    if len(old) != len(new):
        return f"the body has {len(new)} layers with weights, where it had {len(old)}"
    return None


def _legacy_head_names(model_dir: str) -> Optional[List[str]]:
    """The trained heads named by a headkit 0.1.0 training record, if there is one."""
    path = os.path.join(model_dir, STATE_FILE)
    try:
        with open(path) as handle:
            history = json.load(handle).get("history") or []
    except (OSError, ValueError, AttributeError):
        return None
    names = {split_key(k)[0] for e in history for k in e.get("metrics", {}) if k != TOTAL_LOSS}
    return sorted(n for n in names if n) or None


def _has_estimator_checkpoints(model_dir: str) -> bool:
    return any(name.startswith("model.ckpt-") for name in os.listdir(model_dir))


def check_model_dir(model_dir: Optional[str], heads: HeadSet, body: Body,
                    backend: str = "estimator",
                    model: Optional[tf.keras.Model] = None) -> Dict[str, Any]:
    """Check ``heads`` and ``body`` against ``model_dir``'s record; return the record to write.

    Raises:
        RecordMismatchError: the model_dir was trained with other heads or
            another body (every fatal difference is named).

    Example:
        >>> record = check_model_dir("runs/penguins", heads, build_body)  # doctest: +SKIP
    """
    record = model_record(heads, body, backend, model)
    if not model_dir or not os.path.isdir(model_dir):
        return record
    previous = read_record(model_dir)
    trained_by = (previous or {}).get("backend", "estimator")
    if (previous is not None or _has_estimator_checkpoints(model_dir)) and trained_by != backend:
        raise RecordMismatchError(
            f"model_dir {model_dir!r} holds a model trained by the {trained_by} backend, and "
            f"its checkpoints cannot be read by the {backend} one. "
            + ("Move it with hk.KerasModel.from_estimator(estimator, model_dir=NEW_DIR)."
               if backend == "keras" else "Use a new model_dir.")
        )
    if previous is None:
        legacy = _legacy_head_names(model_dir)
        trained = sorted(h.name for h in heads.trained_heads)
        fatal = [] if legacy is None or legacy == trained else [
            f"the trained heads {legacy} became {trained}"]
        logged: List[str] = []
    else:
        fatal, logged = _head_differences(previous["heads"], record["heads"])
        fatal_weighting, logged_weighting = _weighting_differences(previous, record)
        fatal += fatal_weighting
        logged += logged_weighting
        if previous.get("gradient_surgery") != record["gradient_surgery"]:
            logged.append(f"gradient_surgery {previous.get('gradient_surgery')!r} -> "
                          f"{record['gradient_surgery']!r}")
        body_change = _body_difference(previous["body"], record["body"])
        if body_change:
            fatal.append(body_change)
    if fatal:
        raise RecordMismatchError(
            f"model_dir {model_dir!r} was trained with other heads or another body: "
            + "; ".join(fatal) + ". Training here would restore its checkpoints into this "
            "model and mix two models, so nothing was written. Use a new model_dir, or start "
            "a new model_dir from this one's body with warm_start_from=" + repr(model_dir) + "."
        )
    for change in logged:
        logger.info("headkit: %s: %s (no weight depends on it).", model_dir, change)
    return record
