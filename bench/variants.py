"""One benchmark variant, run in its own process: train, evaluate, export, serve.

Usage (``bench/run.py`` calls this; run it by hand to debug one variant):

    python bench/variants.py headkit --data /tmp/bench-data --out result.json

``prepare`` writes the data folder first. Variants: ``handwritten`` (the
baseline), ``headkit``, ``canned_multihead``, ``model_to_estimator``,
``headkit_spr32`` (``hk.Estimator(steps_per_run=32)``), ``headkit_spr32_xla``
(the same with ``jit_compile=True``),
``keras_fit_spe1``, ``keras_fit_spe32``, ``headkit_keras_spe1``,
``headkit_keras_spe32`` (``hk.KerasModel``), and
``scaling_headkit_<K>`` (a HeadSet of K heads: graph build time and steps/s).
``serve_interleaved`` times the kept exports of several variants in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The headkit under test: HEADKIT_SRC (e.g. a snapshot of a commit), else this checkout.
sys.path.insert(1, os.environ.get("HEADKIT_SRC") or os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import workload as wl  # noqa: E402

MAIN_VARIANTS = data.MAIN_VARIANTS
ModeKeys = tf.estimator.ModeKeys


# ------------------------------------------------------------------ the models


def handwritten_model_fn(features, labels, mode, config=None):
    """The workload's model_fn written out by hand: what headkit replaces."""
    model = wl.build_body()
    outputs = model(features, training=mode == ModeKeys.TRAIN)
    category_logits, value, flag_logit = outputs["category"], outputs["value"], outputs["flag"]

    category_probabilities = tf.nn.softmax(category_logits)
    category_ids = tf.argmax(category_logits, axis=1, output_type=tf.int64)[:, None]
    category_names = tf.strings.as_string(tf.range(5, dtype=tf.int64))
    flag_positive = tf.sigmoid(flag_logit)
    flag_probabilities = tf.concat([1.0 - flag_positive, flag_positive], axis=1)
    flag_ids = tf.cast(flag_logit > 0.0, tf.int64)
    batch = tf.shape(category_logits)[0]
    predictions = {
        "category/logits": category_logits,
        "category/probabilities": category_probabilities,
        "category/class_ids": category_ids,
        "category/classes": tf.strings.as_string(category_ids),
        "category/all_classes": tf.tile(category_names[None, :], [batch, 1]),
        "value/predictions": value,
        "flag/logits": flag_logit,
        "flag/probabilities": flag_probabilities,
        "flag/class_ids": flag_ids,
        "flag/classes": tf.strings.as_string(flag_ids),
    }
    if mode == ModeKeys.PREDICT:
        return tf.estimator.EstimatorSpec(mode, predictions=predictions, export_outputs={
            "serving_default": tf.estimator.export.ClassificationOutput(
                scores=category_probabilities, classes=predictions["category/all_classes"]),
            "predict": tf.estimator.export.PredictOutput(predictions),
        })

    category_loss, value_loss, flag_loss = _handwritten_losses(outputs, labels)
    loss = category_loss + value_loss + flag_loss

    if mode == ModeKeys.EVAL:
        metrics = tf.compat.v1.metrics
        return tf.estimator.EstimatorSpec(mode, loss=loss, eval_metric_ops={
            "category/loss": metrics.mean(category_loss),
            "category/accuracy": metrics.accuracy(labels["category"], category_ids[:, 0]),
            "value/loss": metrics.mean(value_loss),
            "value/rmse": metrics.root_mean_squared_error(labels["value"], value),
            "flag/loss": metrics.mean(flag_loss),
            "flag/accuracy": metrics.accuracy(labels["flag"], flag_ids),
            "flag/auc": metrics.auc(labels["flag"], flag_positive),
        })

    optimizer = tf.compat.v1.train.AdamOptimizer(wl.LEARNING_RATE)
    train_op = optimizer.minimize(
        loss, global_step=tf.compat.v1.train.get_or_create_global_step(),
        var_list=model.trainable_variables,
    )
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


