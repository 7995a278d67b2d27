"""Input functions from numpy arrays or a pandas DataFrame, checked before any graph is built.

The data is first checked against the heads in numpy (``headkit.data_checks``).
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

import hashlib
import random
import shutil
import tempfile
import weakref
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from headkit.body import INPUT_NAME_PATTERN, suggest_input_name
from headkit.data.checks import Columns, prepare, series_to_numpy
from headkit.errors import ConfigError, ConfigTypeError, DataError
from headkit.spec.head import Head
from headkit.spec.headset import HeadSet
from headkit.spec.scalars import as_bool, as_int

__all__ = ["input_fn", "input_fn_from_dataframe", "data_fingerprint"]

InputFn = Callable[[], tf.data.Dataset]


def data_fingerprint(*arrays: Any) -> str:
    """A short fingerprint of the arrays an input reads (and of its settings).

    Example:
        >>> data_fingerprint(np.zeros(3), "batch 32") == data_fingerprint(np.zeros(3), "batch 32")
        True
    """
    digest = hashlib.sha256()
    for array in arrays:
        if isinstance(array, np.ndarray):
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            data = array.astype(str) if array.dtype.kind == "O" else np.ascontiguousarray(array)
            digest.update(data.tobytes())
        else:
            digest.update(repr(array).encode())
    return digest.hexdigest()[:32]


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
    # NumPy integers (np.int64(32), a value read from an array) are integers.
    batch_size, num_epochs, seed = as_int(batch_size), as_int(num_epochs), as_int(seed)
    shuffle = as_bool(shuffle)
    for name, value, ok in (
        ("batch_size", batch_size, isinstance(batch_size, int) and batch_size >= 1),
        ("num_epochs", num_epochs, num_epochs is None or (
            isinstance(num_epochs, int) and num_epochs >= 1)),
        ("seed", seed, seed is None or isinstance(seed, int)),
        ("shuffle", shuffle, isinstance(shuffle, bool)),
    ):
        if not ok or (isinstance(value, bool) and name != "shuffle"):
            expected = {"batch_size": "a positive integer, e.g. 32",
                        "num_epochs": "a positive integer or None (None repeats forever)",
                        "seed": "an integer, or None for a new order each run",
                        "shuffle": "True or False"}[name]
            got = repr(value) if type(value) in (int, float) else (
                f"{value!r}, a {type(value).__name__}")
            raise ConfigError(f"{name} must be {expected} (got {got}).", field=name)
    directory = tempfile.mkdtemp(prefix="headkit-input-")
    feature_specs = _write_columns(features, directory, "feature")
    label_specs = None if labels is None else _write_columns(labels, directory, "label")

    fingerprint = data_fingerprint(
        *features.values(), *(labels or {}).values(), sorted(features), sorted(labels or {}),
        n, batch_size, shuffle, num_epochs, seed)

    def input_fn(input_context: Optional[tf.distribute.InputContext] = None,
                 start_batch: int = 0) -> tf.data.Dataset:
        columns = _read_columns(feature_specs)
        label_columns = None if label_specs is None else _read_columns(label_specs)
        shard, shards = 0, 1
        if input_context is not None and input_context.num_input_pipelines > 1:
            shard, shards = input_context.input_pipeline_id, input_context.num_input_pipelines
        # Resuming at batch b starts the stream there, at no cost (a Dataset.skip would
        # gather and drop b batches).
        first = shard + start_batch * batch_size * shards
        # Row i of the stream is row `i % n` of the data, or, when shuffling, its place in
        # a fresh pseudorandom permutation for epoch `i // n`. Unlike a shuffle buffer
        # (n rows saved with every iterator checkpoint), the state is one counter. Shard k
        # of K reads stream positions k, k + K, ...: within each epoch no two shards read
        # the same row, and with a finite input every shard reads as many rows (a few
        # rows of the last epoch are dropped so that synchronous workers end together).
        if num_epochs:
            total = n * num_epochs // shards * shards
            dataset = tf.data.Dataset.range(first, total, shards)
        else:
            dataset = tf.data.Dataset.counter(start=first, step=shards)
        dataset = dataset.batch(batch_size)
        shuffle_seed = None
        if shuffle:
            shuffle_seed = seed
            if shuffle_seed is None:  # every shard must draw the same permutation
                shuffle_seed = int(fingerprint[:7], 16) if shards > 1 else random.randrange(
                    2**31)

        def gather(stream_index: tf.Tensor) -> Any:
            rows = _rows_of(stream_index, n, shuffle_seed)
            batch = {name: tf.gather(column, rows) for name, column in columns.items()}
            if label_columns is None:
                return batch
            return batch, {name: tf.gather(column, rows) for name, column in label_columns.items()}

        return dataset.map(gather)

    # What a resumed run compares, to know whether the data changed since its checkpoint.
    input_fn.headkit_fingerprint = fingerprint  # type: ignore[attr-defined]
    # What train_and_evaluate reads to refuse an evaluation input that never ends.
    input_fn.headkit_num_epochs = num_epochs  # type: ignore[attr-defined]
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
    """An input function over in-memory columns, checked against the heads now.

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
        A function returning a ``tf.data.Dataset`` of ``(features, labels)``
        (or features alone when ``labels`` is None). Called with an
        ``input_context`` (as ``hk.Estimator`` does for training on a
        ``TF_CONFIG`` cluster, under a strategy or not), it reads only its
        shard: input pipeline ``k`` of ``K`` reads every K-th row of each
        epoch's order, so no two workers read the same row in an epoch.
        Sharded and shuffled without a ``seed``, the order is drawn from the
        data's fingerprint, the same on every worker. ``start_batch=b``
        starts at the b-th batch (``hk.Estimator`` resumes there).

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
    ready_features, ready_labels, n = prepare(features, labels, heads)  # converts heads
    return _make_input_fn(ready_features, ready_labels, n, batch_size, shuffle, num_epochs, seed)


