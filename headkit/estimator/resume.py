"""Resumable, repeatable training: the input position saved with the weights, and seeding.

A run killed at any moment and started again with the same command must end
with the same weights as a run never interrupted. Three things make it so:

* the start-up checkpoint guard (:mod:`headkit.checkpoints`);
* the training input's position is saved *in the same checkpoint* as the
  weights: the Dataset an input_fn returns is read through a one-shot
  iterator registered in ``SAVEABLE_OBJECTS``, which the Estimator's default
  Saver includes. (``tf.data.experimental.CheckpointInputPipelineHook``
  writes separate files whose step drifts from the model's.) A one-shot
  iterator has no initializer, so the Estimator's restore is not undone by
  a later ``local_init_op``;
* with ``RunConfig(tf_random_seed=...)`` set, Keras is seeded as well as
  TensorFlow each time a graph is built: Keras initializers without a seed
  draw one from Python's ``random``, which TensorFlow's seed does not reach.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Any, Iterator, Optional

import numpy as np
import tensorflow as tf

from headkit.estimator import checkpoints

__all__ = ["ResumableEstimator", "keras_seeded", "INPUT_SCOPE"]

#: The name scope of the saved input iterator; its checkpoint key starts with it.
INPUT_SCOPE = "headkit_input"
# Dataset ops whose state lives in Python, which TensorFlow cannot serialize.
_UNSAVEABLE_OPS = {"GeneratorDataset", "PyFunc", "PyFuncStateless", "EagerPyFunc"}

_log = logging.getLogger("headkit")
_warned = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        _log.warning(message)


class _SeedGenerator(random.Random):
    """Keras calls ``randint(1, 1e9)``; float bounds are deprecated in ``random``."""

    def randint(self, a: Any, b: Any) -> int:
        return super().randint(int(a), int(b))


def _keras_seed_holder() -> Any:
    try:  # Keras 2.13+ keeps its optional seed generator here (set_random_seed sets it)
        from keras.src import backend
    except ImportError:  # pragma: no cover - older layouts
        from keras import backend
    return getattr(backend, "_SEED_GENERATOR", None)


@contextlib.contextmanager
def keras_seeded(seed: Optional[int]) -> Iterator[None]:
    """Seed Python, NumPy and Keras' seed generator for one graph, then restore them.

    Within the block, layers built without an explicit seed get the same
    initial values in every process; outside it, the caller's random state
    is left as it was. ``seed=None`` does nothing.

    Example:
        >>> with keras_seeded(7):
        ...     first = random.random()
        >>> with keras_seeded(7):
        ...     first == random.random()
        True
    """
    if seed is None:
        yield
        return
    holder = _keras_seed_holder()
    saved_python, saved_numpy = random.getstate(), np.random.get_state()
    saved_generator = getattr(holder, "generator", None)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if holder is not None:
        holder.generator = _SeedGenerator(seed)
    try:
        yield
    finally:
        random.setstate(saved_python)
        np.random.set_state(saved_numpy)
        if holder is not None:
            holder.generator = saved_generator


def _unsaveable_ops(graph: tf.Graph) -> set:
    graph_def = graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    ops |= {node.op for function in graph_def.library.function for node in function.node_def}
    return ops & _UNSAVEABLE_OPS


def _checkpoint_has_position(model_dir: Optional[str]) -> Optional[bool]:
    """Whether the checkpoint to resume from holds an input position (None: no checkpoint)."""
    latest = tf.train.latest_checkpoint(model_dir) if model_dir else None
    if latest is None:
        return None
    names = tf.train.load_checkpoint(latest).get_variable_to_dtype_map()
    return any(name.startswith(INPUT_SCOPE + "/") for name in names)


def saved_position_input(result: Any, model_dir: Optional[str]) -> Any:
    """Read a training Dataset through an iterator saved in the weights' checkpoint.

    ``result`` is what the input_fn returned. A Dataset becomes
    ``iterator.get_next()`` with the iterator registered for saving; other
    results (tensors) pass through with a one-time warning, as does a
    Dataset built on Python code (``Dataset.from_generator``,
    ``tf.py_function``), which TensorFlow cannot checkpoint: after a restart
    such input starts from its beginning.

    Example:
        >>> features, labels = saved_position_input(dataset, "runs/a")  # doctest: +SKIP
    """
    if not isinstance(result, tf.data.Dataset):
        _warn_once("tensors", (
            "headkit: the input_fn returned tensors, not a tf.data.Dataset, so its position "
            "cannot be saved: after a restart the input starts from its beginning. Return a "
            "Dataset to resume exactly."))
        return result
    python_ops = _unsaveable_ops(tf.compat.v1.get_default_graph())
    if python_ops:
        _warn_once("python", (
            f"headkit: the input Dataset runs Python code ({', '.join(sorted(python_ops))}: "
            "Dataset.from_generator or tf.py_function), which TensorFlow cannot checkpoint: "
            "after a restart the input starts from its beginning. Build it from tensors or "
            "files (e.g. hk.input_fn) to resume exactly."))
        return result
    has_position = _checkpoint_has_position(model_dir)
    # A prefetch buffer tf.data injects by itself would be saved with its elements, and
    # restored into a fixed (or changed) dataset it would replay stale batches first.
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    result = result.with_options(options)
    with tf.name_scope(INPUT_SCOPE):
        iterator = tf.compat.v1.data.make_one_shot_iterator(result)
    if has_position is False:
        # Restoring would fail on the missing key; this run keeps not saving it.
        _warn_once("old", (
            f"headkit: the checkpoint in {model_dir!r} holds no input position (written "
            "without it); the input starts from its beginning and this run does not save "
            "its position either."))
    else:
        saveable = tf.data.experimental.make_saveable_from_iterator(iterator)
        tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.SAVEABLE_OBJECTS, saveable)
    return iterator.get_next()


class ResumableEstimator(tf.estimator.Estimator):
    """A ``tf.estimator.Estimator`` that resumes exactly after a kill.

    ``train()`` first runs :func:`headkit.checkpoints.guard` on ``model_dir``;
    the training input's position is saved in every checkpoint; with
    ``RunConfig(tf_random_seed=...)`` Keras is seeded too, so a killed and
    resumed run ends with the same weights as an uninterrupted one.

    tf.estimator refuses subclasses that override its methods, but it checks
    only the instance's own class; these overrides keep the Estimator's
    behaviour and add the above, so they sit in this base class of
    ``hk.Estimator``.

    Example:
        >>> class MyEstimator(ResumableEstimator): ...  # doctest: +SKIP
    """

    def train(self, input_fn, hooks=None, steps=None, max_steps=None, saving_listeners=None):
        """``tf.estimator.Estimator.train``, after the checkpoint guard.

        Raises:
            headkit.checkpoints.CheckpointError: ``model_dir`` holds
                checkpoints but none is valid.

        Example:
            >>> estimator.train(input_fn, max_steps=1000)  # doctest: +SKIP
        """
        checkpoints.guard(self.model_dir)
        return super().train(input_fn, hooks=hooks, steps=steps, max_steps=max_steps,
                             saving_listeners=saving_listeners)

    def _call_input_fn(self, input_fn, mode, input_context=None):
        result = super()._call_input_fn(input_fn, mode, input_context)
        # Distribution strategies need the Dataset itself; they keep TF's behaviour.
        if mode != tf.estimator.ModeKeys.TRAIN or self._train_distribution is not None:
            return result
        return saved_position_input(result, self.model_dir)

    def _call_model_fn(self, features, labels, mode, config):
        with keras_seeded(config.tf_random_seed if config is not None else None):
            return super()._call_model_fn(features, labels, mode, config)
