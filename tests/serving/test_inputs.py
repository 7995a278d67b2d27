"""Serving inputs are checked per row and feature before any graph, as a hostile user sends them."""

from __future__ import annotations

import json
import math
import os
import re
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import headkit as hk
from headkit.serving import MANIFEST_PATH
from headkit.serving.inputs import check_features, example_row
from headkit.serving.inspection import describe_export

SPEC = {
    "x": {"dtype": "float32", "kind": "fixed", "shape": [4]},
    "tag": {"dtype": "string", "kind": "fixed", "shape": [1]},
    "year": {"dtype": "int64", "kind": "fixed", "shape": [1]},
    "words": {"dtype": "string", "kind": "var"},
}
ROW = {"x": [0.1, 0.2, 0.3, 0.4], "tag": "u", "year": 2007}


def _check(**changes):
    """Two rows; the second one changed: errors must name row 1."""
    return check_features([ROW, {**ROW, **changes}], SPEC)


def test_good_rows_become_arrays_of_the_spec_dtype_and_shape():
    checked = check_features([ROW, {**ROW, "tag": b"v", "year": 2008.0, "x": (1, 2, 3, 4)}], SPEC)
    assert sorted(checked) == ["tag", "x", "year"]  # a VarLen feature reaches no predict input
    assert checked["x"].dtype == np.float32 and checked["x"].shape == (2, 4)
    assert checked["tag"].tolist() == [[b"u"], [b"v"]]
    assert checked["year"].dtype == np.int64 and checked["year"].tolist() == [[2007], [2008]]


@pytest.mark.parametrize("value, got", [
    (None, r"got None \(a missing value\)"),
    (float("nan"), r"got nan \(a missing value\)"),
    (3, r"got 3 \(int\)"),
    (7.0, r"got 7.0 \(float\)"),
    (True, r"got True \(a bool\)"),
    ({"a": 1}, r"got a dict \{'a': 1\}"),
    (np.int64(3), r"got 3 \(int\)"),
])
def test_a_string_feature_refuses_anything_but_text(value, got):
    """TensorFlow would feed None, 3 and 7 as the strings 'None', '3' and '7'."""
    with pytest.raises(hk.DataError, match=rf"^row 1, feature 'tag': {got}; expected a string\."):
        _check(tag=value)


@pytest.mark.parametrize("value, got", [
    (True, r"got True \(a bool\); expected a float32 number\. A bool is not a number"),
    (np.bool_(False), r"got False \(a bool\)"),
    (None, r"got None \(a missing value\); expected a float32 number\. Fill missing values"),
    ("nan", r"got 'nan' \(a string\); expected a float32 number\. Strings are not read as "),
    ("3.5", r"got '3.5' \(a string\)"),
    (b"1", r"got b'1' \(bytes\)"),
    ({"a": 1}, r"got a dict \{'a': 1\}; expected a float32 number"),
])
def test_a_float_feature_refuses_bools_none_strings_and_bytes(value, got):
    """TensorFlow would feed True as 1.0."""
    with pytest.raises(hk.DataError, match=rf"^row 1, feature 'x' at \[2\]: {got}"):
        _check(x=[0.0, 0.0, value, 0.0])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -math.inf, np.float32("nan")])
def test_non_finite_floats_are_refused_unless_allowed(value):
    with pytest.raises(hk.DataError, match=r"^row 1, feature 'x' at \[3\]: got .*expected a finite "
                       r"float32 number\. .*allow_non_finite=True.*--allow-non-finite"):
        _check(x=[0.0, 0.0, 0.0, value])
    rows = [ROW, {**ROW, "x": [0.0, 0.0, 0.0, value]}]
    allowed = check_features(rows, SPEC, allow_non_finite=True)["x"]
    assert not np.isfinite(allowed[1, 3]) and np.isfinite(allowed[0]).all()
    array = np.zeros((3, 4))
    array[2, 3] = value
    with pytest.raises(hk.DataError, match=r"^row 2, feature 'x' at \[3\]: got (-?inf|nan)"):
        check_features({**{k: [v] * 3 for k, v in ROW.items()}, "x": array}, SPEC)


@pytest.mark.parametrize("value", [1e39, -1e39, 10**40, 10**400])
def test_floats_beyond_float32_are_refused_not_made_inf(value):
    with pytest.raises(hk.DataError, match=r"^row 1, feature 'x' at \[0\]: got .*outside "
                       r"float32's range"):
        _check(x=[value, 0.0, 0.0, 0.0])
    assert check_features([{**ROW, "x": [3.4028234e38, -1e38, 0, 0]}], SPEC)["x"].max() > 3e38


