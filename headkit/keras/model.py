"""``hk.KerasModel``: the same HeadSet trained with Keras, and the identical verified export.

It implements the backend protocol (``headkit.training.protocol.Backend``), so
``hk.train_and_evaluate`` drives it with the same early stopping, best exports
and resume as ``hk.Estimator``. A batch's losses come from
``headkit.kinds.batch``, as the Estimator's do; the export is checked against
the same signature table and TF Serving rules.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import tempfile
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from headkit.body import (
    Body,
    body_inputs,
    check_body,
    check_compilable,
    instantiate_body,
    model_input_specs,
    outputs_by_head,
)
from headkit.errors import CheckpointError, ConfigError, ConfigTypeError, translate_graph_errors
from headkit.keras.export import write_keras_saved_model
from headkit.keras.metrics import HeadMetrics
from headkit.kinds import batch
from headkit.kinds.predictions import flat_predictions, head_predictions
from headkit.multitask import LossWeights, step_gradients, step_orders
from headkit.serving.export_dir import write_export
from headkit.serving.features import check_spec, spec_of_inputs, spec_to_dict
from headkit.serving.manifest import write_manifest
from headkit.serving.passthrough import Passthrough, prediction_keys
from headkit.spec.head import Head
from headkit.spec.headset import HeadSet
from headkit.spec.keys import LOSS_WEIGHT, TOTAL_LOSS, metric_key
from headkit.spec.scalars import as_bool, as_int
from headkit.training.layout import OBJECT_KEYS, body_layout
from headkit.training.loop import generic_loop
from headkit.training.record import (
    RECORD_FILE,
    check_model_dir,
    read_record,
    recorded_heads,
    write_record,
)
from headkit.training.warm_start import check_warm_start, read_source, warm_start_match
from headkit.training.weights import WeightMatch, apply_weights, body_structure

__all__ = ["KerasModel", "OPTIMIZERS"]

logger = logging.getLogger("headkit")

#: Optimizer names -> (Keras optimizer class name, default learning rate): the
#: Estimator's names and rates.
OPTIMIZERS: Dict[str, tuple] = {
    "adam": ("Adam", 0.001),
    "sgd": ("SGD", 0.01),
    "adagrad": ("Adagrad", 0.01),
    "rmsprop": ("RMSprop", 0.001),
    "ftrl": ("Ftrl", 0.01),
}
_STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"
_CHECKPOINT_NAME = "ckpt"


def _keras_optimizer_classes() -> tuple:
    """The Keras optimizer base classes: tf.keras 2 has legacy ones too, Keras 3 has none."""
    try:
        # Keras 3 raises ImportError (not AttributeError) on tf.keras.optimizers.legacy.
        return (tf.keras.optimizers.Optimizer, tf.keras.optimizers.legacy.Optimizer)
    except (AttributeError, ImportError):
        return (tf.keras.optimizers.Optimizer,)


def _is_tf1_optimizer(optimizer: Any) -> bool:
    """A ``tf.compat.v1.train`` optimizer, told by its base class.

    Departure: the class is found by its module, not as ``tf.compat.v1.train.Optimizer``,
    since TF1 training names belong in ``headkit/estimator/`` (tests/test_layers.py).
    """
    return any(base.__module__ == "tensorflow.python.training.optimizer"
               and base.__name__ == "Optimizer" for base in type(optimizer).__mro__)


def _optimizer_factory(optimizer: Any, learning_rate: Optional[float]) -> Callable[[], Any]:
    """Check an optimizer spec now; return a factory of a fresh Keras optimizer."""
    keras_optimizers = _keras_optimizer_classes()
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer: unknown name {optimizer!r}. Known names: {', '.join(OPTIMIZERS)}; "
                "or pass a Keras optimizer.", field="optimizer")
        name, default_rate = OPTIMIZERS[key]
        rate = default_rate if learning_rate is None else learning_rate
        return lambda: getattr(tf.keras.optimizers, name)(learning_rate=rate)
    if learning_rate is not None:
        raise ConfigError(
            f"optimizer: learning_rate={learning_rate!r} applies only to an optimizer name "
            f"(got {optimizer!r}). Set the rate on the optimizer object instead.",
            field="learning_rate")
    if isinstance(optimizer, keras_optimizers):
        return lambda: optimizer
    if _is_tf1_optimizer(optimizer):
        raise ConfigTypeError(
            f"optimizer: {type(optimizer).__name__} is a TF1 optimizer, which Keras models do "
            "not take. Pass a Keras optimizer (tf.keras.optimizers.Adam(...)) or a name "
            f"({', '.join(OPTIMIZERS)}).", field="optimizer")
    if callable(optimizer) and not isinstance(optimizer, type):
        sample = optimizer()  # called once now, so a bad factory fails at construction
        if isinstance(sample, keras_optimizers):
            return optimizer
        raise ConfigTypeError(
            f"optimizer: the factory {optimizer!r} returned {sample!r}, not a Keras optimizer.",
            field="optimizer")
    raise ConfigTypeError(
        f"optimizer must be a name ({', '.join(OPTIMIZERS)}), a Keras optimizer or a "
        f"zero-argument factory returning one (got {optimizer!r}).", field="optimizer")


def _refuse_clusters() -> None:
    config = json.loads(os.environ.get("TF_CONFIG") or "{}") if os.environ.get(
        "TF_CONFIG") else {}
    cluster = config.get("cluster") or {}
    tasks = sum(len(v) if isinstance(v, (list, dict)) else 1 for v in cluster.values())
    if tasks > 1:
        raise ConfigError(
            f"hk.KerasModel trains in one process, and TF_CONFIG describes a cluster of {tasks} "
            f"tasks ({sorted(cluster)}). Train on a cluster with hk.Estimator, or unset "
            "TF_CONFIG to train here.", field="TF_CONFIG")


def _call_input_fn(input_fn: Callable, mode: str) -> tf.data.Dataset:
    if not callable(input_fn):
        raise ConfigTypeError(f"input_fn must be a function returning a tf.data.Dataset "
                              f"(got {input_fn!r}).", field="input_fn")
    accepted = inspect.signature(input_fn).parameters
    dataset = input_fn(mode=mode) if "mode" in accepted else input_fn()
    if not isinstance(dataset, tf.data.Dataset):
        raise ConfigTypeError(
            f"input_fn must return a tf.data.Dataset for hk.KerasModel (got "
            f"{type(dataset).__name__}). hk.input_fn and hk.input_fn_from_dataframe do.",
            field="input_fn")
    return dataset


class _HeadsModel(tf.keras.Model):
    """The body with headkit's heads: the loss, the update and the metrics of a batch."""

    def __init__(self, body: tf.keras.Model, heads: HeadSet, jit_compile: bool = False) -> None:
        # Named: Keras 3 derives a name scope from the class name, and a leading "_" is refused.
        super().__init__(name="headkit_heads")
        self.headkit_body = body
        self.headkit_heads = heads
        # Keras' own XLA (compile(jit_compile=...)) would drop headkit's checks: with
        # jit_compile, headkit compiles the step's arithmetic itself, checks outside it.
        self.headkit_compiled = None
        if jit_compile:
            check_compilable(body)
            self.headkit_compiled = tf.function(self._compiled_step, jit_compile=True,
                                                autograph=False)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.position = tf.Variable(0, dtype=tf.int64, trainable=False, name="position")
        self.fingerprint = tf.Variable("", dtype=tf.string, trainable=False, name="fingerprint")
        self.head_metrics = HeadMetrics(heads)
        self.headkit_weighting = LossWeights(heads)  # checkpointed by KerasModel, never exported

    @property
    def metrics(self):
        return self.head_metrics.all

    def call(self, features, training=False):
        body = self.headkit_body
        return outputs_by_head(self.headkit_heads, body,
                               body(body_inputs(body, features), training=training))

    def _terms(self, features, labels, training):
        """The batch's head terms, weighted terms, loss weights, regularization and total."""
        outputs = self(features, training=training)
        terms = batch.head_terms(self.headkit_heads, outputs, labels, features)
        weighted, loss_weights = self.headkit_weighting.weigh(
            {name: term.loss for name, term in terms.items()},
            {name: term.labelled for name, term in terms.items()})
        regularization = self.headkit_body.losses  # computed here, inside any tape
        total = self.headkit_weighting.total(weighted, regularization)
        return outputs, terms, weighted, loss_weights, regularization, total

    def _loss_weight_logs(self, loss_weights):
        if not self.headkit_weighting.is_learned:
            return {}
        return {metric_key(name, LOSS_WEIGHT): w for name, w in loss_weights.items()}

    def train_step(self, data):
        index, (features, labels) = data
        heads = self.headkit_heads
        if self.headkit_compiled is not None:
            return self._checked_compiled_step(index, features, labels)
        # PCGrad takes one gradient per head from the same tape.
        with tf.GradientTape(persistent=heads.gradient_surgery is not None) as tape:
            _, terms, weighted, loss_weights, regularization, total = self._terms(
                features, labels, training=True)
            total = batch.finite_guard(heads, terms, total, self.step + 1)
        pairs = step_gradients(heads, tape.gradient, total, weighted, regularization,
                               self.headkit_body.trainable_variables,
                               self.headkit_weighting.trainable_variables, self.step)
        with tf.control_dependencies([total]):  # the finite check comes before any update
            self.optimizer.apply_gradients(pairs)
            self.headkit_weighting.update({name: t.loss for name, t in terms.items()})
        self.step.assign_add(1)
        self.position.assign(index + 1)
        logs = {TOTAL_LOSS: total}
        logs.update({metric_key(name, TOTAL_LOSS): t.loss for name, t in terms.items()})
        logs.update(self._loss_weight_logs(loss_weights))
        return logs

    def _checked_compiled_step(self, index, features, labels):
        """``train_step`` with ``jit_compile``: checks, the compiled step, the finite check."""
        heads, body = self.headkit_heads, self.headkit_body
        prepared = batch.prepare_batch(heads, labels, features)  # the labels' checks
        orders = step_orders(heads, self.step)  # TensorFlow's random numbers, not XLA's
        total, head_losses, loss_weights, finite = self.headkit_compiled(
            body_inputs(body, features), prepared, orders)
        with tf.control_dependencies([batch.assert_finite(heads, finite, self.step + 1)]):
            self.step.assign_add(1)
            self.position.assign(index + 1)
        names = [head.name for head in heads.trained_heads]
        logs = {TOTAL_LOSS: total}
        logs.update({metric_key(n, TOTAL_LOSS): loss
                     for n, loss in zip(names, tf.unstack(head_losses))})
        logs.update(self._loss_weight_logs(dict(zip(names, tf.unstack(loss_weights)))))
        return logs

    # Its name is errors.COMPILED_STEP: XLA names it when it cannot compile a step.
    def _compiled_step(self, inputs, prepared, orders):
        """Forward and backward pass, and the update when every loss is finite (one XLA call)."""
        heads, body = self.headkit_heads, self.headkit_body
        state = body.non_trainable_variables
        before = [tf.convert_to_tensor(variable) for variable in state]
        with tf.GradientTape(persistent=heads.gradient_surgery is not None) as tape:
            outputs = outputs_by_head(heads, body, body(inputs, training=True))
            terms = batch.prepared_terms(heads, outputs, prepared)
            weighted, loss_weights = self.headkit_weighting.weigh(
                {name: term.loss for name, term in terms.items()},
                {name: term.labelled for name, term in terms.items()})
            regularization = body.losses
            total = self.headkit_weighting.total(weighted, regularization)
        names = [head.name for head in heads.trained_heads]
        finite = batch.finite_flags(heads, terms, total)

        pairs = step_gradients(heads, tape.gradient, total, weighted, regularization,
                               body.trainable_variables,
                               self.headkit_weighting.trainable_variables, self.step, orders)

        optimizer = self.optimizer
        if hasattr(optimizer, "build") and not getattr(optimizer, "built",
                                                       getattr(optimizer, "_built", True)):
            # Keras 3 may not create its slots in the branch below: they are created
            # here, for the variables that get a gradient, as apply_gradients would.
            with tf.init_scope():
                optimizer.build([variable for _, variable in pairs])

        def commit():
            optimizer.apply_gradients(pairs)
            update = self.headkit_weighting.update({n: t.loss for n, t in terms.items()})
            return tf.group([update] if update is not None else [])

        applied = batch.commit_if_finite(finite, commit, state, before)
        with tf.control_dependencies([applied]):
            return (tf.identity(total), tf.stack([terms[n].loss for n in names]),
                    tf.stack([tf.cast(loss_weights[n], tf.float32) for n in names]),
                    tf.cast(finite, tf.int32))

    def test_step(self, data):
        features, labels = data
        outputs, terms, _, loss_weights, _, total = self._terms(features, labels, training=False)
        self.head_metrics.update(terms, head_predictions(self.headkit_heads, outputs), total)
        results = self.head_metrics.results()
        results.update(self._loss_weight_logs(loss_weights))
        return results


