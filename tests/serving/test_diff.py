"""headkit diff's comparison: pure over two summaries, then on real exports of warm starts."""

from __future__ import annotations

import copy

import pytest

import headkit as hk
from headkit.serving.diff import ADDED, BREAKING, COMPATIBLE, compare, export_summary

CLASSIFY, PREDICT = "tensorflow/serving/classify", "tensorflow/serving/predict"


def _tensor(dtype="float32", *shape):
    return {"dtype": dtype, "shape": list(shape)}


def _summary():
    classify = {"method": CLASSIFY, "inputs": {"inputs": _tensor("string", -1)},
                "outputs": {"classes": _tensor("string", -1, 3),
                            "scores": _tensor("float32", -1, 3)}}
    predict = {"method": PREDICT, "inputs": {"x": _tensor("float32", -1, 4)},
               "outputs": {"kind/classes": _tensor("string", -1, 1)}}
    return {"path": "old", "default_head": "kind",
            "heads": {"kind": {"type": "classification", "classes": ["a", "b", "c"]}},
            "feature_spec": {"x": {"dtype": "float32", "kind": "fixed", "shape": [4]}},
            "signatures": {"kind": classify, "serving_default": copy.deepcopy(classify),
                           "predict": predict}}


def _changes(edit):
    old, new = _summary(), _summary()
    edit(new)
    return [(c.kind, str(c)) for c in compare(old, new).changes]


def test_the_same_export_changes_nothing():
    diff = compare(_summary(), _summary())
    assert diff.changes == () and not diff.breaks
    assert diff.format().endswith("Nothing breaks a client of the old export.")


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s["signatures"].pop("kind"), [(BREAKING, "signature 'kind': removed")]),
    (lambda s: s["signatures"]["predict"].update(method=CLASSIFY),
     [(BREAKING, f"signature 'predict': method {PREDICT!r} -> {CLASSIFY!r}")]),
    (lambda s: s["signatures"]["predict"]["inputs"].update(x=_tensor("float32", -1, 5)),
     [(BREAKING, "signature 'predict': input 'x': float32 [-1, 4] -> float32 [-1, 5]")]),
    (lambda s: s["signatures"]["predict"]["inputs"].update(x=_tensor("float64", -1, 4)),
     [(BREAKING, "signature 'predict': input 'x': float32 [-1, 4] -> float64 [-1, 4]")]),
    (lambda s: s["signatures"]["predict"]["inputs"].update(id=_tensor("string", -1)),
     [(BREAKING, "signature 'predict': new input 'id', which a client of the old export does "
                 "not send")]),
    (lambda s: s["signatures"]["predict"]["outputs"].pop("kind/classes"),
     [(BREAKING, "signature 'predict': output 'kind/classes' removed")]),
    (lambda s: s["signatures"]["predict"]["outputs"].update(id=_tensor("string", -1)),
     [(ADDED, "signature 'predict': new output 'id'")]),
    (lambda s: s.update(default_head="size"),
     [(BREAKING, "default head: 'kind' -> 'size': serving_default serves another head")]),
    (lambda s: s["heads"]["kind"].update(classes=["a", "c"]),
     [(BREAKING, "classes of head 'kind': class 'b' removed"),
      (BREAKING, "classes of head 'kind': reordered: the class ids change (['a', 'b', 'c'] -> "
                 "['a', 'c'])")]),
    (lambda s: s["heads"]["kind"].update(classes=["b", "a", "c"]),
     [(BREAKING, "classes of head 'kind': reordered: the class ids change (['a', 'b', 'c'] -> "
                 "['b', 'a', 'c'])")]),
    (lambda s: s["heads"]["kind"].update(classes=["a", "b", "c", "d"]),
     [(ADDED, "classes of head 'kind': new class(es) ['d']")]),
    (lambda s: s["heads"].update(flag={"type": "classification", "classes": ["0", "1"]}),
     [(ADDED, "head 'flag': new (classification)")]),
    (lambda s: s["feature_spec"].update(z={"dtype": "int64", "kind": "fixed", "shape": [1]}),
     [(BREAKING, "tf.Example feature 'z': new and required: tf.Examples of a client of the old "
                 "export lack it")]),
    (lambda s: s["feature_spec"].update(z={"dtype": "int64", "kind": "fixed", "shape": [1],
                                           "default_value": [0]}),
     [(ADDED, "tf.Example feature 'z': new, with a default")]),
    (lambda s: s["feature_spec"]["x"].update(shape=[5]),
     [(BREAKING, "tf.Example feature 'x': shape [4] -> [5]")]),
    (lambda s: s["feature_spec"].pop("x"),
     [(COMPATIBLE, "tf.Example feature 'x': no longer read (clients may keep sending it)")]),
])
def test_each_change_is_named_and_sorted_by_whether_it_breaks_a_client(edit, expected):
    assert _changes(edit) == expected