def _handwritten_losses(outputs, labels):
    """The hand-written per-head losses: cross-entropy, squared error, logistic."""
    category_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels["category"], logits=outputs["category"]))
    value_loss = tf.reduce_mean(tf.math.squared_difference(outputs["value"], labels["value"]))
    flag_loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(labels["flag"], tf.float32), logits=outputs["flag"]))
    return category_loss, value_loss, flag_loss


def handwritten_loop_model_fn(steps: int, jit_compile: bool = False):
    """A TRAIN-only model_fn running ``steps`` hand-written steps in one ``tf.while_loop``.

    A reference, not a user's model_fn: the plain in-graph loop that
    ``headkit_spr32`` is compared with (no label or NaN checks, no saved
    input position). ``features`` is a ``LoopInput``. ``jit_compile``:
    each step (forward, gradients, Adam) is one XLA-compiled function.
    """

    def model_fn(features, labels, mode, config=None):
        model = wl.build_body()
        optimizer = tf.compat.v1.train.AdamOptimizer(wl.LEARNING_RATE)
        step = tf.compat.v1.train.get_or_create_global_step()

        def train_step(x, batch_labels):
            with tf.GradientTape() as tape:
                loss = tf.add_n(_handwritten_losses(model(x, training=True), batch_labels))
            gradients = tape.gradient(loss, model.trainable_variables)
            update = optimizer.apply_gradients(zip(gradients, model.trainable_variables),
                                               global_step=step)
            with tf.control_dependencies([update]):
                return tf.identity(loss)

        if jit_compile:
            train_step = tf.function(train_step, jit_compile=True, autograph=False)

        def one_step(index, _):
            batch_features, batch_labels = features.next()
            return index + 1, train_step(batch_features, batch_labels)

        _, loss = tf.while_loop(lambda index, _: index < steps, one_step,
                                [tf.constant(0), tf.constant(0.0)], parallel_iterations=1)
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=tf.group(loss))

    return model_fn


def canned_model_fn(features, labels, mode, config=None):
    """tf.estimator.MultiHead over the canned heads, on the same Keras body."""
    model = wl.build_body()
    logits = model(features, training=mode == ModeKeys.TRAIN)
    head = tf.estimator.MultiHead([
        tf.estimator.MultiClassHead(5, name="category"),
        tf.estimator.RegressionHead(name="value"),
        tf.estimator.BinaryClassHead(name="flag"),
    ])

    def train_op_fn(loss):
        return tf.compat.v1.train.AdamOptimizer(wl.LEARNING_RATE).minimize(
            loss, global_step=tf.compat.v1.train.get_or_create_global_step(),
            var_list=model.trainable_variables,
        )

    return head.create_estimator_spec(
        features=features, mode=mode, logits=logits, labels=labels, train_op_fn=train_op_fn
    )


def headkit_heads(n_heads: int = 3):
    """The workload's HeadSet; for n_heads != 3 the three kinds repeat, each head reading
    its own copy of its kind's label column (its label_key is its name)."""
    import headkit as hk

    outputs = {
        "multiclass": (hk.Classification(5), ("accuracy",)),
        "regression": (hk.Regression(), ("rmse",)),
        "binary": (hk.Classification(2), ("accuracy", "auc")),
    }
    heads = []
    for name, kind, _ in head_specs(n_heads):
        output, metrics = outputs[kind]
        heads.append(hk.Head(name, output, metrics=metrics, is_default=not heads,
                             label_key=wl.LABEL_OF_KIND[kind] if n_heads == 3 else name))
    return hk.HeadSet(heads)


def head_specs(n_heads: int):
    if n_heads == 3:
        return wl.HEADS
    return tuple((f"{wl.HEADS[i % 3][0]}_{i}",) + wl.HEADS[i % 3][1:] for i in range(n_heads))


