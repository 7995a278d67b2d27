"""Input functions: data checked before any graph, shapes and dtypes, shuffling, partial
labels and example weights through the Estimator, and a small graph for large data."""

from __future__ import annotations

import glob
import os
import re
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import headkit as hk
from tests.conftest import ROOT

EXAMPLES = os.path.join(ROOT, "examples")

HEADS = hk.HeadSet([
    hk.Head("kind", hk.Classification(vocabulary=("a", "b", "c")), is_default=True),
    hk.Head("size", hk.Regression()),
    hk.Head("flag", hk.Classification(3)),
    hk.Head("embedding", hk.Predict()),
])
WEIGHTED = hk.HeadSet([hk.Head("y", hk.Regression(), weight_column="w")])
ONE = hk.HeadSet([hk.Head("y", hk.Regression())])


def data(n=4, **changes):
    """Valid features and labels for HEADS; ``changes`` replace columns (None drops one)."""
    features = {"x": np.arange(n * 2, dtype="float64").reshape(n, 2),
                "tag": np.array(["u", "v"] * (n // 2))}
    labels = {"kind": np.array(["a", "b", "c", "a"] * (n // 4)),
              "size": np.linspace(0, 1, n), "flag": np.arange(n) % 3}
    for key, value in changes.items():
        target = features if key in ("x", "tag", "w") else labels
        if value is None:
            target.pop(key)
        else:
            target[key] = value
    return features, labels


def weighted(w, n=3):
    return {"x": np.zeros(n), "w": np.asarray(w, dtype=float)}, {"y": np.zeros(n)}


# (id, call, error type, fragments: head or column, the values given and rows, the fix)
BAD_DATA = [
    ("label_missing", lambda: hk.input_fn(*data(size=None), HEADS),
     hk.DataError, ["Head 'size' has no labels", "'size'", "['flag', 'kind']", "hk.Predict()"]),
    ("label_extra", lambda: hk.input_fn(data()[0], {**data()[1], "colour": [1, 2, 3, 4]}, HEADS),
     hk.DataError, ["labels ['colour']", "['kind', 'size', 'flag']", "add a Head"]),
    ("class_id_out_of_range", lambda: hk.input_fn(*data(flag=np.array([0, 1, 5, -2])), HEADS),
     hk.DataError, ["Head 'flag'", "class ids must be in [0, 3)", "[5, -2]", "rows [2, 3]",
                    "missing_label"]),
    ("class_ids_many_out_of_range",
     lambda: hk.input_fn(*data(n=12, flag=np.arange(12) + 3), HEADS),
     hk.DataError, ["Head 'flag'", "[3, 4, 5, 6, 7, ...]",
                    "[0, 1, 2, 3, 4, ... (12 rows in all)]"]),
    ("string_not_in_vocabulary",
     lambda: hk.input_fn(*data(kind=np.array(["a", "zebra", "c", "a"])), HEADS),
     hk.DataError, ["Head 'kind'", "['zebra']", "rows [1]", "not in the vocabulary ('a', 'b', 'c')",
                    "Add them to the vocabulary"]),
    ("ids_for_vocabulary_head", lambda: hk.input_fn(*data(kind=np.array([0, 1, 2, 0])), HEADS),
     hk.DataError, ["Head 'kind'", "strings from the vocabulary", "dtype int64", "Map the ids"]),
    ("strings_for_id_head",
     lambda: hk.input_fn(*data(flag=np.array(["0", "1", "2", "0"])), HEADS),
     hk.DataError, ["Head 'flag'", "integer class ids in [0, 3)", "'0'", "vocabulary=(...)"]),
    ("fractional_class_ids",
     lambda: hk.input_fn(*data(flag=np.array([0.0, 0.5, 1.0, 2.0])), HEADS),
     hk.DataError, ["Head 'flag'", "whole class ids", "[0.5]", "rows [1]", "hk.Regression()"]),
    ("nan_class_id_without_missing_label",
     lambda: hk.input_fn(*data(flag=np.array([0, np.nan, 1, 2])), HEADS),
     hk.DataError, ["Head 'flag'", "missing (NaN or None) at rows [1]", "no missing_label",
                    "missing_label=-1"]),
    ("none_string_label_without_missing_label",
     lambda: hk.input_fn(*data(kind=np.array([None, "a", "b", "c"], dtype=object)), HEADS),
     hk.DataError, ["Head 'kind'", "rows [0]", "missing_label=''"]),
    ("nan_regression_label_without_missing_label",
     lambda: hk.input_fn(*data(size=np.array([1.0, 2.0, np.nan, np.nan])), HEADS),
     hk.DataError, ["Head 'size'", "rows [2, 3]", "missing_label=float('nan')"]),
    ("inf_regression_label",
     lambda: hk.input_fn(*data(size=np.array([1.0, 2.0, np.inf, 0])), HEADS),
     hk.DataError, ["Head 'size'", "non-finite values (inf) at rows [2]", "expected finite"]),
    ("regression_label_too_wide", lambda: hk.input_fn(*data(size=np.zeros((4, 3))), HEADS),
     hk.DataError, ["Head 'size'", "shape [n] or [n, 1]", "(got shape (4, 3))", "1 value(s)"]),
    ("class_label_two_columns", lambda: hk.input_fn(*data(flag=np.zeros((4, 2), int)), HEADS),
     hk.DataError, ["Head 'flag'", "shape [n] or [n, 1]", "(got shape (4, 2))"]),
    ("text_regression_label",
     lambda: hk.input_fn(*data(size=np.array(["1", "2", "x", "4"])), HEADS),
     TypeError, ["Head 'size'", "must be numbers", "<U1", "Convert the column to float"]),
    ("nan_in_float_feature",
     lambda: hk.input_fn(*data(x=np.array([[0, 1], [np.nan, 2], [3, 4], [5, 6]])), HEADS),
     hk.DataError, ["feature 'x'", "non-finite values (NaN or inf) at rows [1]", "dropna"]),
    ("none_in_text_feature",
     lambda: hk.input_fn(*data(tag=np.array([None, "u", "v", "u"], dtype=object)), HEADS),
     hk.DataError, ["feature 'tag'", "missing values (NaN or None) at rows [0]", "fillna"]),
    ("mixed_feature", lambda: hk.input_fn(*data(tag=np.array(["u", 3, "v", "u"], dtype=object)),
                                          HEADS),
     TypeError, ["feature 'tag'", "[3]", "rows [1]", ".astype(str)"]),
    ("datetime_feature",
     lambda: hk.input_fn(*data(tag=np.array(["2024-01-01"] * 4, dtype="datetime64[D]")), HEADS),
     TypeError, ["feature 'tag'", "datetime64[D]", "numbers, booleans or strings"]),
    ("lengths_differ", lambda: hk.input_fn(*data(tag=np.array(["u", "v", "u"])), HEADS),
     hk.DataError, ["same number of rows", "'x': 4", "'tag': 3"]),
    ("label_length_differs", lambda: hk.input_fn(*data(size=np.zeros(5)), HEADS),
     hk.DataError, ["same number of rows", "'label size': 5", "'x': 4"]),
    ("scalar_feature", lambda: hk.input_fn(*data(x=np.float64(3.0)), HEADS),
     hk.DataError, ["feature 'x'", "one value per row", "scalar 3.0"]),
    ("no_rows", lambda: hk.input_fn({"x": np.zeros((0, 2))}, None, HEADS),
     hk.DataError, ["no rows", "['x']"]),
    ("negative_weight", lambda: hk.input_fn(*weighted([1.0, 2.0, -1.0]), WEIGHTED),
     hk.DataError, ["Head 'y'", "weight_column 'w'", "finite weights >= 0", "[-1.0]", "rows [2]"]),
    ("nan_weight", lambda: hk.input_fn(*weighted([np.nan, 2.0, 1.0]), WEIGHTED),
     hk.DataError, ["Head 'y'", "weight_column 'w'", "[nan]", "rows [0]", "weight 0"]),
    ("weight_column_absent", lambda: hk.input_fn({"x": np.zeros(3)}, {"y": np.zeros(3)}, WEIGHTED),
     hk.DataError, ["Head 'y'", "weight_column 'w' is not among the features ['x']"]),
    ("weight_column_text",
     lambda: hk.input_fn({"x": np.zeros(2), "w": np.array(["1", "2"])}, {"y": np.zeros(2)},
                         WEIGHTED),
     hk.DataError, ["Head 'y'", "weight_column 'w'", "one number per row", "<U1"]),
    ("features_not_a_dict", lambda: hk.input_fn(np.zeros((4, 2)), data()[1], HEADS),
     TypeError, ["features must be a non-empty dict", "ndarray", "features={'x': x}"]),
    ("labels_not_a_dict", lambda: hk.input_fn(data()[0], np.zeros(4), HEADS),
     TypeError, ["labels must be a dict", "['kind', 'size', 'flag']", "ndarray"]),
    ("batch_size_zero", lambda: hk.input_fn(*data(), HEADS, batch_size=0),
     ValueError, ["batch_size must be a positive integer", "(got 0)"]),
    ("num_epochs_float", lambda: hk.input_fn(*data(), HEADS, num_epochs=1.5),
     ValueError, ["num_epochs must be a positive integer or None", "(got 1.5)"]),
    ("dataframe_unknown_column",
     lambda: hk.input_fn_from_dataframe(pd.DataFrame({"x": [1.0], "y": [2.0]}), WEIGHTED,
                                        feature_columns=["x", "w"]),
     ValueError, ["feature_columns", "['w']", "not columns of the DataFrame", "['x', 'y']"]),
    ("dataframe_columns_as_string",
     lambda: hk.input_fn_from_dataframe(pd.DataFrame({"x": [1.0], "y": [2.0]}), WEIGHTED,
                                        feature_columns="x"),
     TypeError, ["feature_columns must be a list", "'x'"]),
    # ---- checked before training (issue 13), as a hostile user would try them
    ("ragged_list_column",
     lambda: hk.input_fn_from_dataframe(
         pd.DataFrame({"x": [[1.0, 2.0], [3.0], [4.0, 5.0], [6.0]], "y": np.zeros(4)}), ONE),
     hk.DataError, ["feature 'x' holds lists of different lengths", "length 2 at rows [0, 2]",
                    "length 1 at rows [1, 3]", "Pad every list to one length"]),
    ("ragged_python_lists",
     lambda: hk.input_fn({"x": [[1.0, 2.0], [3.0]]}, None, HEADS),
     hk.DataError, ["feature 'x' holds lists of different lengths", "rows [1]"]),
    ("list_column_with_a_missing_row",
     lambda: hk.input_fn_from_dataframe(
         pd.DataFrame({"x": [[1.0, 2.0], None, [4.0, 5.0]], "y": np.zeros(3)}), ONE),
     TypeError, ["feature 'x' holds lists in some rows", "[None]", "rows [1]"]),
    ("duplicated_dataframe_column",
     lambda: hk.input_fn_from_dataframe(
         pd.DataFrame([[1.0, 2.0, 3.0]], columns=["x", "x", "y"]), WEIGHTED),
     hk.DataError, ["2 columns named 'x'", "['x', 'x', 'y']", "df.columns.duplicated()"]),
    ("feature_column_listed_twice",
     lambda: hk.input_fn_from_dataframe(pd.DataFrame({"x": [1.0], "y": [2.0]}), WEIGHTED,
                                        feature_columns=["x", "x"]),
     ValueError, ["feature_columns names ['x'] more than once", "List each column once"]),
    ("nullable_boolean_with_na",
     lambda: hk.input_fn_from_dataframe(
         pd.DataFrame({"b": pd.array([True, None, False, None], dtype="boolean"),
                       "y": np.zeros(4)}), ONE),
     hk.DataError, ["feature 'b' is a boolean column with missing values", "rows [1, 3]",
                    "True or False", "fillna(False)"]),
    ("object_column_of_ints_with_none",
     lambda: hk.input_fn({"n": np.array([1, None, 3], dtype=object)}, None, HEADS),
     hk.DataError, ["feature 'n' has non-finite values (NaN or inf) at rows [1]", "fillna"]),
    ("object_column_of_dicts",
     lambda: hk.input_fn({"d": np.array([{"a": 1}, {"a": 2}], dtype=object)}, None, HEADS),
     TypeError, ["feature 'd' holds dict values at rows [0, 1]", "{'a': 1}",
                 "expected numbers, booleans or strings"]),
    ("one_feature_shorter_than_the_rest",
     lambda: hk.input_fn({"a": np.ones(4), "b": np.ones(4), "c": np.ones(3)}, None, HEADS),
     hk.DataError, ["same number of rows, but 'c' has 3 where the others have 4"]),
    ("integer_column_names",
     lambda: hk.input_fn_from_dataframe(pd.DataFrame(np.ones((2, 2))), HEADS, label_columns=[]),
     TypeError, ["feature names must be non-empty strings", "got 0, a int",
                 "input_names={0: 'x'}"]),
    ("shuffle_as_a_word",
     lambda: hk.input_fn(*data(), HEADS, shuffle="no"),
     ValueError, ["shuffle must be True or False (got 'no', a str)"]),
    ("batch_size_as_a_string",
     lambda: hk.input_fn(*data(), HEADS, batch_size="32"),
     ValueError, ["batch_size must be a positive integer, e.g. 32 (got '32', a str)"]),
    ("input_names_to_an_invalid_name",
     lambda: hk.input_fn_from_dataframe(
         pd.DataFrame({"bill length (mm)": [1.0], "y": [2.0]}), WEIGHTED,
         input_names={"bill length (mm)": "bill length"}),
     ValueError, ["input_names['bill length (mm)']: 'bill length' cannot name a Keras Input",
                  "'bill_length_mm'"]),
    ("input_names_for_an_unknown_column",
     lambda: hk.input_fn_from_dataframe(
         pd.DataFrame({"x": [1.0], "y": [2.0]}), WEIGHTED, input_names={"z": "zz"}),
     ValueError, ["input_names: ['z'] are not among the feature columns ['x']"]),
    ("input_names_onto_another_column",
     lambda: hk.input_fn_from_dataframe(
         pd.DataFrame({"x": [1.0], "x (cm)": [1.0], "y": [2.0]}), WEIGHTED,
         input_names={"x (cm)": "x"}),
     ValueError, ["the feature columns ['x', 'x (cm)'] would all feed the Input 'x'"]),
]


@pytest.mark.parametrize(
    "call, error, fragments", [c[1:] for c in BAD_DATA], ids=[c[0] for c in BAD_DATA]
)
def test_bad_data_is_rejected_before_any_graph(call, error, fragments):
    graph = tf.Graph()
    with graph.as_default(), pytest.raises(error, match=re.escape(fragments[0])) as raised:
        call()
    message = str(raised.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message lacks {missing!r}: {message}"
    assert not graph.get_operations(), "the check must run in numpy, before any graph op"


def test_data_errors_are_value_errors():
    assert issubclass(hk.DataError, ValueError)


# ------------------------------------------------------------ conversion


def first_batch(input_fn):
    return next(iter(input_fn()))


def test_columns_arrive_batched_with_one_dimensional_columns_as_batch_by_one():
    features, labels = first_batch(hk.input_fn(*data(n=8), HEADS, batch_size=8))
    assert features["x"].shape == (8, 2) and features["x"].dtype == tf.float32
    assert features["tag"].shape == (8, 1) and features["tag"].dtype == tf.string
    assert labels["kind"].shape == (8,) and labels["kind"].dtype == tf.string
    assert labels["flag"].shape == (8,) and labels["flag"].dtype == tf.int64
    assert labels["size"].shape == (8, 1) and labels["size"].dtype == tf.float32
    assert sorted(labels) == ["flag", "kind", "size"]  # Predict heads need no labels


def test_without_labels_the_dataset_yields_features_only():
    features = first_batch(hk.input_fn(data()[0], None, HEADS))
    assert sorted(features) == ["tag", "x"]


def test_missing_labels_become_each_heads_missing_label():
    heads = hk.HeadSet([
        hk.Head("kind", hk.Classification(vocabulary=("a", "b")), missing_label="",
                is_default=True),
        hk.Head("flag", hk.Classification(3), missing_label=-1),
        hk.Head("size", hk.Regression(), missing_label=-999.0),
        hk.Head("mass", hk.Regression(), missing_label=float("nan")),
    ])
    labels = {"kind": np.array(["a", None, np.nan, "b"], dtype=object),
              "flag": np.array([0.0, np.nan, 2.0, -1.0]),
              "size": np.array([1.0, np.nan, 3.0, 4.0]),
              "mass": np.array([np.nan, 2.0, 3.0, 4.0])}
    _, ready = first_batch(hk.input_fn({"x": np.zeros(4)}, labels, heads, batch_size=4))
    assert ready["kind"].numpy().tolist() == [b"a", b"", b"", b"b"]
    assert ready["flag"].numpy().tolist() == [0, -1, 2, -1]
    assert ready["size"].numpy()[:, 0].tolist() == [1.0, -999.0, 3.0, 4.0]
    assert np.isnan(ready["mass"].numpy()[0, 0])


def test_penguins_with_unrecorded_sex_train_through_missing_label():
    import palmerpenguins

    df = palmerpenguins.load_penguins().dropna(subset=["bill_length_mm"])
    assert df["sex"].isna().sum() == 9
    heads = hk.HeadSet([
        hk.Head("species", hk.Classification(vocabulary=("Adelie", "Chinstrap", "Gentoo")),
                is_default=True),
        hk.Head("sex", hk.Classification(vocabulary=("female", "male")), missing_label=""),
    ])
    input_fn = hk.input_fn_from_dataframe(df, heads, feature_columns=["bill_length_mm", "island"],
                                          batch_size=len(df))
    features, labels = first_batch(input_fn)
    assert features["island"].shape == (len(df), 1)
    assert (labels["sex"].numpy() == b"").sum() == 9


def test_dataframe_nullable_and_categorical_columns_are_read():
    df = pd.DataFrame({
        "n": pd.array([1, None, 3], dtype="Int64"),
        "c": pd.Categorical(["u", "v", "u"]),
        "flag": pd.array([0, None, 2], dtype="Int64"),
    })
    heads = hk.HeadSet([hk.Head("flag", hk.Classification(3), missing_label=-1)])
    with pytest.raises(hk.DataError, match=r"feature 'n' has non-finite values .* rows \[1\]"):
        hk.input_fn_from_dataframe(df, heads)
    features, labels = first_batch(hk.input_fn_from_dataframe(df.fillna({"n": 0}), heads))
    assert features["c"].numpy()[:, 0].tolist() == [b"u", b"v", b"u"]
    assert labels["flag"].numpy().tolist() == [0, -1, 2]


def rows_seen(input_fn):
    return [int(v) for features in input_fn() for v in features["i"].numpy()[:, 0]]


def test_without_shuffle_rows_come_in_order_for_each_epoch():
    input_fn = hk.input_fn({"i": np.arange(5)}, None, HEADS, batch_size=2, num_epochs=2)
    assert rows_seen(input_fn) == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]


def test_shuffle_permutes_every_epoch_anew_and_the_seed_repeats_it():
    def make(seed):
        return hk.input_fn({"i": np.arange(50)}, None, HEADS, batch_size=16, shuffle=True,
                           num_epochs=3, seed=seed)

    seen = rows_seen(make(7))
    epochs = [seen[i * 50:(i + 1) * 50] for i in range(3)]
    assert all(sorted(e) == list(range(50)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(50))
    assert rows_seen(make(7)) == seen
    assert rows_seen(make(8)) != seen


def shard_rows(input_fn, shard, shards, batches=None):
    context = tf.distribute.InputContext(num_input_pipelines=shards, input_pipeline_id=shard)
    dataset = input_fn(input_context=context)
    if batches is not None:
        dataset = dataset.take(batches)
    return [int(v) for features in dataset for v in features["i"].numpy()[:, 0]]


@pytest.mark.parametrize("seed", [3, None])
def test_shards_of_an_epoch_are_disjoint_and_cover_every_row(seed):
    def make():  # one call per worker process: without a seed, each draws its order anew
        return hk.input_fn({"i": np.arange(60)}, None, HEADS, batch_size=4, shuffle=True,
                           num_epochs=None, seed=seed)

    shares = [shard_rows(make(), k, 3, batches=10) for k in range(3)]  # 2 epochs each
    for epoch in range(2):
        rows = [share[epoch * 20:(epoch + 1) * 20] for share in shares]
        assert all(len(set(r)) == 20 for r in rows)
        assert sorted(rows[0] + rows[1] + rows[2]) == list(range(60))
    assert shares[0][:20] != shares[0][20:40]  # a new order every epoch


def test_a_finite_input_gives_every_shard_as_many_rows():
    input_fn = hk.input_fn({"i": np.arange(10)}, None, HEADS, batch_size=2, num_epochs=1)
    shares = [shard_rows(input_fn, k, 3) for k in range(3)]
    assert shares == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]  # row 9 dropped: synchronous workers
    assert rows_seen(input_fn) == list(range(10))  # end together; unsharded reads them all


@pytest.mark.parametrize("shards", [1, 3])
def test_start_batch_begins_where_skipping_would(shards):
    input_fn = hk.input_fn({"i": np.arange(30)}, None, HEADS, batch_size=4, shuffle=True,
                           num_epochs=None, seed=1)
    context = tf.distribute.InputContext(num_input_pipelines=shards, input_pipeline_id=shards - 1)
    skipped = [f["i"].numpy().tolist() for f in input_fn(input_context=context).skip(7).take(5)]
    started = [f["i"].numpy().tolist()
               for f in input_fn(input_context=context, start_batch=7).take(5)]
    assert started == skipped


def test_temporary_files_go_with_the_input_fn():
    import gc

    input_fn = hk.input_fn(*data(), HEADS)
    directory = os.path.dirname(input_fn.__closure__ and next(
        c.cell_contents for c in input_fn.__closure__ if isinstance(c.cell_contents, dict)
        and c.cell_contents)["x"][0])
    assert os.path.isdir(directory)
    del input_fn
    gc.collect()
    assert not os.path.exists(directory)


# ----------------------------------------------------- through the Estimator

K_A = np.array([[0.5, -0.2, 0.1], [0.3, 0.4, -0.6]], "float32")
K_B = np.array([[1.0], [-2.0]], "float32")
K_C = np.array([[-0.4, 0.2, 0.7], [0.1, -0.3, 0.5]], "float32")


def fixed_body():
    """Three linear heads with fixed weights (trained with learning rate 0, they stay)."""
    x = tf.keras.Input((2,), name="x")

    def dense(kernel, name):
        return tf.keras.layers.Dense(
            kernel.shape[1], name=name, use_bias=False,
            kernel_initializer=tf.keras.initializers.Constant(kernel))(x)

    return tf.keras.Model({"x": x}, {"a": dense(K_A, "a"), "b": dense(K_B, "b"),
                                     "c": dense(K_C, "c")})


FIXED_HEADS = hk.HeadSet([
    hk.Head("a", hk.Classification(3), metrics=("accuracy",), missing_label=-1, is_default=True),
    hk.Head("b", hk.Regression()),
    hk.Head("c", hk.Classification(3), metrics=("accuracy",), weight_column="w"),
])


def cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_softmax[np.arange(len(labels)), labels]


def eval_data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype("float32")
    a = rng.integers(0, 3, n).astype(float)
    a[::2] = np.nan  # half the rows lack head a's label
    return ({"x": x, "w": rng.uniform(0.0, 3.0, n)},
            {"a": a, "b": rng.normal(size=n), "c": rng.integers(0, 3, n)})


#: The fixtures of this module that build an hk.Estimator (see tests/conftest.py).
ESTIMATOR_FIXTURES = ("fixed_model",)


@pytest.fixture(scope="module")
def fixed_model(tmp_path_factory):
    """The fixed-weight model after one step at learning rate 0 on 50,000 shuffled rows."""
    features, labels = eval_data(n=50_000, seed=0)
    model_dir = str(tmp_path_factory.mktemp("fixed_model"))
    estimator = hk.Estimator(fixed_body, FIXED_HEADS, optimizer="sgd", learning_rate=0.0,
                             model_dir=model_dir)
    estimator.train(hk.input_fn(features, labels, FIXED_HEADS, batch_size=64, shuffle=True,
                                num_epochs=None, seed=0), steps=1)
    return estimator


def test_large_data_keeps_graph_and_checkpoint_small(fixed_model, tmp_path):
    """graph.pbtxt is as large for 50,000 rows as for 64 (as constants they would be > 1 MB)."""
    features, labels = eval_data(n=64, seed=0)
    small = hk.Estimator(fixed_body, FIXED_HEADS, optimizer="sgd", learning_rate=0.0,
                         model_dir=str(tmp_path))
    small.train(hk.input_fn(features, labels, FIXED_HEADS, batch_size=64, shuffle=True,
                            num_epochs=None, seed=0), steps=1)
    large_size = os.path.getsize(os.path.join(fixed_model.model_dir, "graph.pbtxt"))
    small_size = os.path.getsize(os.path.join(small.model_dir, "graph.pbtxt"))
    assert abs(large_size - small_size) < 1_000, (large_size, small_size)
    # The checkpoint (which may hold the input position) holds no rows either.
    for data_file in glob.glob(os.path.join(fixed_model.model_dir, "*.data-*")):
        assert os.path.getsize(data_file) < 50_000, data_file


def test_partial_labels_are_masked_not_dropped(fixed_model):
    features, labels = eval_data()
    x = features["x"]
    result = fixed_model.evaluate(hk.input_fn(features, labels, FIXED_HEADS, batch_size=16))
    labelled = ~np.isnan(labels["a"])
    logits_a = x @ K_A
    ids_a = labels["a"][labelled].astype(int)
    expected_a = cross_entropy(logits_a[labelled], ids_a).mean()
    assert result["a/loss"] == pytest.approx(expected_a, rel=1e-5)
    assert result["a/accuracy"] == pytest.approx(
        (logits_a[labelled].argmax(axis=1) == ids_a).mean(), rel=1e-6)
    # head b has every label: its loss is the mean over all 40 rows, masked ones included
    expected_b = ((x @ K_B)[:, 0] - labels["b"]) ** 2
    assert result["b/loss"] == pytest.approx(expected_b.mean(), rel=1e-5)


def test_weight_column_gives_the_weighted_mean_loss_like_the_canned_head(fixed_model):
    features, labels = eval_data()
    result = fixed_model.evaluate(hk.input_fn(features, labels, FIXED_HEADS, batch_size=16))
    logits_c, w = features["x"] @ K_C, features["w"]
    by_hand = (w * cross_entropy(logits_c, labels["c"])).sum() / w.sum()
    assert result["c/loss"] == pytest.approx(by_hand, rel=1e-5)
    accuracy = (w * (logits_c.argmax(axis=1) == labels["c"])).sum() / w.sum()
    assert result["c/accuracy"] == pytest.approx(accuracy, rel=1e-5)

    with tf.Graph().as_default():
        head = tf.estimator.MultiClassHead(n_classes=3, weight_column="w")
        spec = head.create_estimator_spec(
            features={"w": tf.constant(w[:, None], tf.float32)},
            mode=tf.estimator.ModeKeys.EVAL,
            logits=tf.constant(logits_c),
            labels=tf.constant(labels["c"][:, None]),
        )
        metrics = spec.eval_metric_ops
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.local_variables_initializer())
            session.run([update for _, update in metrics.values()])
            canned_loss, canned_accuracy = session.run(
                [metrics["average_loss"][0], metrics["accuracy"][0]])
    assert result["c/loss"] == pytest.approx(canned_loss, rel=1e-5)
    assert result["c/accuracy"] == pytest.approx(canned_accuracy, rel=1e-5)


@pytest.mark.estimator
def test_the_config_file_example_loads_and_trains(tmp_path):
    sys.path.insert(0, EXAMPLES)
    try:
        import train_from_config
    finally:
        sys.path.remove(EXAMPLES)
    result = train_from_config.main(steps=5, model_dir=str(tmp_path))
    assert result["global_step"] == 5
    assert {"species/accuracy", "mass/rmse", "sex/auc", "loss"} <= set(result)
    assert np.isfinite(result["loss"])


# ------------------------------------------------------------ checked before training


def test_object_columns_of_numbers_and_booleans_become_numbers_and_booleans():
    frame = pd.DataFrame({
        "ints": pd.Series([1, 2, 3], dtype=object),
        "floats": pd.Series([1.5, 2, 3], dtype=object),
        "flags": pd.array([True, False, True], dtype="boolean"),
        "y": [0.0, 1.0, 2.0],
    })
    features, _ = first_batch(hk.input_fn_from_dataframe(frame, ONE, batch_size=3))
    assert features["ints"].dtype == tf.int64 and features["ints"].numpy()[:, 0].tolist() == [
        1, 2, 3]
    assert features["floats"].dtype == tf.float32
    assert features["flags"].dtype == tf.bool
    assert features["flags"].numpy()[:, 0].tolist() == [True, False, True]


def test_a_list_column_of_one_length_becomes_a_matrix():
    frame = pd.DataFrame({"x": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], "y": [0.0, 1.0, 2.0]})
    features, _ = first_batch(hk.input_fn_from_dataframe(frame, ONE, batch_size=3))
    assert features["x"].shape == (3, 2) and features["x"].dtype == tf.float32


def test_ragged_label_lists_are_left_to_the_head():
    if not hasattr(hk, "MultiLabel"):
        pytest.skip("hk.MultiLabel is not in this tree yet")
    heads = hk.HeadSet([hk.Head("tags", hk.MultiLabel(vocabulary=("a", "b", "c")))])
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "tags": [["a"], [], ["b", "c"]]})
    hk.input_fn_from_dataframe(frame, heads)  # the label lists are not a ragged feature


def test_numpy_integers_are_accepted_for_batch_size_num_epochs_and_seed():
    input_fn = hk.input_fn({"i": np.arange(6)}, None, HEADS, batch_size=np.int64(4),
                           shuffle=np.bool_(True), num_epochs=np.int64(2), seed=np.int64(3))
    assert sorted(rows_seen(input_fn)) == sorted(list(range(6)) * 2)
    assert input_fn.headkit_num_epochs == 2 and type(input_fn.headkit_num_epochs) is int
    endless = hk.input_fn({"i": np.arange(6)}, None, HEADS, num_epochs=None)
    assert endless.headkit_num_epochs is None  # what train_and_evaluate reads


def test_input_names_map_columns_that_cannot_name_an_input():
    frame = pd.DataFrame({"bill length (mm)": [39.1, 46.5], "island": ["Dream", "Biscoe"],
                          "y": [1.0, 2.0]})
    input_fn = hk.input_fn_from_dataframe(
        frame, ONE, input_names={"bill length (mm)": "bill_length_mm"})
    features, labels = first_batch(input_fn)
    assert sorted(features) == ["bill_length_mm", "island"] and sorted(labels) == ["y"]
