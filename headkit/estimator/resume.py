"""Resumable, repeatable training: the input position saved with the weights, and seeding.

A run killed at any moment and started again with the same command must end
with the same weights as a run never interrupted. Three things make it so:

* the start-up checkpoint guard (:mod:`headkit.estimator.checkpoints`);
* the training input's *position* is saved in the same checkpoint as the
  weights: a counter of the batches read (``headkit_input/position``), and
  the fingerprint of the data (``headkit_input/fingerprint``) when the
  input comes from ``hk.input_fn``. A restarted run skips that many
  batches of the Dataset its input_fn returns now. The data itself is never
  saved: TensorFlow's iterator checkpoints serialize the whole dataset
  graph, data included, and a restored iterator replays the old data even
  when the input_fn now returns new data. When the fingerprint says the
  data changed, the input starts from its beginning, with a warning;
* with ``RunConfig(tf_random_seed=...)`` set, Keras is seeded as well as
  TensorFlow each time a graph is built: Keras initializers without a seed
  draw one from Python's ``random``, which TensorFlow's seed does not reach.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Any, Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf

from headkit.errors import ConfigError
from headkit.estimator import checkpoints

__all__ = ["ResumableEstimator", "keras_seeded", "LoopInput", "INPUT_SCOPE"]

#: The scope of the saved input position; its checkpoint keys start with it.
INPUT_SCOPE = "headkit_input"
POSITION = f"{INPUT_SCOPE}/position"
FINGERPRINT = f"{INPUT_SCOPE}/fingerprint"
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


def _saved_position(model_dir: Optional[str]) -> Tuple[Optional[int], str]:
    """The input position and data fingerprint in the checkpoint training resumes from.

    ``(None, "")`` when there is no checkpoint, ``(-1, "")`` when the
    checkpoint holds no position (written by an older headkit).
    """
    latest = tf.train.latest_checkpoint(model_dir) if model_dir else None
    if latest is None:
        return None, ""
    reader = tf.train.load_checkpoint(latest)
    if not reader.has_tensor(POSITION):
        return -1, ""
    fingerprint = reader.get_tensor(FINGERPRINT) if reader.has_tensor(FINGERPRINT) else b""
    return int(reader.get_tensor(POSITION)), fingerprint.decode()


class LoopInput:
    """The training input of ``steps_per_run > 1``: each :meth:`next` call reads one batch.

    The Estimator hands it to the model_fn as the features (labels None); the
    model_fn calls ``next()`` inside the ``tf.while_loop`` of one run, so each
    iteration reads, and counts, its own batch.
    """

    def __init__(self, next_batch: Any) -> None:
        self.next = next_batch


def saved_position_input(result: Any, model_dir: Optional[str],
                         fingerprint: Optional[str] = None, looped: bool = False) -> Any:
    """Read a training Dataset from the position saved in the checkpoint, and count what is read.

    ``result`` is what the input_fn returned. A Dataset is read through a
    one-shot iterator after skipping the batches the checkpoint says were
    read; each batch read adds one to ``headkit_input/position``, a variable
    saved with the weights. ``fingerprint`` names the data (``hk.input_fn``
    sets ``input_fn.headkit_fingerprint``): when the checkpoint was written on other
    data, the input starts
    from its beginning, with a warning. Tensors, and Datasets of Python code
    (``Dataset.from_generator``, ``tf.py_function``), pass through with a
    one-time warning: their position is not saved.

    With ``looped``, a :class:`LoopInput` is returned instead of one batch.

    Example:
        >>> features, labels = saved_position_input(dataset, "runs/a")  # doctest: +SKIP
    """
    if looped and not isinstance(result, tf.data.Dataset):
        raise ConfigError(
            "steps_per_run > 1 reads several batches per run, so the training input_fn must "
            f"return a tf.data.Dataset (got {type(result).__name__}). Return a Dataset (as "
            "hk.input_fn does), or use steps_per_run=1.", field="steps_per_run")
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
            "Dataset.from_generator or tf.py_function); its position is not saved: after a "
            "restart the input starts from its beginning. Build it from tensors or files "
            "(e.g. hk.input_fn) to resume exactly."))
        if looped:
            raise ConfigError(
                f"steps_per_run > 1 runs the input inside the graph's loop, and this Dataset "
                f"runs Python code ({', '.join(sorted(python_ops))}). Build the Dataset from "
                "tensors or files (e.g. hk.input_fn), or use steps_per_run=1.",
                field="steps_per_run")
        return result
    position, saved_fingerprint = _saved_position(model_dir)
    if position == -1:
        # Restoring would fail on the missing variable; this run keeps not saving it.
        _warn_once("old", (
            f"headkit: the checkpoint in {model_dir!r} holds no input position (written "
            "by an older headkit); the input starts from its beginning and this run does not "
            "save its position either."))
        return _plain(result, looped)
    start = position or 0
    if start and fingerprint and saved_fingerprint and fingerprint != saved_fingerprint:
        _log.warning(
            "headkit: the training data changed since the checkpoint in %r (fingerprint %s, "
            "now %s): the input starts from its beginning instead of batch %d.",
            model_dir, saved_fingerprint, fingerprint, start)
        start = 0
    with tf.compat.v1.variable_scope(INPUT_SCOPE, reuse=tf.compat.v1.AUTO_REUSE):
        counter = tf.compat.v1.get_variable(
            "position", shape=[], dtype=tf.int64, trainable=False,
            initializer=tf.compat.v1.zeros_initializer())
        named = tf.compat.v1.get_variable(
            "fingerprint", shape=[], dtype=tf.string, trainable=False,
            initializer=tf.compat.v1.constant_initializer(fingerprint or ""))
    # The saved position is the index of the batch read plus one, written with every
    # step: a restored counter (from a checkpoint on other data) is simply overwritten.
    stream = result.skip(start).enumerate(start) if start else result.enumerate()
    iterator = tf.compat.v1.data.make_one_shot_iterator(stream)

    def next_batch() -> Any:
        index, batch = iterator.get_next()
        with tf.control_dependencies(tf.nest.flatten(batch)):
            counted = tf.group(counter.assign(index + 1), named.assign(fingerprint or ""))
        with tf.control_dependencies([counted]):
            return tf.nest.map_structure(_identity, batch)

    return (LoopInput(next_batch), None) if looped else next_batch()


def _plain(dataset: tf.data.Dataset, looped: bool) -> Any:
    """Batches of a Dataset whose position is not saved."""
    iterator = tf.compat.v1.data.make_one_shot_iterator(dataset)
    return (LoopInput(iterator.get_next), None) if looped else iterator.get_next()


def _identity(tensor: Any) -> Any:
    if isinstance(tensor, tf.sparse.SparseTensor):
        return tf.sparse.SparseTensor(tensor.indices, tf.identity(tensor.values),
                                      tensor.dense_shape)
    return tf.identity(tensor)


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
        return saved_position_input(result, self.model_dir,
                                    getattr(input_fn, "headkit_fingerprint", None),
                                    looped=getattr(self, "steps_per_run", 1) > 1)

    def _call_model_fn(self, features, labels, mode, config):
        with keras_seeded(config.tf_random_seed if config is not None else None):
            return super()._call_model_fn(features, labels, mode, config)