def test_json_and_text_group_the_changes_by_kind():
    old, new = _summary(), _summary()
    new["default_head"] = "x"
    new["heads"]["flag"] = {"type": "regression", "classes": None}
    diff = compare(old, new)
    assert diff.breaks and diff.to_dict()["breaks"] is True
    assert [c["subject"] for c in diff.to_dict()["added"]] == ["head 'flag'"]
    text = diff.format()
    assert "breaks a client of the old export (1):\n  default head: 'kind' -> 'x'" in text
    assert text.endswith("1 breaking change(s): a client of the old export can break.")


# ------------------------------------------------------------------ real exports


def _kinds(lifecycle, old, new):
    diff = hk.diff_exports(lifecycle[old][1], lifecycle[new][1])
    return diff, {(c.kind, str(c)) for c in diff.changes}


def test_a_warm_start_that_adds_a_head_only_adds(lifecycle):
    diff, changes = _kinds(lifecycle, "source", "flag")
    assert not diff.breaks
    assert {(ADDED, "head 'flag': new (classification)"),
            (ADDED, "signature 'flag': new (tensorflow/serving/classify)"),
            (ADDED, "signature 'predict': new output 'flag/classes'")} <= changes


def test_more_classes_break_the_scores_of_the_old_clients(lifecycle):
    diff, changes = _kinds(lifecycle, "source", "four_classes")
    assert diff.breaks
    assert {(ADDED, "classes of head 'kind': new class(es) ['d']"),
            (BREAKING, "signature 'kind': output 'scores': float32 [-1, 3] -> float32 [-1, 4]"),
            } <= changes
    back = hk.diff_exports(lifecycle["four_classes"][1], lifecycle["source"][1])
    assert "classes of head 'kind': class 'd' removed" in map(str, back.breaking)


def test_a_renamed_head_removes_its_signatures(lifecycle):
    diff, changes = _kinds(lifecycle, "source", "renamed")
    assert {(BREAKING, "head 'size': removed (its signatures with it)"),
            (BREAKING, "signature 'size': removed"),
            (BREAKING, "signature 'predict': output 'size/predictions' removed"),
            (ADDED, "head 'mass': new (regression)")} <= changes


def test_pass_through_features_are_new_inputs_of_predict_signatures(exported, with_ids):
    _, plain, _ = exported
    _, ids = with_ids
    diff = hk.diff_exports(plain, ids)
    assert (BREAKING, "signature 'kind/predict': new input 'example_id', which a client of the "
                      "old export does not send") in {(c.kind, str(c)) for c in diff.changes}
    assert not [c for c in diff.breaking if "'kind':" in str(c)]  # classify is unchanged
    assert export_summary(ids)["signatures"]["kind"] == export_summary(plain)["signatures"]["kind"]


def test_an_export_of_headkit_0_1_0_compares(exported):
    from tests.conftest import ROOT

    old = f"{ROOT}/tests/fixtures/release_0_1_0/export"
    diff = hk.diff_exports(old, old)
    assert diff.changes == ()
    assert hk.diff_exports(old, exported[1]).breaks  # another body: x has 4 floats, not 3
