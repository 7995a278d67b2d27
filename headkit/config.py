"""Reading and writing HeadSets as dicts and JSON or TOML files, with errors naming the field.

``HeadSet.to_dict``, ``HeadSet.from_dict`` and ``HeadSet.from_file`` delegate
here. Imports no TensorFlow, except to rebuild Keras metrics named in a dict.
See ``examples/heads.toml`` for a file.
"""

from __future__ import annotations

import difflib
import importlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Type, Union

import attrs

from headkit.heads import Head
from headkit.output_types import Classification, Predict, Regression

if TYPE_CHECKING:  # headset imports this module; the class is only needed for hints
    from headkit.headset import HeadSet

__all__ = ["to_dict", "from_dict", "from_file"]

_HEAD_FIELDS = (
    "name",
    "output",
    "loss",
    "metrics",
    "weight",
    "is_default",
    "label_key",
    "missing_label",
    "weight_column",
)
_OUTPUT_TYPES = {"classification": Classification, "regression": Regression, "predict": Predict}


def to_dict(heads: Iterable[Head], strict: bool = True) -> Dict[str, Any]:
    """The JSON-ready dict of ``HeadSet.to_dict``: ``{"heads": [<head table>, ...]}``.

    ``strict=False`` (export manifests) writes a callable that cannot be
    imported by name (a lambda, a local function) as its ``module:qualname``
    anyway, where ``strict`` refuses it: the manifest then still describes
    the heads, and ``hk.load`` does without that callable.

    Example:
        >>> to_dict([Head("y", Regression())])["heads"][0]["output"]
        {'type': 'regression', 'dimension': 1}
    """
    return {"heads": [_head_to_dict(h, strict) for h in heads]}


