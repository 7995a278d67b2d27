"""Train a multi-head penguin model whose heads come from a config file.

The heads live in ``examples/heads.toml`` (or ``heads.json``); the data is the
Palmer penguins table, read as a pandas DataFrame with
``hk.input_fn_from_dataframe``. Eleven penguins have no recorded sex: the
``sex`` head declares ``missing_label = ""``, so those rows still train the
species and mass heads and are masked out of the sex head's loss and metrics.

Run:
    python examples/train_from_config.py --steps 300 --model-dir runs/penguins
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Dict, Optional

import headkit as hk

if __name__ == "__main__":
    hk.quiet_tensorflow("--verbose" not in sys.argv)  # before TensorFlow loads

import numpy as np  # noqa: E402
import palmerpenguins  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
ISLANDS = ["Biscoe", "Dream", "Torgersen"]


def load_data(seed: int = 0):
    """The penguins with body mass in kg and a per-row weight for the sex head, split 80/20."""
    df = palmerpenguins.load_penguins().dropna(subset=NUMERIC)  # 2 rows measure nothing
    df = df.assign(
        body_mass_kg=df["body_mass_g"] / 1000.0,
        # The sex head's weight_column: rows from 2007, the first field season,
        # count half (an example of per-row weights; any finite value >= 0 works).
        sex_weight=np.where(df["year"] == 2007, 0.5, 1.0),
    )
    train = df.sample(frac=0.8, random_state=seed)
    return train, df.drop(train.index)


def make_body(train) -> callable:
    """A body builder: numeric columns standardized with the training statistics."""
    mean = train[NUMERIC].mean().to_numpy()
    variance = train[NUMERIC].var().to_numpy()

    def build_body() -> tf.keras.Model:
        numeric = {c: tf.keras.Input((1,), name=c) for c in NUMERIC}
        island = tf.keras.Input((1,), name="island", dtype=tf.string)
        x = tf.keras.layers.Concatenate()(list(numeric.values()))
        x = tf.keras.layers.Normalization(mean=mean, variance=variance)(x)
        island_id = tf.keras.layers.StringLookup(vocabulary=ISLANDS)(island)
        island_vector = tf.keras.layers.Flatten()(
            tf.keras.layers.Embedding(len(ISLANDS) + 1, 2)(island_id))
        h = tf.keras.layers.Concatenate()([x, island_vector])
        h = tf.keras.layers.Dense(16, activation="relu")(h)
        embedding = tf.keras.layers.Dense(4, activation="tanh", name="penguin_embedding")(h)
        return tf.keras.Model(
            {**numeric, "island": island},
            {
                "species": tf.keras.layers.Dense(3)(h),
                "mass": tf.keras.layers.Dense(1)(h),
                "sex": tf.keras.layers.Dense(1)(h),
                "embedding": embedding,
            },
        )

    return build_body


def main(config: str = os.path.join(HERE, "heads.toml"), steps: int = 300,
         model_dir: Optional[str] = None) -> Dict[str, float]:
    """Read the heads, train for ``steps`` and return the evaluation on held-out penguins."""
    heads = hk.HeadSet.from_file(config)
    train, test = load_data()
    features = NUMERIC + ["island", "sex_weight"]
    estimator = hk.Estimator(make_body(train), heads, optimizer="adam", learning_rate=0.02,
                             model_dir=model_dir or tempfile.mkdtemp(prefix="penguins-"))
    estimator.train(
        hk.input_fn_from_dataframe(train, heads, feature_columns=features, batch_size=32,
                                   shuffle=True, num_epochs=None, seed=0),
        steps=steps,
    )
    return estimator.evaluate(
        hk.input_fn_from_dataframe(test, heads, feature_columns=features, batch_size=128)
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(HERE, "heads.toml"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's INFO logs")
    args = parser.parse_args()
    for key, value in sorted(main(args.config, args.steps, args.model_dir).items()):
        print(f"{key:20s} {value}" if key == "global_step" else f"{key:20s} {float(value):.4f}")
