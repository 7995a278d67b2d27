"""Command line: ``headkit inspect``, ``predict`` and ``diff``. Parses, calls, returns a code."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from headkit.training.progress import quiet_tensorflow

__all__ = ["main"]

EXIT_OK, EXIT_USAGE = 0, 2
#: ``headkit diff``: something breaks a client of the old export.
EXIT_BREAKING = 1
#: An error of headkit itself, not of the input.
EXIT_INTERNAL = 3


def _read_rows(path: str) -> List[Dict[str, Any]]:
    if path.endswith(".jsonl") or path.endswith(".json"):
        rows = []
        with open(path) as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{path}:{number}: not a JSON object ({error})") from None
        return rows
    if path.endswith(".csv"):
        with open(path, newline="") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    suffix = os.path.splitext(path)[1] or "no suffix"
    raise ValueError(f"{path}: expected a .csv or .jsonl file (got {suffix}); one row per line")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _typed_rows(rows: List[Dict[str, Any]], spec: Dict[str, Dict[str, Any]]) -> Dict[str, list]:
    """CSV cells are strings: convert each column to the dtype the export parses."""
    columns: Dict[str, list] = {}
    for name, entry in spec.items():
        dtype = entry["dtype"]
        cast = float if dtype.startswith("float") else int if "int" in dtype else str
        values = []
        for index, row in enumerate(rows):
            if name not in row:
                raise ValueError(f"row {index + 1} has no column {name!r}; the export needs "
                                 f"{sorted(spec)}")
            cell = row[name]
            try:
                values.append([cast(v) for v in cell] if isinstance(cell, list) else cast(cell))
            except (TypeError, ValueError):
                raise ValueError(f"row {index + 1}, column {name!r}: {cell!r} is not "
                                 f"{entry['dtype']}") from None
        columns[name] = values
    return columns


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

    manifest = read_manifest(args.export_dir)
    spec = {**manifest["feature_spec"], **manifest["passthrough"]}
    rows = _read_rows(args.input)
    columns = _typed_rows(rows, spec)
    model = load(args.export_dir)
    result = model.predict(columns, head=args.head)
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


def _diff(args: argparse.Namespace) -> int:
    from headkit.serving.diff import diff_exports

    try:
        result = diff_exports(args.old_export, args.new_export)
    except (FileNotFoundError, ValueError, KeyError, OSError):
        raise  # bad input: main() prints it and exits EXIT_USAGE
    except Exception as error:  # a fault of headkit: exit 3, never 1 (breaking)
        print(f"headkit diff: internal error: {type(error).__name__}: {error}. Please report "
              "it with both exports' headkit.json.", file=sys.stderr)
        return EXIT_INTERNAL
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())
    return EXIT_BREAKING if result.breaks else EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headkit", description="Inspect and run headkit SavedModel exports."
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's log output")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="list an export's signatures")
    inspect.add_argument("export_dir")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of a table")
    inspect.set_defaults(run=_inspect)
    predict = commands.add_parser("predict", help="predict rows from a .csv or .jsonl file")
    predict.add_argument("export_dir")
    predict.add_argument("--input", required=True, help="rows.csv or rows.jsonl")
    predict.add_argument("--head", help="one head's name (default: every head)")
    predict.add_argument("--output", help="write JSON lines here (default: stdout)")
    predict.set_defaults(run=_predict)
    diff = commands.add_parser(
        "diff", help="what a new export breaks for a client of an old one",
        description="Compare two exports' signatures, feature specs, classes and default "
                    "heads. Exit 0: nothing breaks a client of OLD_EXPORT; 1: something "
                    "does; 2: bad input; 3: internal error.")
    diff.add_argument("old_export")
    diff.add_argument("new_export")
    diff.add_argument("--json", action="store_true", help="print JSON (for CI gates)")
    diff.set_defaults(run=_diff)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``headkit`` command; return its exit code.

    0: success (for ``diff``: nothing breaks); 1: ``diff`` found a breaking
    change; 2: bad input or usage; 3: an internal error (``diff``).

    Example:
        >>> main(["inspect", "exports/penguins/1700000000"])  # doctest: +SKIP
        0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    quiet_tensorflow(not args.verbose)  # before TensorFlow loads
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, KeyError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"headkit {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
