"""``headkit inspect``, ``predict`` and ``diff`` on real exports, and their exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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


def test_predict_reads_csv_cells_as_the_export_dtypes(exported, tmp_path, capsys):
    """A scalar-feature model's rows come from CSV; here only tag is scalar, so x fails."""
    _, export_dir, _ = exported
    rows = tmp_path / "rows.csv"
    rows.write_text("x,tag\nnot-a-number,u\n")
    assert cli.main(["predict", export_dir, "--input", str(rows)]) == 2
    assert "row 1, column 'x': 'not-a-number' is not float32" in capsys.readouterr().err


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


def test_bad_input_file_exits_2(exported, tmp_path, capsys):
    _, export_dir, _ = exported
    bad = tmp_path / "rows.jsonl"
    bad.write_text("{not json\n")
    assert cli.main(["predict", export_dir, "--input", str(bad)]) == 2
    assert "rows.jsonl:1: not a JSON object" in capsys.readouterr().err
    assert cli.main(["predict", export_dir, "--input", str(tmp_path / "rows.txt")]) == 2
    missing_column = tmp_path / "partial.jsonl"
    missing_column.write_text(json.dumps({"x": [0, 0, 0, 0]}) + "\n")
    assert cli.main(["predict", export_dir, "--input", str(missing_column)]) == 2
    assert "no column 'tag'" in capsys.readouterr().err


def test_console_script_runs_as_a_process(exported):
    """The installed entry point, as a user types it: exit code 2 and no traceback."""
    _, export_dir, _ = exported
    done = subprocess.run(
        [sys.executable, "-m", "headkit.cli", "inspect", os.path.join(export_dir, "nope")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "is not a directory" in done.stderr


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
