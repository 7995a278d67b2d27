"""Reading and writing HeadSets as dicts and JSON or TOML files, with errors naming the field.

``HeadSet.to_dict``, ``HeadSet.from_dict`` and ``HeadSet.from_file`` delegate
here. Imports no TensorFlow, except to rebuild Keras metrics named in a dict.
See ``examples/heads.toml`` for a file.

Trust: a file never makes headkit import or call anything. A custom loss or
metric appears in a file as ``{"callable": "<name>"}`` and is resolved only
from the ``custom_objects`` the caller passes.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, TypeVar, Union

from headkit.errors import ConfigError, ConfigTypeError
from headkit.spec import weighting
from headkit.spec.head import Head
from headkit.spec.output_types import OUTPUT_TYPES

__all__ = ["heads_to_dict", "heads_from_dict", "headset_to_dict", "headset_options_from_dict",
           "read_file", "callable_ref", "resolve_callable"]

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
    "class_weight",
)
#: The HeadSet's own keys beside ``heads``, each a name or a table with a ``type``.
_OPTIONS = {"loss_weighting": weighting.LOSS_WEIGHTINGS,
            "gradient_surgery": weighting.GRADIENT_SURGERIES}
T = TypeVar("T")
#: What callers pass to resolve ``{"callable": name}`` entries: name -> object.
CustomObjects = Optional[Mapping[str, Any]]


def heads_to_dict(heads: Iterable[Head], strict: bool = True) -> Dict[str, Any]:
    """The JSON-ready dict of ``HeadSet.to_dict``: ``{"heads": [<head table>, ...]}``.

    ``strict=False`` (export manifests) writes a callable that cannot be
    imported by name (a lambda, a local function) as its ``module:qualname``
    anyway, where ``strict`` refuses it: the manifest then still describes
    the heads, and ``hk.load`` does without that callable.

    Example:
        >>> from headkit.spec.output_types import Regression
        >>> heads_to_dict([Head("y", Regression())])["heads"][0]["output"]
        {'type': 'regression', 'dimension': 1}
    """
    return {"heads": [_head_to_dict(h, strict) for h in heads]}


def headset_to_dict(headset: Any, strict: bool = True) -> Dict[str, Any]:
    """A HeadSet's dict: its heads, then ``loss_weighting`` and ``gradient_surgery`` when set.

    The defaults (``"fixed"``, no surgery) are left out, so a HeadSet without
    them writes what headkit 0.1.0 wrote.

    Example:
        >>> from headkit.spec.headset import HeadSet
        >>> from headkit.spec.output_types import Regression
        >>> heads = HeadSet([Head("y", Regression())], loss_weighting="uncertainty")
        >>> headset_to_dict(heads)["loss_weighting"]
        {'type': 'uncertainty'}
    """
    data = heads_to_dict(headset.heads, strict)
    if headset.loss_weighting.is_learned:
        data["loss_weighting"] = headset.loss_weighting.to_dict()
    if headset.gradient_surgery is not None:
        data["gradient_surgery"] = headset.gradient_surgery.to_dict()
    return data


def headset_options_from_dict(data: Mapping[str, Any]) -> Dict[str, Any]:
    """``loss_weighting`` and ``gradient_surgery`` of a HeadSet dict, built; errors name the path.

    Each is a name (``loss_weighting = "uncertainty"``) or a table with a
    ``type`` and the object's fields (``{type = "dynamic_weight_average",
    temperature = 2.0}``).

    Example:
        >>> headset_options_from_dict({"loss_weighting": {"type": "dynamic_weight_average",
        ...                                               "period": 50}})
        {'loss_weighting': DynamicWeightAverage(temperature=2.0, period=50)}
    """
    options = {}
    for key, registry in _OPTIONS.items():
        if key in data and data[key] is not None:
            options[key] = _option_from_dict(data[key], key, registry)
    return options


def _option_from_dict(raw: Any, where: str, registry: Mapping[str, type]) -> Any:
    if isinstance(raw, str):
        return raw  # the HeadSet looks the name up, and names the known ones
    if not isinstance(raw, Mapping) or "type" not in raw:
        raise ConfigTypeError(
            f"{where} must be a name ({', '.join(map(repr, registry))}) or a table with a "
            f"'type' (got {raw!r}); e.g. {where} = {next(iter(registry))!r}.", field=where)
    kind = raw["type"]
    if kind not in registry:
        close = difflib.get_close_matches(str(kind), list(registry), n=1)
        raise ConfigError(
            f"{where}.type: unknown name {kind!r}. Known names: "
            f"{', '.join(map(repr, registry))}." + (f" Did you mean {close[0]!r}?" if close
                                                    else ""), field=f"{where}.type")
    cls = registry[kind]
    import attrs

    _reject_unknown(raw, ["type", *(f.name for f in attrs.fields(cls))], where)
    try:
        return cls(**{k: v for k, v in raw.items() if k != "type"})
    except ConfigError as error:
        raise _with_path(error, where) from error


def heads_from_dict(data: Mapping[str, Any], custom_objects: CustomObjects = None) -> List[Head]:
    """The heads of a dict such as ``HeadSet.to_dict`` writes; errors name the field's path.

    Example:
        >>> [h.name for h in heads_from_dict({"heads": [
        ...     {"name": "y", "output": {"type": "regression"}}]})]
        ['y']
    """
    if not isinstance(data, Mapping):
        raise ConfigTypeError(
            f"A HeadSet dict must be a mapping with a 'heads' list (got {type(data).__name__})."
        )
    _reject_unknown(data, ("heads", *_OPTIONS), "the top level")
    if "heads" not in data:
        raise ConfigError("A HeadSet dict needs a 'heads' list (got keys: "
                          f"{sorted(data)!r}).", field="heads")
    raw_heads = data["heads"]
    if isinstance(raw_heads, Mapping):
        raise ConfigTypeError(
            f"'heads' must be a list of head tables (got one table {dict(raw_heads)!r}). "
            "In TOML write [[heads]] (two brackets) for each head, not [heads].", field="heads")
    if not isinstance(raw_heads, list):
        raise ConfigTypeError(f"'heads' must be a list of head tables (got {raw_heads!r}).",
                              field="heads")
    return [_head_from_dict(raw, f"heads[{index}]", custom_objects)
            for index, raw in enumerate(raw_heads)]


def read_file(path: Union[str, "os.PathLike[str]"], from_dict: Callable[[Any], T]) -> T:
    """Parse a ``.json`` or ``.toml`` file and build it with ``from_dict``; errors name the path.

    A JSON object that repeats a key is an error (JSON readers keep the last value).

    Example:
        >>> read_file("examples/heads.toml", lambda d: len(d["heads"]))  # doctest: +SKIP
        4
    """
    text_path = os.fspath(path)
    suffix = os.path.splitext(text_path)[1].lower()
    if suffix not in (".json", ".toml"):
        raise ConfigError(
            f"{text_path}: a HeadSet file must end in .json or .toml (got {suffix!r}). "
            "Rename the file after its format."
        )
    try:
        with open(text_path, "rb") as handle:
            content = handle.read()
    except OSError as error:
        raise ConfigError(f"{text_path}: cannot read the file ({error.strerror}).") from None
    try:
        if suffix == ".json":
            data = json.loads(content.decode("utf-8"), object_pairs_hook=_no_repeated_keys)
        else:
            data = _toml().loads(content.decode("utf-8"))
    except ConfigError as error:
        raise ConfigError(f"{text_path}: {error}") from None
    except ValueError as error:  # JSONDecodeError, TOMLDecodeError, UnicodeDecodeError
        raise ConfigError(
            f"{text_path}: not valid {suffix[1:].upper()} ({error}). Fix the syntax."
        ) from error
    try:
        return from_dict(data)
    except ConfigError as error:
        raise type(error)(f"{text_path}: {error}", field=error.field) from error


def _no_repeated_keys(pairs: List[tuple]) -> Dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ConfigError(
            f"the JSON object {{{', '.join(repr(k) + ': ...' for k in keys)}}} repeats the "
            f"key(s) {repeated!r}; a JSON reader would keep only the last value. Remove the "
            "repeats."
        )
    return dict(pairs)


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
        raise ConfigError(
            f"{where}: unknown key(s) {unknown!r}. Known keys: {known!r}.{hint}"
        )


def callable_ref(value: Any, what: str, head: str, strict: bool = True) -> Dict[str, str]:
    """How a file names a custom loss or metric: ``{"callable": "module:qualname"}``.

    Example:
        >>> callable_ref(len, "loss", "y")
        {'callable': 'builtins:len'}
    """
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None) or type(value).__qualname__
    if strict and (not module or "<" in qualname):
        raise ConfigError(
            f"Head {head!r}: {what} {value!r} cannot be written to a dict: it has no name "
            "to find it by. Define it at module level (def my_loss(labels, outputs): ...) "
            "and pass it in custom_objects when reading the file back."
        )
    return {"callable": f"{module}:{qualname}"}


def resolve_callable(ref: Any, where: str, custom_objects: CustomObjects) -> Any:
    """The object that ``custom_objects`` gives for a file's ``{"callable": ref}``.

    Nothing is imported: ``ref`` is looked up in ``custom_objects`` by the
    full ``"module:qualname"`` or by the name after the colon.

    Example:
        >>> def my_loss(labels, outputs): ...
        >>> resolve_callable("train:my_loss", "heads[0].loss", {"my_loss": my_loss}) is my_loss
        True
    """
    if not isinstance(ref, str) or not ref:
        raise ConfigTypeError(f"{where}: expected the name of a custom object (got {ref!r}).")
    objects = dict(custom_objects or {})
    short = ref.rpartition(":")[2]
    for key in (ref, short):
        if key in objects:
            return objects[key]
    raise ConfigError(
        f"{where}: {ref!r} is not among the custom_objects passed "
        f"({sorted(objects) or 'none'}). headkit never imports code named in a file; pass "
        f"the object yourself: HeadSet.from_file(path, custom_objects={{{short!r}: {short}}})."
    )


def _metric_to_dict(head: str, metric: Any, strict: bool = True) -> Any:
    if isinstance(metric, str):
        return metric
    if hasattr(metric, "get_config") and not isinstance(metric, type):
        return {"keras": type(metric).__name__, "config": _jsonable(metric.get_config())}
    if isinstance(metric, type):
        return {"keras": metric.__name__}
    return callable_ref(metric, "metric", head, strict)


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
        loss = callable_ref(loss, "loss", head.name, strict)
    data = {
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
    if head.class_weight is not None:  # written when set, so older dicts stay as they were
        data["class_weight"] = {str(k): v for k, v in head.class_weight.items()}
    return data


def _keras_metric(raw: Mapping[str, Any], where: str) -> Any:
    """A Keras metric class (or instance, with a config) named in a file, by its class name."""
    import tensorflow as tf  # Keras metrics only exist with TensorFlow

    name = raw["keras"]
    try:
        found = tf.keras.metrics.get(name)  # Keras' own registry: no import by path
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{where}.keras: unknown Keras metric {name!r}.") from error
    cls = found if isinstance(found, type) else type(found)
    if "config" not in raw:
        return cls
    config = raw["config"]
    if not isinstance(config, Mapping):
        raise ConfigTypeError(f"{where}.config must be a table of {name}'s arguments "
                              f"(got {config!r}).")
    try:
        return cls.from_config(dict(config))
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"{where}.config: Keras {name} does not accept {dict(config)!r} ({error}). "
            f"Use the arguments of tf.keras.metrics.{name}."
        ) from error


def _metric_from_dict(raw: Any, where: str, custom_objects: CustomObjects) -> Any:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, Mapping) and "keras" in raw:
        _reject_unknown(raw, ("keras", "config"), where)
        return _keras_metric(raw, where)
    if isinstance(raw, Mapping) and "callable" in raw:
        _reject_unknown(raw, ("callable",), where)
        return resolve_callable(raw["callable"], where + ".callable", custom_objects)
    raise ConfigTypeError(
        f"{where}: a metric is a name, {{'keras': ClassName, 'config': {{...}}}} or "
        f"{{'callable': 'module:name'}} (got {raw!r})."
    )


def _with_path(error: ConfigError, where: str) -> ConfigError:
    """``error`` with the field's path: ``heads[0].weight must be ...`` or ``heads[0]: ...``."""
    message, field = str(error), error.field
    if field:
        path = f"{where}.{field}"
        bare = field.split("[")[0]
        if message.startswith(bare + " ") or message.startswith(bare + "="):
            return type(error)(path + message[len(bare):], field=path)
        return type(error)(f"{path}: {message}", field=path)
    return type(error)(f"{where}: {message}", field=where)


