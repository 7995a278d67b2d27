"""The start-up checkpoint guard: verify, fall back, rebuild the state file, clean leftovers.

Plain ``tf.estimator`` trusts the ``checkpoint`` state file and the newest
checkpoint blindly: a missing state file restarts training from step 0 over
the old checkpoints, and a truncated newest checkpoint crash-loops every
restart. :func:`guard` runs before training and closes both holes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from headkit.errors import CheckpointError

__all__ = [
    "guard",
    "verify_checkpoint",
    "find_checkpoints",
    "CheckpointError",
    "CHECKPOINT_INDEX_FILE",
    "DAMAGED_DIR",
]

#: The file tf.estimator reads to find the latest checkpoint (not headkit's
#: training record, ``headkit.training.state.STATE_FILE``).
CHECKPOINT_INDEX_FILE = "checkpoint"
#: Where the guard moves damaged checkpoints (kept for inspection), inside model_dir.
DAMAGED_DIR = "damaged-checkpoints"

_PREFIX = "model.ckpt"  # the prefix tf.estimator gives every checkpoint
_FILE = re.compile(r"^model\.ckpt-(\d+)\.(index|meta|data-(\d+)-of-(\d+))$")
_SAVE_LEFTOVER = re.compile(r"^model\.ckpt-\d+_temp$")  # a killed sharded save

_log = logging.getLogger("headkit")
# Checkpoints verified in this process, by their files' (name, size, mtime): a loop of
# train() calls reads each checkpoint once, not once per call.
_verified: Dict[str, Tuple] = {}


def find_checkpoints(model_dir: str) -> Dict[int, List[str]]:
    """Global step -> the names of that checkpoint's files in ``model_dir``.

    Any one of a checkpoint's files (index, data shard, meta) makes it
    count, so a checkpoint that lost its index is still found (and then
    rejected by :func:`verify_checkpoint`).

    Example:
        >>> find_checkpoints("runs/penguins")  # doctest: +SKIP
        {100: ['model.ckpt-100.data-00000-of-00001', 'model.ckpt-100.index', ...]}
    """
    found: Dict[int, List[str]] = {}
    if not os.path.isdir(model_dir):
        return found
    for name in sorted(os.listdir(model_dir)):
        match = _FILE.match(name)
        if match:
            found.setdefault(int(match.group(1)), []).append(name)
    return found


def verify_checkpoint(prefix: str) -> Optional[str]:
    """Read every tensor of a checkpoint (CRC-checked); return what is wrong, or None.

    A checkpoint is valid when its index exists, every tensor reads back
    (from the data shards the index names) with a matching checksum, and
    every float tensor is finite (NaN weights would crash-loop every restart).

    Args:
        prefix: the checkpoint path without suffix, e.g. ``runs/a/model.ckpt-100``.

    Example:
        >>> verify_checkpoint("runs/penguins/model.ckpt-100") is None  # doctest: +SKIP
        True
    """
    directory, base = os.path.split(prefix)
    names = os.listdir(directory) if os.path.isdir(directory) else []
    if f"{base}.index" not in names:
        return "its index file is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
        dtypes = reader.get_variable_to_dtype_map()
        keys = sorted(dtypes)
        values = _read_all(prefix, keys, [dtypes[k] for k in keys])
    except (tf.errors.OpError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return f"it does not read back ({type(error).__name__}: {reason[:300]})"
    non_finite = [
        key for key, value in zip(keys, values)
        if value is not None and not np.isfinite(value).all()
    ]
    if non_finite:
        return f"it holds non-finite values (NaN or inf) in {non_finite[:5]!r}"
    return None


def _read_all(prefix: str, keys: List[str], dtypes: List[tf.DType]) -> List[Optional[np.ndarray]]:
    """Every tensor, read as training restores it (variant tensors, input positions, too).

    Returns the float tensors' values and None for the others.
    """
    def restore():
        return tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=keys,
                                    shape_and_slices=[""] * len(keys), dtypes=dtypes)

    if tf.executing_eagerly():
        tensors = restore()
        return [t.numpy() if t.dtype.is_floating else None for t in tensors]
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:  # called inside a graph
        tensors = restore()
        floats = session.run([t for t in tensors if t.dtype.is_floating])
    values = iter(floats)
    return [next(values) if t.dtype.is_floating else None for t in tensors]


def _read_state(model_dir: str) -> Tuple[Optional[List[str]], str]:
    """The state file's checkpoint basenames, oldest first (None if unusable), and why."""
    path = os.path.join(model_dir, CHECKPOINT_INDEX_FILE)
    if not os.path.exists(path):
        return None, "the state file is missing"
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
        from google.protobuf import text_format
        from tensorflow.python.training.checkpoint_state_pb2 import CheckpointState

        state = text_format.Parse(text, CheckpointState())
    except Exception as error:  # any unreadable state file is rebuilt the same way
        return None, f"the state file does not parse ({type(error).__name__})"
    if not state.model_checkpoint_path:
        return None, "the state file names no checkpoint"
    paths = [os.path.basename(p) for p in state.all_model_checkpoint_paths]
    latest = os.path.basename(state.model_checkpoint_path)
    return [p for p in paths if p != latest] + [latest], ""


