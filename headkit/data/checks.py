"""Data checks: in-memory features and labels checked against the heads in numpy, before any graph.

Every trained head has its labels, of the right dtype and shape, class ids in
range, strings in the vocabulary, finite floats, sane example weights, and
every column the same length. A feature column of Python objects is read by
what it holds: strings, numbers, booleans, or lists of one length (a
``[n, k]`` feature). Missing labels (NaN, None) become each head's
``missing_label``. Errors name the column or head, the offending values and
their first rows, and the fix.
"""

from __future__ import annotations

import numbers
from collections import Counter
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from headkit import kinds
from headkit.errors import DataError, DataTypeError
from headkit.kinds.base import is_missing, missing_rows, row_list, value_list
from headkit.spec.head import Head
from headkit.spec.headset import HeadSet

__all__ = ["prepare", "series_to_numpy", "Columns"]

Columns = Mapping[str, Any]
def _as_column(name: str, value: Any, what: str) -> np.ndarray:
    try:
        column = np.asarray(value)
    except ValueError:  # ragged rows (lists of class names of a MultiLabel head): one per row
        column = np.empty(len(value), dtype=object)
        for index, row in enumerate(value):
            column[index] = row
    if column.ndim == 0:
        raise DataError(
            f"{what} {name!r}: expected one value per row, an array of shape [n, ...] "
            f"(got the scalar {column.item()!r}). Pass a list or numpy array."
        )
    return column


# ------------------------------------------------------------------ features


def _string_column(name: str, column: np.ndarray, what: str) -> np.ndarray:
    missing = missing_rows(column)
    if missing.any():
        raise DataError(
            f"{what} {name!r} has missing values (NaN or None) at rows {row_list(missing)}; "
            "expected a string in every row. Fill them (e.g. df[col].fillna('unknown')) "
            "or drop those rows."
        )
    flat = column.ravel()
    bad = np.array([not isinstance(v, (str, bytes)) for v in flat]).reshape(len(column), -1)
    if bad.any():
        raise DataTypeError(
            f"{what} {name!r} mixes strings with other values {value_list(flat[bad.ravel()])} "
            f"at rows {row_list(bad.any(axis=1))}; expected one type per column. "
            "Convert the column with .astype(str) or to numbers."
        )
    return column.astype(bytes if isinstance(flat[0], bytes) else str)


def _list_column(name: str, column: np.ndarray) -> np.ndarray:
    """A column holding one list (or array) per row, as one array ``[n, k, ...]``.

    Lists of one length are stacked; lists of different lengths are an error
    naming the rows of each length (a feature has one shape in every row).
    """
    is_list = np.array([isinstance(v, (list, tuple, np.ndarray)) for v in column])
    if not is_list.all():
        raise DataTypeError(
            f"feature {name!r} holds lists in some rows and other values "
            f"{value_list(column[~is_list])} at rows {row_list(~is_list)}; expected a list of "
            "one length in every row. Give those rows a list too (fill the gaps), or drop them."
        )
    shapes = [np.shape(v) for v in column]
    by_shape: Dict[Tuple[int, ...], np.ndarray] = {}
    for shape in dict.fromkeys(shapes):
        by_shape[shape] = np.array([s == shape for s in shapes])
    if len(by_shape) > 1:
        groups = sorted(by_shape.items(), key=lambda item: -item[1].sum())
        shown = "; ".join(
            f"length {shape[0] if len(shape) == 1 else shape} at rows {row_list(rows)}"
            for shape, rows in groups[:3]) + ("; ..." if len(groups) > 3 else "")
        longest = max(shape[0] if shape else 0 for shape in by_shape)
        text = any(isinstance(x, (str, bytes)) for v in column for x in np.ravel(v)[:1])
        raise DataError(
            f"feature {name!r} holds lists of different lengths ({shown}); a feature needs "
            f"the same shape in every row, [n, k]. Pad every list to one length (e.g. "
            f"df[{name!r}].apply(lambda v: list(v) + [{'' if text else 0!r}] * ({longest} - "
            "len(v)))), or split the lists into columns of their own."
        )
    return _feature(name, np.stack([np.asarray(v) for v in column]))