def input_fn_from_dataframe(
    df: Any,
    heads: Union[HeadSet, Iterable[Head]],
    feature_columns: Optional[Sequence[str]] = None,
    label_columns: Optional[Sequence[str]] = None,
    input_names: Optional[Mapping[str, str]] = None,
    **kwargs: Any,
) -> InputFn:
    """An input function over a pandas DataFrame; see :func:`input_fn`.

    Args:
        df: the DataFrame, one row per example.
        heads: the ``HeadSet`` the data is for.
        feature_columns: the columns fed to the body. Default: every column
            that is not a label column.
        label_columns: the label columns. Default: the trained heads' label
            keys. Pass ``[]`` for prediction (no labels).
        input_names: feature column -> the name of the Keras ``Input`` it
            feeds, for columns whose names cannot name an Input (a graph name
            has no spaces or brackets): ``{"bill length (mm)": "bill_length_mm"}``.
            Columns not listed keep their names.
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
        raise ConfigTypeError(f"df must be a pandas DataFrame (got {type(df).__name__}).")
    if not isinstance(heads, HeadSet):
        heads = HeadSet(heads)
    if label_columns is None:
        label_columns = list(heads.label_keys)
    if feature_columns is None:
        feature_columns = [c for c in df.columns if c not in set(label_columns)]
    for role, names in (("feature_columns", feature_columns), ("label_columns", label_columns)):
        if isinstance(names, str):
            raise ConfigTypeError(
                f"{role} must be a list of column names (got the string {names!r}).")
        unknown = [c for c in names if c not in df.columns]
        if unknown:
            raise ConfigError(
                f"{role}: {unknown!r} are not columns of the DataFrame; its columns are "
                f"{list(df.columns)!r}."
            )
    _check_repeats(list(df.columns), list(feature_columns), list(label_columns))
    renamed = _input_names(input_names, list(feature_columns))
    features = {renamed.get(c, c): series_to_numpy(df[c]) for c in feature_columns}
    labels = {c: series_to_numpy(df[c]) for c in label_columns} if label_columns else None
    return input_fn(features, labels, heads, **kwargs)


def _check_repeats(columns: list, feature_columns: list, label_columns: list) -> None:
    """Refuse a column name the DataFrame holds twice, or a list that names a column twice."""
    doubled = [c for c in dict.fromkeys(feature_columns + label_columns) if columns.count(c) > 1]
    if doubled:
        raise DataError(
            f"The DataFrame has {columns.count(doubled[0])} columns named {doubled[0]!r} (its "
            f"columns: {columns!r}), so headkit cannot tell which one to read. Rename them "
            "(df.columns = [...]) or drop the repeats (df = df.loc[:, ~df.columns.duplicated()])."
        )
    for role, names in (("feature_columns", feature_columns), ("label_columns", label_columns)):
        repeated = [c for c in dict.fromkeys(names) if names.count(c) > 1]
        if repeated:
            raise ConfigError(
                f"{role} names {repeated!r} more than once (got {names!r}). List each column "
                "once.", field=role,
            )


def _input_names(input_names: Any, feature_columns: list) -> Dict[Any, str]:
    """``input_names`` checked: feature columns -> valid Keras Input names, none shared."""
    if input_names is None:
        return {}
    if not isinstance(input_names, Mapping):
        raise ConfigTypeError(
            f"input_names must be a dict of feature column -> Keras Input name, e.g. "
            f"{{'bill length (mm)': 'bill_length_mm'}} (got {input_names!r}).",
            field="input_names",
        )
    unknown = [c for c in input_names if c not in feature_columns]
    if unknown:
        raise ConfigError(
            f"input_names: {unknown!r} are not among the feature columns {feature_columns!r}. "
            "It maps a feature column to the name of the Keras Input it feeds.",
            field="input_names",
        )
    for column, name in input_names.items():
        if not isinstance(name, str) or not INPUT_NAME_PATTERN.fullmatch(name):
            raise ConfigError(
                f"input_names[{column!r}]: {name!r} cannot name a Keras Input (a graph name: "
                f"letters, digits, '_', '.' and '-', no spaces). Use e.g. "
                f"{suggest_input_name(column)!r}.", field="input_names",
            )
    final = [input_names.get(c, c) for c in feature_columns]
    shared = [n for n in dict.fromkeys(final) if final.count(n) > 1]
    if shared:
        sources = [c for c in feature_columns if input_names.get(c, c) == shared[0]]
        raise ConfigError(
            f"input_names: the feature columns {sources!r} would all feed the Input "
            f"{shared[0]!r}. Give each column its own Input name.", field="input_names",
        )
    return dict(input_names)