def compiled_keras_model(optimizer: Any) -> tf.keras.Model:
    model = wl.build_body()
    model.compile(
        optimizer=optimizer,
        loss={
            "category": tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "value": tf.keras.losses.MeanSquaredError(),
            "flag": tf.keras.losses.BinaryCrossentropy(from_logits=True),
        },
        metrics={
            "category": ["accuracy"],
            "value": [tf.keras.metrics.RootMeanSquaredError(name="rmse")],
            "flag": [tf.keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
                     tf.keras.metrics.AUC(name="auc", from_logits=True)],
        },
        jit_compile=False,
        steps_per_execution=1,
    )
    return model


# ------------------------------------------------------------------ measuring


def _serving(export_dir: str, raw_key: str, x: np.ndarray, calls: int) -> Dict[str, Any]:
    loaded = tf.saved_model.load(export_dir)
    signatures = loaded.signatures
    result: Dict[str, Any] = {"signatures": sorted(signatures)}
    for label, key in (("serving_default", "serving_default"), ("raw_predict", raw_key)):
        function = signatures[key]
        result[label] = {
            "signature": key,
            "input": "tf.Example" if function.structured_input_signature[1][
                next(iter(function.structured_input_signature[1]))].dtype == tf.string
            else "raw tensor",
            "batch_1_ms": wl.latency_ms(function, x[:1], calls),
            "batch_256_ms": wl.latency_ms(function, x[:256], calls),
        }
    return result


def measure_estimator(estimator, export: Callable[[str], str], raw_key: str, args) -> Dict:
    paths, eval_paths = _paths(args)
    timer = wl.StepTimer(args.warmup, args.warmup + args.steps,
                         getattr(estimator, "steps_per_run", 1))
    start = time.perf_counter()
    estimator.train(wl.input_fn(paths), steps=args.warmup + args.steps, hooks=[timer])
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = estimator.evaluate(wl.input_fn(eval_paths, repeat=False), steps=args.eval_batches)
    eval_seconds = time.perf_counter() - start
    start = time.perf_counter()
    export_dir = export(os.path.join(args.workdir, "export"))
    export_seconds = time.perf_counter() - start
    return _measurements(timer.clock, train_seconds, eval_seconds, metrics, export_seconds,
                         export_dir, raw_key, args)


def _measurements(clock, train_seconds, eval_seconds, metrics, export_seconds, export_dir,
                  raw_key, args) -> Dict:
    """One variant's JSON record: training, evaluation, export and serving figures."""
    x = np.load(os.path.join(args.data, "serving_x.npy"))
    return {
        **clock.results(),
        "train_wall_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "eval_loss": float(metrics["loss"]),
        "eval_metrics": {k: float(v) for k, v in metrics.items()},
        "export_seconds": export_seconds,
        "savedmodel_bytes": wl.folder_size(export_dir),
        "serving": _serving(export_dir, raw_key, x, args.calls),
        "export_dir": export_dir,
    }


class _KerasStepTimer(tf.keras.callbacks.Callback):
    """Keras twin of StepTimer; batch hooks fire once per execution of k steps."""

    def __init__(self, warmup: int, total: int) -> None:
        super().__init__()
        self.warmup, self.total = warmup, total
        self.clock = wl.StepClock()
        self.started = False

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        done = batch + 1
        if not self.started and done >= self.warmup:
            self.clock.start(done)
            self.started = True
        elif done == self.total:
            self.clock.stop(done)


def measure_keras_fit(steps_per_execution: int, args) -> Dict:
    paths, eval_paths = _paths(args)
    model = compiled_keras_model(tf.keras.optimizers.Adam(wl.LEARNING_RATE))
    model._configure_steps_per_execution(steps_per_execution)
    total = args.warmup + args.steps
    timer = _KerasStepTimer(args.warmup, total)
    start = time.perf_counter()
    model.fit(wl.dataset(paths, repeat=True), epochs=1, steps_per_epoch=total,
              callbacks=[timer], verbose=0)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = model.evaluate(wl.dataset(eval_paths, repeat=False), steps=args.eval_batches,
                             return_dict=True, verbose=0)
    eval_seconds = time.perf_counter() - start
    export_dir = os.path.join(args.workdir, "export")
    start = time.perf_counter()
    model.save(export_dir, save_format="tf")
    export_seconds = time.perf_counter() - start
    return _measurements(timer.clock, train_seconds, eval_seconds, metrics, export_seconds,
                         export_dir, "serving_default", args)