def _object_column(name: str, column: np.ndarray) -> np.ndarray:
    """An object column as strings, booleans or numbers, by what its values are.

    pandas' ``object`` columns of ints or floats, and its nullable ``boolean``
    columns, arrive here: they become numbers, not "strings mixed with others".
    """
    flat = column.ravel()
    if column.ndim == 1 and any(isinstance(v, (list, tuple, np.ndarray)) for v in flat):
        return _list_column(name, column)
    present = [v for v in flat if not is_missing(v)]
    if not present or any(isinstance(v, (str, bytes)) for v in present):
        return _string_column(name, column, "feature")
    if all(isinstance(v, (bool, np.bool_)) for v in present):
        missing = missing_rows(column)
        if missing.any():
            raise DataError(
                f"feature {name!r} is a boolean column with missing values (NA, NaN or None) "
                f"at rows {row_list(missing)}; expected True or False in every row. Fill them "
                f"(e.g. df[{name!r}].fillna(False)) or drop those rows "
                f"(df.dropna(subset=[{name!r}]))."
            )
        return column.astype(bool)
    others = [v for v in present if not isinstance(v, numbers.Real)]
    if others:
        bad = np.array([not is_missing(v) and not isinstance(v, numbers.Real) for v in flat])
        raise DataTypeError(
            f"feature {name!r} holds {type(others[0]).__name__} values at rows "
            f"{row_list(bad.reshape(len(column), -1).any(axis=1))} (e.g. {others[0]!r}); "
            "expected numbers, booleans or strings. Convert the column first (to numbers, "
            "or with .astype(str))."
        )
    if all(isinstance(v, numbers.Integral) for v in present) and len(present) == len(flat):
        return _feature(name, column.astype(np.int64))
    numeric = np.array([np.nan if is_missing(v) else float(v) for v in flat], dtype=np.float64)
    return _feature(name, numeric.reshape(column.shape))


def _feature(name: str, value: Any) -> np.ndarray:
    column = _as_column(name, value, "feature")
    kind = column.dtype.kind
    if kind == "O":  # strings, or numbers and booleans in an object column (checked again)
        column = _object_column(name, column)
        return column.reshape(-1, 1) if column.ndim == 1 else column
    if kind == "f":
        bad = ~np.isfinite(column).reshape(len(column), -1).all(axis=1)
        if bad.any():
            raise DataError(
                f"feature {name!r} has non-finite values (NaN or inf) at rows {row_list(bad)}; "
                "expected finite floats. Fill them (e.g. df[col].fillna(df[col].mean())) "
                "or drop those rows (df.dropna(subset=[col]))."
            )
        column = column.astype(np.float32)
    elif kind in "iu":
        column = column.astype(np.int64)
    elif kind not in "bUS":
        raise DataTypeError(
            f"feature {name!r} has dtype {column.dtype}; expected numbers, booleans or "
            "strings. Convert it first (e.g. a date to a number of days)."
        )
    return column.reshape(-1, 1) if column.ndim == 1 else column


def _check_weights(head: Head, features: Mapping[str, np.ndarray]) -> None:
    column = head.weight_column
    if column not in features:
        raise DataError(
            f"Head {head.name!r}: weight_column {column!r} is not among the features "
            f"{sorted(features)!r}. Add the weight column to the features."
        )
    weights = features[column]
    if weights.dtype.kind not in "fiu" or weights.reshape(len(weights), -1).shape[1] != 1:
        raise DataError(
            f"Head {head.name!r}: weight_column {column!r} must hold one number per row "
            f"(got dtype {weights.dtype}, shape {weights.shape})."
        )
    flat = weights.reshape(-1).astype(np.float64)
    bad = ~np.isfinite(flat) | (flat < 0)
    if bad.any():
        raise DataError(
            f"Head {head.name!r}: weight_column {column!r} must hold finite weights >= 0; "
            f"got {value_list(flat[bad])} at rows {row_list(bad)}. Use weight 0 to leave a row "
            "out of this head's loss."
        )


def _head_labels(head: Head, value: Any) -> np.ndarray:
    column = _as_column(head.label_key, value, f"Head {head.name!r}: labels")
    return kinds.get(head).numpy_labels(head, column)


# ------------------------------------------------------------------ checking


def _check_lengths(columns: Mapping[str, np.ndarray]) -> int:
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        common = Counter(lengths.values()).most_common(1)[0][0]
        odd = ", ".join(f"{name!r} has {n}" for name, n in lengths.items() if n != common)
        raise DataError(
            f"All columns must have the same number of rows, but {odd} where the others have "
            f"{common} (got {lengths}). Align the features and labels row by row: one value "
            "per example in every column."
        )
    n = next(iter(lengths.values()))
    if n == 0:
        raise DataError(f"The data has no rows (columns {sorted(lengths)!r}).")
    return n


