"""``headkit inspect``, ``predict`` and ``diff`` on real exports, and their exit codes."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

import headkit as hk
from headkit import cli


def test_inspect_prints_every_signature_with_method_and_default(exported, capsys):
    _, export_dir, _ = exported
    assert cli.main(["inspect", export_dir]) == 0
    text = capsys.readouterr().out
    assert "default head: kind" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line and line[0] != " "}
    assert "classify" in lines["kind"] and "inputs:string[batch]" in lines["kind"]
    assert "regress" in lines["size"] and "outputs:float32[batch,1]" in lines["size"]
    assert "predict" in lines["kind/predict"] and "tag:string[batch,1]" in lines["kind/predict"]
    assert "serving_default" in text and "predict" in lines


def test_inspect_json_lists_signatures_for_machines(exported, capsys):
    _, export_dir, _ = exported
    assert cli.main(["inspect", export_dir, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_key = {s["key"]: s for s in data["signatures"]}
    assert by_key["serving_default"]["method"] == "tensorflow/serving/classify"
    assert by_key["serving_default"]["default"] is True
    assert [t["name"] for t in by_key["kind"]["outputs"]] == ["classes", "scores"]
    assert data["heads"] == ["kind", "size", "flag"]


def test_predict_writes_one_json_line_per_row(exported, tmp_path, capsys):
    _, export_dir, features = exported
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "\n".join(
            json.dumps({"x": features["x"][i].tolist(), "tag": features["tag"][i, 0]})
            for i in range(3)
        )
    )
    assert cli.main(["predict", export_dir, "--input", str(rows)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 3
    assert records[0]["kind"]["classes"][0] in ("a", "b", "c")
    assert len(records[0]["size"]["predictions"]) == 1

    out = tmp_path / "out.jsonl"
    assert cli.main(["predict", export_dir, "--input", str(rows), "--head", "flag",
                     "--output", str(out)]) == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert list(first) == ["flag"] and first["flag"]["classes"][0] in ("0", "1")


def _error(capsys) -> str:
    """stderr of a user's error: one line, no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_predict_csv_of_a_shaped_feature_says_to_use_json_lines(exported, tmp_path, capsys):
    """A CSV cell holds one value; x holds 4 per row. (A scalar model's CSV: docs/serving.md.)"""
    _, export_dir, _ = exported
    rows = tmp_path / "rows.csv"
    rows.write_text("x,tag\n0.5,u\n")
    assert cli.main(["predict", export_dir, "--input", str(rows)]) == 2
    assert ("rows.csv: feature 'x' holds [4] values per row, and a CSV cell holds one. Write the "
            'rows as JSON Lines (.jsonl) instead, e.g. {"tag": "text", "x": [0.5, 0.5, 0.5, 0.5]}'
            ) in _error(capsys)


def test_exit_codes_are_named_and_listed_in_every_help(capsys):
    assert (cli.EXIT_OK, cli.EXIT_BREAKING, cli.EXIT_USAGE, cli.EXIT_INTERNAL) == (0, 1, 2, 3)
    for argv in (["--help"], ["inspect", "--help"], ["predict", "--help"]):
        assert cli.main(argv) == cli.EXIT_OK
        out = capsys.readouterr().out
        assert "exit codes:" in out and "3  an internal error, a bug in headkit" in out
    assert cli.main(["predict"]) == cli.EXIT_USAGE  # argparse's usage error
    assert "the following arguments are required" in capsys.readouterr().err


def test_predict_help_shows_the_rows_format(capsys):
    assert cli.main(["predict", "--help"]) == 0
    out = capsys.readouterr().out
    assert "JSON Lines (.jsonl), one JSON object per line" in out
    assert '{"bill_length_mm": 39.1, "flipper_length_mm": 181.0, "island": "Torgersen"}' in out
    assert "--allow-non-finite" in out


def _jsonl(tmp_path, features, *extra, name="rows.jsonl"):
    """Two good rows (lines 1 and 3, a blank line 2), then the extra lines."""
    good = [json.dumps({"x": features["x"][i].tolist(), "tag": features["tag"][i, 0]})
            for i in range(2)]
    path = tmp_path / name
    path.write_text("\n".join([good[0], "", good[1], *extra]) + "\n")
    return str(path)