def measure_headkit_keras(steps_per_run: int, args) -> Dict:
    """hk.KerasModel on the workload: Keras fit with headkit's train step and export."""
    import headkit as hk

    paths, eval_paths = _paths(args)
    model = hk.KerasModel(wl.build_body, headkit_heads(), optimizer="adam",
                          learning_rate=wl.LEARNING_RATE, steps_per_run=steps_per_run,
                          checkpoint_every=10**9, model_dir=os.path.join(args.workdir, "model"))
    total = args.warmup + args.steps
    timer = _KerasStepTimer(args.warmup, total)
    fit = model.keras_model.fit

    def timed_fit(*fit_args, **kwargs):  # the step clock rides along with train()'s own fit
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [timer]
        return fit(*fit_args, **kwargs)

    model.keras_model.fit = timed_fit
    start = time.perf_counter()
    model.train(wl.input_fn(paths), max_steps=total)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = model.evaluate(wl.input_fn(eval_paths, repeat=False), steps=args.eval_batches)
    eval_seconds = time.perf_counter() - start
    start = time.perf_counter()
    export_dir = model.export(os.path.join(args.workdir, "export"))
    export_seconds = time.perf_counter() - start
    return _measurements(timer.clock, train_seconds, eval_seconds, metrics, export_seconds,
                         export_dir, "predict", args)


def measure_scaling(n_heads: int, args) -> Dict:
    """headkit with n_heads heads: the TRAIN graph's build time, then steps/s."""
    import headkit as hk
    from headkit.estimator.model_fn import make_model_fn
    from headkit.estimator.optimizers import resolve_optimizer

    paths, _ = _paths(args)
    heads = headkit_heads(n_heads)
    body = wl.body_layers(head_specs(n_heads))
    with tf.Graph().as_default():
        tf.compat.v1.train.get_or_create_global_step()
        iterator = tf.compat.v1.data.make_initializable_iterator(
            wl.dataset(paths, True, heads.label_keys))
        features, labels = iterator.get_next()
        model_fn = make_model_fn(body, heads, resolve_optimizer("adam", wl.LEARNING_RATE))
        start = time.perf_counter()
        model_fn(features, labels, ModeKeys.TRAIN, None)
        build_seconds = time.perf_counter() - start
    estimator = hk.Estimator(body, heads, optimizer="adam", learning_rate=wl.LEARNING_RATE,
                             config=wl.run_config(os.path.join(args.workdir, "model")))
    timer = wl.StepTimer(args.warmup, args.warmup + args.scaling_steps)
    estimator.train(wl.input_fn(paths, True, heads.label_keys),
                    steps=args.warmup + args.scaling_steps, hooks=[timer])
    return {"n_heads": n_heads, "graph_build_seconds": build_seconds, **timer.clock.results()}


def serve_interleaved(args) -> Dict:
    """Serving latency of every kept export, with the variants' calls interleaved."""
    with open(args.exports) as handle:
        exports = json.load(handle)
    x = np.load(os.path.join(args.data, "serving_x.npy"))
    loaded = {v: tf.saved_model.load(d) for v, (d, _) in exports.items()}
    result: Dict[str, Dict[str, float]] = {v: {} for v in exports}
    for label, key_of in (("serving_default", lambda v: "serving_default"),
                          ("raw_predict", lambda v: exports[v][1])):
        functions = {v: loaded[v].signatures[key_of(v)] for v in exports}
        for rows in (1, wl.BATCH):
            medians = wl.interleaved_latency_ms(functions, x[:rows], args.calls)
            for variant, value in medians.items():
                result[variant][f"{label}_b{rows}_ms"] = value
    return {"latency": result}


