"""A Keras training run in its own process, for the kill-and-resume tests.

    python tests/keras/_worker.py MODEL_DIR MAX_STEPS [NAN_ROW]

Prints ``step N`` after every step; a kill may land between any two.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import headkit as hk  # noqa: E402
from tests.conftest import make_data, tiny_body, tiny_heads  # noqa: E402

SEED = 7


class StepPrinter(tf.keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        print(f"step {int(self.model.step.numpy())}", flush=True)
        time.sleep(0.01)  # widens the window between steps a kill can land in


def model(model_dir: str) -> hk.KerasModel:
    return hk.KerasModel(tiny_body, tiny_heads(), learning_rate=0.05, model_dir=model_dir,
                         checkpoint_every=5, seed=SEED)


def train_input(nan_row: int = -1):
    features, labels = make_data(96)
    if nan_row < 0:
        return hk.input_fn(features, labels, tiny_heads(), batch_size=16, shuffle=True,
                           num_epochs=None, seed=SEED)
    # hk.input_fn refuses an inf label before training; a Dataset of one's own reaches
    # the in-graph guard, which must stop the step that meets it.
    labels = dict(labels, size=labels["size"].copy())
    labels["size"][nan_row] = np.inf
    return lambda: tf.data.Dataset.from_tensor_slices((features, labels)).repeat().batch(16)


def main() -> None:
    model_dir, max_steps = sys.argv[1], int(sys.argv[2])
    nan_row = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    keras_model = model(model_dir)
    print(f"start {keras_model.global_step()}", flush=True)
    fit = keras_model.keras_model.fit

    def fit_with_printer(*args, **kwargs):
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [StepPrinter()]
        return fit(*args, **kwargs)

    keras_model.keras_model.fit = fit_with_printer
    keras_model.train(train_input(nan_row), max_steps=max_steps)
    print("done", flush=True)


if __name__ == "__main__":
    main()
