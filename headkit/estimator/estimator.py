"""``hk.Estimator``: a ``tf.estimator.Estimator`` built from a Keras body and a HeadSet.

It implements the backend protocol (``headkit.training.protocol.Backend``).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Optional, Union

import tensorflow as tf

from headkit.body import Body, check_body
from headkit.errors import ConfigTypeError, translate_graph_errors
from headkit.estimator import distributed
from headkit.estimator.export import export_estimator
from headkit.estimator.loop import estimator_loop
from headkit.estimator.model_fn import make_model_fn
from headkit.estimator.optimizers import resolve_optimizer
from headkit.estimator.resume import ResumableEstimator
from headkit.spec.head import Head
from headkit.spec.headset import HeadSet
from headkit.training.record import RECORD_FILE, check_model_dir, write_record

__all__ = ["Estimator"]


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
        with translate_graph_errors():
            return super().train(input_fn, hooks=hooks, steps=steps, max_steps=max_steps,
                                 saving_listeners=saving_listeners)

    def _write_record(self) -> None:
        """The chief writes the model_dir record once (checked when the Estimator was built)."""
        if self.is_chief and not os.path.exists(os.path.join(self.model_dir, RECORD_FILE)):
            if self._record is None:
                self._record = check_model_dir(self.model_dir, self.heads, self.body)
            write_record(self.model_dir, self._record)

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
        model_dir, warm_start_from: as for ``tf.estimator.Estimator``.
        config: a ``tf.estimator.RunConfig``, or a dict of its arguments. In
            the dict, ``train_distribute`` may name a strategy for a
            ``TF_CONFIG`` cluster: ``"parameter_server"`` or
            ``"multi_worker_mirrored"`` (built on the tasks that train, after
            TF_CONFIG is checked; ignored when training alone). See
            docs/distributed.md.

    Raises:
        ConfigError: a malformed ``TF_CONFIG`` (naming its field), or a
            strategy that cannot train an Estimator on that cluster.

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
    ) -> None:
        if not isinstance(heads, HeadSet):
            if isinstance(heads, (str, bytes)) or not hasattr(heads, "__iter__"):
                raise ConfigTypeError(
                    f"heads must be an hk.HeadSet or a list of hk.Head (got {heads!r}).",
                    field="heads")
            heads = HeadSet(heads)
        self._heads = heads
        self._body = check_body(body)
        self._record = None
        self._cluster = distributed.Cluster.from_environment()
        config, self._cluster_mode = _run_config(config, self._cluster)
        if model_dir is not None and os.path.isdir(model_dir) and os.listdir(model_dir):
            # A model_dir that holds a model: refuse other heads or another body now.
            self._record = check_model_dir(model_dir, heads, self._body)
        optimizer_factory = resolve_optimizer(optimizer, learning_rate)
        super().__init__(
            model_fn=make_model_fn(body, heads, optimizer_factory),
            model_dir=model_dir,
            config=config,
            warm_start_from=warm_start_from,
        )

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

        Example:
            >>> export_dir = estimator.export("exports/penguins")  # doctest: +SKIP
        """
        return export_estimator(self, export_dir_base, feature_spec=feature_spec,
                                checkpoint_path=checkpoint_path, extra_manifest=extra_manifest)


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