def _paths(args):
    return data.paths(args.data, "train"), data.paths(args.data, "eval")


def _measure_stock_export(estimator, raw_key: str, args) -> Dict:
    """measure_estimator for a variant exported by Estimator.export_saved_model."""
    return measure_estimator(
        estimator,
        lambda base: estimator.export_saved_model(base, wl.serving_input_receiver).decode(),
        raw_key, args,
    )


def run_variant(name: str, args) -> Dict:
    """Measure one variant; the Estimator ones share workload.run_config."""
    import headkit as hk

    config = wl.run_config(os.path.join(args.workdir, "model"))
    if name == "handwritten":
        estimator = tf.estimator.Estimator(handwritten_model_fn, config=config)
        return _measure_stock_export(estimator, "raw:predict", args)
    if name == "headkit":
        estimator = hk.Estimator(wl.build_body, headkit_heads(), optimizer="adam",
                                 learning_rate=wl.LEARNING_RATE, config=config)
        return measure_estimator(estimator, estimator.export, "predict", args)
    if name.startswith("headkit_spr"):
        steps, _, compiled = name[len("headkit_spr"):].partition("_")
        if compiled not in ("", "xla"):
            raise ValueError(f"Unknown variant {name!r}: headkit_spr<N> or headkit_spr<N>_xla.")
        estimator = hk.Estimator(wl.build_body, headkit_heads(), optimizer="adam",
                                 learning_rate=wl.LEARNING_RATE, config=config,
                                 steps_per_run=int(steps), jit_compile=compiled == "xla")
        return measure_estimator(estimator, estimator.export, "predict", args)
    if name == "canned_multihead":
        estimator = tf.estimator.Estimator(canned_model_fn, config=config)
        return _measure_stock_export(estimator, "raw:predict", args)
    if name == "model_to_estimator":
        model = compiled_keras_model(tf.keras.optimizers.legacy.Adam(wl.LEARNING_RATE))
        estimator = tf.keras.estimator.model_to_estimator(keras_model=model, config=config)
        return _measure_stock_export(estimator, "raw:serving_default", args)
    if name.startswith("keras_fit_spe"):
        return measure_keras_fit(int(name[len("keras_fit_spe"):]), args)
    if name.startswith("headkit_keras_spe"):
        return measure_headkit_keras(int(name[len("headkit_keras_spe"):]), args)
    if name.startswith("scaling_headkit_"):
        return measure_scaling(int(name[len("scaling_headkit_"):]), args)
    raise ValueError(
        f"Unknown variant {name!r}. Known: {', '.join(MAIN_VARIANTS)}, scaling_headkit_<K>."
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("--data", required=True, help="folder written by prepare_data")
    parser.add_argument("--out", help="JSON file for the measurements")
    parser.add_argument("--rows", type=int, default=65536, help="training rows (prepare)")
    parser.add_argument("--warmup", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2048)
    parser.add_argument("--scaling-steps", type=int, default=512)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--keep-export", help="copy the variant's export to this folder")
    parser.add_argument("--exports", help="serve_interleaved: JSON {variant: [dir, raw key]}")
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.keras.utils.set_random_seed(wl.SEED)
    if args.variant == "prepare":
        data.prepare_data(args.data, args.rows, args.eval_batches)
        return 0
    if args.variant == "serve_interleaved":
        result = serve_interleaved(args)
    else:
        with tempfile.TemporaryDirectory(prefix=f"bench-{args.variant}-") as workdir:
            args.workdir = workdir
            result = run_variant(args.variant, args)
            export_dir = result.pop("export_dir", None)
            if args.keep_export and export_dir:
                shutil.copytree(export_dir, args.keep_export)
    import headkit

    result.update(variant=args.variant, tensorflow_version=tf.__version__,
                  headkit_file=headkit.__file__)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
