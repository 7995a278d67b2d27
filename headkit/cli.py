"""Command line: ``headkit inspect``, ``predict`` and ``launch``. Parses, calls, returns a code."""

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
        cast = {"float32": float, "int64": int}.get(entry["dtype"], str)
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

    spec = read_manifest(args.export_dir)["feature_spec"]
    rows = _read_rows(args.input)
    columns = _typed_rows(rows, spec)
    model = load(args.export_dir)
    result = model.predict(columns, head=args.head)
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        for index in range(len(rows)):
            record = {
                head: {key: _jsonable(values[index]) for key, values in tensors.items()}
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
    launch = commands.add_parser(
        "launch", help="run a command as every task of a local TF_CONFIG cluster",
        description="Run COMMAND once per task of a local cluster, each with its own TF_CONFIG "
                    "on free localhost ports: the local twin of a Kubeflow TFJob. The exit "
                    "code is the chief's.")
    launch.add_argument("--workers", type=int, default=1, help="workers besides the chief")
    launch.add_argument("--ps", type=int, default=0, help="parameter servers")
    launch.add_argument("--evaluator", action="store_true", help="run an evaluator")
    launch.add_argument("--restarts", type=int, default=0,
                        help="start a failed task (or the group) again, up to N times")
    launch.add_argument("--log-dir", default="headkit-logs", help="one log file per task")
    launch.add_argument("task_command", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                        help="the command every task runs, e.g. -- python train.py")
    launch.set_defaults(run=_launch)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``headkit`` command; return its exit code (0 ok, 2 bad input).

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