def from_dict(cls: Type[HeadSet], data: Mapping[str, Any]) -> HeadSet:
    """Build ``cls`` (a HeadSet) from a dict, as ``HeadSet.from_dict`` does.

    Example:
        >>> from headkit.headset import HeadSet
        >>> from_dict(HeadSet, {"heads": [{"name": "y", "output": {"type": "regression"}}]}).names
        ('y',)
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"A HeadSet dict must be a mapping (got {type(data).__name__}).")
    _reject_unknown(data, ("heads",), "the top level")
    if "heads" not in data:
        raise ValueError("A HeadSet dict needs a 'heads' list (got keys: "
                         f"{sorted(data)!r}).")
    raw_heads = data["heads"]
    if not isinstance(raw_heads, list):
        raise TypeError(f"'heads' must be a list of head tables (got {raw_heads!r}).")
    heads: List[Head] = []
    for index, raw in enumerate(raw_heads):
        heads.append(_head_from_dict(raw, f"heads[{index}]"))
    try:
        return cls(heads)
    except (TypeError, ValueError) as error:
        raise type(error)(f"heads: {error}") from error


def from_file(cls: Type[HeadSet], path: Union[str, "os.PathLike[str]"]) -> HeadSet:
    """Read ``cls`` (a HeadSet) from a ``.json`` or ``.toml`` file, as ``HeadSet.from_file`` does.

    Example:
        >>> from headkit.headset import HeadSet
        >>> from_file(HeadSet, "examples/heads.toml").default_head.name  # doctest: +SKIP
        'species'
    """
    text_path = os.fspath(path)
    suffix = os.path.splitext(text_path)[1].lower()
    if suffix not in (".json", ".toml"):
        raise ValueError(
            f"{text_path}: a HeadSet file must end in .json or .toml (got {suffix!r}). "
            "Rename the file after its format."
        )
    with open(text_path, "rb") as handle:
        content = handle.read()
    try:
        if suffix == ".json":
            data = json.loads(content.decode("utf-8"))
        else:
            data = _toml().loads(content.decode("utf-8"))
    except ValueError as error:  # JSONDecodeError, TOMLDecodeError, UnicodeDecodeError
        raise ValueError(
            f"{text_path}: not valid {suffix[1:].upper()} ({error}). Fix the syntax."
        ) from error
    try:
        return cls.from_dict(data)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{text_path}: {error}") from error


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.9 and 3.10
        import tomli as tomllib
    return tomllib


def _reject_unknown(data: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    known = sorted(known)
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        hints = [
            f"{close[0]!r} (for {key!r})"
            for key in unknown
            for close in [difflib.get_close_matches(str(key), known, n=1)]
            if close
        ]
        hint = f" Did you mean {', '.join(hints)}?" if hints else ""
        raise ValueError(
            f"{where}: unknown key(s) {unknown!r}. Known keys: {known!r}.{hint}"
        )


def _callable_ref(value: Any, what: str, head: str, strict: bool = True) -> Dict[str, str]:
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None) or type(value).__qualname__
    if strict and (not module or "<" in qualname):
        raise ValueError(
            f"Head {head!r}: {what} {value!r} cannot be written to a dict: it is not "
            "importable by name. Define it at module level (def my_loss(labels, outputs): ...)."
        )
    return {"callable": f"{module}:{qualname}"}


def _metric_to_dict(head: str, metric: Any, strict: bool = True) -> Any:
    if isinstance(metric, str):
        return metric
    if hasattr(metric, "get_config") and not isinstance(metric, type):
        return {"keras": type(metric).__name__, "config": _jsonable(metric.get_config())}
    if isinstance(metric, type):
        return {"keras": metric.__name__}
    return _callable_ref(metric, "metric", head, strict)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _head_to_dict(head: Head, strict: bool = True) -> Dict[str, Any]:
    loss = head.loss
    if loss is not None and not isinstance(loss, str):
        loss = _callable_ref(loss, "loss", head.name, strict)
    return {
        "name": head.name,
        "output": head.output.to_dict(),
        "loss": loss,
        "metrics": [_metric_to_dict(head.name, m, strict) for m in head.metrics],
        "weight": head.weight,
        "is_default": head.is_default,
        "label_key": head.label_key,
        "missing_label": head.missing_label,
        "weight_column": head.weight_column,
    }


def import_ref(ref: Any, where: str) -> Any:
    if not isinstance(ref, str) or ":" not in ref:
        raise ValueError(f"{where}: expected 'module:name' (got {ref!r}).")
    module_name, _, qualname = ref.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"{where}: cannot import {ref!r} ({error}). Make sure the module is importable."
        ) from error
    return value


def _metric_from_dict(raw: Any, where: str) -> Any:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, Mapping) and "keras" in raw:
        _reject_unknown(raw, ("keras", "config"), where)
        import tensorflow as tf  # Keras metrics only exist with TensorFlow

        try:
            found = tf.keras.metrics.get(raw["keras"])  # an instance, for a class name
        except ValueError as error:
            raise ValueError(f"{where}: unknown Keras metric {raw['keras']!r}.") from error
        cls = found if isinstance(found, type) else type(found)
        return cls.from_config(raw["config"]) if "config" in raw else cls
    if isinstance(raw, Mapping) and "callable" in raw:
        _reject_unknown(raw, ("callable",), where)
        return import_ref(raw["callable"], where + ".callable")
    raise TypeError(
        f"{where}: a metric is a name, {{'keras': ClassName, 'config': {{...}}}} or "
        f"{{'callable': 'module:name'}} (got {raw!r})."
    )


def _output_from_dict(raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping) or "type" not in raw:
        raise TypeError(
            f"{where} must be a table with a 'type' of {sorted(_OUTPUT_TYPES)!r} (got {raw!r}). "
            f'In TOML: [heads.output] then type = "classification".'
        )
    kind = raw["type"]
    if kind not in _OUTPUT_TYPES:
        close = difflib.get_close_matches(str(kind), list(_OUTPUT_TYPES), n=1)
        raise ValueError(
            f"{where}.type must be one of {sorted(_OUTPUT_TYPES)!r} (got {kind!r})."
            + (f" Did you mean {close[0]!r}?" if close else "")
        )
    cls = _OUTPUT_TYPES[kind]
    fields = [f.name for f in attrs.fields(cls)]
    _reject_unknown(raw, ["type", *fields], where)
    kwargs = {k: v for k, v in raw.items() if k != "type"}
    n_classes = kwargs.get("n_classes")
    if n_classes is not None and (
        isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2
    ):
        raise ValueError(
            f"{where}.n_classes must be an integer >= 2 (got {n_classes!r}); "
            'use type = "regression" for a continuous output.'
        )
    vocabulary = kwargs.get("vocabulary")
    if vocabulary is not None and not isinstance(vocabulary, (list, tuple)):
        raise TypeError(
            f"{where}.vocabulary must be a list of class names (got {vocabulary!r}); "
            'e.g. vocabulary = ["Adelie", "Chinstrap", "Gentoo"].'
        )
    dimension = kwargs.get("dimension", 1)
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise ValueError(
            f"{where}.dimension must be an integer >= 1 (got {dimension!r}): the number "
            "of values the head predicts per row."
        )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        field = "vocabulary" if "vocabulary" in kwargs else "n_classes"
        raise type(error)(f"{where}.{field}: {error}") from error


def _head_from_dict(raw: Any, where: str) -> Head:
    if not isinstance(raw, Mapping):
        raise TypeError(f"{where} must be a table of head fields (got {raw!r}).")
    _reject_unknown(raw, _HEAD_FIELDS, where)
    for required in ("name", "output"):
        if required not in raw:
            raise ValueError(f"{where}: missing required key {required!r}.")
    kwargs = dict(raw)
    kwargs["output"] = _output_from_dict(raw["output"], where + ".output")
    loss = raw.get("loss")
    if isinstance(loss, Mapping):
        _reject_unknown(loss, ("callable",), where + ".loss")
        kwargs["loss"] = import_ref(loss.get("callable"), where + ".loss.callable")
    metrics = raw.get("metrics", ())
    if isinstance(metrics, (str, Mapping)) or not isinstance(metrics, (list, tuple)):
        raise TypeError(f"{where}.metrics must be a list (got {metrics!r}).")
    kwargs["metrics"] = tuple(
        _metric_from_dict(m, f"{where}.metrics[{i}]") for i, m in enumerate(metrics)
    )
    if kwargs.get("label_key") is None:
        kwargs.pop("label_key", None)
    _check_fields_alone(kwargs, where)
    try:
        return Head(**kwargs)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from error


def _check_fields_alone(kwargs: Mapping[str, Any], where: str) -> None:
    """Check each head field on its own first, so an error names that field's path."""
    try:
        Head(kwargs["name"], kwargs["output"])
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}.name: {error}") from error
    for field, value in kwargs.items():
        if field in ("name", "output"):
            continue
        items = enumerate(value) if field == "metrics" else [(None, value)]
        for index, item in items:
            path = f"{where}.{field}" + ("" if index is None else f"[{index}]")
            try:
                Head(kwargs["name"], kwargs["output"], **{field: (item,) if index is not None
                                                          else item})
            except (TypeError, ValueError) as error:
                raise type(error)(f"{path}: {error}") from error