@pytest.mark.parametrize("value, message", [
    (2.5, r"got 2.5, which is not a whole number; expected an int64"),
    (True, r"got True \(a bool\)"),
    (None, r"got None \(a missing value\)"),
    ("2007", r"got '2007' \(a string\)"),
    (float("nan"), r"got nan \(a missing value\); expected an int64 .*no NaN or inf"),
    (2**63, r"got 9223372036854775808, outside int64's range .*wrap around"),
    (2**63 + 5, r"got 9223372036854775813, outside int64's range"),
    (-(2**63) - 1, r"got -9223372036854775809, outside int64's range"),
    (1e19, r"got 1e\+19, outside int64's range"),
    ([2007, 2008], r"got a list of 2 values \[2007, 2008\]; expected an int64"),
])
def test_an_int64_feature_refuses_fractions_bools_and_what_would_wrap(value, message):
    with pytest.raises(hk.DataError, match=rf"^row 1, feature 'year': {message}"):
        _check(year=value)


def test_int64_accepts_whole_floats_and_both_ends_of_its_range():
    rows = [{**ROW, "year": v} for v in (3.0, 2**63 - 1, -(2**63), np.int64(5), [7])]
    assert check_features(rows, SPEC)["year"].ravel().tolist() == [3, 2**63 - 1, -(2**63), 5, 7]


def test_a_uint64_array_beyond_int64_is_refused_not_wrapped_to_a_negative_number():
    columns = {"x": np.zeros((2, 4)), "tag": ["u", "v"],
               "year": np.array([[2007], [2**63 + 5]], dtype=np.uint64)}
    with pytest.raises(hk.DataError, match=r"^row 1, feature 'year': got 9223372036854775813, "
                       "outside int64's range"):
        check_features(columns, SPEC)
    columns["year"] = np.array([[2007], [2**63 - 1]], dtype=np.uint64)
    assert check_features(columns, SPEC)["year"][1, 0] == 2**63 - 1


def test_a_two_value_list_for_a_one_value_feature_is_an_error_not_two_rows():
    """TensorFlow would reshape [['u', 'v']] to two rows; the CLI would print one."""
    with pytest.raises(hk.DataError, match=r"^row 1, feature 'tag': got a list of 2 values "
                       r"\['u', 'v'\]; expected a string \(one value per row\)\. A row holds one "
                       "value per feature"):
        _check(tag=["u", "v"])
    columns = {"x": np.zeros((2, 4)), "tag": np.array([["u", "v"], ["w", "z"]]), "year": [1, 2]}
    with pytest.raises(hk.DataError, match=r"^row 0, feature 'tag': got a list of 2 values"):
        check_features(columns, SPEC)
    columns = {"x": np.zeros((2, 8)), "tag": ["u", "v"], "year": [1, 2]}
    with pytest.raises(hk.DataError, match=r"^feature 'x': every row has shape \[8\] \(the "
                       r"array's shape is \[2, 8\]\); expected a list of 4 values"):
        check_features(columns, SPEC)


@pytest.mark.parametrize("value, message", [
    (0.5, r"got the single value 0.5; expected a list of 4 values, each a float32 number"),
    ([[0.1, 0.2], [0.3, 0.4]], r"got nested lists of shape \[2, 2\]; expected a list of 4"),
    ([[0.1], [0.2, 0.3], 0.4], r"got .*, ragged nested lists"),
    ([[[[[1.0]]]]], r"got .*, lists nested deeper than the feature's shape"),
    ([], r"got a list of 0 values \[\]"),
    ([0.1, 0.2, 0.3], r"got a list of 3 values"),
    ({"a": 1.0}, r"got a dict \{'a': 1.0\}; expected a list of 4 values"),
    ("0.1,0.2,0.3,0.4", r"got the single value '0.1,0.2,0.3,0.4'"),
])
def test_a_value_of_the_wrong_shape_names_row_feature_and_shape(value, message):
    with pytest.raises(hk.DataError, match=rf"^row 1, feature 'x': {message}"):
        _check(x=value)


def test_a_scalar_and_a_one_value_list_both_fit_a_shape_1_feature():
    rows = [{**ROW, "tag": "u"}, {**ROW, "tag": ["v"]}, {**ROW, "tag": np.array([b"w"])}]
    assert check_features(rows, SPEC)["tag"].tolist() == [[b"u"], [b"v"], [b"w"]]


