"""headkit on a TF_CONFIG cluster: the one script every task runs (chief, workers, ps, evaluator).

Locally, ``headkit launch`` starts the cluster (each task gets its TF_CONFIG):

    headkit launch --workers 1 --ps 1 --evaluator -- \\
        python examples/distributed/train.py --model-dir runs/cluster

On Kubernetes, examples/distributed/tfjob.yaml runs it as a Kubeflow TFJob; on
Vertex AI, examples/distributed/vertex_job.yaml (a CustomJob's worker pools).
Every task needs the same --model-dir on a shared file system. Without
TF_CONFIG it trains in this process alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import headkit as hk

hk.quiet_tensorflow("--verbose" not in sys.argv)  # before TensorFlow loads

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

#: The strategies this script offers: none (variables on the parameter servers),
#: or a name hk.Estimator builds on the tasks that train.
STRATEGIES = ("none", "parameter_server", "multi_worker_mirrored")
#: The roles a cluster for each strategy has (the manifests are checked against these).
ROLES = {"none": ("chief", "worker", "ps", "evaluator"),
         "parameter_server": ("chief", "worker", "ps", "evaluator"),
         "multi_worker_mirrored": ("chief", "worker", "evaluator")}

HEADS = hk.HeadSet([
    hk.Head("v", hk.Regression(), metrics=("rmse",), is_default=True),
    hk.Head("k", hk.Classification(vocabulary=("a", "b")), metrics=("accuracy",)),
])


def build_body() -> tf.keras.Model:
    """8 floats -> a dense layer with batch norm -> the two heads."""
    x = tf.keras.Input((8,), name="x")
    h = tf.keras.layers.Dense(16)(x)
    h = tf.keras.layers.BatchNormalization()(h)
    h = tf.keras.layers.Activation("relu")(h)
    return tf.keras.Model({"x": x}, {"v": tf.keras.layers.Dense(1, name="v")(h),
                                     "k": tf.keras.layers.Dense(2, name="k")(h)})


def make_data(rows: int, seed: int, plateau: bool):
    """Features, labels and row ids. With ``plateau`` the labels do not depend on the
    features: validation stops improving after a few evaluations."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8)).astype("float32")
    signal = rng.normal(size=rows) if plateau else x[:, :4].sum(axis=1)
    labels = {"v": signal.astype("float32"), "k": np.array(["a", "b"])[(signal > 0) * 1]}
    return {"x": x, "row": np.arange(rows, dtype="int64")}, labels


def row_logging(input_fn, directory: str, suffix: str):
    """``input_fn``, also appending each batch's row ids to ``directory/<task>.<suffix>``."""
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    path = os.path.join(directory, f"{task.get('type', 'local')}-{task.get('index', 0)}."
                                   f"{suffix}")

    def logged(input_context=None, start_batch=0):  # hk.input_fn's arguments
        def log(features, labels):
            printed = tf.print(features["row"][:, 0], output_stream=f"file://{path}",
                               summarize=-1)
            with tf.control_dependencies([printed]):
                return dict(features, row=tf.identity(features["row"])), labels

        return input_fn(input_context=input_context, start_batch=start_batch).map(log)

    logged.headkit_fingerprint = input_fn.headkit_fingerprint
    return logged


def step_delay(seconds: float):
    """A hook that sleeps after each step: slows a small run down, to watch a cluster or kill
    a task (built here, so that importing the script needs no tf.estimator-era hook class)."""

    class StepDelay(tf.compat.v1.train.SessionRunHook):
        def after_run(self, run_context, run_values):
            time.sleep(seconds)

    return StepDelay()


def make_parser() -> argparse.ArgumentParser:
    """The script's arguments (the manifests' commands are checked against them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--strategy", choices=STRATEGIES, default="none")
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--plateau", action="store_true",
                        help="labels that the features do not explain: stops early")
    parser.add_argument("--log-rows", metavar="DIR", help="log the rows each task reads")
    parser.add_argument("--step-delay", type=float, default=0.0, metavar="SECONDS",
                        help="sleep after each training step")
    parser.add_argument("--no-evaluation", action="store_true",
                        help="train and checkpoint only (bench/distributed.py measures this)")
    parser.add_argument("--verbose", action="store_true")
    return parser


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)

    config = {"save_summary_steps": args.eval_every, "log_step_count_steps": None,
              "tf_random_seed": 0}
    if args.strategy != "none":
        config["train_distribute"] = args.strategy  # built here after TF_CONFIG is checked
    model = hk.Estimator(build_body, HEADS, optimizer="adam", learning_rate=0.01,
                         model_dir=args.model_dir, config=config)
    features, labels = make_data(args.rows, seed=0, plateau=args.plateau)
    eval_features, eval_labels = make_data(args.rows // 4, seed=1, plateau=args.plateau)
    train_input = hk.input_fn(features, labels, HEADS, batch_size=args.batch_size,
                              shuffle=True, num_epochs=None, seed=0)
    eval_input = hk.input_fn(eval_features, eval_labels, HEADS, batch_size=256)
    if args.log_rows:
        os.makedirs(args.log_rows, exist_ok=True)
        train_input = row_logging(train_input, args.log_rows, "rows")
        eval_input = row_logging(eval_input, args.log_rows, "eval-rows")
    evaluating = not args.no_evaluation
    result = hk.train_and_evaluate(
        model, train_input, eval_input if evaluating else None,
        max_steps=args.max_steps, eval_every=args.eval_every,
        early_stopping=hk.EarlyStopping("v/rmse", patience=args.patience) if evaluating else None,
        export=hk.BestExport(keep=1) if evaluating else None, progress=False,
        hooks=[step_delay(args.step_delay)] if args.step_delay else ())
    task = model.cluster.task if model.cluster else "local"
    print(f"result {task}: steps={result.steps} stopped_early={result.stopped_early} "
          f"evaluations={len(result.history)} best_export={result.best_export} "
          f"final_export={result.final_export}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
