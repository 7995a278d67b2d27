"""Serving inputs checked against an export's feature spec, per row and feature, before any graph.

``hk.load(...).predict`` and ``headkit predict`` feed raw values to the
predict signatures. TensorFlow would turn ``None`` into the string
``'None'``, ``True`` into ``1.0``, wrap a large unsigned integer to a
negative one, and read a two-value list as two rows. So every value is
checked against the feature spec the export records (dtype, shape, finite)
first, and an error names the row, the feature, the value, what was expected
and the fix. Features the export does not read are ignored, as TensorFlow
Serving's classify and regress ignore them.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from headkit.data.checks import series_to_numpy
from headkit.errors import DataError, DataTypeError
from headkit.spec.scalars import plain

__all__ = ["check_features", "example_row", "RowName"]

#: Names a row (0-based index) in an error: ``row 3``, or a file's line for the CLI.
RowName = Callable[[int], str]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: The smallest magnitude that float32 rounds to inf (float32's max plus half a step).
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103
_EXPECTED = {"string": "a string", "float32": "a float32 number",
             "int64": "an int64 (a whole number)"}
_NON_FINITE_FIX = (
    "Fill or drop it, or allow non-finite values if the model expects them "
    "(predict(..., allow_non_finite=True); headkit predict --allow-non-finite)."
)


class _Bad(Exception):
    """One value's problem, raised inside this module and re-raised as a DataError."""

    def __init__(self, problem: str, wrong_type: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.wrong_type = wrong_type
        self.position: Optional[Tuple[int, ...]] = None  # within the row, for shaped features


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _size(shape: Sequence[int]) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def _expected(dtype: str, shape: Sequence[int]) -> str:
    one = _EXPECTED[dtype]
    if _size(shape) == 1:
        return f"{one} (one value per row)"
    if len(shape) == 1:
        return f"a list of {shape[0]} values, each {one}"
    return f"nested lists of shape {list(shape)}, each {one}"


# ------------------------------------------------------------------ one value


def _got(value: Any) -> str:
    if value is None:
        return "None (a missing value)"
    if isinstance(value, float) and value != value:
        return "nan (a missing value)"
    if isinstance(value, bool):
        return f"{value!r} (a bool)"
    if isinstance(value, str):
        return f"{_show(value)} (a string)"
    if isinstance(value, Mapping):
        return f"a dict {_show(value)}"
    return f"{_show(value)} ({type(value).__name__})"


def _missing_fix(dtype: str) -> str:
    fill = "'unknown'" if dtype == "string" else "the training mean"
    return f"Fill missing values (e.g. with {fill}) or drop the row."


def _string(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad(f"got {_show(value)}, a string that is not valid Unicode text; "
                       "expected a string. Remove the stray surrogate characters.") from None
    if value is None or (isinstance(value, float) and value != value):
        raise _Bad(f"got {_got(value)}; expected a string. {_missing_fix('string')}", True)
    raise _Bad(f"got {_got(value)}; expected a string. headkit does not turn other values "
               "into text (the text of a number is rarely a category the model learned): pass "
               "the string itself.", True)


def _number(value: Any, dtype: str, text: bool) -> Any:
    """A Python int or float read from ``value``, or the reason it is not a number."""
    if text and isinstance(value, str):
        try:
            return float(value) if dtype == "float32" else int(value)
        except ValueError:
            raise _Bad(f"got {_show(value)}, which is not {_EXPECTED[dtype]}. Fix the "
                       "cell.", True) from None
    if value is None:
        raise _Bad(f"got {_got(value)}; expected {_EXPECTED[dtype]}. {_missing_fix(dtype)}", True)
    if isinstance(value, bool):
        raise _Bad(f"got {_got(value)}; expected {_EXPECTED[dtype]}. A bool is not a number "
                   "here: pass 1 or 0 if you mean one.", True)
    if isinstance(value, (str, bytes)):
        raise _Bad(f"got {_got(value)}; expected {_EXPECTED[dtype]}. Strings are not read as "
                   f"numbers: pass the number itself (3.5, not '3.5').", True)
    if not isinstance(value, (int, float)):
        raise _Bad(f"got {_got(value)}; expected {_EXPECTED[dtype]}.", True)
    return value


def _float32(value: Any, allow_non_finite: bool, text: bool) -> float:
    number = _number(value, "float32", text)
    try:
        number = float(number)
    except OverflowError:  # an int beyond float64
        raise _Bad(f"got {_show(value)}, outside float32's range (about ±3.4e38).") from None
    if not math.isfinite(number):
        if allow_non_finite:
            return number
        raise _Bad(f"got {_got(number)}; expected a finite float32 number. {_NON_FINITE_FIX}")
    if abs(number) >= _FLOAT32_OVERFLOW:
        raise _Bad(f"got {_show(value)}, outside float32's range (about ±3.4e38).")
    return number


def _int64(value: Any, text: bool) -> int:
    number = _number(value, "int64", text)
    if isinstance(number, float):
        if not math.isfinite(number):
            raise _Bad(f"got {_got(number)}; expected an int64 (a whole number), which has no "
                       f"NaN or inf. {_missing_fix('int64')}")
        if not number.is_integer():
            raise _Bad(f"got {number!r}, which is not a whole number; expected an int64. "
                       "Round it yourself if that is what you mean.")
        if not -(2.0**63) <= number < 2.0**63:
            raise _Bad(f"got {number!r}, outside int64's range [-2**63, 2**63 - 1].")
        number = int(number)
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise _Bad(f"got {number!r}, outside int64's range [-2**63, 2**63 - 1]; it would wrap "
                   "around to another number.")
    return number


def _leaf(value: Any, dtype: str, allow_non_finite: bool, text: bool) -> Any:
    if isinstance(value, (np.datetime64, np.timedelta64)):
        raise _Bad(f"got {_got(value)}; expected {_EXPECTED[dtype]}. Convert dates and times "
                   "to numbers first (e.g. days since an epoch).", True)
    if isinstance(value, np.generic):
        value = value.item()  # np.float32(0.5) is a number, np.str_ a string, np.bool_ a bool
    if dtype == "string":
        return _string(value)
    if dtype == "float32":
        return _float32(value, allow_non_finite, text)
    return _int64(value, text)


# ------------------------------------------------------------------ one row's value


def _flatten(value: Any, depth: int) -> Tuple[Tuple[int, ...], List[Any]]:
    """The shape of nested lists (or arrays) and their values; ``depth`` bounds the nesting."""
    if hasattr(value, "__array__") and not isinstance(value, (np.ndarray, np.generic)):
        value = np.asarray(value)  # a tf.Tensor or a pandas Series inside a row
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "mM":  # .tolist() would give nanoseconds as ints
            raise _Bad(f"an array of dtype {value.dtype}; convert dates and times to numbers")
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return (), [value]
    if depth == 0:
        raise _Bad("lists nested deeper than the feature's shape")
    parts = [_flatten(item, depth - 1) for item in value]
    shapes = {shape for shape, _ in parts}
    if len(shapes) > 1:
        raise _Bad("ragged nested lists (inner lists of different lengths)")
    inner = parts[0][0] if parts else ()
    return (len(value), *inner), [leaf for _, leaves in parts for leaf in leaves]


def _row_values(value: Any, dtype: str, shape: Tuple[int, ...], allow_non_finite: bool,
                text: bool) -> List[Any]:
    """One row's checked values, flat; a problem raises ``_Bad`` (with the value's position)."""
    try:
        got, leaves = _flatten(value, len(shape) + 1)
    except _Bad as bad:
        raise _Bad(f"got {_show(value)}, {bad.problem}; expected {_expected(dtype, shape)}.") \
            from None
    if got != shape and not (_size(got) == 1 and _size(shape) == 1):
        if isinstance(value, Mapping):
            described = f"a dict {_show(value)}"
        elif got == ():
            described = f"the single value {_show(value)}"
        elif len(got) == 1:
            described = f"a list of {got[0]} values {_show(value)}"
        else:
            described = f"nested lists of shape {list(got)}"
        hint = ""
        if _size(shape) == 1 and got and got[0] > 1:
            hint = (" A row holds one value per feature: to predict several rows, pass "
                    "several rows.")
        raise _Bad(f"got {described}; expected {_expected(dtype, shape)}.{hint}")
    checked = []
    for position, leaf in enumerate(leaves):
        try:
            checked.append(_leaf(leaf, dtype, allow_non_finite, text))
        except _Bad as bad:
            if _size(shape) > 1:
                bad.position = tuple(int(i) for i in np.unravel_index(position, got))
            raise
    return checked


# ------------------------------------------------------------------ one column


def _fail(where: str, name: str, bad: _Bad) -> DataError:
    at = f" at {list(bad.position)}" if bad.position is not None else ""
    error = DataTypeError if bad.wrong_type else DataError
    return error(f"{where}, feature {name!r}{at}: {bad.problem}")


def _numeric_array(name: str, dtype: str, shape: Tuple[int, ...], column: np.ndarray,
                   allow_non_finite: bool, row_name: RowName) -> np.ndarray:
    """A numeric array column, checked at once; the first bad value is named as a row would be."""
    n = len(column)
    if column.shape[1:] != shape and not (_size(column.shape[1:]) == 1 and _size(shape) == 1):
        hint = ""
        if _size(shape) == 1:
            hint = " A row holds one value per feature: to predict more rows, add rows."
        raise DataError(
            f"feature {name!r}: every row has shape {list(column.shape[1:])} (the array's shape "
            f"is {list(column.shape)}); expected {_expected(dtype, shape)}.{hint}"
        )
    if column.dtype.kind == "f" or dtype == "int64":
        values = column.astype(np.float64) if column.dtype.kind == "f" else column
        with np.errstate(invalid="ignore"):
            if dtype == "float32":
                bad = np.abs(values) >= _FLOAT32_OVERFLOW
                if not allow_non_finite:
                    bad |= ~np.isfinite(values)
            elif column.dtype.kind == "u":
                bad = values > np.uint64(_INT64_MAX)
            elif column.dtype.kind == "f":
                bad = ~np.isfinite(values) | (values != np.floor(values))
                bad |= (values < -(2.0**63)) | (values >= 2.0**63)
            else:
                bad = np.zeros(values.shape, bool)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            try:
                _leaf(column[index], dtype, allow_non_finite, text=False)
            except _Bad as problem:
                if _size(shape) > 1:
                    problem.position = index[1:]
                raise _fail(row_name(index[0]), name, problem) from None
    wanted = np.float32 if dtype == "float32" else np.int64
    return column.astype(wanted).reshape(n, *shape)


def _holds_dates(value: Any) -> bool:
    """Whether nested lists hold a datetime64 array, which dtype=object turns into ints."""
    if isinstance(value, (list, tuple)):
        return any(_holds_dates(item) for item in value)
    return isinstance(value, np.ndarray) and value.dtype.kind in "mM"


def _plain(column: Any, n: int, dtype: str, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """A column of plain values (lists of floats, strings) at NumPy's speed, or None.

    Only columns whose every value has an accepted type and whose rows have
    the feature's shape pass (numbers still need the finite and range checks
    of :func:`_numeric_array`); any other column goes row by row, which finds
    and names the bad value.
    """
    rows = column.tolist() if isinstance(column, np.ndarray) else column
    if _holds_dates(rows):
        return None  # the rows say what is wrong
    try:
        objects = np.array(rows, dtype=object)
    except ValueError:  # ragged
        return None
    if objects.shape[1:] != shape and not (
            objects.shape[1:] == () and _size(shape) == 1 and len(objects) == n):
        return None
    flat = objects.reshape(-1)
    types = set(map(type, flat))
    try:
        if dtype == "string":
            if not all(issubclass(t, (str, bytes)) for t in types):
                return None
            encoded = np.empty(len(flat), dtype=object)  # bytes objects, as tf.string takes
            encoded[:] = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in flat]
            return encoded.reshape(n, *shape)
        numbers = (int, float) if dtype == "float32" else (int,)
        if any(t is bool or not issubclass(t, numbers) for t in types):
            return None
        return flat.astype(np.float64 if dtype == "float32" else np.int64).reshape(n, *shape)
    except (OverflowError, UnicodeEncodeError):
        return None


def _column(name: str, entry: Mapping[str, Any], column: Any, n: int, allow_non_finite: bool,
            text: bool, row_name: RowName) -> np.ndarray:
    dtype = entry["dtype"]
    if dtype not in _EXPECTED:
        raise DataError(f"feature {name!r}: the export parses it as {dtype}, which headkit "
                        f"cannot check; expected one of {sorted(_EXPECTED)}.")
    shape = tuple(int(d) for d in entry.get("shape", ()))
    if isinstance(column, np.ndarray) and column.dtype.kind in "mMV":
        raise DataTypeError(  # datetime64 would read as int64 nanoseconds
            f"feature {name!r}: got an array of dtype {column.dtype}; expected "
            f"{_expected(dtype, shape)}. Convert the column to numbers or strings first."
        )
    if isinstance(column, np.ndarray) and dtype != "string" and column.dtype.kind in "fiu":
        return _numeric_array(name, dtype, shape, column, allow_non_finite, row_name)
    plain = None if text else _plain(column, n, dtype, shape)
    if plain is not None:
        if dtype == "string":
            return plain
        return _numeric_array(name, dtype, shape, plain, allow_non_finite, row_name)
    rows = column.tolist() if isinstance(column, np.ndarray) else column
    flat: List[Any] = []
    for index, value in enumerate(rows):
        try:
            flat.extend(_row_values(value, dtype, shape, allow_non_finite, text))
        except _Bad as bad:
            raise _fail(row_name(index), name, bad) from None
    if dtype == "string":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        array = np.asarray(flat, dtype=np.float32 if dtype == "float32" else np.int64)
    return array.reshape(n, *shape)


# ------------------------------------------------------------------ the whole input


def _did_you_mean(name: str, given: Sequence[Any]) -> str:
    """A hint naming the given key that looks like ``name`` (case aside), if one does."""
    by_lower = {str(k).lower(): str(k) for k in given}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" Is {by_lower[close[0]]!r} a typo of {name!r}?" if close else ""


def _is_dataframe(features: Any) -> bool:
    return hasattr(features, "columns") and hasattr(features, "iloc")


def _dict_column(name: str, value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray):
        column = value
    elif hasattr(value, "to_numpy") and hasattr(value, "dtype"):  # a pandas Series
        column = series_to_numpy(value)
    elif isinstance(value, (str, bytes, Mapping)) or value is None:
        column = np.asarray(None)  # a single value, never split into characters
    else:
        column = np.asarray(value)  # a tf.Tensor, a range, ...
    if column.ndim == 0:
        raise DataError(
            f"feature {name!r}: got the single value {_show(value)}; a dict of columns needs "
            "one value per row (a list or an array). To predict one row, pass a list of row "
            f"dicts: predict([{{{name!r}: ..., ...}}])."
        )
    return column


def _columns(features: Any, names: Sequence[str],
             row_name: RowName) -> Tuple[Dict[str, Any], int, RowName]:
    """The needed columns of a DataFrame, a dict of columns or a list of row dicts, and n."""
    if _is_dataframe(features):
        by_name = [str(c) for c in features.columns]
        twice = sorted({c for c in by_name if by_name.count(c) > 1 and c in names})
        if twice:
            raise DataError(f"the DataFrame has several columns named {twice!r}; keep one.")
        index = features.index
        if not np.array_equal(np.asarray(index, dtype=object), np.arange(len(index))):
            row_name = _index_names(index, row_name)  # a filtered frame: name its labels too
        features = {str(c): features[c] for c in features.columns if str(c) in names}
    if isinstance(features, Mapping):
        missing = [name for name in names if name not in features]
        if missing:
            raise DataError(
                f"feature {missing[0]!r} is missing; the export needs {sorted(names)!r} (got "
                f"{sorted(map(str, features))!r}).{_did_you_mean(missing[0], list(features))}"
            )
        columns = {name: _dict_column(name, features[name]) for name in names}
        lengths = {name: len(column) for name, column in columns.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"the features have different numbers of rows ({lengths}); every "
                            "feature needs one value per row.")
        return columns, next(iter(lengths.values()), 0), row_name
    if isinstance(features, (list, tuple)) and (
            not features or any(isinstance(r, Mapping) for r in features)):
        for index, row in enumerate(features):
            if not isinstance(row, Mapping):
                raise DataTypeError(f"{row_name(index)} is {_got(row)}; expected a dict of "
                                    "feature name -> value.")
            for name in names:
                if name not in row:
                    raise DataError(
                        f"{row_name(index)} has no feature {name!r}; every row needs "
                        f"{sorted(names)!r} (got {sorted(map(str, row))!r})."
                        f"{_did_you_mean(name, [k for k in row if k not in names])}"
                    )
        return {name: [row[name] for row in features] for name in names}, len(features), row_name
    raise DataTypeError(
        "features must be a dict of columns, a list of row dicts, or a pandas DataFrame (got "
        f"{type(features).__name__}). For one row, pass [{{'feature': value, ...}}]."
    )


def _index_names(index: Any, row_name: RowName) -> RowName:
    return lambda i: f"{row_name(i)} (index {plain(index[i])!r})"


def _row(index: int) -> str:
    return f"row {index}"


def check_features(
    features: Any,
    feature_spec: Mapping[str, Mapping[str, Any]],
    names: Optional[Sequence[str]] = None,
    *,
    allow_non_finite: bool = False,
    text: bool = False,
    row_name: Optional[RowName] = None,
) -> Dict[str, np.ndarray]:
    """Check raw features against an export's feature spec; return arrays ready to feed.

    Each value must have the feature's dtype (a string for ``string``; an int
    or float for ``float32``, finite unless ``allow_non_finite``; a whole
    number in int64's range for ``int64``; never a bool or None) and shape (a
    scalar or a one-value list for shape ``[1]``, a list of 4 for ``[4]``).
    Features the export does not read are ignored.

    Args:
        features: a dict of columns, a list of row dicts, or a pandas DataFrame.
        feature_spec: the manifest's ``feature_spec`` (name -> dtype, kind, shape).
        names: the features to check (default: every fixed-length feature).
        allow_non_finite: accept NaN and inf in float32 features.
        text: values are text (CSV cells): read numbers from strings.
        row_name: names row ``i`` in errors (default ``row i``, 0-based).

    Returns:
        name -> array of shape ``[n, *shape]``: float32, int64, or bytes objects.

    Raises:
        DataError: naming the row, the feature, the value, what was expected and the fix
            (a ``DataTypeError`` for a value of the wrong type).

    Example:
        >>> spec = {"x": {"dtype": "float32", "kind": "fixed", "shape": [1]}}
        >>> check_features([{"x": 0.5}, {"x": [2]}], spec)["x"].tolist()
        [[0.5], [2.0]]
        >>> check_features([{"x": True}], spec)
        Traceback (most recent call last):
        ...
        headkit.errors.DataTypeError: row 0, feature 'x': got True (a bool); ...
    """
    if names is None:
        names = [k for k, entry in feature_spec.items() if entry.get("kind", "fixed") == "fixed"]
    columns, n, row_name = _columns(features, list(names), row_name or _row)
    if n == 0:
        raise DataError(f"no rows to predict; the export needs {sorted(names)!r} per row.")
    return {name: _column(name, feature_spec[name], columns[name], n, allow_non_finite, text,
                          row_name) for name in names}


def example_row(feature_spec: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """A made-up row of the export's features, with the right types and shapes, for messages.

    Example:
        >>> example_row({"x": {"dtype": "float32", "kind": "fixed", "shape": [2]},
        ...              "tag": {"dtype": "string", "kind": "fixed", "shape": [1]}})
        {'tag': 'text', 'x': [0.5, 0.5]}
    """
    row = {}
    for name in sorted(feature_spec):
        entry = feature_spec[name]
        if entry.get("kind", "fixed") != "fixed":
            continue
        value: Any = {"string": "text", "float32": 0.5, "int64": 1}.get(entry["dtype"], 0)
        shape = [int(d) for d in entry.get("shape", ())]
        if _size(shape) > 1:
            for size in reversed(shape):
                value = [value] * size
        row[name] = value
    return row
