"""The benchmark's synthetic rows, written as raw little-endian files (numpy only).

``workload.dataset`` reads them in the graph with ``tf.io.read_file`` and
``tf.io.decode_raw``, so the rows never become graph constants. No
TensorFlow here: ``run.py`` prepares the data without starting it.
"""

from __future__ import annotations

import os
from typing import Dict

import numpy as np

SEED = 20240601
N_FEATURES = 32
BATCH = 256
#: Each file's dtype and the shape of one row.
COLUMNS = {"x": ("<f4", (N_FEATURES,)), "category": ("<i8", ()), "value": ("<f4", (1,)),
           "flag": ("<i8", (1,))}


#: The variants bench/run.py compares, the hand-written baseline first.
MAIN_VARIANTS = (
    "handwritten",
    "headkit",
    "headkit_spr32",
    "headkit_spr32_xla",
    "canned_multihead",
    "model_to_estimator",
    "keras_fit_spe1",
    "keras_fit_spe32",
    "headkit_keras_spe1",
    "headkit_keras_spe32",
)


def make_arrays(n_rows: int, seed: int) -> Dict[str, np.ndarray]:
    """Synthetic rows: ``x`` float32 [n, 32] and one label array per head kind."""
    rng = np.random.default_rng(seed)
    weights = np.random.default_rng(SEED).normal(size=(N_FEATURES, 7)).astype("float32")
    x = rng.normal(size=(n_rows, N_FEATURES)).astype("float32")
    projected = x @ weights / np.sqrt(N_FEATURES)
    noise = rng.normal(scale=0.3, size=(n_rows, 7)).astype("float32")
    return {
        "x": x,
        "category": np.argmax(projected[:, :5] + noise[:, :5], axis=1).astype("int64"),
        "value": (projected[:, 5:6] * 3.0 + noise[:, 5:6]).astype("float32"),
        "flag": (projected[:, 6:7] + noise[:, 6:7] > 0).astype("int64"),
    }


def write_arrays(arrays: Dict[str, np.ndarray], folder: str) -> Dict[str, str]:
    """Write each array's raw bytes to ``folder/<name>.raw``; return name -> path."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name, array in arrays.items():
        path = os.path.join(folder, f"{name}.raw")
        np.ascontiguousarray(array, dtype=COLUMNS[name][0]).tofile(path)
        paths[name] = path
    return paths


def prepare_data(folder: str, n_rows: int, eval_batches: int) -> None:
    """Write the training rows, the evaluation rows and the serving rows once per run."""
    write_arrays(make_arrays(n_rows, SEED), os.path.join(folder, "train"))
    write_arrays(make_arrays(eval_batches * BATCH, SEED + 1), os.path.join(folder, "eval"))
    np.save(os.path.join(folder, "serving_x.npy"), make_arrays(BATCH, SEED + 2)["x"])


def paths(folder: str, split: str) -> Dict[str, str]:
    """name -> file of one split (``train`` or ``eval``) of a prepared folder."""
    return {name: os.path.join(folder, split, f"{name}.raw") for name in COLUMNS}
