"""The atomic export directory: written to ``temp-<stamp>``, verified, then renamed.

An export never half-exists: a backend's writer fills the temp directory,
:func:`headkit.serving.contract.verify` checks it against what was declared,
and only a verified export is renamed to its final ``<stamp>`` name.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from typing import Callable, List, Mapping, Tuple

from headkit.errors import ConfigError, ExportError
from headkit.serving.contract import Expected, verify

__all__ = ["write_export", "clean_export_leftovers"]

_EXPORT_LEFTOVER = re.compile(r"^temp-\d+$")  # a killed export
_log = logging.getLogger("headkit")

#: A writer fills the temp dir; it returns what each signature must hold and the
#: problems it already met (signatures it could not build).
Writer = Callable[[str], Tuple[Mapping[str, Expected], List[str]]]


def clean_export_leftovers(export_dir_base: str) -> List[str]:
    """Remove ``temp-<stamp>`` folders that killed exports left; return their paths.

    Every export builds in ``temp-<stamp>`` and renames it only once verified,
    so such a folder is never a usable export. Every export calls this first.
    Do not run two exports into one base folder at the same time.

    Example:
        >>> clean_export_leftovers("exports/penguins")  # doctest: +SKIP
        ['exports/penguins/temp-1700000000']
    """
    removed = []
    if not os.path.isdir(export_dir_base):
        return removed
    for name in sorted(os.listdir(export_dir_base)):
        path = os.path.join(export_dir_base, name)
        if _EXPORT_LEFTOVER.match(name) and os.path.isdir(path):
            _log.warning("headkit: removing %s, left by an export that was killed.", path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _new_export_dir(base: str) -> Tuple[str, str]:
    """The final and the temp path of a new export; leftovers of killed exports go first."""
    if os.path.exists(base) and not os.path.isdir(base):
        raise ConfigError(
            f"export_dir_base {base!r} is a file, not a folder. Pass a folder (it is created "
            "if missing); each export goes to <export_dir_base>/<timestamp>."
        )
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"export_dir_base {base!r} cannot be created ({error.strerror}). Pass a folder you "
            "can write to."
        ) from None
    clean_export_leftovers(base)
    stamp = int(time.time())
    while os.path.exists(os.path.join(base, str(stamp))):
        stamp += 1
    return os.path.join(base, str(stamp)), os.path.join(base, f"temp-{stamp}")


def write_export(export_dir_base: str, write: Writer) -> str:
    """Run ``write`` into a temp dir, verify what it wrote, rename it; return the export's path.

    On any missing or wrong signature the temp directory is removed and
    :class:`~headkit.errors.ExportError` lists each problem; on any other
    failure (a kill included) the temp directory never becomes an export.

    Example:
        >>> path = write_export("exports/penguins", writer)  # doctest: +SKIP
    """
    export_dir, temp_dir = _new_export_dir(export_dir_base)
    try:
        expected, problems = write(temp_dir)
        problems = list(problems) + verify(temp_dir, expected)
        if problems:
            raise ExportError(problems, export_dir)
        os.rename(temp_dir, export_dir)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return export_dir