class _Checkpointing(tf.keras.callbacks.Callback):
    """Saves every ``every`` steps (at the first run end at or past it); feeds the progress."""

    def __init__(self, owner: "KerasModel", every: int, progress: Any) -> None:
        super().__init__()
        self.owner, self.every, self.progress = owner, every, progress
        self.saved = int(owner._model.step.numpy())

    def on_train_batch_end(self, batch_index, logs=None):
        step = int(self.owner._model.step.numpy())
        if self.progress is not None:
            loss = (logs or {}).get(TOTAL_LOSS)
            self.progress.update(step, None if loss is None else float(loss))
        self.owner._write_summaries(logs or {}, step)
        if step // self.every > self.saved // self.every:
            self.owner._save()
            self.saved = step


class KerasModel:
    """A Keras model built from a body and a HeadSet: the Estimator's twin, without tf.estimator.

    ``train``, ``evaluate``, ``predict`` and ``export`` mean what they mean
    for ``hk.Estimator``: ``evaluate()`` reports ``loss`` and
    ``"<head>/<metric>"`` with the same definitions, ``predict()`` yields
    ``"<head>/<key>"`` arrays, and ``export()`` writes the same verified
    signatures. Checkpoints (``model_dir/ckpt-<step>``) hold the weights,
    the optimizer, the global step and the training input's position.

    Args:
        body: a function returning a fresh ``tf.keras.Model``, or a functional
            / Sequential Keras model (cloned; its current weights are not used).
        heads: a ``HeadSet``, or a list of ``Head``.
        optimizer: a name (``adam``, ``sgd``, ``adagrad``, ``rmsprop``,
            ``ftrl``), a Keras optimizer, or a zero-argument factory of one.
        learning_rate: with an optimizer name only.
        model_dir: where checkpoints, the training record and exports go;
            default a new temporary folder.
        steps_per_run: training steps per call of the compiled step (Keras'
            ``steps_per_execution``); checkpoints and evaluations happen at
            the first run boundary at or past their step.
        checkpoint_every: steps between checkpoints within ``train()`` (a
            checkpoint is also written when ``train()`` returns).
        keep_checkpoints: how many checkpoints to keep.
        seed: seeds Python, NumPy and TensorFlow before the body is built, for
            repeatable initial weights.
        warm_start_from: the path of a model_dir, a checkpoint or a headkit
            export (of either backend) whose body weights start this new
            model_dir, matched by layer structure, as for ``hk.Estimator``;
            the report is ``warm_start_report``, and the first ``train()``
            saves it as ``ckpt-0``. Ignored when ``model_dir`` already holds a
            checkpoint (it resumes).
        head_map: ``{"<new head>": "<old head>"}`` for renamed heads.
        passthrough: feature names copied unchanged into ``predict()`` and
            every predict signature, or a dict of name -> ``tf.TensorSpec``;
            as for ``hk.Estimator``.
        jit_compile: compile each training step's arithmetic (forward and
            backward pass, loss, update) with XLA, as for ``hk.Estimator``:
            the label, weight-column and finite-loss checks run outside the
            compiled function, and a batch whose loss is not finite changes
            no variable. Not Keras' own ``compile(jit_compile=...)``, which
            would drop those checks (headkit always turns it off).

    Example:
        >>> import headkit as hk
        >>> def build_body():
        ...     x = tf.keras.Input((4,), name="x")
        ...     h = tf.keras.layers.Dense(8, activation="relu")(x)
        ...     return tf.keras.Model({"x": x}, {"kind": tf.keras.layers.Dense(3)(h)})
        >>> model = hk.KerasModel(build_body, [hk.Head("kind", hk.Classification(3))])
        >>> fast = hk.KerasModel(build_body, [hk.Head("kind", hk.Classification(3))],
        ...                      steps_per_run=32, jit_compile=True)
    """

    def __init__(
        self,
        body: Body,
        heads: Union[HeadSet, Iterable[Head]],
        optimizer: Any = "adam",
        learning_rate: Optional[float] = None,
        model_dir: Optional[str] = None,
        steps_per_run: int = 1,
        checkpoint_every: int = 100,
        keep_checkpoints: int = 5,
        seed: Optional[int] = None,
        warm_start_from: Any = None,
        head_map: Optional[Mapping[str, str]] = None,
        passthrough: Any = None,
        jit_compile: bool = False,
    ) -> None:
        _refuse_clusters()
        jit_compile = as_bool(jit_compile)
        if not isinstance(jit_compile, bool):
            raise ConfigTypeError(
                f"jit_compile must be True or False (got {jit_compile!r}).", field="jit_compile")
        self.jit_compile = jit_compile
        if not isinstance(heads, HeadSet):
            heads = HeadSet(heads)
        self._heads, self._body = heads, check_body(body)
        for name, value in (("steps_per_run", steps_per_run),
                            ("checkpoint_every", checkpoint_every),
                            ("keep_checkpoints", keep_checkpoints)):
            value = as_int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1 (got {value!r}).", field=name)
        self.steps_per_run = as_int(steps_per_run)
        self.checkpoint_every = as_int(checkpoint_every)
        if model_dir is None:
            model_dir = tempfile.mkdtemp(prefix="headkit-keras-")
        if os.path.exists(model_dir) and not os.path.isdir(model_dir):
            raise ConfigError(f"model_dir {model_dir!r} is a file, not a folder. Pass a folder "
                              "(it is created if missing).", field="model_dir")
        self._model_dir = model_dir
        self._progress = None
        source_path, head_map = check_warm_start(warm_start_from, head_map, model_dir)
        if source_path is not None and tf.train.latest_checkpoint(model_dir):
            logger.info("headkit: %s holds a checkpoint, so training resumes from it; "
                        "warm_start_from=%r is not read.", model_dir, source_path)
            source_path = None
        # Read before any eager Keras model exists: a source of an older headkit is read
        # through the body built in a scratch graph.
        source = None if source_path is None else read_source(source_path, self._body, heads)
        if seed is not None:
            tf.keras.utils.set_random_seed(as_int(seed))
        # Everything Keras here is built eagerly: in Keras 2, a model built inside a
        # tf.Graph (as the Estimator does) invalidates Keras models built before it.
        body_model = instantiate_body(self._body)
        self._record = None
        if os.path.isdir(model_dir) and os.listdir(model_dir):
            heads = self._heads = recorded_heads(model_dir, heads)
            self._record = check_model_dir(model_dir, heads, self._body, backend="keras",
                                           model=body_model)
        self._passthrough = Passthrough.of(passthrough, heads, model_input_specs(body_model))
        if self._passthrough:
            keys = prediction_keys(heads, body_model)
            if keys is not None:
                self._passthrough.check_outputs(keys)
            self._passthrough.restore((read_record(model_dir) or {}).get("passthrough")
                                      if os.path.isdir(model_dir) else None)
        self.warm_start_report: Optional[WeightMatch] = None
        if source is not None:
            self.warm_start_report = warm_start_match(
                source, body_structure(body_model, heads, with_values=False), head_map)
            apply_weights(body_model, self.warm_start_report)
        self._model = _HeadsModel(body_model, heads, self.jit_compile)
        # Never Keras' own XLA: it drops headkit's checks (Keras 3 turns it on by itself
        # on a GPU). jit_compile compiles the step's arithmetic only (_HeadsModel).
        self._model.compile(optimizer=_optimizer_factory(optimizer, learning_rate)(),
                            steps_per_execution=self.steps_per_run, jit_compile=False)
        self._checkpoint = tf.train.Checkpoint(
            body=self._model.headkit_body, optimizer=self._model.optimizer,
            step=self._model.step, loss_weighting=self._model.headkit_weighting,
            input=tf.train.Checkpoint(position=self._model.position,
                                      fingerprint=self._model.fingerprint))
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, model_dir, max_to_keep=keep_checkpoints,
            checkpoint_name=_CHECKPOINT_NAME)
        self._restore()
        self._writers: Dict[str, Any] = {}

    # ------------------------------------------------------------------ protocol

    @property
    def model_dir(self) -> str:
        """The folder of checkpoints, the training record and exports."""
        return self._model_dir

    @property
    def heads(self) -> HeadSet:
        """The HeadSet this model trains and exports."""
        return self._heads

    @property
    def body(self) -> Body:
        """The body as given: a builder function or a Keras model."""
        return self._body

    @property
    def keras_model(self) -> tf.keras.Model:
        """The compiled ``tf.keras.Model`` (body + heads), for ``fit`` with your own callbacks.

        Its training data is ``(index, (features, labels))``, as ``train()`` feeds it.
        """
        return self._model

    is_chief = True

    def latest_checkpoint(self) -> Optional[str]:
        """The newest checkpoint's path, or None before any training."""
        return self._manager.latest_checkpoint

    def global_step(self) -> int:
        """The global step: the number of training steps applied so far."""
        return int(self._model.step.numpy())

    def _restore(self) -> None:
        latest = self._manager.latest_checkpoint
        if latest is None:
            return
        status = self._checkpoint.restore(latest)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as error:
            raise CheckpointError(
                f"checkpoint {latest!r} does not hold this model's weights, so resuming would "
                "go on from its step with fresh weights; nothing was trained. A model_dir "
                "trained with tf.keras 2 (TensorFlow 2.15) does not resume under Keras 3 (a "
                "newer TensorFlow), nor the reverse: their checkpoints name the layers "
                "differently. Export it with the TensorFlow that trained it (exports load on "
                f"both), or train in a new model_dir. ({str(error)[:300]})") from None
        status.expect_partial()
        logger.info("headkit: restored %s (step %d).", latest, self.global_step())

    def _save(self) -> str:
        return self._manager.save(checkpoint_number=self.global_step())

    def _write_record(self) -> None:
        if not os.path.exists(os.path.join(self.model_dir, RECORD_FILE)):
            if self._record is None:
                self._record = check_model_dir(self.model_dir, self.heads, self.body,
                                               backend="keras", model=self._model.headkit_body)
            write_record(self.model_dir, self._record)

    def _writer(self, name: str) -> Any:
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(
                os.path.join(self.model_dir, name) if name else self.model_dir)
        return self._writers[name]

    def _write_summaries(self, values: Mapping[str, Any], step: int, name: str = "") -> None:
        with self._writer(name).as_default(step=step):
            for key, value in values.items():
                tf.summary.scalar(key, float(value))

    # ------------------------------------------------------------------ training

    def train(self, input_fn: Callable, max_steps: Optional[int] = None,
              steps: Optional[int] = None) -> "KerasModel":
        """Train until the global step reaches ``max_steps`` (or ``steps`` more), or the input ends.

        A NaN or inf loss raises ``hk.NonFiniteLossError`` naming the heads and
        the step; no update from that batch on is applied and no checkpoint
        holds it. Bad data raises ``hk.DataError``.

        Example:
            >>> model.train(train_input, max_steps=1000)  # doctest: +SKIP
        """
        if (max_steps is None) == (steps is None):
            raise ConfigError("train: give exactly one of max_steps and steps.",
                              field="max_steps")
        start = self.global_step()
        target = as_int(max_steps) if max_steps is not None else start + as_int(steps)
        if target <= start:
            return self
        self._write_record()
        source = _call_input_fn(input_fn, "train")
        self._learn_passthrough(source)
        if self.warm_start_report is not None and self.latest_checkpoint() is None:
            self._save()  # ckpt-0: the warm-started weights
        fingerprint = getattr(input_fn, "headkit_fingerprint", None)
        callback = _Checkpointing(self, self.checkpoint_every, self._progress)
        # Whole runs of steps_per_run steps, then the rest in one shorter run: Keras 3 runs
        # every execution whole, past steps_per_epoch (tf.keras 2 cut the last one short).
        rest = (target - start) % self.steps_per_run
        for goal, per_run in ((target - rest, self.steps_per_run), (target, rest)):
            steps = goal - self.global_step()
            if steps <= 0 or per_run == 0:
                continue
            self._set_steps_per_execution(per_run)
            with translate_graph_errors():
                self._model.fit(self._positioned(source, fingerprint), epochs=1,
                                steps_per_epoch=steps, verbose=0, shuffle=False,
                                callbacks=[callback])
            if self.global_step() < goal:
                break  # the input ended
        self._save()
        return self

    def _learn_passthrough(self, dataset: tf.data.Dataset) -> None:
        """Take unknown pass-through specs from the training data; keep them in the record."""
        if not self._passthrough:
            return
        element = dataset.element_spec
        features = element[0] if isinstance(element, tuple) else element
        if self._passthrough.learn(features if isinstance(features, Mapping) else {}):
            record = read_record(self.model_dir)
            if record is not None:
                write_record(self.model_dir, {**record, "passthrough": self._passthrough.to_dict()})

    @property
    def passthrough(self) -> Passthrough:
        """The pass-through features, with each one's dtype and shape once known."""
        return self._passthrough

    def _set_steps_per_execution(self, steps: int) -> None:
        """Keras 3 traces its steps per execution into the train function: retrace on change."""
        model = self._model
        if isinstance(getattr(model, "_steps_per_execution", None), tf.Variable):
            return  # tf.keras 2 reads a variable, and cuts the last run of an epoch itself
        if model.steps_per_execution != steps:
            model.steps_per_execution = steps
            model.train_function = None

    def _positioned(self, dataset: tf.data.Dataset, fingerprint: Optional[str]):
        """The dataset from the saved position on, with each batch's index (see docs/keras.md)."""
        start = int(self._model.position.numpy())
        saved = self._model.fingerprint.numpy().decode()
        if start and fingerprint and saved and fingerprint != saved:
            logger.warning(
                "headkit: the training data changed since the checkpoint in %r (fingerprint "
                "%s, now %s): the input starts from its beginning instead of batch %d.",
                self.model_dir, saved, fingerprint, start)
            start = 0
        self._model.fingerprint.assign(fingerprint or "")  # saved with the next checkpoint
        return dataset.skip(start).enumerate(start) if start else dataset.enumerate()

    def train_and_evaluate_loop(self, plan: Any, monitor: Any) -> None:
        """The loop ``hk.train_and_evaluate`` runs: the generic one, with per-step progress."""
        self._progress = plan.progress
        try:
            generic_loop(self, plan, monitor)
        finally:
            self._progress = None

    def evaluate(self, input_fn: Callable, steps: Optional[int] = None) -> Dict[str, Any]:
        """``loss``, ``"<head>/<metric>"`` and ``global_step`` on the input (or ``steps`` batches).

        Example:
            >>> model.evaluate(eval_input)["species/accuracy"]  # doctest: +SKIP
            0.97
        """
        dataset = _call_input_fn(input_fn, "eval")
        with translate_graph_errors():
            results = self._model.evaluate(dataset, steps=steps, verbose=0, return_dict=True)
        results = {k: np.float32(v) for k, v in results.items()}
        step = self.global_step()
        self._write_summaries(results, step, name="eval")
        return {**results, "global_step": np.int64(step)}

    def predict(self, input_fn: Callable) -> Iterator[Dict[str, np.ndarray]]:
        """Yield ``{"<head>/<key>": array}`` for each example of the input.

        Example:
            >>> next(model.predict(predict_input))["species/classes"]  # doctest: +SKIP
            array([b'Adelie'], dtype=object)
        """
        dataset = _call_input_fn(input_fn, "infer")
        heads, passthrough = self.heads, self._passthrough

        @tf.function
        def step(features):
            flat = flat_predictions(head_predictions(heads, self._model(features)))
            return passthrough.copy_into(flat, features) if passthrough else flat

        for element in dataset:
            features = element[0] if isinstance(element, tuple) else element
            with translate_graph_errors():
                arrays = {k: v.numpy() for k, v in step(features).items()}
            for row in range(len(next(iter(arrays.values())))):
                yield {k: v[row] for k, v in arrays.items()}

    # ------------------------------------------------------------------ export

    def export(
        self,
        export_dir_base: str,
        feature_spec: Optional[Mapping[str, Any]] = None,
        checkpoint_path: Optional[str] = None,
        extra_manifest: Optional[Mapping[str, Any]] = None,
        heads: Optional[Sequence[str]] = None,
        default: Optional[str] = None,
    ) -> str:
        """Export a verified SavedModel with every head's signatures; return its path.

        The same table, methods, inputs, outputs and manifest as
        ``hk.Estimator.export``; written to ``temp-<stamp>``, checked against
        TensorFlow Serving's rules, then renamed. ``heads=`` and ``default=``
        export a subset of heads, as for ``hk.Estimator.export``.

        Args:
            export_dir_base: the folder that receives the timestamped export.
            feature_spec: ``{name: tf.io.FixedLenFeature}``; by default read
                from the body's Keras Inputs.
            checkpoint_path: the checkpoint to export; default the latest.
            extra_manifest: more JSON-ready entries for the manifest.
            heads: export these heads only; default every head.
            default: the head behind ``serving_default``; required when the
                HeadSet's default head is not among ``heads``.

        Example:
            >>> export_dir = model.export("exports/penguins")  # doctest: +SKIP
        """
        exported = self.heads.select(heads, default)
        if any(spec is None for spec in self._passthrough.specs.values()):
            self._passthrough.restore((read_record(self.model_dir) or {}).get("passthrough"))
        passthrough = self._passthrough.required("export")
        checkpoint_path = checkpoint_path or self.latest_checkpoint()
        if checkpoint_path is None:
            raise ConfigError(
                f"export: no checkpoint in {self.model_dir!r}. Train the model first, or pass "
                "checkpoint_path=.", field="checkpoint_path")
        inputs = model_input_specs(self._model.headkit_body)
        spec = dict(feature_spec) if feature_spec is not None else spec_of_inputs(inputs)
        check_spec(spec)
        body = instantiate_body(self.body)
        step = tf.Variable(0, dtype=tf.int64)
        restored = tf.train.Checkpoint(body=body, step=step).restore(checkpoint_path)
        restored.assert_existing_objects_matched().expect_partial()  # every body weight, or fail

        layout = body_layout(body, self.heads, OBJECT_KEYS)

        def write(temp_dir: str):
            expected, problems = write_keras_saved_model(
                self.heads, body, spec, inputs or {}, temp_dir, exported, passthrough)
            write_manifest(temp_dir, exported, expected, spec_to_dict(spec),
                           int(step.numpy()), checkpoint_path, "keras", extra_manifest,
                           model_heads=self.heads.names, passthrough=self._passthrough.to_dict(),
                           body=layout)
            return expected, problems

        return write_export(export_dir_base, write)

    # ------------------------------------------------------------------ migration

    @classmethod
    def from_estimator(cls, estimator: Any, model_dir: Optional[str] = None,
                       **options: Any) -> "KerasModel":
        """A KerasModel with an ``hk.Estimator``'s heads, body and trained body weights.

        The weights of its newest checkpoint, batch-norm moving statistics
        included, are matched to the Keras body by layer structure
        (``headkit.training.weights``), never by graph names; the new
        ``model_dir`` starts at the Estimator's global step.

        Args:
            estimator: a trained ``hk.Estimator``.
            model_dir: the new model's folder (not the Estimator's).
            **options: more ``KerasModel`` arguments (``optimizer``, ...).

        Example:
            >>> hk.KerasModel.from_estimator(estimator, model_dir="runs/keras")  # doctest: +SKIP
        """
        from headkit.training.weights import (
            apply_weights,
            body_structure,
            checkpoint_weights,
            match_weights,
        )

        checkpoint = estimator.latest_checkpoint()
        if checkpoint is None:
            raise ConfigError(f"from_estimator: {estimator.model_dir!r} holds no checkpoint; "
                              "train the Estimator first.", field="estimator")
        if model_dir is not None and os.path.abspath(model_dir) == os.path.abspath(
                estimator.model_dir):
            raise ConfigError(
                f"from_estimator: model_dir {model_dir!r} is the Estimator's own; give the "
                "Keras model a new folder (its checkpoints have another format).",
                field="model_dir")
        # Read in a scratch graph before any eager Keras model exists (see __init__).
        source = checkpoint_weights(estimator.body, estimator.heads, checkpoint)
        step = estimator.global_step()
        model = cls(estimator.body, estimator.heads, model_dir=model_dir, **options)
        if model.latest_checkpoint() is not None:
            raise ConfigError(f"from_estimator: {model.model_dir!r} already holds a Keras "
                              "checkpoint; give a new model_dir.", field="model_dir")
        target = body_structure(model._model.headkit_body, model.heads, with_values=False)
        match = match_weights(source, target)
        apply_weights(model._model.headkit_body, match)
        logger.info("headkit: from_estimator: %s", match.report())
        # The learned loss weights: the same names in both (headkit.multitask.SCOPE).
        saved = dict(tf.train.list_variables(checkpoint))
        for variable in model._model.headkit_weighting.variables:
            name = variable.name.split(":")[0]
            if name in saved:
                variable.assign(tf.train.load_variable(checkpoint, name))
        model._model.step.assign(step)
        model._write_record()
        model._save()
        return model
