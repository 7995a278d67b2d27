"""headkit quickstart: three heads on the Palmer penguins, trained, exported, served.

Run: python examples/quickstart.py [--backend estimator|keras] [--model-dir DIR]
[--export-dir DIR] [--steps N] [--quiet] [--verbose]. A short run (--steps below 1000) trains and
serves every head the same way; the quality bars apply from 1000 steps.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import headkit as hk

hk.quiet_tensorflow("--verbose" not in sys.argv)  # before TensorFlow loads

import numpy as np  # noqa: E402
import palmerpenguins  # noqa: E402
import tensorflow as tf  # noqa: E402

from headkit import cli  # noqa: E402

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
ISLANDS = ["Biscoe", "Dream", "Torgersen"]
FULL_RUN = 1000  # steps from which the quality bars apply (early stopping fires before)


def load_splits(seed: int = 0):
    """Every penguin with its measurements, split 65/15/20 into train, validation and test.

    Nine penguins have no recorded sex: they stay, and train the other two
    heads (the sex head has ``missing_label=""``).
    """
    frame = palmerpenguins.load_penguins().dropna(subset=NUMERIC + ["body_mass_g"])
    frame = frame.reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(frame))
    a, b = int(0.65 * len(frame)), int(0.80 * len(frame))
    return frame.iloc[order[:a]], frame.iloc[order[a:b]], frame.iloc[order[b:]]


def make_heads(train, loss_weighting="uncertainty",
               gradient_surgery=None) -> hk.HeadSet:
    """The three heads. No hand-tuned numbers: the mass head normalises its targets with
    the training labels' own mean and std, and each head learns its loss weight."""
    return hk.HeadSet([
        hk.Head("species", hk.Classification(vocabulary=("Adelie", "Chinstrap", "Gentoo")),
                metrics=("accuracy",), is_default=True),
        hk.Head("body_mass_g", hk.Regression.from_labels(train["body_mass_g"]),
                metrics=("rmse", "mae")),
        hk.Head("sex", hk.Classification(vocabulary=("female", "male")),
                metrics=("accuracy", "auc"), missing_label=""),  # 9 penguins: sex not recorded
    ], loss_weighting=loss_weighting, gradient_surgery=gradient_surgery)


TRAIN, VALIDATION, TEST = load_splits()
HEADS = make_heads(TRAIN)


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
    h = tf.keras.layers.Dropout(0.2)(h)  # active in training only
    h = tf.keras.layers.Dense(32, activation="relu")(h)
    h = tf.keras.layers.Dropout(0.2)(h)  # active in training only
    return tf.keras.Model(inputs, {
        "species": tf.keras.layers.Dense(3)(h),
        "body_mass_g": tf.keras.layers.Dense(1)(h),  # normalised mass: the head rescales it
        "sex": tf.keras.layers.Dense(1)(h),
    })


def features_of(frame):
    """The body's features as arrays, for predicting from an export."""
    return {name: frame[name].to_numpy() for name in NUMERIC + ["island"]}


def test_metrics(model, frame):
    """Metrics of an exported model on held-out rows, computed from its predictions."""
    got = model.predict(features_of(frame))
    species = got["species"]["classes"][:, 0].astype(str)
    mass = got["body_mass_g"]["predictions"][:, 0]
    sex = got["sex"]["classes"][:, 0].astype(str)
    labelled = frame["sex"].notna().to_numpy()  # rows without a label are masked, as in training
    return {
        "species/accuracy": float(np.mean(species == frame["species"].to_numpy())),
        "body_mass_g/rmse": float(np.sqrt(np.mean((mass - frame["body_mass_g"].to_numpy()) ** 2))),
        "sex/accuracy": float(np.mean(sex[labelled] == frame["sex"].to_numpy()[labelled])),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("estimator", "keras"), default="estimator",
                        help="hk.Estimator (tf.estimator) or hk.KerasModel (Keras)")
    parser.add_argument("--model-dir", default=None, help="default: a new temp dir")
    parser.add_argument("--export-dir", default=None, help="default: <model-dir>/export/best")
    parser.add_argument("--steps", type=int, default=3000, help="at most this many steps")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's INFO logs")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1 (got {args.steps})")
    # Every 100 steps from --steps 400 up; a shorter run evaluates about 4 times.
    eval_every = max(1, min(100, args.steps // 4))
    evaluations = -(-args.steps // eval_every)
    patience = min(5, evaluations - 1)  # early stopping needs patience + 1 evaluations
    model_dir = args.model_dir or tempfile.mkdtemp(prefix="headkit-penguins-")
    export_base = args.export_dir  # None: BestExport uses <model_dir>/export/best

    train, validation, test = TRAIN, VALIDATION, TEST
    numeric = train[NUMERIC].to_numpy("float32")
    stats = (numeric.mean(axis=0), numeric.var(axis=0))
    if args.backend == "keras":  # the same body, heads, data and export; trained by Keras
        estimator = hk.KerasModel(lambda: build_body(stats), HEADS, optimizer="adam",
                                  learning_rate=0.003, model_dir=model_dir, seed=0,
                                  steps_per_run=min(10, eval_every))
    else:
        estimator = hk.Estimator(lambda: build_body(stats), HEADS, optimizer="adam",
                                 learning_rate=0.003, model_dir=model_dir,
                                 config=tf.estimator.RunConfig(tf_random_seed=0))
    columns = dict(heads=HEADS, feature_columns=NUMERIC + ["island"])
    result = hk.train_and_evaluate(
        estimator,
        hk.input_fn_from_dataframe(train, shuffle=True, num_epochs=None, seed=0, **columns),
        hk.input_fn_from_dataframe(validation, batch_size=256, **columns),
        max_steps=args.steps,
        eval_every=eval_every,
        early_stopping=hk.EarlyStopping("loss", patience=patience) if patience >= 1 else None,
        export=hk.BestExport(keep=2, export_dir_base=export_base),
        progress=not args.quiet,
    )
    print(f"\nTrained {result.steps} steps ({result.stop_reason}). Best validation "
          f"loss {result.best_value:.4f} at step {result.best_step}.")
    export_dir = result.best_export
    model = hk.load(export_dir)
    metrics = test_metrics(model, test)
    print(f"\nTest metrics of the best export ({len(test)} penguins never seen in training "
          "or validation):")
    for key, value in metrics.items():
        print(f"  {key:20s} {value:10.4f}")

    print(f"\n$ headkit inspect {export_dir}")
    cli.main(["inspect", export_dir])

    rows = test.head(3)
    raw = features_of(rows)
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

    if args.steps < FULL_RUN:
        print(f"\n--steps {args.steps} is a short run: the quality bars apply from "
              f"--steps {FULL_RUN}.")
        return 0
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
