"""The ``headkit`` command line (inspect, predict, diff, launch): parses, calls, returns a code."""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import math
import os
import sys
import traceback
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from headkit.errors import DataError, HeadkitError
from headkit.training.progress import quiet_tensorflow

__all__ = ["main", "EXIT_OK", "EXIT_BREAKING", "EXIT_USAGE", "EXIT_INTERNAL"]

#: Success.
EXIT_OK = 0
#: ``headkit diff`` found a breaking change between two exports.
EXIT_BREAKING = 1
#: Bad input or usage (a user's error): one line on stderr, never a traceback.
EXIT_USAGE = 2
#: An internal error, a bug in headkit: one line on stderr; ``--verbose`` adds the traceback.
EXIT_INTERNAL = 3

_EXIT_CODES = f"""exit codes:
  {EXIT_OK}  success
  {EXIT_BREAKING}  headkit diff found a breaking change
  {EXIT_USAGE}  bad input or usage: one line on stderr, no traceback
  {EXIT_INTERNAL}  an internal error, a bug in headkit (--verbose prints the traceback)"""

_PREDICT_INPUT = """input: JSON Lines (.jsonl), one JSON object per line, one value per feature;
a feature of shape [4] takes a list of 4 values:
  {"bill_length_mm": 39.1, "flipper_length_mm": 181.0, "island": "Torgersen"}
  {"bill_length_mm": 46.5, "flipper_length_mm": 210.0, "island": "Biscoe"}
or CSV (.csv): a header line naming the features, then one row per line (for
features of one value per row). `headkit inspect EXPORT_DIR` lists the features
with their dtypes and shapes. Every value is checked against them first: a bad
one is an error naming its line, the feature and the value.

output: one JSON object per input row, in order: {"<head>": {"<key>": [...]}}.

"""

#: Input suffix -> format; .ndjson is JSON Lines' other name.
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}


class _UsageError(HeadkitError):
    """A command line that names something that does not exist; never leaves main()."""


def _input_format(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix in _FORMATS:
        return _FORMATS[suffix]
    close = difflib.get_close_matches(suffix, list(_FORMATS), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]}?" if close and suffix else ""
    raise _UsageError(
        f"{path}: headkit predict reads .jsonl (JSON Lines: one JSON object per line) or .csv "
        f"(a header line, then one row per line); got the suffix {suffix or '(none)'!r}.{hint} "
        "Rename the file after its format."
    )


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror}).") from None
    try:
        return data.decode("utf-8-sig")  # a byte order mark from Windows editors is fine
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 text ({error.reason} at byte "
                        f"{error.start}). Save the file as UTF-8.") from None


def _no_repeated_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:  # json keeps the last value without a word
        raise DataError(f"the object repeats the key(s) {repeated!r}; keep one of each.")
    return dict(pairs)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, bool) or value is None:
        return f"JSON {json.dumps(value)}"
    return "a JSON number"


