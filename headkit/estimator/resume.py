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
import functools
import logging
import random
from typing import Any, Iterator, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.python.util import function_utils

from headkit.errors import ConfigError
from headkit.estimator import checkpoints, distributed

__all__ = ["ResumableEstimator", "keras_seeded", "LoopInput", "INPUT_SCOPE"]

#: The scope of the saved input position; its checkpoint keys start with it.
INPUT_SCOPE = "headkit_input"
POSITION = f"{INPUT_SCOPE}/position"
FINGERPRINT = f"{INPUT_SCOPE}/fingerprint"
# Under a strategy the batch index and the data fingerprint ride along as features.
POSITION_FEATURE = f"{INPUT_SCOPE}/batch_index"
FINGERPRINT_FEATURE = f"{INPUT_SCOPE}/batch_fingerprint"
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


def _slot_keys(slot: int, numeric: bool = False) -> Tuple[str, str]:
    """The checkpoint keys of one trainer's input position and data fingerprint.

    Trainer 0 (a process alone, or a cluster's chief) keeps the plain names.
    Under a strategy the fingerprint is a number (``fingerprint_id``): its
    variables are broadcast from the first replica, which strings cannot be.
    """
    suffix = f"_{slot}" if slot else ""
    return (f"{INPUT_SCOPE}/position{suffix}",
            f"{INPUT_SCOPE}/fingerprint{'_id' if numeric else ''}{suffix}")


def _fingerprint_id(fingerprint: Optional[str]) -> int:
    """A fingerprint as the int64 a strategy's variable holds (0 for none)."""
    return int(fingerprint[:15], 16) if fingerprint else 0


def _saved_position(model_dir: Optional[str], slot: int = 0, slots: int = 1,
                    numeric: bool = False) -> Tuple[Optional[int], str]:
    """The input position and data fingerprint of trainer ``slot`` in the checkpoint training
    resumes from.

    ``(None, "")`` when there is no checkpoint, ``(-1, "")`` when the
    checkpoint lacks a position variable of the ``slots`` trainers (written
    by an older headkit, by a cluster of another size, or under another
    strategy): creating it would make restoring fail.
    """
    latest = tf.train.latest_checkpoint(model_dir) if model_dir else None
    if latest is None:
        return None, ""
    reader = tf.train.load_checkpoint(latest)
    keys = [key for other in range(slots) for key in _slot_keys(other, numeric)]
    if not all(reader.has_tensor(key) for key in keys):
        return -1, ""
    position_key, fingerprint_key = _slot_keys(slot, numeric)
    fingerprint = reader.get_tensor(fingerprint_key)
    if numeric:
        fingerprint = format(int(fingerprint), "015x") if int(fingerprint) else ""
    else:
        fingerprint = fingerprint.decode()
    return int(reader.get_tensor(position_key)), fingerprint


def _start(model_dir: Optional[str], fingerprint: Optional[str], slot: int, slots: int,
           numeric: bool = False) -> int:
    """The batch to start reading from, or -1 when this run saves no position."""
    position, saved_fingerprint = _saved_position(model_dir, slot, slots, numeric)
    if numeric and fingerprint:
        fingerprint = fingerprint[:15]
    if position == -1:
        # Restoring would fail on the missing variable; this run keeps not saving it.
        _warn_once("old", (
            f"headkit: the checkpoint in {model_dir!r} holds no input position for each of "
            f"the {slots} trainer(s) (written by an older headkit, by a cluster of another "
            "size or under another strategy); the input starts from its beginning and this "
            "run does not save its position either."))
        return -1
    start = position or 0
    if start and fingerprint and saved_fingerprint and fingerprint != saved_fingerprint:
        _log.warning(
            "headkit: the training data changed since the checkpoint in %r (fingerprint %s, "
            "now %s): the input starts from its beginning instead of batch %d.",
            model_dir, saved_fingerprint, fingerprint, start)
        start = 0
    return start


