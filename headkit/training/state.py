"""The durable state of a training run: ``model_dir/headkit_training.json``, replaced atomically.

It holds every evaluation, the early-stopping count and the kept exports, so
a restarted run continues where the last one stopped. Reading and writing
only: what the numbers mean is ``headkit.training.rules``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Dict, Optional, Tuple

from headkit.errors import ConfigError
from headkit.training.rules import BestExport, EarlyStopping, new_count

__all__ = ["STATE_FILE", "load_state", "save_state"]

#: The training state file in ``model_dir``: history, early-stopping count, exports.
STATE_FILE = "headkit_training.json"

logger = logging.getLogger("headkit.training")


def load_state(path: str, early_stopping: Optional[EarlyStopping],
               export: Optional[BestExport], ranking: Tuple[str, str]) -> Dict[str, Any]:
    """The state at ``path`` (a fresh one if there is none), fitted to this run's rules.

    A count kept for another early-stopping rule starts afresh, with a
    warning; kept exports ranked by another metric are forgotten (not deleted),
    and kept exports whose folder is gone are dropped.

    Example:
        >>> path = "runs/a/headkit_training.json"
        >>> load_state(path, None, None, ("loss", "min"))  # doctest: +SKIP
        {'version': 1, 'history': []}
    """
    state: Dict[str, Any] = {"version": 1, "history": []}
    if os.path.exists(path):
        with open(path, "rb") as handle:
            try:
                loaded = json.loads(handle.read().decode("utf-8"))
            except ValueError as error:
                raise ConfigError(
                    f"{path}: not valid JSON ({error}). It is headkit's training "
                    "record; delete it to start the record afresh (checkpoints are kept)."
                ) from error
        if not isinstance(loaded, dict) or not isinstance(loaded.get("history", []), list):
            raise ConfigError(
                f"{path}: not a headkit training record (a JSON object with a 'history' list). "
                "Delete it to start the record afresh (checkpoints are kept)."
            )
        state.update(loaded)
    if early_stopping is not None:
        saved = state.get("early_stopping")
        fresh = new_count(early_stopping)
        setting = {k: fresh[k] for k in ("metric", "mode", "min_delta")}
        if saved is not None and any(saved.get(k) != v for k, v in setting.items()):
            logger.warning("headkit: early stopping changed from %s to %s; its count starts "
                           "afresh.", {k: saved.get(k) for k in setting}, setting)
            saved = None
        state["early_stopping"] = saved or fresh
    if export is not None and export.keep:
        kept = state.get("best_exports") or {}
        if (kept.get("metric"), kept.get("mode")) != ranking:
            kept = {"metric": ranking[0], "mode": ranking[1], "kept": []}
        kept["kept"] = [e for e in kept.get("kept", []) if os.path.isdir(e["path"])]
        state["best_exports"] = kept
    return state


def save_state(path: str, state: Dict[str, Any]) -> None:
    """Replace the state file atomically: a reader sees the old state or the new, never half.

    Example:
        >>> path = "runs/a/headkit_training.json"
        >>> save_state(path, {"version": 1, "history": []})  # doctest: +SKIP
    """
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".headkit_training.", dir=directory)
    with os.fdopen(handle, "w") as out:
        json.dump(state, out, indent=2, sort_keys=True)
    os.replace(temp, path)