def _output_from_dict(raw: Any, where: str) -> Any:
    if not isinstance(raw, Mapping) or "type" not in raw:
        raise ConfigTypeError(
            f"{where} must be a table with a 'type' of {sorted(OUTPUT_TYPES)!r} (got {raw!r}). "
            f'In TOML: [heads.output] then type = "classification".'
        )
    kind = raw["type"]
    if kind not in OUTPUT_TYPES:
        close = difflib.get_close_matches(str(kind), list(OUTPUT_TYPES), n=1)
        raise ConfigError(
            f"{where}.type must be one of {sorted(OUTPUT_TYPES)!r} (got {kind!r})."
            + (f" Did you mean {close[0]!r}?" if close else "")
        )
    cls = OUTPUT_TYPES[kind]
    import attrs

    _reject_unknown(raw, ["type", *(f.name for f in attrs.fields(cls))], where)
    kwargs = {k: v for k, v in raw.items() if k != "type"}
    vocabulary = kwargs.get("vocabulary")
    if vocabulary is not None and not isinstance(vocabulary, (list, tuple)):
        raise ConfigTypeError(
            f"{where}.vocabulary must be a list of class names (got {vocabulary!r}); "
            'e.g. vocabulary = ["Adelie", "Chinstrap", "Gentoo"].'
        )
    try:
        return cls(**kwargs)
    except ConfigError as error:
        advice = ". Use hk.Regression() for a single continuous output."
        if str(error).endswith(advice):  # say it the way a config file does
            error = type(error)(str(error)[:-len(advice)] + '; use type = "regression" for a '
                                "continuous output.", field=error.field)
        raise _with_path(error, where) from error