def _position_variables(fingerprint: Optional[str], slot: int, slots: int,
                        numeric: bool = False) -> Tuple[tf.Variable, tf.Variable]:
    """Every trainer's position variables (every task's graph holds the same ones); this
    trainer's pair. ``numeric``: under a strategy, where only the first replica's
    value is kept."""
    options = ({"aggregation": tf.VariableAggregation.ONLY_FIRST_REPLICA} if numeric else {})
    dtype = tf.int64 if numeric else tf.string
    made = []
    with tf.compat.v1.variable_scope(INPUT_SCOPE, reuse=tf.compat.v1.AUTO_REUSE):
        for other in range(slots):
            position_key, fingerprint_key = (
                k.split("/", 1)[1] for k in _slot_keys(other, numeric))
            value = fingerprint if other == slot and not numeric else None
            made.append((
                tf.compat.v1.get_variable(
                    position_key, shape=[], dtype=tf.int64, trainable=False,
                    initializer=tf.compat.v1.zeros_initializer(), **options),
                tf.compat.v1.get_variable(
                    fingerprint_key, shape=[], dtype=dtype, trainable=False,
                    initializer=tf.compat.v1.constant_initializer(value or (
                        "" if dtype == tf.string else 0)), **options)))
    return made[slot]


class LoopInput:
    """The training input of ``steps_per_run > 1``: each :meth:`next` call reads one batch.

    The Estimator hands it to the model_fn as the features (labels None); the
    model_fn calls ``next()`` inside the ``tf.while_loop`` of one run, so each
    iteration reads, and counts, its own batch.
    """

    def __init__(self, next_batch: Any) -> None:
        self.next = next_batch