def _whole_file(path: str, text: str, example: str) -> Optional[DataError]:
    """The error for a file that is one JSON document instead of JSON Lines, if it is one."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    fix = f"headkit predict reads JSON Lines: one object per line, e.g. {example}"
    if isinstance(document, list):
        return DataError(f"{path} is a JSON array; {fix} (jq -c '.[]' turns an array into "
                         "JSON Lines).")
    if isinstance(document, dict):
        return DataError(f"{path} is one JSON object written over several lines; {fix}")
    return None


def _read_jsonl(path: str, example: str) -> Tuple[List[Dict[str, Any]], List[int]]:
    text = _read_text(path)
    rows: List[Dict[str, Any]] = []
    lines: List[int] = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028, a line end to splitlines().
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line, object_pairs_hook=_no_repeated_keys)
        except DataError as error:
            raise DataError(f"{where}: {error}") from None
        except (ValueError, RecursionError) as error:
            whole = None if rows else _whole_file(path, text, example)
            reason = error.msg if isinstance(error, json.JSONDecodeError) else "nested too deeply"
            raise whole or DataError(
                f"{where}: not valid JSON ({reason}); each line must be one JSON object of "
                f"feature -> value, e.g. {example}"
            ) from None
        if not isinstance(row, dict):
            whole = None if rows or not isinstance(row, list) else _whole_file(path, text, example)
            shown = line.strip() if len(line.strip()) <= 40 else line.strip()[:37] + "..."
            raise whole or DataError(
                f"{where}: {shown} is {_json_kind(row)}, not a JSON object; each line must be "
                f"one JSON object of feature -> value, e.g. {example}"
            )
        rows.append(row)
        lines.append(number)
    if not rows:
        raise DataError(f"{path} holds no rows; write one JSON object per line, e.g. {example}")
    return rows, lines


def _read_csv(path: str, spec: Mapping[str, Any],
              example: str) -> Tuple[List[Dict[str, Any]], List[int]]:
    shaped = sorted(name for name, entry in spec.items()
                    if entry.get("kind", "fixed") == "fixed"
                    and math.prod(entry.get("shape", [])) != 1)
    if shaped:
        raise DataError(
            f"{path}: feature {shaped[0]!r} holds {spec[shaped[0]]['shape']} values per row, and "
            f"a CSV cell holds one. Write the rows as JSON Lines (.jsonl) instead, e.g. {example}"
        )
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    header = next(reader, None)
    if not header:
        raise DataError(f"{path} is empty; expected a header line naming the features "
                        f"({','.join(sorted(spec))}), then one row per line.")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path} line 1: the header repeats the column(s) {repeated!r}.")
    rows: List[Dict[str, Any]] = []
    lines: List[int] = []
    for cells in reader:
        if not cells:
            continue
        if len(cells) != len(header):
            raise DataError(f"{path} line {reader.line_num}: {len(cells)} cells, but the header "
                            f"names {len(header)} columns. Quote cells that hold a comma.")
        rows.append(dict(zip(header, cells)))
        lines.append(reader.line_num)
    if not rows:
        raise DataError(f"{path} holds a header and no rows.")
    return rows, lines


def _read_rows(path: str,
               spec: Mapping[str, Any]) -> Tuple[List[Dict[str, Any]], List[int], bool]:
    """The rows of a .jsonl or .csv file, the line of each, and whether its values are text."""
    from headkit.serving.inputs import example_row

    input_format = _input_format(path)
    example = json.dumps(example_row(spec))
    if input_format == "csv":
        return (*_read_csv(path, spec, example), True)
    return (*_read_jsonl(path, example), False)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _inspect(args: argparse.Namespace) -> int:
    from headkit.serving.inspection import describe_export, format_table

    description = describe_export(args.export_dir)
    if args.json:
        print(json.dumps(description, indent=2))
    else:
        print(format_table(description))
    return EXIT_OK


def _predict(args: argparse.Namespace) -> int:
    from headkit.serving import load, read_manifest
    from headkit.serving.inputs import check_features

    manifest = read_manifest(args.export_dir)
    spec = {**manifest["feature_spec"], **manifest.get("passthrough", {})}
    rows, lines, text = _read_rows(args.input, spec)
    columns = check_features(  # before loading the model, so a bad line fails fast
        rows, spec, allow_non_finite=args.allow_non_finite, text=text,
        row_name=lambda index: f"{args.input} line {lines[index]}")
    model = load(args.export_dir)
    if args.head is not None and args.head not in model.heads.names:
        raise _UsageError(f"--head {args.head!r}: the export has no such head; its heads are "
                          f"{list(model.heads.names)!r}.")
    result = model.predict(columns, head=args.head, allow_non_finite=args.allow_non_finite)
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        for index in range(len(rows)):
            record = {  # a head's tensors by key, or a pass-through feature's value
                head: {key: _jsonable(values[index]) for key, values in tensors.items()}
                if isinstance(tensors, dict) else _jsonable(tensors[index])
                for head, tensors in result.items()
            }
            out.write(json.dumps(record) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return EXIT_OK


def _launch(args: argparse.Namespace) -> int:
    from headkit.launch import Launcher

    command = args.task_command[1:] if args.task_command[:1] == ["--"] else args.task_command
    return Launcher(command, workers=args.workers, ps=args.ps, evaluator=args.evaluator,
                    restarts=args.restarts, log_dir=args.log_dir).run()
def _diff(args: argparse.Namespace) -> int:
    from headkit.serving.diff import diff_exports

    result = diff_exports(args.old_export, args.new_export)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())
    return EXIT_BREAKING if result.breaks else EXIT_OK


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)  # --verbose before or after the command
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show TensorFlow's log output, and the traceback of an internal "
                        "error")
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="headkit", description="Inspect and run headkit SavedModel exports.",
        parents=[common], epilog=_EXIT_CODES, formatter_class=raw,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="list an export's signatures", parents=[common],
                                  epilog=_EXIT_CODES, formatter_class=raw)
    inspect.add_argument("export_dir")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inspect.set_defaults(run=_inspect)
    predict = commands.add_parser(
        "predict", help="predict rows from a .jsonl or .csv file", parents=[common],
        description="Predict every row of a .jsonl or .csv file with an export.",
        epilog=_PREDICT_INPUT + _EXIT_CODES, formatter_class=raw,
    )
    predict.add_argument("export_dir")
    predict.add_argument("--input", required=True, help="rows.jsonl or rows.csv")
    predict.add_argument("--head", help="one head's name (default: every head)")
    predict.add_argument("--output", help="write JSON lines here (default: stdout)")
    predict.add_argument("--allow-non-finite", action="store_true",
                         help="accept NaN and inf in float features (refused by default)")
    predict.set_defaults(run=_predict)
    launch = commands.add_parser(
        "launch", help="run a command as every task of a local TF_CONFIG cluster",
        parents=[common], formatter_class=raw,
        description="Run COMMAND once per task of a local cluster, each with its own TF_CONFIG "
                    "on free localhost ports: the local twin of a Kubeflow TFJob. The exit "
                    "code is the chief's.",
        epilog="exit codes:\n  the chief's exit code (128 + N when signal N ended it)\n  "
               f"{EXIT_USAGE}  bad launch options: one line on stderr, no traceback")
    launch.add_argument("--workers", type=int, default=1, help="workers besides the chief")
    launch.add_argument("--ps", type=int, default=0, help="parameter servers")
    launch.add_argument("--evaluator", action="store_true", help="run an evaluator")
    launch.add_argument("--restarts", type=int, default=0,
                        help="start a failed task (or the group) again, up to N times")
    launch.add_argument("--log-dir", default="headkit-logs", help="one log file per task")
    launch.add_argument("task_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                        help="the command every task runs, e.g. -- python train.py")
    launch.set_defaults(run=_launch)
    diff = commands.add_parser(
        "diff", help="what a new export breaks for a client of an old one", parents=[common],
        description="Compare two exports' signatures, feature specs, classes and default "
                    "heads, and say what would break a client of OLD_EXPORT.",
        epilog=_EXIT_CODES, formatter_class=raw)
    diff.add_argument("old_export")
    diff.add_argument("new_export")
    diff.add_argument("--json", action="store_true", help="print JSON (for CI gates)")
    diff.set_defaults(run=_diff)
    return parser


def _internal_error(command: str, error: BaseException, verbose: bool) -> None:
    if verbose:
        traceback.print_exc()
    lines = str(error).strip().splitlines()
    what = f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
    rerun = "with the traceback above" if verbose else "(rerun with --verbose to see the traceback)"
    print(f"headkit {command}: internal error: {what}. This is a bug in headkit; please report "
          f"it {rerun}.", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``headkit`` command; return its exit code.

    0: success; 1: ``headkit diff`` found a breaking change; 2: bad input or
    usage, one line on stderr and no traceback; 3: an internal error (a bug),
    whose traceback ``--verbose`` prints.

    Example:
        >>> main(["inspect", "exports/penguins/1700000000"])  # doctest: +SKIP
        0
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a usage error (2), already printed by argparse
        return EXIT_OK if not done.code else EXIT_USAGE
    verbose = getattr(args, "verbose", False)
    if args.run is not _launch:  # launch's tasks keep the user's own TensorFlow log level
        quiet_tensorflow(not verbose)  # before TensorFlow loads
    try:
        return args.run(args)
    except (HeadkitError, OSError) as error:  # a user's error: bad input, file or export
        print(f"headkit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # anything else is headkit's fault
        _internal_error(args.command, error, verbose)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