def test_missing_features_name_the_row_and_a_likely_typo():
    with pytest.raises(hk.DataError, match=r"^row 1 has no feature 'x'; every row needs \['tag', "
                       r"'x', 'year'\] \(got \['X', 'tag', 'year'\]\)\. Is 'X' a typo of 'x'\?"):
        check_features([ROW, {"X": ROW["x"], "tag": "u", "year": 1}], SPEC)
    with pytest.raises(hk.DataError, match=r"^row 0 has no feature 'x'.*\(got \[\]\)\.$"):
        check_features([{}], SPEC)
    with pytest.raises(hk.DataError, match=r"^feature 'tag' is missing; the export needs .* Is "
                       "'Tag' a typo"):
        check_features({"x": np.zeros((1, 4)), "Tag": ["u"], "year": [1]}, SPEC)


def test_features_the_export_does_not_read_are_ignored_whatever_they_hold():
    rows = [{**ROW, "id": {"nested": [None]}, "label": float("nan"), 3: object()}]
    assert check_features(rows, SPEC)["x"].shape == (1, 4)


@pytest.mark.parametrize("features, error, message", [
    ([], hk.DataError, r"^no rows to predict; the export needs \['tag', 'x', 'year'\] per row"),
    ([ROW, 5], hk.DataError, r"^row 1 is 5 \(int\); expected a dict of feature name -> value"),
    ([ROW, None], hk.DataError, r"^row 1 is None \(a missing value\); expected a dict"),
    ((r for r in [ROW]), TypeError, r"^features must be a dict of columns, a list of row dicts, "
     r"or a pandas DataFrame \(got generator\)"),
    ("x,tag\n1,u", TypeError, r"\(got str\)"),
    (ROW, hk.DataError, r"^feature 'tag': got the single value 'u'; a dict of columns needs one "
     r"value per row .* To predict one row, pass a list of row dicts"),
    ({"x": np.zeros((2, 4)), "tag": ["u"], "year": [1, 2]}, hk.DataError,
     r"^the features have different numbers of rows \(\{'x': 2, 'tag': 1, 'year': 2\}\)"),
    ({"x": np.zeros((0, 4)), "tag": [], "year": []}, hk.DataError, r"^no rows to predict"),
    ({"x": np.zeros((1, 4), "datetime64[ns]"), "tag": ["u"], "year": [1]}, TypeError,
     r"^feature 'x': got an array of dtype datetime64\[ns\]"),
    ({"x": np.zeros((1, 4), bool), "tag": ["u"], "year": [1]}, TypeError,
     r"^row 0, feature 'x' at \[0\]: got False \(a bool\)"),
    ({"x": np.zeros((1, 4)), "tag": np.array([1]), "year": [1]}, TypeError,
     r"^row 0, feature 'tag': got 1 \(int\); expected a string"),
    ({"x": np.zeros((1, 4)), "tag": ["u"], "year": np.array([1.5])}, hk.DataError,
     r"^row 0, feature 'year': got 1.5, which is not a whole number"),
])
def test_inputs_of_the_wrong_form_say_what_to_pass(features, error, message):
    with pytest.raises(error, match=message):
        check_features(features, SPEC)


def test_a_dataframe_with_object_columns_is_checked_per_row():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"x": [np.zeros(4), [1.0, 2.0, 3.0, 4.0]], "tag": ["u", None],
                          "year": pd.array([2007, 2008], dtype="Int64"), "species": ["a", "b"]})
    with pytest.raises(hk.DataError, match=r"^row 1, feature 'tag': got None \(a missing value\)"):
        check_features(frame, SPEC)
    with pytest.raises(hk.DataError, match=r"^row 0 \(index 1\), feature 'tag': got None"):
        check_features(frame.iloc[[1]], SPEC)  # a filtered frame: its index is named too
    frame["tag"] = pd.Series(["u", "v"], dtype="category")
    checked = check_features(frame, SPEC)
    assert checked["x"].tolist()[1] == [1, 2, 3, 4] and checked["tag"].tolist() == [[b"u"], [b"v"]]
    frame["year"] = pd.array([2007, None], dtype="Int64")
    with pytest.raises(hk.DataError, match=r"^row 1, feature 'year': got nan \(a missing value\)"):
        check_features(frame, SPEC)
    twice = pd.DataFrame([[[0.0] * 4, "u", 1, 2]], columns=["x", "tag", "year", "year"])
    with pytest.raises(hk.DataError, match=r"several columns named \['year'\]"):
        check_features(twice, SPEC)