def _write_state(model_dir: str, paths: List[str]) -> None:
    """Write the state file atomically: ``paths`` oldest first, the last one the latest."""
    lines = [f'model_checkpoint_path: "{paths[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{p}"' for p in paths]
    temporary = os.path.join(model_dir, CHECKPOINT_INDEX_FILE + ".headkit-tmp")
    with open(temporary, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(temporary, os.path.join(model_dir, CHECKPOINT_INDEX_FILE))


def _remove_save_leftovers(model_dir: str) -> None:
    for name in sorted(os.listdir(model_dir)):
        path = os.path.join(model_dir, name)
        if _SAVE_LEFTOVER.match(name) and os.path.isdir(path):
            _log.info("headkit: removing %s, left by a save that was killed.", path)
            shutil.rmtree(path, ignore_errors=True)


def _quarantine(model_dir: str, files: List[str]) -> str:
    target = os.path.join(model_dir, DAMAGED_DIR)
    os.makedirs(target, exist_ok=True)
    for name in files:
        os.replace(os.path.join(model_dir, name), os.path.join(target, name))
    return target


def guard(model_dir: Optional[str]) -> Optional[str]:
    """Make ``model_dir`` safe to resume from; return the checkpoint training resumes from.

    Run by ``hk.Estimator.train`` before each run. In order:

    1. remove ``model.ckpt-N_temp`` folders left by a killed save;
    2. verify checkpoints newest first (:func:`verify_checkpoint`); each
       damaged one is logged with the reason and moved to
       ``model_dir/damaged-checkpoints/``, until a valid one is found;
    3. if the state file is missing, unreadable or does not name that
       checkpoint, rewrite it, so training never restarts from step 0 over
       existing checkpoints.

    Returns None for a folder without checkpoints (training starts fresh).

    Raises:
        CheckpointError: checkpoints exist but none is valid. Nothing is
            moved in that case.

    Example:
        >>> guard("runs/penguins")  # doctest: +SKIP
        'runs/penguins/model.ckpt-100'
    """
    if not model_dir or not os.path.isdir(model_dir):
        return None
    _remove_save_leftovers(model_dir)
    found = find_checkpoints(model_dir)
    if not found:
        return None
    damaged: List[Tuple[int, str]] = []
    chosen = None
    for step in sorted(found, reverse=True):
        prefix = os.path.join(model_dir, f"{_PREFIX}-{step}")
        signature = _signature(model_dir, found[step])
        reason = None if _verified.get(prefix) == signature else verify_checkpoint(prefix)
        if reason is None:
            _verified[prefix] = signature
            chosen = step
            break
        damaged.append((step, reason))
    if chosen is None:
        listing = "; ".join(
            f"{_PREFIX}-{step} ({', '.join(found[step])}): {reason}" for step, reason in damaged
        )
        raise CheckpointError(
            f"model_dir {model_dir!r}: no valid checkpoint to resume from, and training from "
            f"step 0 would overwrite them. Checkpoints found: {listing}. Restore a checkpoint "
            "from a backup, or move these files away (or use a new model_dir) to train from "
            "scratch."
        )
    for step, reason in damaged:
        target = _quarantine(model_dir, found[step])
        _log.warning(
            "headkit: checkpoint %s is damaged: %s. Moved its files to %s; resuming from "
            "%s-%d instead.", os.path.join(model_dir, f"{_PREFIX}-{step}"), reason, target,
            _PREFIX, chosen,
        )
    latest = f"{_PREFIX}-{chosen}"
    listed, problem = _read_state(model_dir)
    if listed is None or listed[-1] != latest:
        keep = [p for p in (listed or []) if _step(p) in found and _step(p) < chosen]
        if listed is None:
            keep = [f"{_PREFIX}-{s}" for s in sorted(found) if s < chosen]
        _write_state(model_dir, keep + [latest])
        problem = problem or f"the state file named {listed[-1]}"
        _log.warning(
            "headkit: %s in %r; rewrote the state file %r to resume from %s, the newest "
            "valid checkpoint.", problem, model_dir, CHECKPOINT_INDEX_FILE, latest,
        )
    return os.path.join(model_dir, latest)


def _signature(model_dir: str, files: List[str]) -> Tuple:
    stats = [os.stat(os.path.join(model_dir, name)) for name in files]
    return tuple((name, st.st_size, st.st_mtime_ns) for name, st in zip(files, stats))


def _step(basename: str) -> int:
    match = re.match(r"^model\.ckpt-(\d+)$", basename)
    return int(match.group(1)) if match else -1
