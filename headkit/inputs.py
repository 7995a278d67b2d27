"""Input functions from numpy arrays or a pandas DataFrame, checked before any graph is built.

The data is checked against the heads in numpy first: every trained head
has its labels, of the right dtype and shape, class ids in range, strings in
the vocabulary, finite floats, sane example weights, and every column the
same length. Missing labels (NaN, None) become each head's ``missing_label``.

The checked columns are then written once, as serialized ``TensorProto``
files in a temporary directory, and read back inside the graph with
``tf.io.parse_tensor(tf.io.read_file(path))``. The arrays never become graph
constants, so ``graph.pbtxt`` and checkpoints stay small whatever the data
size. The pipeline is ``range -> batch -> map(gather rows)``, shuffled by a
stateless per-epoch permutation of the row indices: pure ``tf.data`` (no
``py_function``), so its iterator can be checkpointed, and its state is one
counter (a shuffle buffer would save up to n rows with every checkpoint).
"""

from __future__ import annotations

import math
import random
import shutil
import tempfile
import weakref
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from headkit.errors import DataError
from headkit.heads import Head
from headkit.headset import HeadSet

__all__ = ["input_fn", "input_fn_from_dataframe"]

Columns = Mapping[str, Any]
InputFn = Callable[[], tf.data.Dataset]
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


def _prepare(
    features: Columns, labels: Optional[Union[Columns, Any]], heads: HeadSet
) -> Tuple[Dict[str, np.ndarray], Optional[Dict[str, np.ndarray]], int]:
    if not isinstance(heads, HeadSet):
        heads = HeadSet(heads)
    if not isinstance(features, Mapping) or not features:
        raise TypeError(
            f"features must be a non-empty dict of column name -> array (got "
            f"{type(features).__name__}). Write features={{'x': x}}."
        )
    raw = {name: _as_column(name, value, "feature") for name, value in features.items()}
    _check_lengths(raw)
    for head in heads.trained_heads:
        if head.weight_column is not None:
            _check_weights(head, raw)
    prepared = {name: _feature(name, column) for name, column in raw.items()}
    if labels is None:
        return prepared, None, _check_lengths(prepared)
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


# ------------------------------------------------------------------- graph


def _write_columns(columns: Mapping[str, np.ndarray], directory: str, prefix: str) -> Dict:
    specs = {}
    for index, (name, column) in enumerate(columns.items()):
        path = f"{directory}/{prefix}{index}.pb"
        with open(path, "wb") as handle:
            handle.write(tf.make_tensor_proto(column).SerializeToString())
        dtype = tf.string if column.dtype.kind in "USO" else tf.as_dtype(column.dtype)
        specs[name] = (path, dtype, column.shape)
    return specs


def _read_columns(specs: Mapping[str, tuple]) -> Dict[str, tf.Tensor]:
    tensors = {}
    for name, (path, dtype, shape) in specs.items():
        tensor = tf.io.parse_tensor(tf.io.read_file(path), dtype)
        tensor.set_shape(shape)
        tensors[name] = tensor
    return tensors


def _rows_of(stream_index: tf.Tensor, n: int, seed: Optional[int]) -> tf.Tensor:
    """The data rows of a batch of stream positions: in order, or permuted per epoch."""
    position = stream_index % n
    if seed is None:
        return position
    epoch = stream_index // n
    seeds = tf.stack([tf.fill(tf.shape(epoch), tf.constant(seed, tf.int64)), epoch,
                      tf.zeros_like(epoch)], axis=1)
    # The raw op: the public wrapper cannot take one seed per element in 2.15.
    return tf.raw_ops.RandomIndexShuffle(
        index=position, seed=seeds, max_index=tf.constant(n - 1, tf.int64), rounds=4
    )


def _make_input_fn(
    features: Mapping[str, np.ndarray],
    labels: Optional[Mapping[str, np.ndarray]],
    n: int,
    batch_size: int,
    shuffle: bool,
    num_epochs: Optional[int],
    seed: Optional[int],
) -> InputFn:
    for name, value, ok in (
        ("batch_size", batch_size, isinstance(batch_size, int) and batch_size >= 1),
        ("num_epochs", num_epochs, num_epochs is None or (
            isinstance(num_epochs, int) and num_epochs >= 1)),
        ("seed", seed, seed is None or isinstance(seed, int)),
    ):
        if not ok or isinstance(value, bool):
            raise ValueError(
                f"{name} must be a positive integer{' or None' if name != 'batch_size' else ''} "
                f"(got {value!r})."
            )
    directory = tempfile.mkdtemp(prefix="headkit-input-")
    feature_specs = _write_columns(features, directory, "feature")
    label_specs = None if labels is None else _write_columns(labels, directory, "label")

    def input_fn() -> tf.data.Dataset:
        columns = _read_columns(feature_specs)
        label_columns = None if label_specs is None else _read_columns(label_specs)
        # Row i of the stream is row `i % n` of the data, or, when shuffling, its place in
        # a fresh pseudorandom permutation for epoch `i // n`. Unlike a shuffle buffer
        # (n rows saved with every iterator checkpoint), the state is one counter.
        dataset = tf.data.Dataset.range(n * num_epochs) if num_epochs else tf.data.Dataset.counter()
        dataset = dataset.batch(batch_size)
        shuffle_seed = None
        if shuffle:
            shuffle_seed = seed if seed is not None else random.randrange(2**31)

        def gather(stream_index: tf.Tensor) -> Any:
            rows = _rows_of(stream_index, n, shuffle_seed)
            batch = {name: tf.gather(column, rows) for name, column in columns.items()}
            if label_columns is None:
                return batch
            return batch, {name: tf.gather(column, rows) for name, column in label_columns.items()}

        return dataset.map(gather)

    # The files live as long as the input_fn, and are removed at exit at the latest.
    weakref.finalize(input_fn, shutil.rmtree, directory, ignore_errors=True)
    return input_fn