def _check_no_leak(heads: HeadSet, features: Mapping[str, Any]) -> None:
    """A label column among the features would let the body read the answer."""
    leaks = [(h.name, h.label_key) for h in heads.trained_heads if h.label_key in features]
    if leaks:
        head, key = leaks[0]
        raise DataError(
            f"feature {key!r} is the label of head {head!r}: the target would leak into the "
            f"inputs, and the model would learn to copy it. Remove {key!r} from the features "
            "(feature_columns), or, if it really is an input, give the head another label "
            "column with label_key=."
        )


def prepare(
    features: Columns, labels: Optional[Union[Columns, Any]], heads: HeadSet
) -> Tuple[Dict[str, np.ndarray], Optional[Dict[str, np.ndarray]], int]:
    """Check features and labels against the heads; return them as numpy, and the row count.

    Example:
        >>> import headkit as hk
        >>> heads = hk.HeadSet([hk.Head("y", hk.Regression())])
        >>> features, labels, n = prepare({"x": [1, 2]}, {"y": [0.5, 1.5]}, heads)
        >>> features["x"].shape, labels["y"].dtype, n
        ((2, 1), dtype('float32'), 2)
    """
    if not isinstance(heads, HeadSet):
        heads = HeadSet(heads)
    if not isinstance(features, Mapping) or not features:
        raise DataTypeError(
            f"features must be a non-empty dict of column name -> array (got "
            f"{type(features).__name__}). Write features={{'x': x}}."
        )
    unnamed = [name for name in features if not isinstance(name, str) or not name]
    if unnamed:
        raise DataTypeError(
            f"feature names must be non-empty strings, the names of the body's Keras Inputs "
            f"(got {unnamed[0]!r}, a {type(unnamed[0]).__name__}). Name the columns: "
            f"features={{'x': ...}}, or for a DataFrame input_names={{{unnamed[0]!r}: 'x'}}."
        )
    raw = {name: _as_column(name, value, "feature") for name, value in features.items()}
    n = _check_lengths(raw)
    for head in heads.trained_heads:
        if head.weight_column is not None:
            _check_weights(head, raw)
    if labels is not None:
        _check_no_leak(heads, raw)
    prepared = {name: _feature(name, column) for name, column in raw.items()}
    if labels is None:
        return prepared, None, n
    keys = heads.label_keys
    if not isinstance(labels, Mapping):
        if len(keys) != 1:
            raise DataTypeError(
                f"labels must be a dict keyed by the label keys {list(keys)!r} (got "
                f"{type(labels).__name__})."
            )
        labels = {keys[0]: labels}
    predict_only = set(heads.names) - set(keys)
    extra = sorted(k for k in labels if k not in keys and k not in predict_only)
    if extra:
        raise DataError(
            f"labels {extra!r} match no trained head's label key {list(keys)!r}. Remove them, "
            "or add a Head for each."
        )
    ready: Dict[str, np.ndarray] = {}
    for head in heads.trained_heads:
        if head.label_key not in labels:
            raise DataError(
                f"Head {head.name!r} has no labels: label key {head.label_key!r} is not among "
                f"the labels {sorted(labels)!r}. Add the column, or make the head "
                "hk.Predict() if it is only exported."
            )
        ready[head.label_key] = _head_labels(head, labels[head.label_key])
    n = _check_lengths({**prepared, **{f"label {k}": v for k, v in ready.items()}})
    return prepared, ready, n


def series_to_numpy(series: Any) -> np.ndarray:
    """A DataFrame column as numpy, with pandas' missing values (NA) as NaN or None.

    Example:
        >>> import pandas as pd
        >>> series_to_numpy(pd.Series(["a", None], dtype="string")).tolist()
        ['a', None]
    """
    if isinstance(series.dtype, np.dtype):
        return series.to_numpy()
    if series.dtype.kind in "fiu":  # nullable Int64 / Float64
        if series.isna().any():
            return series.to_numpy(dtype=np.float64, na_value=np.nan)
        return series.to_numpy(dtype=np.float64 if series.dtype.kind == "f" else np.int64)
    # category, string, boolean; a copy, since pandas may hand out a read-only view
    values = series.astype(object).to_numpy(copy=True)
    values[series.isna().to_numpy()] = None
    return values