def test_text_cells_are_read_as_numbers_only_when_the_input_is_text():
    spec = {"mass": {"dtype": "float32", "kind": "fixed", "shape": [1]},
            "year": {"dtype": "int64", "kind": "fixed", "shape": []}}
    checked = check_features([{"mass": " 3.5", "year": "2007"}], spec, text=True)
    assert checked["mass"].tolist() == [[3.5]] and checked["year"].tolist() == [2007]
    with pytest.raises(hk.DataError, match=r"^row 0, feature 'year': got '2007.5', which is not an "
                       r"int64 \(a whole number\)\. Fix the cell"):
        check_features([{"mass": "1", "year": "2007.5"}], spec, text=True)
    with pytest.raises(hk.DataError, match=r"^row 0, feature 'mass': got '', which is not"):
        check_features([{"mass": "", "year": "1"}], spec, text=True)
    with pytest.raises(hk.DataError, match=r"^line 3, feature 'mass': got nan .* finite"):
        check_features([{"mass": "nan", "year": "1"}], spec, text=True, row_name=lambda i: "line 3")
    with pytest.raises(hk.DataError, match=r"got '2007' \(a string\)"):
        check_features([{"mass": 1.0, "year": "2007"}], spec)


@pytest.mark.parametrize("value", [
    np.datetime64("2020-01-01", "ns"), np.array(["2020-01-01"], dtype="datetime64[ns]"),
    np.array([np.datetime64("2020-01-01", "ns")], dtype=object),
    [np.array(["2020-01-01"], dtype="datetime64[ns]")],
])
def test_dates_in_a_row_are_refused_not_read_as_nanoseconds(value):
    with pytest.raises(hk.DataError, match=r"^row 1, feature 'year': got .*datetime64.*[Cc]onvert "
                       "dates and times to numbers"):
        _check(year=value)


def test_tensors_and_series_inside_rows_are_read_as_arrays():
    pd = pytest.importorskip("pandas")
    import tensorflow as tf

    rows = [{**ROW, "x": tf.constant([1.0, 2.0, 3.0, 4.0]), "year": pd.Series([2007])}]
    checked = check_features(rows, SPEC)
    assert checked["x"].tolist() == [[1, 2, 3, 4]] and checked["year"].tolist() == [[2007]]


def test_a_string_that_is_not_unicode_text_is_refused():
    with pytest.raises(hk.DataError, match=r"^row 1, feature 'tag': got '\\ud800', a string "
                       "that is not valid Unicode text"):
        _check(tag="\ud800")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3), st.binary(max_size=2),
), min_size=1, max_size=6), st.sampled_from(["float32", "int64", "string"]))
def test_every_value_is_either_refused_or_fed_unchanged(values, dtype):
    """Rows and the same values as columns agree; whatever passes is exactly what was given."""
    spec = {"v": {"dtype": dtype, "kind": "fixed", "shape": [1]}}
    results = []
    for features in ([{"v": v} for v in values], {"v": list(values)},
                     {"v": np.array(values + [object()], dtype=object)[:-1]}):
        try:
            results.append(check_features(features, spec)["v"].ravel().tolist())
        except hk.DataError as error:
            results.append(str(error).split(":")[0])
    assert results[0] == results[1] == results[2]
    if isinstance(results[0], str):
        return
    for given_value, fed in zip(values, results[0]):
        assert not isinstance(given_value, bool) and given_value is not None
        if dtype == "string":
            assert fed == (given_value if isinstance(given_value, bytes)
                           else given_value.encode("utf-8"))
        elif dtype == "int64":
            assert isinstance(given_value, (int, float)) and fed == given_value
        else:
            assert math.isfinite(given_value) and fed == np.float32(given_value)


def test_example_row_has_the_spec_types_and_shapes():
    assert example_row(SPEC) == {"tag": "text", "x": [0.5, 0.5, 0.5, 0.5], "year": 1}
    assert set(check_features([example_row(SPEC)], SPEC)) == {"tag", "x", "year"}


# ------------------------------------------------------------------ through a real export


@pytest.fixture(scope="module")
def model(exported):
    return hk.load(exported[1])


def _rows(features, n=3):
    return [{"x": features["x"][i].tolist(), "tag": features["tag"][i, 0]} for i in range(n)]


