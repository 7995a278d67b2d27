"""``hk.Estimator``: a ``tf.estimator.Estimator`` built from a Keras body and a HeadSet.

It implements the backend protocol (``headkit.training.protocol.Backend``).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf

from headkit.body import (
    Body,
    check_body,
    check_compilable,
    instantiate_body,
    model_input_specs,
)
from headkit.errors import ConfigError, ConfigTypeError, translate_graph_errors
from headkit.estimator import distributed
from headkit.estimator.export import export_estimator
from headkit.estimator.loop import estimator_loop
from headkit.estimator.model_fn import make_model_fn
from headkit.estimator.optimizers import resolve_optimizer
from headkit.estimator.resume import ResumableEstimator
from headkit.serving.passthrough import Passthrough, prediction_keys
from headkit.spec.head import Head
from headkit.spec.headset import HeadSet
from headkit.spec.scalars import as_bool, as_int
from headkit.training.record import (
    RECORD_FILE,
    check_model_dir,
    read_record,
    recorded_heads,
    write_record,
)
from headkit.training.warm_start import check_warm_start, read_source, warm_start_match
from headkit.training.weights import WeightMatch, body_structure

__all__ = ["Estimator"]

logger = logging.getLogger("headkit")


class _TranslatingEstimator(ResumableEstimator):
    """Estimator whose train/evaluate/predict raise headkit's errors for bad data.

    tf.estimator refuses subclasses that override its public methods, and it
    checks only the instance's own class. These wrappers change no behaviour
    besides turning headkit's in-graph assertion failures into DataError /
    NonFiniteLossError, so they sit in this base class, one level up.
    """

    def train(self, input_fn, hooks=None, steps=None, max_steps=None, saving_listeners=None):
        """``tf.estimator.Estimator.train``; bad data raises ``hk.DataError``, NaN/inf
        losses ``hk.NonFiniteLossError`` (naming the heads and the step).

        Example:
            >>> estimator.train(input_fn, steps=100)  # doctest: +SKIP
        """
        self._write_record()
        if getattr(self, "steps_per_run", 1) > 1:  # the looped run needs the last step
            self._last_step = max_steps if max_steps is not None else (
                None if steps is None else self.global_step() + steps)
        try:
            with translate_graph_errors():
                return super().train(input_fn, hooks=hooks, steps=steps, max_steps=max_steps,
                                     saving_listeners=saving_listeners)
        finally:
            self._record_passthrough()

    def _write_record(self) -> None:
        """The chief writes the model_dir record once (checked when the Estimator was built)."""
        if self.is_chief and not os.path.exists(os.path.join(self.model_dir, RECORD_FILE)):
            if self._record is None:
                graph, model = self._scratch_body()
                with graph.as_default():
                    self._record = check_model_dir(self.model_dir, self.heads, self.body,
                                                   model=model)
            write_record(self.model_dir, self._record)

    def _record_passthrough(self) -> None:
        """The chief adds the pass-through specs training found to the record, for exports."""
        found = self.passthrough.to_dict()
        record = read_record(self.model_dir) if self.is_chief and found else None
        if record is not None and record.get("passthrough") != found:
            write_record(self.model_dir, {**record, "passthrough": found})

    def evaluate(self, input_fn, steps=None, hooks=None, checkpoint_path=None, name=None):
        """``tf.estimator.Estimator.evaluate``: ``loss`` and ``"<head>/<metric>"``.

        Example:
            >>> estimator.evaluate(eval_input_fn)["species/accuracy"]  # doctest: +SKIP
            0.97
        """
        with translate_graph_errors():
            return super().evaluate(input_fn, steps=steps, hooks=hooks,
                                    checkpoint_path=checkpoint_path, name=name)

    def predict(self, input_fn, predict_keys=None, hooks=None, checkpoint_path=None,
                yield_single_examples=True):
        """``tf.estimator.Estimator.predict``: dicts of ``"<head>/<key>"`` arrays.

        Example:
            >>> next(estimator.predict(input_fn))["species/classes"]  # doctest: +SKIP
            array([b'Adelie'], dtype=object)
        """
        with translate_graph_errors():
            yield from super().predict(input_fn, predict_keys=predict_keys, hooks=hooks,
                                       checkpoint_path=checkpoint_path,
                                       yield_single_examples=yield_single_examples)


def _check_model_dir_path(model_dir: Any) -> None:
    """Refuse a model_dir that is a file or cannot be created, before anything is built."""
    if model_dir is None:
        return
    if not isinstance(model_dir, (str, os.PathLike)):
        raise ConfigTypeError(
            f"model_dir must be a folder path (got {model_dir!r}, a {type(model_dir).__name__}). "
            "Pass a string such as 'runs/penguins'.", field="model_dir")
    path = os.fspath(model_dir)
    if "://" in path:  # gs://, hdfs://: tf.io.gfile's file systems, checked when written
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(
            f"model_dir {path!r} is a file, not a folder: checkpoints, the model record and "
            "exports are written into a folder. Pass a folder path (it is created if missing), "
            f"e.g. {path + '_model'!r}, or move the file away.", field="model_dir")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(
            f"model_dir {path!r} cannot be created: {existing!r} is a file, so no folder can "
            f"be made inside it. Pass a path through folders only (e.g. {existing + '_model'!r}), "
            "or move the file away.", field="model_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "written to" if existing == os.path.abspath(path) else "created"
        raise ConfigError(
            f"model_dir {path!r} cannot be {verb}: no permission to write in {existing!r}. "
            "Pass a folder you can write to (under your home folder, or a temp dir).",
            field="model_dir")


class Estimator(_TranslatingEstimator):
    """A ``tf.estimator.Estimator`` whose ``model_fn`` headkit writes.

    ``train``, ``evaluate`` and ``predict`` are the Estimator's own.
    ``evaluate()`` reports ``loss`` (the weighted total) and
    ``"<head>/<metric>"`` for every trained head, ``"<head>/loss"`` included;
    ``predict()`` yields ``"<head>/<key>"`` tensors. ``export()`` writes a
    verified SavedModel with every head's signatures.

    Args:
        body: a function returning a fresh ``tf.keras.Model`` (called once per
            graph), or a functional / Sequential Keras model (cloned per
            graph; its current weights are not used). The model maps the
            features dict to ``{head name: tensor}``.
        heads: a ``HeadSet``, or a list of ``Head``.
        optimizer: a name (``adam``, ``sgd``, ``adagrad``, ``rmsprop``,
            ``ftrl``), a ``tf.compat.v1.train.Optimizer``, a Keras optimizer,
            or a zero-argument factory. Every kind advances ``global_step``.
        learning_rate: with an optimizer name only; defaults to the name's
            entry in ``headkit.estimator.optimizers.OPTIMIZERS``.
        model_dir: as for ``tf.estimator.Estimator``.
        config: a ``tf.estimator.RunConfig``, or a dict of its arguments. In
            the dict, ``train_distribute`` may name a strategy for a
            ``TF_CONFIG`` cluster: ``"parameter_server"`` or
            ``"multi_worker_mirrored"`` (built on the tasks that train, after
            TF_CONFIG is checked; ignored when training alone). See
            docs/distributed.md.
        steps_per_run: training steps per ``session.run``, in a
            ``tf.while_loop`` over the input (TPUEstimator's
            ``iterations_per_loop``): fewer round trips between Python and
            the graph. ``global_step`` advances by that much per run;
            checkpoints, summaries, evaluations and early stopping happen at
            the first run boundary at or past their step; ``max_steps`` is met
            exactly; a NaN loss names its exact step. Needs a Dataset input,
            and one process (refused under a ``TF_CONFIG`` cluster).
        jit_compile: compile each training step (the body's forward and
            backward pass, the loss and the update) with XLA: fewer, fused
            kernels. The checks stay: labels and weight columns are checked
            before the compiled step, the loss after it, and a batch whose
            loss is not finite changes no variable. The body must take
            numbers only (string features become ids in the input_fn) and
            use ops XLA can compile; it is refused with the ops it cannot.
            One process only, like ``steps_per_run``. Best with
            ``steps_per_run > 1``.
        warm_start_from: the path of a model_dir, a checkpoint or a headkit
            export (of either backend) whose body weights start a new
            model_dir, matched by layer structure: the shared body must match
            and is restored whole (batch-norm statistics included); a head's
            own layers are restored when it exists in both with the same
            shapes, else start fresh; learned loss weights
            (``loss_weighting``) always start fresh. The report is
            ``warm_start_report``.
            Ignored when ``model_dir`` already holds a checkpoint (it resumes).
        head_map: ``{"<new head>": "<old head>"}``: a renamed head takes the
            old head's layers (a renamed head is otherwise new).
        passthrough: feature names copied unchanged into ``predict()``'s
            output and every predict signature of an export, e.g.
            ``("example_id",)``; or a dict of name -> ``tf.TensorSpec``
            (batch dimension first) declaring a feature that is not a body
            Input (by default its dtype and shape come from the training data).

    Raises:
        ConfigError: a malformed ``TF_CONFIG`` (naming its field), a
            strategy that cannot train an Estimator on that cluster, or
            ``steps_per_run > 1`` or ``jit_compile`` on a cluster.

    Example:
        >>> import headkit as hk
        >>> def build_body():
        ...     x = tf.keras.Input((4,), name="x")
        ...     h = tf.keras.layers.Dense(8, activation="relu")(x)
        ...     return tf.keras.Model({"x": x}, {"kind": tf.keras.layers.Dense(3)(h),
        ...                                      "size": tf.keras.layers.Dense(1)(h)})
        >>> heads = hk.HeadSet([
        ...     hk.Head("kind", hk.Classification(3), metrics=("accuracy",), is_default=True),
        ...     hk.Head("size", hk.Regression(), metrics=("rmse",), weight=0.5)])
        >>> estimator = hk.Estimator(build_body, heads, optimizer="adam")
        >>> fast = hk.Estimator(build_body, heads, steps_per_run=32, jit_compile=True)
        >>> warm = hk.Estimator(build_body, heads, model_dir="runs/b",
        ...                     warm_start_from="runs/a")  # doctest: +SKIP
        >>> print(warm.warm_start_report)  # doctest: +SKIP
        Warm start from model_dir 'runs/a': restored 3 weighted layer(s), skipped 0.
        ...
    """

    def __init__(
        self,
        body: Body,
        heads: Union[HeadSet, Iterable[Head]],
        optimizer: Any = "adam",
        learning_rate: Optional[float] = None,
        model_dir: Optional[str] = None,
        config: Optional[tf.estimator.RunConfig] = None,
        warm_start_from: Any = None,
        steps_per_run: int = 1,
        head_map: Optional[Mapping[str, str]] = None,
        passthrough: Any = None,
        jit_compile: bool = False,
    ) -> None:
        jit_compile = as_bool(jit_compile)
        if not isinstance(jit_compile, bool):
            raise ConfigTypeError(
                f"jit_compile must be True or False (got {jit_compile!r}).", field="jit_compile")
        self.jit_compile = jit_compile
        steps_per_run = as_int(steps_per_run)
        if isinstance(steps_per_run, bool) or not isinstance(steps_per_run, int) or (
                steps_per_run < 1):
            raise ConfigError(f"steps_per_run must be an int >= 1 (got {steps_per_run!r}).",
                              field="steps_per_run")
        self.steps_per_run = steps_per_run
        self._last_step: Optional[int] = None
        if not isinstance(heads, HeadSet):
            if isinstance(heads, (str, bytes)) or not hasattr(heads, "__iter__"):
                raise ConfigTypeError(
                    f"heads must be an hk.HeadSet or a list of hk.Head (got {heads!r}).",
                    field="heads")
            heads = HeadSet(heads)
        self._body = check_body(body)
        self._scratch: Optional[Tuple[tf.Graph, tf.keras.Model]] = None
        self._record = None
        self._cluster = distributed.Cluster.from_environment()
        config, self._cluster_mode = _run_config(config, self._cluster)
        _check_model_dir_path(model_dir if model_dir is not None
                              else getattr(config, "model_dir", None))
        if self._cluster is not None:
            distributed.check_model_dir(model_dir if model_dir is not None
                                        else getattr(config, "model_dir", None), self._cluster)
        if model_dir is not None and os.path.isdir(model_dir) and os.listdir(model_dir):
            # A model_dir that holds a model: its normalisation statistics, and refuse
            # other heads or another body now.
            heads = recorded_heads(model_dir, heads)
            graph, model = self._scratch_body()
            with graph.as_default():
                self._record = check_model_dir(model_dir, heads, self._body, model=model)
        self._heads = heads
        if self.jit_compile:  # a body XLA cannot take is refused now, not when training starts
            graph, model = self._scratch_body()
            with graph.as_default():
                check_compilable(model)
        optimizer_factory = resolve_optimizer(optimizer, learning_rate)
        source, head_map = check_warm_start(warm_start_from, head_map, model_dir)
        if source is not None and model_dir and tf.train.latest_checkpoint(model_dir):
            logger.info("headkit: %s holds a checkpoint, so training resumes from it; "
                        "warm_start_from=%r is not read.", model_dir, source)
            source = None
        self.warm_start_report: Optional[WeightMatch] = None
        if source is not None or passthrough is not None:
            self._passthrough, target = self._inspect_body(passthrough, source is not None)
        else:
            self._passthrough, target = Passthrough(), None
        if self._passthrough and model_dir is not None and os.path.isdir(model_dir):
            self._passthrough.restore((read_record(model_dir) or {}).get("passthrough"))
        if source is not None:
            self.warm_start_report = warm_start_match(
                read_source(source, self._body, heads), target, head_map)
        super().__init__(
            model_fn=make_model_fn(
                body, heads, optimizer_factory, steps_per_run, lambda: self._last_step,
                warm_start=self.warm_start_report and self.warm_start_report.assignments,
                passthrough=self._passthrough, jit_compile=self.jit_compile),
            model_dir=model_dir,
            config=config,
        )
        if self.config.cluster_spec or self.config.train_distribute:
            where = (f"TF_CONFIG makes this process the {self._cluster.task} of a cluster"
                     if self._cluster is not None else "config.train_distribute sets a "
                     "distribution strategy")
            if steps_per_run > 1:
                raise ConfigError(
                    f"steps_per_run={steps_per_run} runs several steps in one process's graph, "
                    f"and {where}. Use steps_per_run=1 there (docs/distributed.md), or train in "
                    "one process without a strategy.", field="steps_per_run")
            if self.jit_compile:
                raise ConfigError(
                    f"jit_compile=True compiles the step for one process's devices, and {where}. "
                    "Use jit_compile=False there (docs/distributed.md), or train in one process "
                    "without a strategy.", field="jit_compile")

    def _scratch_body(self) -> Tuple[tf.Graph, tf.keras.Model]:
        """The body built once, in a graph of its own, and that graph.

        For what needs the body's structure only (the model_dir record, the
        export's input specs and weight layout, pass-through and warm-start
        checks): building a Keras body costs as much as the rest of an export.

        Example:
            >>> graph, model = estimator._scratch_body()  # doctest: +SKIP
        """
        if self._scratch is None:
            with tf.Graph().as_default() as graph:
                self._scratch = graph, instantiate_body(self._body)
        return self._scratch

    def _inspect_body(self, passthrough: Any, structure: bool):
        """The Passthrough, checked against the body, and the body's structure (scratch graph)."""
        graph, model = self._scratch_body()
        with graph.as_default():
            checked = Passthrough.of(passthrough, self._heads, model_input_specs(model))
            if checked:
                keys = prediction_keys(self._heads, model)
                if keys is not None:
                    checked.check_outputs(keys)
            target = body_structure(model, self._heads, with_values=False) if structure else None
        return checked, target

    @property
    def passthrough(self) -> Passthrough:
        """The pass-through features, with each one's dtype and shape once known."""
        return self._passthrough

    def passthrough_specs(self, where: str = "export") -> Dict[str, tf.TensorSpec]:
        """Each pass-through feature's ``tf.TensorSpec`` (a ConfigError while one is unknown)."""
        if any(spec is None for spec in self._passthrough.specs.values()):
            self._passthrough.restore((read_record(self.model_dir) or {}).get("passthrough"))
        return self._passthrough.required(where)

    @property
    def heads(self) -> HeadSet:
        """The HeadSet this Estimator trains and exports."""
        return self._heads

    @property
    def body(self) -> Body:
        """The body as given: a builder function or a Keras model."""
        return self._body

    @property
    def cluster(self) -> Optional[distributed.Cluster]:
        """This task's place in the ``TF_CONFIG`` cluster, or None when training alone."""
        return self._cluster

    @property
    def cluster_mode(self) -> Optional[str]:
        """``"between_graph"``, ``"parameter_server"``, ``"multi_worker_mirrored"``, or None."""
        return self._cluster_mode

    @property
    def is_chief(self) -> bool:
        """False on a task of a ``TF_CONFIG`` cluster other than the chief."""
        return self._cluster is None or self._cluster.task_type == "chief"

    @property
    def owns_training_state(self) -> bool:
        """Whether this task evaluates and writes the training state and the exports:
        the evaluator of a cluster, else its chief; always when training alone."""
        return self._cluster is None or self._cluster.is_owner

    def global_step(self) -> int:
        """The global step of the newest checkpoint; 0 before any training.

        Example:
            >>> estimator.global_step()  # doctest: +SKIP
            300
        """
        checkpoint = self.latest_checkpoint()
        if checkpoint is None:
            return 0
        return int(tf.train.load_variable(checkpoint, tf.compat.v1.GraphKeys.GLOBAL_STEP))

    def train_and_evaluate_loop(self, plan: Any, monitor: Any) -> None:
        """The native loop ``hk.train_and_evaluate`` runs (see ``headkit.estimator.loop``)."""
        estimator_loop(self, plan, monitor)

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

        The export is built in ``export_dir_base/temp-<stamp>``, reloaded and
        checked against the declared signatures (``hk.serving``'s table and
        TensorFlow Serving's rules), and only then renamed to
        ``export_dir_base/<stamp>``: an export never half-exists. On any
        missing or wrong signature the temp directory is removed and
        ``hk.ExportError`` lists each problem.

        Args:
            export_dir_base: the folder that receives the timestamped export.
            feature_spec: ``{name: tf.io.FixedLenFeature | VarLenFeature}``;
                by default read from the body's Keras Inputs.
            checkpoint_path: the checkpoint to export; default the latest.
            extra_manifest: more JSON-ready entries for the manifest.
            heads: export these heads only (their signatures, ``predict`` with
                their tensors); default every head. The manifest records the
                subset (``model_heads`` lists every head of the model).
            default: the head behind ``serving_default``; required when the
                HeadSet's default head is not among ``heads``.

        Example:
            >>> export_dir = estimator.export("exports/penguins")  # doctest: +SKIP
            >>> estimator.export("exports/species_sex", heads=["species", "sex"],
            ...                  default="species")  # doctest: +SKIP
        """
        return export_estimator(self, export_dir_base, feature_spec=feature_spec,
                                checkpoint_path=checkpoint_path, extra_manifest=extra_manifest,
                                heads=heads, default=default)


def _run_config(config: Any, cluster: Optional[distributed.Cluster]):
    """The RunConfig for this task, and the cluster mode (None when training alone)."""
    strategy = getattr(config, "train_distribute", None)
    if isinstance(config, Mapping):
        options = dict(config)
        strategy = options.get("train_distribute")
        if isinstance(strategy, str):
            if cluster is not None:
                distributed.cluster_mode(cluster, strategy)  # checks the name and cluster first
            options["train_distribute"] = (None if cluster is None
                                           else distributed.make_strategy(strategy, cluster))
        try:
            config = tf.estimator.RunConfig(**options)
        except TypeError as error:
            raise ConfigTypeError(f"config: {error}. Pass tf.estimator.RunConfig's arguments "
                                  "(save_checkpoints_steps=..., tf_random_seed=...).",
                                  field="config") from None
    elif config is not None and not isinstance(config, tf.estimator.RunConfig):
        raise ConfigTypeError(f"config must be a tf.estimator.RunConfig or a dict of its "
                              f"arguments (got {config!r}).", field="config")
    if cluster is None:
        return config, None
    mode = distributed.cluster_mode(cluster, strategy)
    return distributed.role_config(config or tf.estimator.RunConfig(), cluster), mode
