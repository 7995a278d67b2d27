"""A training / export process for tests/test_fault_tolerance.py to kill with real signals.

    python tests/estimator/_fault_worker.py train MODEL_DIR MAX_STEPS
        trains the seeded tiny model to MAX_STEPS, printing "start N" once the
        session exists and "step N" after every step.
    python tests/estimator/_fault_worker.py export MODEL_DIR EXPORT_BASE
        trains a model with a large variable for 2 steps, exports it
        ("exported PATH"), then prints "exporting" and exports again.

The test imports this module too, for the same model and data in-process.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import headkit as hk  # noqa: E402
from tests.conftest import make_data, tiny_body, tiny_heads  # noqa: E402

SEED = 7
SAVE_EVERY = 5
BATCH = 16
BIG_ROWS = 4_000_000  # 4M x 4 float32 = 64 MB: an export takes long enough to be killed


def estimator(model_dir: str, body=tiny_body) -> hk.Estimator:
    config = tf.estimator.RunConfig(
        tf_random_seed=SEED, save_checkpoints_steps=SAVE_EVERY, save_summary_steps=1000,
        log_step_count_steps=1000,
    )
    return hk.Estimator(body, tiny_heads(), optimizer="adam", learning_rate=0.05,
                        model_dir=model_dir, config=config)


def input_fn(n: int = 96, shuffle: bool = True, bad_row: int = -1, bad_value: float = np.nan):
    """Batches of the tiny data; ``bad_row``'s "size" label set to ``bad_value``."""
    features, labels = make_data(n)
    labels = dict(labels, size=labels["size"].copy())
    if bad_row >= 0:
        labels["size"][bad_row] = bad_value

    def make():
        dataset = tf.data.Dataset.from_tensor_slices((dict(features), labels))
        if shuffle:  # a shuffled, repeated stream: only a saved position resumes it exactly
            dataset = dataset.shuffle(n, seed=SEED)
        return dataset.repeat().batch(BATCH)

    return make


class StepPrinter(tf.estimator.SessionRunHook):
    """Prints the global step at the start and after every step, and records them."""

    def __init__(self, out=sys.stdout, delay: float = 0.0) -> None:
        self.out, self.delay, self.start, self.last = out, delay, None, None

    def begin(self):
        self._step = tf.compat.v1.train.get_global_step()

    def after_create_session(self, session, coord):
        self.start = int(session.run(self._step))
        print(f"start {self.start}", file=self.out, flush=True)

    def after_run(self, run_context, run_values):
        # Read after the step: a fetch beside train_op may see the step before or after it.
        self.last = int(run_context.session.run(self._step))
        print(f"step {self.last}", file=self.out, flush=True)
        time.sleep(self.delay)  # widens the window between steps a kill can land in


def big_body():
    """The tiny body plus a 64 MB frozen embedding of the tag."""
    inner = tiny_body()
    tag_id = tf.keras.layers.StringLookup(vocabulary=["u", "v"])(inner.input["tag"])
    big = tf.keras.layers.Embedding(BIG_ROWS, 4, trainable=False, name="big")(tag_id)
    outputs = dict(inner.output)
    outputs["size"] = outputs["size"] + tf.keras.layers.Dense(1)(tf.keras.layers.Flatten()(big))
    return tf.keras.Model(inner.input, outputs)


def main(argv) -> int:
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    command, model_dir = argv[1], argv[2]
    if command == "train":
        estimator(model_dir).train(input_fn(), max_steps=int(argv[3]),
                                   hooks=[StepPrinter(delay=0.02)])
        print("done", flush=True)
        return 0
    if command == "export":
        model = estimator(model_dir, body=big_body)
        model.train(input_fn(), max_steps=2)
        print("exported", model.export(argv[3]), flush=True)
        print("exporting", flush=True)
        print("exported", model.export(argv[3]), flush=True)
        return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
