"""``hk.Estimator``: a ``tf.estimator.Estimator`` built from a Keras body and a HeadSet."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Union

import tensorflow as tf

from headkit import serving
from headkit.errors import translate_graph_errors
from headkit.heads import Head
from headkit.headset import HeadSet
from headkit.model_fn import Body, make_model_fn, resolve_optimizer
from headkit.resume import ResumableEstimator

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
        with translate_graph_errors():
            return super().train(input_fn, hooks=hooks, steps=steps, max_steps=max_steps,
                                 saving_listeners=saving_listeners)

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
            entry in ``headkit.model_fn.OPTIMIZERS``.
        model_dir, config, warm_start_from: as for ``tf.estimator.Estimator``.

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
            heads = HeadSet(heads)
        if not (callable(body) or isinstance(body, tf.keras.Model)):
            raise TypeError(
                f"body must be a function returning a tf.keras.Model, or a Keras model "
                f"(got {body!r})."
            )
        self._heads = heads
        self._body = body
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

    def export(
        self,
        export_dir_base: str,
        feature_spec: Optional[Mapping[str, Any]] = None,
        checkpoint_path: Optional[str] = None,
        extra_manifest: Optional[Mapping[str, Any]] = None,
    ) -> str:
        """Export a verified SavedModel with every head's signatures; return its path.

        See :func:`headkit.serving.export` for the layout and the checks.

        Example:
            >>> export_dir = estimator.export("exports/penguins")  # doctest: +SKIP
        """
        return serving.export(
            self,
            export_dir_base,
            feature_spec=feature_spec,
            checkpoint_path=checkpoint_path,
            extra_manifest=extra_manifest,
        )
