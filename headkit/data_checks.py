"""Data checks: in-memory features and labels checked against the heads in numpy, before any graph.

Every trained head has its labels, of the right dtype and shape, class ids in
range, strings in the vocabulary, finite floats, sane example weights, and
every column the same length. Missing labels (NaN, None) become each head's
``missing_label``. Errors name the column or head, the offending values and
their first rows, and the fix.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from headkit.errors import DataError
from headkit.heads import Head
from headkit.headset import HeadSet

__all__ = ["prepare", "series_to_numpy", "Columns"]

Columns = Mapping[str, Any]
_SHOWN = 5  # offending values / rows quoted in an error


def _rows(bad: np.ndarray) -> str:
    rows = np.flatnonzero(bad)
    text = ", ".join(str(r) for r in rows[:_SHOWN])
    more = f", ... ({len(rows)} rows in all)" if len(rows) > _SHOWN else ""
    return f"[{text}{more}]"


def _values(values: np.ndarray) -> str:
    unique = list(dict.fromkeys(v.item() if hasattr(v, "item") else v for v in values.ravel()))
    shown = ", ".join(repr(v) for v in unique[:_SHOWN])
    return f"[{shown}{', ...' if len(unique) > _SHOWN else ''}]"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _missing_mask(column: np.ndarray) -> np.ndarray:
    """Rows holding NaN or None (any entry of the row)."""
    if column.size == 0:
        return np.zeros(len(column), bool)
    if column.dtype.kind == "f":
        missing = np.isnan(column)
    elif column.dtype.kind == "O":
        missing = np.vectorize(_is_missing, otypes=[bool])(column)
    else:
        missing = np.zeros(column.shape, bool)
    return missing.reshape(len(column), -1).any(axis=1)


def _as_column(name: str, value: Any, what: str) -> np.ndarray:
    column = np.asarray(value)
    if column.ndim == 0:
        raise DataError(
            f"{what} {name!r}: expected one value per row, an array of shape [n, ...] "
            f"(got the scalar {value!r}). Pass a list or numpy array."
        )
    return column


# ------------------------------------------------------------------ features


def _string_column(name: str, column: np.ndarray, what: str) -> np.ndarray:
    missing = _missing_mask(column)
    if missing.any():
        raise DataError(
            f"{what} {name!r} has missing values (NaN or None) at rows {_rows(missing)}; "
            "expected a string in every row. Fill them (e.g. df[col].fillna('unknown')) "
            "or drop those rows."
        )
    flat = column.ravel()
    bad = np.array([not isinstance(v, (str, bytes)) for v in flat]).reshape(len(column), -1)
    if bad.any():
        raise TypeError(
            f"{what} {name!r} mixes strings with other values {_values(flat[bad.ravel()])} "
            f"at rows {_rows(bad.any(axis=1))}; expected one type per column. "
            "Convert the column with .astype(str) or to numbers."
        )
    return column.astype(bytes if isinstance(flat[0], bytes) else str)


def _feature(name: str, value: Any) -> np.ndarray:
    column = _as_column(name, value, "feature")
    kind = column.dtype.kind
    if kind == "O":
        column = _string_column(name, column, "feature")
    elif kind == "f":
        bad = ~np.isfinite(column).reshape(len(column), -1).all(axis=1)
        if bad.any():
            raise DataError(
                f"feature {name!r} has non-finite values (NaN or inf) at rows {_rows(bad)}; "
                "expected finite floats. Fill them (e.g. df[col].fillna(df[col].mean())) "
                "or drop those rows (df.dropna(subset=[col]))."
            )
        column = column.astype(np.float32)
    elif kind in "iu":
        column = column.astype(np.int64)
    elif kind not in "bUS":
        raise TypeError(
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
            f"got {_values(flat[bad])} at rows {_rows(bad)}. Use weight 0 to leave a row "
            "out of this head's loss."
        )


# -------------------------------------------------------------------- labels


def _no_missing_label(head: Head, missing: np.ndarray, example: str) -> DataError:
    return DataError(
        f"Head {head.name!r}: labels {head.label_key!r} are missing (NaN or None) at rows "
        f"{_rows(missing)}, but the head has no missing_label. Set missing_label="
        f"{example} on the head so those rows are masked out of its loss and metrics, "
        "or drop the rows."
    )


def _class_labels(head: Head, column: np.ndarray) -> np.ndarray:
    output = head.output
    if column.ndim == 2 and column.shape[1] == 1:
        column = column[:, 0]
    if column.ndim != 1:
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} must have shape [n] or [n, 1], "
            f"one class per row (got shape {column.shape})."
        )
    missing = _missing_mask(column)
    if missing.any() and head.missing_label is None:
        example = "''" if output.vocabulary is not None else "-1"
        raise _no_missing_label(head, missing, example)
    present = ~missing
    if output.vocabulary is not None:
        return _vocabulary_labels(head, column, missing)
    if column.dtype.kind in "USO" and any(isinstance(v, (str, bytes)) for v in column[present]):
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} must be integer class ids in "
            f"[0, {output.n_classes}) (got strings such as {_values(column[present][:_SHOWN])}). "
            "Give the head a vocabulary: Classification(vocabulary=(...))."
        )
    try:
        numbers = np.where(missing, 0, column).astype(np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Head {head.name!r}: labels {head.label_key!r} must be integer class ids "
            f"(got dtype {column.dtype}: {error})."
        ) from error
    fractional = present & (numbers != np.round(numbers))
    if fractional.any():
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} must be whole class ids; got "
            f"{_values(numbers[fractional])} at rows {_rows(fractional)}. For a continuous "
            "target use hk.Regression()."
        )
    ids = np.where(missing, head.missing_label if missing.any() else 0, numbers).astype(np.int64)
    labelled = present if head.missing_label is None else present & (ids != head.missing_label)
    out = labelled & ((ids < 0) | (ids >= output.n_classes))
    if out.any():
        raise DataError(
            f"Head {head.name!r}: class ids must be in [0, {output.n_classes}); labels "
            f"{head.label_key!r} hold {_values(ids[out])} at rows {_rows(out)}. Fix the labels, "
            "raise n_classes, or set missing_label for rows without a label."
        )
    return ids


def _vocabulary_labels(head: Head, column: np.ndarray, missing: np.ndarray) -> np.ndarray:
    vocabulary = head.output.vocabulary
    if column.dtype.kind not in "USO":
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} must be strings from the "
            f"vocabulary {vocabulary!r} (got dtype {column.dtype}, e.g. "
            f"{_values(column[:_SHOWN])}). Map the ids to names, or drop the vocabulary."
        )
    values = np.array(
        [head.missing_label if m else (v.decode() if isinstance(v, bytes) else v)
         for v, m in zip(column, missing)],
        dtype=object,
    )
    allowed = set(vocabulary) | {head.missing_label}
    unknown = np.array([v not in allowed for v in values], dtype=bool)
    if unknown.any():
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} hold {_values(values[unknown])} at "
            f"rows {_rows(unknown)}, not in the vocabulary {vocabulary!r}. Add them to the "
            "vocabulary, or set missing_label for rows without a label."
        )
    return values.astype(str)


def _regression_labels(head: Head, column: np.ndarray) -> np.ndarray:
    dimension = head.output.dimension
    if column.ndim == 1 and dimension == 1:
        column = column.reshape(-1, 1)
    if column.ndim != 2 or column.shape[1] != dimension:
        expected = "[n] or [n, 1]" if dimension == 1 else f"[n, {dimension}]"
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} must have shape {expected} "
            f"(got shape {column.shape}). The head predicts {dimension} value(s) per row."
        )
    try:
        if column.dtype.kind not in "fiuO":
            raise TypeError(f"dtype {column.dtype}")
        if column.dtype.kind == "O" and column.size:
            column = np.where(np.vectorize(_is_missing, otypes=[bool])(column), np.nan, column)
        values = column.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Head {head.name!r}: regression labels {head.label_key!r} must be numbers "
            f"(got {error}, e.g. {_values(column[:_SHOWN])}). Convert the column to float."
        ) from error
    infinite = np.isinf(values).any(axis=1)
    if infinite.any():
        raise DataError(
            f"Head {head.name!r}: labels {head.label_key!r} hold non-finite values (inf) at rows "
            f"{_rows(infinite)}; expected finite numbers. Fix or drop those rows."
        )
    missing = np.isnan(values).any(axis=1)
    if missing.any():
        if head.missing_label is None:
            raise _no_missing_label(head, missing, "float('nan')")
        values = np.where(np.isnan(values), head.missing_label, values)
    return values.astype(np.float32)


def _head_labels(head: Head, value: Any) -> np.ndarray:
    column = _as_column(head.label_key, value, f"Head {head.name!r}: labels")
    if head.output.kind == "regression":
        return _regression_labels(head, column)
    return _class_labels(head, column)


# ------------------------------------------------------------------ checking


def _check_lengths(columns: Mapping[str, np.ndarray]) -> int:
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(
            f"All columns must have the same number of rows (got {lengths}). "
            "Align the features and labels row by row."
        )
    n = next(iter(lengths.values()))
    if n == 0:
        raise DataError(f"The data has no rows (columns {sorted(lengths)!r}).")
    return n


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
        raise TypeError(
            f"features must be a non-empty dict of column name -> array (got "
            f"{type(features).__name__}). Write features={{'x': x}}."
        )
    raw = {name: _as_column(name, value, "feature") for name, value in features.items()}
    n = _check_lengths(raw)
    for head in heads.trained_heads:
        if head.weight_column is not None:
            _check_weights(head, raw)
    prepared = {name: _feature(name, column) for name, column in raw.items()}
    if labels is None:
        return prepared, None, n
    keys = heads.label_keys
    if not isinstance(labels, Mapping):
        if len(keys) != 1:
            raise TypeError(
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
    values = series.astype(object).to_numpy()  # category, string, boolean
    values[series.isna().to_numpy()] = None
    return values