def saved_position_input(result: Any, model_dir: Optional[str],
                         fingerprint: Optional[str] = None, slot: int = 0,
                         slots: int = 1, start: Optional[int] = None,
                         started: bool = False, looped: bool = False) -> Any:
    """Read a training Dataset from the position saved in the checkpoint, and count what is read.

    ``result`` is what the input_fn returned. A Dataset is read through a
    one-shot iterator after skipping the batches the checkpoint says were
    read (``started``: the input_fn began there itself); each batch read adds
    one to ``headkit_input/position``, a variable saved with the weights.
    ``fingerprint`` names the data (``hk.input_fn`` sets
    ``input_fn.headkit_fingerprint``): when the checkpoint was written on
    other data, the input starts from its beginning, with a warning.
    Tensors, and Datasets of Python code (``Dataset.from_generator``,
    ``tf.py_function``), pass through with a one-time warning: their
    position is not saved. On a cluster without a strategy each of the
    ``slots`` trainers counts in its own variable (trainer ``slot``'s is
    ``headkit_input/position_<slot>``).

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
    if start is None:
        start = _start(model_dir, fingerprint, slot, slots)
    if start == -1:
        return _plain(result, looped)
    counter, named = _position_variables(fingerprint, slot, slots)
    # The saved position is the index of the batch read plus one, written with every
    # step: a restored counter (from a checkpoint on other data) is simply overwritten.
    iterator = tf.compat.v1.data.make_one_shot_iterator(_from(result, start, started))

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


def _from(dataset: Any, start: int, started: bool) -> Any:
    """``(index, batch)`` from batch ``start`` on (skipped, unless the input began there)."""
    if started or not start:
        return dataset.enumerate(start)
    return dataset.skip(start).enumerate(start)


def positioned_dataset(dataset: Any, model_dir: Optional[str], fingerprint: Optional[str],
                       slot: int, slots: int, start: Optional[int] = None,
                       started: bool = False) -> Any:
    """Under a distribution strategy: the Dataset from its saved position, each batch
    carrying its index and fingerprint as features (:func:`count_position` takes them out).

    A strategy reads the Dataset itself, so the position cannot be counted
    beside the iterator; it is counted in the model_fn instead.

    Example:
        >>> dataset = positioned_dataset(dataset, "runs/a", "ab12", 0, 1)  # doctest: +SKIP
    """
    if not isinstance(dataset, tf.data.Dataset) or not isinstance(
            tf.data.experimental.get_structure(dataset), tuple) or not isinstance(
            tf.data.experimental.get_structure(dataset)[0], dict):
        _warn_once("strategy", (
            "headkit: under a distribution strategy the input position is saved for input_fns "
            "returning a Dataset of (features dict, labels), as hk.input_fn's; this one is "
            "read from its beginning after a restart."))
        return dataset
    if start is None:
        start = _start(model_dir, fingerprint, slot, slots, numeric=True)
    if start == -1:
        return dataset
    stream = _from(dataset, start, started)
    number = _fingerprint_id(fingerprint)

    def attach(index, batch):
        features, labels = batch
        return dict(features, **{POSITION_FEATURE: index,
                                 FINGERPRINT_FEATURE: tf.constant(number, tf.int64)}), labels

    return stream.map(attach)


def count_position(features: Mapping[str, Any], slot: int, slots: int) -> Tuple[dict, Any]:
    """Take the position features out of ``features``; return them and the op that saves them.

    In replica context the variables keep the first replica's value: under
    ``MultiWorkerMirroredStrategy`` every worker has read as many batches of
    its shard as the chief (one per synchronous step), so one position serves all.

    Example:
        >>> features, counted = count_position(features, 0, 1)  # doctest: +SKIP
    """
    features = dict(features)
    index, fingerprint = features.pop(POSITION_FEATURE), features.pop(FINGERPRINT_FEATURE)
    counter, named = _position_variables(None, slot, slots, numeric=True)
    return features, tf.group(counter.assign(index + 1), named.assign(fingerprint))


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

    _cluster = None  # hk.Estimator sets its TF_CONFIG cluster and mode
    _cluster_mode = None

    def train(self, input_fn, hooks=None, steps=None, max_steps=None, saving_listeners=None):
        """``tf.estimator.Estimator.train``, after the checkpoint guard (on the chief alone).

        Raises:
            headkit.checkpoints.CheckpointError: ``model_dir`` holds
                checkpoints but none is valid.

        Example:
            >>> estimator.train(input_fn, max_steps=1000)  # doctest: +SKIP
        """
        if self._cluster is None or self._cluster.task_type == "chief":
            checkpoints.guard(self.model_dir)  # it removes save leftovers: the chief's own
        return super().train(input_fn, hooks=hooks, steps=steps, max_steps=max_steps,
                             saving_listeners=saving_listeners)

    def _position_slot(self) -> Tuple[int, int]:
        """(this trainer's position slot, how many slots): one per asynchronous trainer."""
        cluster = self._cluster
        if cluster is None or self._cluster_mode == distributed.MULTI_WORKER_MIRRORED:
            return 0, 1
        return cluster.trainer_index or 0, len(cluster.trainers)

    def _call_input_fn(self, input_fn, mode, input_context=None):
        cluster, train = self._cluster, mode == tf.estimator.ModeKeys.TRAIN
        strategy = self._train_distribution is not None
        if (train and input_context is None and cluster is not None
                and cluster.trainer_index is not None and not strategy):
            # No strategy: each trainer reads its shard, by its place in TF_CONFIG.
            input_context = tf.distribute.InputContext(len(cluster.trainers),
                                                       cluster.trainer_index)
        if not train or (strategy and cluster is None):
            # Evaluation reads everything; a strategy in one process keeps TF's behaviour.
            return super()._call_input_fn(input_fn, mode, input_context)
        fingerprint = getattr(input_fn, "headkit_fingerprint", None)
        if fingerprint and input_context is not None and input_context.num_input_pipelines > 1:
            fingerprint += f"/{input_context.num_input_pipelines} shards"
        slot, slots = self._position_slot()
        start = _start(self.model_dir, fingerprint, slot, slots, numeric=strategy)
        started = start > 0 and "start_batch" in function_utils.fn_args(input_fn)
        if started:  # hk.input_fn begins at the saved position itself, skipping nothing
            input_fn = functools.partial(input_fn, start_batch=start)
        result = super()._call_input_fn(input_fn, mode, input_context)
        if strategy:
            return positioned_dataset(result, self.model_dir, fingerprint, slot, slots,
                                      start, started)
        return saved_position_input(result, self.model_dir, fingerprint, slot, slots,
                                    start, started,
                                    looped=getattr(self, "steps_per_run", 1) > 1)

    def _call_model_fn(self, features, labels, mode, config):
        counted = None
        if (mode == tf.estimator.ModeKeys.TRAIN and isinstance(features, Mapping)
                and POSITION_FEATURE in features):
            features, counted = count_position(features, *self._position_slot())
        with keras_seeded(config.tf_random_seed if config is not None else None):
            spec = super()._call_model_fn(features, labels, mode, config)
        if mode != tf.estimator.ModeKeys.TRAIN:
            return spec
        if self._cluster_mode == distributed.MULTI_WORKER_MIRRORED:
            distributed.add_stop_signal()
        if counted is not None:
            spec = spec._replace(train_op=tf.group(spec.train_op, counted))
        return spec