@pytest.mark.parametrize("line, message", [
    ("5", "rows.jsonl line 4: 5 is a JSON number, not a JSON object; each line must be one JSON "
     'object of feature -> value, e.g. {"tag": "text", "x": [0.5, 0.5, 0.5, 0.5]}'),
    ("[1, 2]", "rows.jsonl line 4: [1, 2] is a JSON array, not a JSON object"),
    ('"x"', 'rows.jsonl line 4: "x" is a JSON string, not a JSON object'),
    ("null", "rows.jsonl line 4: null is JSON null, not a JSON object"),
    ("true", "rows.jsonl line 4: true is JSON true, not a JSON object"),
    ("{not json", "rows.jsonl line 4: not valid JSON (Expecting property name enclosed in double "
     "quotes); each line must be one JSON object"),
    ('{"x": [0, 0, 0, 0], "tag": "u", "tag": "v"}',
     "rows.jsonl line 4: the object repeats the key(s) ['tag']; keep one of each."),
    ("[" * 100000, "rows.jsonl line 4: not valid JSON (nested too deeply)"),
    ('{"x": [0, 0, 0, 0]}', "rows.jsonl line 4 has no feature 'tag'; every row needs ['tag', 'x'] "
     "(got ['x'])."),
    ('{"x": [0, 0, 0, 0], "tag": null}', "rows.jsonl line 4, feature 'tag': got None (a missing "
     "value); expected a string. Fill missing values"),
    ('{"x": [0, 0, 0, 0], "tag": 3}', "rows.jsonl line 4, feature 'tag': got 3 (int)"),
    ('{"x": [0, 0, 0, 0], "tag": ["u", "v"]}', "rows.jsonl line 4, feature 'tag': got a list of 2 "
     "values ['u', 'v']; expected a string (one value per row)."),
    ('{"x": [true, 0, 0, 0], "tag": "u"}', "rows.jsonl line 4, feature 'x' at [0]: got True"),
    ('{"x": [0, 0, 0, "nan"], "tag": "u"}', "rows.jsonl line 4, feature 'x' at [3]: got 'nan' (a "
     "string)"),
    ('{"x": [0, 0, 0, NaN], "tag": "u"}', "rows.jsonl line 4, feature 'x' at [3]: got nan (a "
     "missing value); expected a finite float32 number. Fill or drop it, or allow non-finite "
     "values if the model expects them (predict(..., allow_non_finite=True); headkit predict "
     "--allow-non-finite)."),
    ('{"x": [0, 0, 0, 1e39], "tag": "u"}', "rows.jsonl line 4, feature 'x' at [3]: got 1e+39, "
     "outside float32's range"),
    ('{"x": [[0, 0], [0, 0]], "tag": "u"}', "rows.jsonl line 4, feature 'x': got nested lists of "
     "shape [2, 2]; expected a list of 4 values"),
    ('{"x": {"a": 0}, "tag": "u"}', "rows.jsonl line 4, feature 'x': got a dict {'a': 0}"),
])
def test_a_bad_line_exits_2_naming_its_line_and_what_is_wrong(exported, tmp_path, capsys, line,
                                                              message):
    path = _jsonl(tmp_path, exported[2], line)
    assert cli.main(["predict", exported[1], "--input", path]) == 2
    err = _error(capsys)
    assert err.startswith("headkit predict: error: ") and message.replace(
        "rows.jsonl", path) in err
    assert capsys.readouterr().out == ""  # nothing is predicted when a line is bad