def input_fn(
    features: Columns,
    labels: Optional[Union[Columns, Any]],
    heads: Union[HeadSet, Iterable[Head]],
    batch_size: int = 32,
    shuffle: bool = False,
    num_epochs: Optional[int] = 1,
    seed: Optional[int] = None,
) -> InputFn:
    """An Estimator ``input_fn`` over in-memory columns, checked against the heads now.

    Features arrive as ``[batch, ...]``: a 1-D column becomes ``[batch, 1]``
    (what ``tf.keras.Input((1,), name=column)`` expects), wider columns keep
    their shape. Floats become float32, integers int64, text tf.string.
    Labels arrive as class ids (int64) or strings ``[batch]`` for
    classification and float32 ``[batch, dimension]`` for regression. NaN
    and None in a head's labels become its ``missing_label`` (masked out of
    that head's loss and metrics); without one they are an error.

    Args:
        features: column name -> array-like with one row per example.
        labels: label key -> array-like, a single array for a single trained
            head, or None (prediction). Predict heads need no labels.
        heads: the ``HeadSet`` the data is for.
        batch_size: rows per batch.
        shuffle: whether to shuffle rows (a full shuffle, anew each epoch).
        num_epochs: passes over the data; None repeats forever.
        seed: the shuffle seed; give one for a reproducible order.

    Returns:
        A zero-argument function returning a ``tf.data.Dataset`` of
        ``(features, labels)`` (or features alone when ``labels`` is None).

    Raises:
        hk.DataError: (a ``ValueError``) bad values, naming the column or head,
            the offending values and their first row indices, and the fix.
        TypeError: data of the wrong kind (e.g. labels not a dict).

    Example:
        >>> import headkit as hk, numpy as np
        >>> heads = hk.HeadSet([hk.Head("y", hk.Regression(), missing_label=float("nan"))])
        >>> train_input = hk.input_fn({"x": np.ones(8)}, {"y": [1.0, np.nan] * 4}, heads,
        ...                           batch_size=4, shuffle=True, num_epochs=None, seed=0)
        >>> features, labels = next(iter(train_input()))
        >>> features["x"].shape, labels["y"].shape
        (TensorShape([4, 1]), TensorShape([4, 1]))
    """
    if not isinstance(heads, HeadSet):
        heads = HeadSet(heads)
    ready_features, ready_labels, n = _prepare(features, labels, heads)
    return _make_input_fn(ready_features, ready_labels, n, batch_size, shuffle, num_epochs, seed)


def _series_to_numpy(series: Any) -> np.ndarray:
    """A DataFrame column as numpy, with pandas' missing values (NA) as NaN or None."""
    if isinstance(series.dtype, np.dtype):
        return series.to_numpy()
    if series.dtype.kind in "fiu":  # nullable Int64 / Float64
        if series.isna().any():
            return series.to_numpy(dtype=np.float64, na_value=np.nan)
        return series.to_numpy(dtype=np.float64 if series.dtype.kind == "f" else np.int64)
    values = series.astype(object).to_numpy()  # category, string, boolean
    values[series.isna().to_numpy()] = None
    return values


def input_fn_from_dataframe(
    df: Any,
    heads: Union[HeadSet, Iterable[Head]],
    feature_columns: Optional[Sequence[str]] = None,
    label_columns: Optional[Sequence[str]] = None,
    **kwargs: Any,
) -> InputFn:
    """An Estimator ``input_fn`` over a pandas DataFrame; see :func:`input_fn`.

    Args:
        df: the DataFrame, one row per example.
        heads: the ``HeadSet`` the data is for.
        feature_columns: the columns fed to the body. Default: every column
            that is not a label column.
        label_columns: the label columns. Default: the trained heads' label
            keys. Pass ``[]`` for prediction (no labels).
        **kwargs: ``batch_size``, ``shuffle``, ``num_epochs``, ``seed``.

    Example:
        >>> import headkit as hk, palmerpenguins
        >>> df = palmerpenguins.load_penguins().dropna(subset=["bill_length_mm"])
        >>> heads = hk.HeadSet([
        ...     hk.Head("species", hk.Classification(vocabulary=("Adelie", "Chinstrap",
        ...             "Gentoo")), is_default=True),
        ...     hk.Head("sex", hk.Classification(vocabulary=("female", "male")),
        ...             missing_label="")])          # 9 penguins have no recorded sex
        >>> train_input = hk.input_fn_from_dataframe(
        ...     df, heads, feature_columns=["bill_length_mm", "island"], shuffle=True, seed=0)
    """
    if not hasattr(df, "columns") or not hasattr(df, "__getitem__"):
        raise TypeError(f"df must be a pandas DataFrame (got {type(df).__name__}).")
    if not isinstance(heads, HeadSet):
        heads = HeadSet(heads)
    if label_columns is None:
        label_columns = list(heads.label_keys)
    if feature_columns is None:
        feature_columns = [c for c in df.columns if c not in set(label_columns)]
    for role, names in (("feature_columns", feature_columns), ("label_columns", label_columns)):
        if isinstance(names, str):
            raise TypeError(f"{role} must be a list of column names (got the string {names!r}).")
        unknown = [c for c in names if c not in df.columns]
        if unknown:
            raise ValueError(
                f"{role}: {unknown!r} are not columns of the DataFrame; its columns are "
                f"{list(df.columns)!r}."
            )
    features = {c: _series_to_numpy(df[c]) for c in feature_columns}
    labels = {c: _series_to_numpy(df[c]) for c in label_columns} if label_columns else None
    return input_fn(features, labels, heads, **kwargs)
