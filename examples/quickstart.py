"""headkit quickstart: three heads on the Palmer penguins, trained, exported, served.

Run: python examples/quickstart.py [--model-dir DIR] [--export-dir DIR] [--verbose]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import palmerpenguins  # noqa: E402
import tensorflow as tf  # noqa: E402

import headkit as hk  # noqa: E402
from headkit import cli  # noqa: E402

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
ISLANDS = ["Biscoe", "Dream", "Torgersen"]
MASS_MEAN, MASS_STD = 4200.0, 800.0  # grams; the body predicts in grams

HEADS = hk.HeadSet([
    hk.Head("species", hk.Classification(vocabulary=("Adelie", "Chinstrap", "Gentoo")),
            metrics=("accuracy",), is_default=True),
    # MSE in grams^2 is ~1e6 times a cross entropy: the weight brings it to the same scale.
    hk.Head("body_mass_g", hk.Regression(), metrics=("rmse", "mae"),
            weight=1.0 / MASS_STD**2),
    hk.Head("sex", hk.Classification(vocabulary=("female", "male")),
            metrics=("accuracy", "auc")),
])


def load_split(seed: int = 0):
    """Penguins with every value present, split 80/20 into train and held-out rows."""
    frame = palmerpenguins.load_penguins().dropna().reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(frame))
    cut = int(0.8 * len(frame))
    return frame.iloc[order[:cut]], frame.iloc[order[cut:]]


def build_body(stats) -> tf.keras.Model:
    """Numeric measurements (normalized) and the island (looked up) -> three heads."""
    mean, variance = stats
    inputs = {name: tf.keras.Input((1,), name=name) for name in NUMERIC}
    inputs["island"] = tf.keras.Input((1,), name="island", dtype=tf.string)
    numeric = tf.keras.layers.Concatenate()([inputs[n] for n in NUMERIC])
    numeric = tf.keras.layers.Normalization(mean=mean, variance=variance)(numeric)
    island = tf.keras.layers.StringLookup(vocabulary=ISLANDS)(inputs["island"])
    island = tf.keras.layers.Flatten()(tf.keras.layers.Embedding(len(ISLANDS) + 1, 3)(island))
    h = tf.keras.layers.Concatenate()([numeric, island])
    h = tf.keras.layers.Dense(32, activation="relu")(h)
    h = tf.keras.layers.Dense(32, activation="relu")(h)
    mass = tf.keras.layers.Dense(1)(h) * MASS_STD + MASS_MEAN
    return tf.keras.Model(inputs, {
        "species": tf.keras.layers.Dense(3)(h),
        "body_mass_g": mass,
        "sex": tf.keras.layers.Dense(1)(h),
    })


def frame_input_fn(frame, training: bool, batch_size: int = 32):
    """Features and labels from a DataFrame (344 rows: small enough to hold in the graph)."""
    features = {n: frame[n].to_numpy("float32")[:, None] for n in NUMERIC}
    features["island"] = frame["island"].to_numpy(str)[:, None]
    labels = {
        "species": frame["species"].to_numpy(str),
        "body_mass_g": frame["body_mass_g"].to_numpy("float32"),
        "sex": frame["sex"].to_numpy(str),
    }

    def input_fn():
        data = tf.data.Dataset.from_tensor_slices((features, labels))
        if training:
            data = data.shuffle(len(frame), seed=0).repeat()
        return data.batch(batch_size)

    return input_fn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None, help="default: a new temp dir")
    parser.add_argument("--export-dir", default=None, help="default: <model-dir>/export")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's INFO logs")
    args = parser.parse_args(argv)
    if not args.verbose:
        tf.get_logger().setLevel("ERROR")
    model_dir = args.model_dir or tempfile.mkdtemp(prefix="headkit-penguins-")
    export_base = args.export_dir or os.path.join(model_dir, "export")

    train, held_out = load_split()
    numeric = train[NUMERIC].to_numpy("float32")
    stats = (numeric.mean(axis=0), numeric.var(axis=0))
    config = tf.estimator.RunConfig(tf_random_seed=0, save_checkpoints_steps=500,
                                    log_step_count_steps=500)
    estimator = hk.Estimator(lambda: build_body(stats), HEADS, optimizer="adam",
                             learning_rate=0.003, model_dir=model_dir, config=config)
    estimator.train(frame_input_fn(train, training=True), max_steps=args.steps)
    metrics = estimator.evaluate(frame_input_fn(held_out, training=False))

    print(f"\nHeld-out metrics ({len(held_out)} penguins, {len(train)} trained on):")
    for key in HEADS.metric_names:
        print(f"  {key:24s} {metrics[key]:10.4f}")

    export_dir = estimator.export(export_base)
    print(f"\nExported to {export_dir}\n\n$ headkit inspect {export_dir}")
    cli.main(["inspect", export_dir])

    model = hk.load(export_dir)
    rows = held_out.head(3)
    raw = {n: rows[n].to_numpy("float32")[:, None] for n in NUMERIC}
    raw["island"] = rows["island"].to_numpy(str)[:, None]
    print("\nPredictions from the reloaded export, one signature per head:")
    for head in HEADS:
        result = model.predict(raw, head=head.name)[head.name]
        for i, (_, row) in enumerate(rows.iterrows()):
            if "classes" in result:
                got = result["classes"][i, 0].decode()
                confidence = result["probabilities"][i].max()
                print(f"  {head.name:12s} true={row[head.name]!s:10s} predicted={got} "
                      f"(p={confidence:.2f})")
            else:
                print(f"  {head.name:12s} true={row[head.name]:7.0f} "
                      f"predicted={result['predictions'][i, 0]:7.0f}")

    bars = {"species/accuracy": (">=", 0.95), "sex/accuracy": (">=", 0.80),
            "body_mass_g/rmse": ("<=", 450.0)}
    failed = [f"{k} = {metrics[k]:.3f} (bar {op} {v})" for k, (op, v) in bars.items()
              if not (metrics[k] >= v if op == ">=" else metrics[k] <= v)]
    if failed:
        print("\nBelow the quickstart's bars: " + "; ".join(failed))
        return 1
    print("\nAll three heads clear their bars on the held-out split.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