def test_allow_non_finite_predicts_a_nan_line(exported, tmp_path, capsys):
    path = _jsonl(tmp_path, exported[2], '{"x": [0, 0, 0, NaN], "tag": "u", "id": 7}')
    argv = ["predict", exported[1], "--input", path, "--head", "size"]
    assert cli.main([*argv, "--allow-non-finite"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 3 and math.isnan(records[2]["size"]["predictions"][0])


def test_a_line_separator_inside_a_json_string_ends_no_line(exported, tmp_path, capsys):
    row = json.dumps({"x": [0.0, 0.0, 0.0, 0.0], "tag": "u\u2028v"}, ensure_ascii=False)
    path = _jsonl(tmp_path, exported[2], row)
    assert "\u2028" in open(path, encoding="utf-8").read()
    assert cli.main(["predict", exported[1], "--input", path, "--head", "size"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


@pytest.mark.parametrize("text, message", [
    ('[{"x": [0, 0, 0, 0], "tag": "u"}]', "is a JSON array; headkit predict reads JSON Lines: one "
     'object per line, e.g. {"tag": "text", "x": [0.5, 0.5, 0.5, 0.5]}'),
    ('[\n  {"x": [0, 0, 0, 0], "tag": "u"},\n  {"x": [0, 0, 0, 0], "tag": "v"}\n]\n',
     "is a JSON array; headkit predict reads JSON Lines: one object per line"),
    ('{\n  "x": [0, 0, 0, 0],\n  "tag": "u"\n}\n', "is one JSON object written over several "
     "lines; headkit predict reads JSON Lines"),
    ("", "holds no rows; write one JSON object per line"),
    ("\n\n  \n", "holds no rows"),
])
def test_a_file_that_is_not_json_lines_says_what_it_is(exported, tmp_path, capsys, text, message):
    for name in ("rows.json", "rows.jsonl"):
        path = tmp_path / name
        path.write_text(text)
        assert cli.main(["predict", exported[1], "--input", str(path)]) == 2
        assert f"{path} {message}" in _error(capsys)


def test_an_unknown_input_suffix_is_named_with_a_likely_typo(exported, tmp_path, capsys):
    for name, hint in (("rows.jsnl", " Did you mean .jsonl?"), ("rows.cvs", " Did you mean .csv?"),
                       ("rows.txt", " Rename"), ("rows", " Rename")):
        assert cli.main(["predict", exported[1], "--input", str(tmp_path / name)]) == 2
        err = _error(capsys)
        assert hint in err and f"{tmp_path / name}: headkit predict reads .jsonl (JSON Lines: " \
            "one JSON object per line) or .csv" in err
    path = _jsonl(tmp_path, exported[2], name="ROWS.NDJSON")  # case aside; JSON Lines' other name
    assert cli.main(["predict", exported[1], "--input", path, "--head", "flag"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_csv_lines_with_the_wrong_number_of_cells_are_named(exported, tmp_path):
    """The CSV reader alone: the session's export has no CSV-able features (x holds 4)."""
    from headkit.serving import read_manifest

    spec = {"tag": read_manifest(exported[1])["feature_spec"]["tag"]}
    path = tmp_path / "rows.csv"
    for text, message in (("tag\nu\nv,w\n", "rows.csv line 3: 2 cells, but the header names 1 "
                           "columns"), ("", "rows.csv is empty"), ("tag\n", "holds a header and no "
                           "rows"), ("tag,tag\nu,v\n", "line 1: the header repeats the column(s) "
                           "['tag']"), (b"tag\n\xff\n", "rows.csv line 2: not UTF-8 text")):
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(hk.DataError, match=message.replace("(", r"\(").replace(
                ")", r"\)").replace("[", r"\[")):
            cli._read_rows(str(path), spec)
    path.write_text('tag\n"u"\n\nv\n')
    assert cli._read_rows(str(path), spec) == ([{"tag": "u"}, {"tag": "v"}], [2, 4], True)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "/no/such/export"], "is not a directory"),
        (["predict", "/no/such/export", "--input", "rows.jsonl"], "not a headkit export"),
    ],
)
def test_bad_paths_exit_2_with_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_input_files_and_heads_exit_2(exported, tmp_path, capsys):
    _, export_dir, features = exported
    assert cli.main(["predict", export_dir, "--input", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl: cannot read the file (No such file or directory)." in _error(capsys)
    path = _jsonl(tmp_path, features)
    assert cli.main(["predict", export_dir, "--input", path, "--head", "knd"]) == 2
    assert ("--head 'knd': the export has no such head; its heads are ['kind', 'size', 'flag']"
            in _error(capsys))
    assert cli.main(["predict", export_dir, "--input", path, "--output", str(tmp_path)]) == 2
    assert "Is a directory" in _error(capsys)


def _damaged(export_dir, tmp_path, path):
    copy = str(tmp_path / "export")
    shutil.copytree(export_dir, copy)
    with open(os.path.join(copy, path), "r+b") as handle:
        handle.truncate(os.path.getsize(os.path.join(copy, path)) // 2)
    return copy


def test_a_damaged_export_exits_2_naming_the_file(exported, tmp_path, capsys):
    _, export_dir, features = exported
    copy = _damaged(export_dir, tmp_path, "saved_model.pb")
    assert cli.main(["inspect", copy]) == 2
    assert f"headkit inspect: error: {copy}: the export is damaged: saved_model.pb could not be " \
           "read" in _error(capsys)
    shutil.rmtree(copy)
    copy = _damaged(export_dir, tmp_path, "variables/variables.data-00000-of-00001")
    assert cli.main(["predict", copy, "--input", _jsonl(tmp_path, features)]) == 2
    assert "variables/variables.data-00000-of-00001 could not be read" in _error(capsys)
    assert cli.main(["inspect", copy]) == 0  # inspect reads no weights


def test_an_internal_error_exits_3_with_a_traceback_only_when_verbose(exported, tmp_path, capsys,
                                                                       monkeypatch):
    from headkit.serving.loading import LoadedModel

    def broken(self, *args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(LoadedModel, "predict", broken)
    argv = ["predict", exported[1], "--input", _jsonl(tmp_path, exported[2])]
    assert cli.main(argv) == cli.EXIT_INTERNAL
    err = _error(capsys)
    assert err == ("headkit predict: internal error: RuntimeError: boom. This is a bug in headkit; "
                   "please report it (rerun with --verbose to see the traceback).\n")
    assert cli.main([*argv, "--verbose"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "RuntimeError: boom" in err
    assert err.endswith("please report it with the traceback above.\n")


def test_console_script_runs_as_a_process(exported, tmp_path):
    """The installed entry point, as a user types it: a JSONL line `5` exits 2 with no traceback."""
    _, export_dir, features = exported
    done = subprocess.run(
        [sys.executable, "-m", "headkit.cli", "predict", export_dir, "--input",
         _jsonl(tmp_path, features, "5")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].endswith(
        "rows.jsonl line 4: 5 is a JSON number, not a JSON object; each line must be one JSON "
        'object of feature -> value, e.g. {"tag": "text", "x": [0.5, 0.5, 0.5, 0.5]}')
    assert "Traceback" not in done.stderr


def test_predict_prints_the_pass_through_features_of_each_row(with_ids, exported, tmp_path,
                                                              capsys):
    _, export_dir = with_ids
    _, _, features = exported
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"x": features["x"][i].tolist(), "tag": "u",
                                           "example_id": f"id-{i}"}) for i in range(2)))
    assert cli.main(["predict", export_dir, "--input", str(rows), "--head", "kind"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["example_id"] for r in records] == ["id-0", "id-1"]
    assert [sorted(r) for r in records] == [["example_id", "kind", "tag"]] * 2


def test_diff_exits_0_when_nothing_breaks_and_1_when_something_does(lifecycle, capsys):
    source, flag = lifecycle["source"][1], lifecycle["flag"][1]
    assert cli.main(["diff", source, flag]) == cli.EXIT_OK == 0
    text = capsys.readouterr().out
    assert "added (" in text and text.rstrip().endswith("Nothing breaks a client of the old "
                                                        "export.")
    assert cli.main(["diff", flag, source]) == cli.EXIT_BREAKING == 1
    assert "head 'flag': removed (its signatures with it)" in capsys.readouterr().out
    assert cli.main(["diff", source, lifecycle["renamed"][1], "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["breaks"] is True and report["old"] == source
    assert {"kind": "breaking", "subject": "signature 'size'", "detail": "removed"} in \
        report["breaking"]


def test_diff_of_a_path_that_is_not_an_export_exits_2(lifecycle, tmp_path, capsys):
    assert cli.main(["diff", lifecycle["source"][1], str(tmp_path)]) == cli.EXIT_USAGE == 2
    err = capsys.readouterr().err
    assert "is not a headkit export" in err and "Traceback" not in err
    (tmp_path / "saved_model.pb").write_text("not a proto")
    (tmp_path / "assets.extra").mkdir()
    (tmp_path / "assets.extra" / "headkit.json").write_text(
        json.dumps({"heads": {"heads": []}, "signatures": {}, "feature_spec": {},
                    "default_head": "y"}))
    assert cli.main(["diff", str(tmp_path), lifecycle["source"][1]]) == 2
    assert "Cannot parse file" in capsys.readouterr().err


def test_diff_reports_an_internal_error_with_exit_3(lifecycle, monkeypatch, capsys):
    from headkit.serving import diff

    def broken(old, new):
        raise RuntimeError("a bug")

    monkeypatch.setattr(diff, "compare", broken)
    source = lifecycle["source"][1]
    assert cli.main(["diff", source, source]) == cli.EXIT_INTERNAL == 3
    assert "headkit diff: internal error: RuntimeError: a bug" in capsys.readouterr().err