def _class_weight_from_dict(raw: Any, output: Any, where: str) -> Any:
    """A file's class weights: keys are strings, so a head without a vocabulary gets int ids."""
    if not isinstance(raw, Mapping):
        raise ConfigTypeError(
            f"{where} must be a table of class -> weight (got {raw!r}); e.g. "
            '{ Adelie = 1.0, Chinstrap = 2.0 }, or { "0" = 1.0, "1" = 3.0 } by class id.',
            field=where)
    if getattr(output, "vocabulary", "") is not None:
        return dict(raw)  # class names (or an output that takes none: the Head says so)
    weights = {}
    for key, value in raw.items():
        text = str(key)
        if not (text.isdigit() or (isinstance(key, int) and not isinstance(key, bool))):
            raise ConfigError(
                f"{where}: the head has no vocabulary, so classes are ids 0..."
                f"{getattr(output, 'n_classes', 1) - 1} (got {key!r}). Write \"0\" = 1.0, or "
                "give the output a vocabulary.", field=where)
        weights[int(text)] = value
    return weights


def _head_from_dict(raw: Any, where: str, custom_objects: CustomObjects) -> Head:
    if not isinstance(raw, Mapping):
        raise ConfigTypeError(f"{where} must be a table of head fields (got {raw!r}).")
    _reject_unknown(raw, _HEAD_FIELDS, where)
    for required in ("name", "output"):
        if required not in raw:
            raise ConfigError(f"{where}: missing required key {required!r}.")
    kwargs = dict(raw)
    kwargs["output"] = _output_from_dict(raw["output"], where + ".output")
    loss = raw.get("loss")
    if isinstance(loss, Mapping):
        _reject_unknown(loss, ("callable",), where + ".loss")
        kwargs["loss"] = resolve_callable(loss.get("callable"), where + ".loss.callable",
                                          custom_objects)
    metrics = raw.get("metrics", ())
    if isinstance(metrics, (str, Mapping)) or not isinstance(metrics, (list, tuple)):
        raise ConfigTypeError(f"{where}.metrics must be a list (got {metrics!r}).")
    kwargs["metrics"] = tuple(
        _metric_from_dict(m, f"{where}.metrics[{i}]", custom_objects)
        for i, m in enumerate(metrics)
    )
    if kwargs.get("label_key") is None:
        kwargs.pop("label_key", None)
    class_weight = raw.get("class_weight")
    if class_weight is not None:
        kwargs["class_weight"] = _class_weight_from_dict(class_weight, kwargs["output"],
                                                         where + ".class_weight")
    try:
        return Head(**kwargs)
    except ConfigError as error:
        raise _with_path(error, where) from error