@pytest.mark.parametrize("change, message", [
    ({"tag": None}, r"row 2, feature 'tag': got None"),
    ({"tag": 3}, r"row 2, feature 'tag': got 3 \(int\)"),
    ({"x": [True, 0.0, 0.0, 0.0]}, r"row 2, feature 'x' at \[0\]: got True \(a bool\)"),
    ({"x": [float("nan"), 0.0, 0.0, 0.0]}, r"row 2, feature 'x' at \[0\]: got nan"),
    ({"tag": ["u", "v"]}, r"row 2, feature 'tag': got a list of 2 values"),
])
def test_predict_refuses_what_tensorflow_would_silently_convert(model, exported, change, message):
    rows = _rows(exported[2])
    rows[2].update(change)
    with pytest.raises(hk.DataError, match=message):
        model.predict(rows)
    with pytest.raises(hk.DataError, match=message):
        model.predict(rows, head="size")


def test_allow_non_finite_feeds_nan_to_a_model_that_expects_it(model, exported):
    rows = _rows(exported[2])
    rows[1]["x"][0] = float("nan")
    predictions = model.predict(rows, head="size", allow_non_finite=True)["size"]["predictions"]
    assert np.isnan(predictions[1, 0]) and np.isfinite(predictions[[0, 2]]).all()


def test_extra_features_are_ignored_and_a_dataframe_of_lists_is_accepted(model, exported):
    pd = pytest.importorskip("pandas")
    rows = _rows(exported[2])
    plain = model.predict(rows, head="size")["size"]["predictions"]
    noisy = [{**row, "id": i, "note": None} for i, row in enumerate(rows)]
    np.testing.assert_allclose(model.predict(noisy, head="size")["size"]["predictions"], plain)
    frame = pd.DataFrame(noisy)
    np.testing.assert_allclose(model.predict(frame, head="size")["size"]["predictions"], plain,
                               atol=1e-6)


def test_decode_returns_str_in_flat_arrays_and_the_default_is_unchanged(model, exported):
    rows = _rows(exported[2])
    raw = model.predict(rows)
    decoded = model.predict(rows, decode=True)
    classes = raw["kind"]["classes"]
    assert classes.shape == (3, 1) and isinstance(classes[0, 0], bytes)
    assert decoded["kind"]["classes"].shape == (3,)
    assert decoded["kind"]["classes"].tolist() == [c.decode() for c in classes[:, 0]]
    assert decoded["kind"]["all_classes"].tolist()[0] == ["a", "b", "c"]  # [n, 3] stays [n, 3]
    assert decoded["size"]["predictions"].shape == (3,)
    assert decoded["kind"]["probabilities"].shape == (3, 3)
    np.testing.assert_array_equal(decoded["size"]["predictions"], raw["size"]["predictions"][:, 0])


# ------------------------------------------------------------------ damaged exports


def _damaged_copy(export_dir, tmp_path, path, keep=0.5):
    copy = str(tmp_path / "export")
    shutil.copytree(export_dir, copy)
    target = os.path.join(copy, path)
    with open(target, "rb") as handle:
        data = handle.read()
    with open(target, "wb") as handle:
        handle.write(data[: int(len(data) * keep)])
    return copy


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_a_truncated_saved_model_pb_is_named_by_load_and_inspect(exported, tmp_path, keep):
    copy = _damaged_copy(exported[1], tmp_path, "saved_model.pb", keep)
    expected = (rf"^{re.escape(copy)}: the export is damaged: saved_model.pb could not be "
                r"read \(.*\)\. Export the model again")
    with pytest.raises(hk.ConfigError, match=expected):
        hk.load(copy)
    with pytest.raises(hk.ConfigError, match=expected):
        describe_export(copy)


@pytest.mark.parametrize("path", ["variables/variables.data-00000-of-00001",
                                  "variables/variables.index"])
def test_a_truncated_variables_file_is_named_by_load(exported, tmp_path, path):
    copy = _damaged_copy(exported[1], tmp_path, path)
    expected = rf"^{re.escape(copy)}: the export is damaged: {path} could not be read \(.+\)\. "
    with pytest.raises(hk.ConfigError, match=expected + "Export the model again"):
        hk.load(copy)


def test_a_manifest_that_is_not_json_is_named(exported, tmp_path):
    copy = str(tmp_path / "export")
    shutil.copytree(exported[1], copy)
    with open(os.path.join(copy, MANIFEST_PATH), "w") as handle:
        handle.write(json.dumps({"heads": []})[:-3])
    with pytest.raises(hk.ConfigError, match=r"assets.extra/headkit.json: the manifest is not "
                       r"valid JSON .* The export is damaged; export the model again"):
        hk.load(copy)
