"""The benchmark workload: data, body, RunConfig, input and serving receivers, timers.

Every variant in ``bench/variants.py`` reads its data and builds its model
from here, so the variants differ only in how the model_fn is written.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from data import BATCH, N_FEATURES, SEED  # noqa: F401  (re-exported for the variants)

#: The body's hidden layers: ``mlp128`` (2 x 128, the default: dispatch-bound) or
#: ``mlp512x4`` (4 x 512: compute-bound), chosen by run.py's --body through the
#: environment, so every variant process of a run builds the same body.
BODIES = {"mlp128": (128, 128), "mlp512x4": (512, 512, 512, 512)}
BODY = os.environ.get("HEADKIT_BENCH_BODY", "mlp128")
HIDDEN_LAYERS = BODIES[BODY]
HIDDEN = HIDDEN_LAYERS[0]
LEARNING_RATE = 1e-3
#: The three heads of the workload: (name, kind, units of its Dense output).
HEADS: Tuple[Tuple[str, str, int], ...] = (
    ("category", "multiclass", 5),
    ("value", "regression", 1),
    ("flag", "binary", 1),
)
#: Label arrays, one per head kind; a scaled HeadSet's head ``<kind's label>_<i>`` reads
#: its own copy of its kind's array.
LABEL_OF_KIND = {"multiclass": "category", "regression": "value", "binary": "flag"}


_DTYPES = {"x": tf.float32, "category": tf.int64, "value": tf.float32, "flag": tf.int64}
_ROW_SHAPES = {"x": [N_FEATURES], "category": [], "value": [1], "flag": [1]}


def _read(path: str, name: str) -> tf.Tensor:
    # Read at run time: the rows never become graph constants.
    values = tf.io.decode_raw(tf.io.read_file(path), _DTYPES[name], little_endian=True)
    return tf.reshape(values, [-1, *_ROW_SHAPES[name]])


def dataset(
    paths: Dict[str, str], repeat: bool, label_keys: Sequence[str] = tuple(LABEL_OF_KIND.values())
) -> tf.data.Dataset:
    """``({"x": ...}, {label: ...})`` batches of 256, cached in memory, prefetched."""
    x = _read(paths["x"], "x")
    columns = {name: name if name in paths else name.rsplit("_", 1)[0] for name in label_keys}
    labels = {name: _read(paths[column], column) for name, column in columns.items()}
    data = tf.data.Dataset.from_tensor_slices(({"x": x}, labels))
    data = data.batch(BATCH, drop_remainder=True).cache()
    if repeat:
        data = data.repeat()
    return data.prefetch(2)


def input_fn(
    paths: Dict[str, str],
    repeat: bool = True,
    label_keys: Sequence[str] = tuple(LABEL_OF_KIND.values()),
) -> Callable[[], tf.data.Dataset]:
    """An Estimator input_fn over the files in ``paths`` (same order for every variant)."""
    return lambda: dataset(paths, repeat, label_keys)


def body_layers(head_specs: Sequence[Tuple[str, str, int]]) -> Callable[[], tf.keras.Model]:
    """A builder of the MLP body (32 -> 128 -> 128 ReLU, or 4 x 512) with one Dense per head.

    Every initializer has its own seed, so each variant starts from the
    same weights whatever else its graph holds.
    """

    def build() -> tf.keras.Model:
        glorot = tf.keras.initializers.GlorotUniform
        x = tf.keras.Input((N_FEATURES,), name="x")
        h = x
        for index, units in enumerate(HIDDEN_LAYERS, 1):
            h = tf.keras.layers.Dense(units, "relu", kernel_initializer=glorot(SEED + index),
                                      name=f"hidden_{index}")(h)
        outputs = {
            name: tf.keras.layers.Dense(units, kernel_initializer=glorot(SEED + 10 + i),
                                        name=name)(h)
            for i, (name, _, units) in enumerate(head_specs)
        }
        return tf.keras.Model({"x": x}, outputs)

    return build


build_body = body_layers(HEADS)


def run_config(model_dir: str) -> tf.estimator.RunConfig:
    """The one RunConfig of every Estimator variant: no checkpoint or summary mid-run."""
    session_config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=2, inter_op_parallelism_threads=1
    )
    return tf.estimator.RunConfig(
        model_dir=model_dir,
        tf_random_seed=SEED,
        save_checkpoints_steps=10**9,
        save_checkpoints_secs=None,
        save_summary_steps=10**9,
        log_step_count_steps=10**9,
        keep_checkpoint_max=1,
        session_config=session_config,
    )


def serving_input_receiver() -> tf.estimator.export.ServingInputReceiver:
    """Serialized tf.Example under ``examples``, and raw ``x`` as the alternative ``raw``.

    As in headkit's export, ``x`` is a ``placeholder_with_default`` over the
    parsed examples, so both inputs feed one copy of the model.
    """
    serialized = tf.compat.v1.placeholder(tf.string, [None], name="input_example_tensor")
    parsed = tf.io.parse_example(
        serialized, {"x": tf.io.FixedLenFeature([N_FEATURES], tf.float32)}
    )
    x = tf.compat.v1.placeholder_with_default(parsed["x"], [None, N_FEATURES], name="x")
    return tf.estimator.export.ServingInputReceiver(
        {"x": x}, {"examples": serialized}, receiver_tensors_alternatives={"raw": {"x": x}}
    )


class StepClock:
    """Wall and process CPU time of the timed steps, from step ``first`` to ``last``.

    CPU time (all of the process's threads) shows the work a step costs,
    and is less swayed than wall time by other programs on a shared machine.
    """

    def __init__(self) -> None:
        self.first = self.last = 0
        self.wall = self.cpu = (0.0, 0.0)

    def start(self, step: int) -> None:
        self.first = step
        self.wall = (time.perf_counter(), 0.0)
        self.cpu = (time.process_time(), 0.0)

    def stop(self, step: int) -> None:
        self.last = step
        self.wall = (self.wall[0], time.perf_counter())
        self.cpu = (self.cpu[0], time.process_time())

    def results(self) -> Dict[str, float]:
        steps = self.last - self.first
        return {
            "steps_per_second": steps / (self.wall[1] - self.wall[0]),
            "cpu_ms_per_step": (self.cpu[1] - self.cpu[0]) * 1000.0 / steps,
            "timed_steps": steps,
        }


class StepTimer(tf.compat.v1.train.SessionRunHook):
    """Times training steps ``warmup+1 .. total``: no graph building, no checkpoint.

    ``steps_per_run`` steps happen in each ``session.run`` (headkit's
    ``steps_per_run``); the clock starts and stops on the run boundaries
    at or past ``warmup`` and ``total``.
    """

    def __init__(self, warmup: int, total: int, steps_per_run: int = 1) -> None:
        self.warmup, self.total, self.steps_per_run = warmup, total, steps_per_run
        self.count = 0
        self.started = False
        self.clock = StepClock()

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.count += self.steps_per_run
        if not self.started and self.count >= self.warmup:
            self.clock.start(self.count)
            self.started = True
        elif self.count >= self.total and self.started:
            self.clock.stop(min(self.count, self.total))


def folder_size(path: str) -> int:
    """Bytes of every file under ``path``."""
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def serialized_examples(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` as serialized tf.Example strings, what classify signatures read."""
    return np.array([
        tf.train.Example(features=tf.train.Features(feature={
            "x": tf.train.Feature(float_list=tf.train.FloatList(value=row))
        })).SerializeToString()
        for row in x
    ], dtype=object)


def signature_inputs(function: Any, x: np.ndarray) -> Dict[str, tf.Tensor]:
    """The call arguments of a loaded signature for rows ``x``.

    A signature with one string input gets serialized tf.Examples; any other
    gets the raw tensor ``x``.
    """
    (name, tensor_spec), = function.structured_input_signature[1].items()
    if tensor_spec.dtype == tf.string:
        return {name: tf.constant(serialized_examples(x))}
    return {name: tf.constant(x)}


def latency_ms(function: Any, x: np.ndarray, calls: int, warmup: int = 20) -> float:
    """Median wall time (ms) of ``calls`` calls of a loaded signature on rows ``x``."""
    kwargs = signature_inputs(function, x)
    for _ in range(warmup):
        function(**kwargs)
    times: List[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        function(**kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def interleaved_latency_ms(
    functions: Dict[str, Any], x: np.ndarray, calls: int, warmup: int = 20
) -> Dict[str, float]:
    """Median latency (ms) of several signatures, called in turn in one process.

    Call ``i`` of every signature happens within the same few milliseconds
    (the order rotates with ``i``), so load from other programs falls on all
    of them alike: the fairest comparison a shared machine allows.
    """
    arguments = {key: signature_inputs(f, x) for key, f in functions.items()}
    keys = list(functions)
    times: Dict[str, List[float]] = {key: [] for key in keys}
    for i in range(warmup + calls):
        shift = i % len(keys)
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            functions[key](**arguments[key])
            if i >= warmup:
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) * 1000.0 for key, values in times.items()}
