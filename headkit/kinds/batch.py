"""One batch through the heads: labels matched to heads, example weights, per-head losses.

Backend-neutral (TensorFlow, no Estimator): the Estimator's model_fn and the
Keras backend's train step both compute a batch's losses with
:func:`head_terms`, so the numbers are the same on both.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import attrs
import tensorflow as tf

from headkit import kinds
from headkit.errors import (
    ConfigError,
    ConfigTypeError,
    DataError,
    HeadkitError,
    head_assert_data,
    non_finite_assert_data,
)
from headkit.kinds import losses
from headkit.spec.head import Head
from headkit.spec.headset import HeadSet

__all__ = ["HeadTerms", "labels_by_head", "example_weights", "prepare_batch", "prepared_terms",
           "head_terms", "total_loss", "finite_guard", "assert_finite", "finite_flags",
           "commit_if_finite"]


@attrs.frozen
class HeadTerms:
    """One trained head's share of a batch.

    Attributes:
        labels: loss-ready labels (the kind's ``prepare_labels``).
        weights: per-example weights of the metrics (labelled-row mask x
            ``weight_column``), or None.
        example_losses: the loss of each example, ``[batch]``, times the weight
            of its label's class when the head has a ``class_weight``.
        loss: the head's loss: the mean of ``example_losses`` weighted by
            ``weights``, ``sum(w * loss) / sum(w)`` (0 when no row has weight).
    """

    labels: Any
    weights: Optional[Any]
    example_losses: Any
    loss: Any

    @property
    def labelled(self) -> Any:
        """Whether any row of the batch weighs in this head's loss (a bool tensor; True
        without weights)."""
        if self.weights is None:
            return tf.constant(True)
        return tf.reduce_sum(self.weights) > 0


def labels_by_head(heads: HeadSet, labels: Any) -> Dict[str, Any]:
    """The labels dict, checked against the trained heads' label keys (a lone tensor for one).

    Example:
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("y", spec.Regression())])
        >>> list(labels_by_head(heads, tf.zeros([2, 1])))
        ['y']
    """
    keys = heads.label_keys
    if not isinstance(labels, Mapping):
        if len(keys) == 1 and labels is not None:
            return {keys[0]: labels}
        raise DataError(
            f"labels: expected a dict with keys {list(keys)!r} (got {type(labels).__name__}). "
            "Return (features, {label_key: tensor, ...}) from the input_fn."
        )
    missing = [k for k in keys if k not in labels]
    extra = [k for k in labels if k not in keys]
    problems = []
    if missing:
        problems.append(f"missing {missing!r}: every trained head needs its labels")
    if extra:
        problems.append(f"{extra!r} would be ignored: remove them, or add a Head")
    if problems:
        raise DataError(
            f"labels: keys {sorted(labels)!r} do not match the trained heads' label keys "
            f"{list(keys)!r}; " + "; ".join(problems) + "."
        )
    return dict(labels)


def example_weights(head: Head, features: Any) -> Optional[tf.Tensor]:
    """The head's ``weight_column`` as float32 ``[batch]``, checked finite and >= 0 per batch.

    Example:
        >>> from headkit import spec
        >>> head = spec.Head("y", spec.Regression(), weight_column="w")
        >>> example_weights(head, {"w": tf.constant([[1.0], [2.0]])}).numpy().tolist()
        [1.0, 2.0]
    """
    column = head.weight_column
    if column is None:
        return None
    if not isinstance(features, Mapping) or column not in features:
        given = sorted(features) if isinstance(features, Mapping) else type(features).__name__
        raise DataError(
            f"Head {head.name!r}: weight_column {column!r} is not among the features "
            f"{given!r}. Add the column to the features the input_fn returns, or drop "
            "weight_column from the head."
        )
    weights = tf.reshape(tf.cast(features[column], tf.float32), [-1])
    valid = tf.logical_and(tf.math.is_finite(weights), weights >= 0.0)
    check = tf.debugging.Assert(
        tf.reduce_all(valid),
        head_assert_data(
            head.name, f"weight_column {column!r} must hold finite weights >= 0; got",
            # as strings: an Assert whose data is only strings and int32 needs no per-step cond
            tf.strings.as_string(tf.boolean_mask(weights, tf.logical_not(valid))[:10])),
        summarize=10,
    )
    with tf.control_dependencies([check]):
        return tf.identity(weights)


def _combine(mask: Optional[tf.Tensor], weights: Optional[tf.Tensor]) -> Optional[tf.Tensor]:
    if mask is None:
        return weights
    if weights is None:
        return mask
    return mask * weights


def _guarded_loss(head: Head) -> Callable[[Any, Any], Any]:
    """The head's custom loss; failing while the graph is built, it names the head and loss."""
    loss = head.loss
    label = getattr(loss, "__name__", None) or type(loss).__name__

    def called_as(labels: Any, outputs: Any) -> str:
        def describe(tensor: Any) -> str:
            dtype = getattr(getattr(tensor, "dtype", None), "name", type(tensor).__name__)
            return f"{getattr(tensor, 'shape', '?')} {dtype}"

        return (f"headkit calls it as loss(labels, outputs) with labels {describe(labels)} "
                f"and outputs {describe(outputs)}, and it must return one loss per example, "
                "shape [batch].")

    def guarded(labels: Any, outputs: Any) -> Any:
        try:
            values = loss(labels, outputs)
        except HeadkitError:
            raise
        except Exception as error:  # the user's code: say whose it is, and what it was given
            error_type = ConfigTypeError if isinstance(error, TypeError) else ConfigError
            text = " ".join(str(error).split())[:300]
            raise error_type(
                f"Head {head.name!r}: the loss {label} failed while the graph was built "
                f"({type(error).__name__}: {text}). {called_as(labels, outputs)}",
                field="loss",
            ) from error
        if values is None:
            raise ConfigError(
                f"Head {head.name!r}: the loss {label} returned None. "
                f"{called_as(labels, outputs)} Add the missing return.", field="loss")
        rank = getattr(getattr(values, "shape", None), "rank", None)
        if rank == 0:
            raise ConfigError(
                f"Head {head.name!r}: the loss {label} returned one number for the whole batch "
                f"(shape ()). {called_as(labels, outputs)} Reduce only the axes after the "
                "batch (e.g. tf.reduce_mean(..., axis=-1)), never the batch itself: headkit "
                "masks and weights rows before it averages.", field="loss")
        shape = getattr(values, "shape", None)
        if rank is not None and rank > 1 and not (rank == 2 and shape[-1] in (1, None)):
            raise ConfigError(
                f"Head {head.name!r}: the loss {label} returned shape {shape}, not one loss per "
                f"example. {called_as(labels, outputs)} Reduce the axes after the batch inside "
                "the loss (e.g. tf.reduce_mean(..., axis=-1)).", field="loss")
        return values

    guarded.__name__ = label
    return guarded


def _with_guarded_losses(heads: HeadSet) -> HeadSet:
    """``heads``, with each custom loss behind :func:`_guarded_loss`."""
    if not any(callable(head.loss) for head in heads):
        return heads
    return HeadSet([attrs.evolve(head, loss=_guarded_loss(head)) if callable(head.loss) else head
                    for head in heads])


def prepare_batch(heads: HeadSet, labels: Any, features: Any) -> Dict[str, Tuple[Any, Any]]:
    """Each trained head's loss-ready labels and example weights, as ``(labels, weights)``.

    The checks of the labels and the ``weight_column`` run here (``weights``
    is None without a mask or weight column). Everything in :func:`head_terms`
    that reads only the batch, none of the body's outputs: a train step
    compiled by XLA, which would drop the checks, takes this as its input.

    Example:
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("y", spec.Regression())])
        >>> ready, weights = prepare_batch(heads, {"y": tf.constant([[3.0]])}, {})["y"]
        >>> ready.shape.as_list(), weights
        ([1, 1], None)
    """
    label_tensors = labels_by_head(heads, labels)
    prepared: Dict[str, Tuple[Any, Any]] = {}
    for head in heads.trained_heads:
        with tf.name_scope(head.name):  # NAME_PATTERN names are valid scope names
            ready, mask = kinds.get(head).prepare_labels(head, label_tensors[head.label_key])
            prepared[head.name] = (ready, _combine(mask, example_weights(head, features)))
    return prepared


def prepared_terms(heads: HeadSet, outputs: Mapping[str, Any],
                   prepared: Mapping[str, Tuple[Any, Any]]) -> Dict[str, HeadTerms]:
    """Each trained head's :class:`HeadTerms` from :func:`prepare_batch`'s labels and weights.

    Example:
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("y", spec.Regression())])
        >>> prepared = {"y": (tf.constant([[3.0]]), None)}
        >>> float(prepared_terms(heads, {"y": tf.constant([[1.0]])}, prepared)["y"].loss)
        4.0
    """
    heads = _with_guarded_losses(heads)  # a failing custom loss names its head
    terms: Dict[str, HeadTerms] = {}
    for head in heads.trained_heads:
        kind = kinds.get(head)
        ready, weights = prepared[head.name]
        with tf.name_scope(head.name):
            per_example = kind.per_example_loss(head, ready, outputs[head.name])
            # Class weights scale each example's loss but stay out of the divisor: the
            # sum over the batch is divided by the rows' weights (mask x weight_column),
            # which is the batch size without them, as the canned heads and Keras do.
            class_weights = kind.class_example_weights(head, ready)
            if class_weights is not None:
                per_example = per_example * class_weights
            terms[head.name] = HeadTerms(ready, weights, per_example,
                                         losses.head_loss(per_example, weights))
    return terms


def head_terms(heads: HeadSet, outputs: Mapping[str, Any], labels: Any,
               features: Any) -> Dict[str, HeadTerms]:
    """Each trained head's labels, weights, per-example losses and loss for one batch.

    ``outputs`` are the body's outputs by head (``headkit.body.outputs_by_head``):
    :func:`prepare_batch`, then :func:`prepared_terms`.

    Example:
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("y", spec.Regression())])
        >>> terms = head_terms(heads, {"y": tf.constant([[1.0]])}, {"y": tf.constant([[3.0]])}, {})
        >>> float(terms["y"].loss)
        4.0
    """
    return prepared_terms(heads, outputs, prepare_batch(heads, labels, features))


def total_loss(heads: HeadSet, terms: Mapping[str, HeadTerms], regularization=()) -> tf.Tensor:
    """The weighted total of the heads' losses plus the body's regularization losses.

    Example:
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("y", spec.Regression(), weight=0.5)])
        >>> float(total_loss(heads, {"y": HeadTerms(None, None, None, tf.constant(4.0))}))
        2.0
    """
    return losses.total_loss(heads.trained_heads, {n: t.loss for n, t in terms.items()},
                             regularization)


def finite_guard(heads: HeadSet, terms: Mapping[str, HeadTerms], total: tf.Tensor,
                 step: tf.Tensor) -> tf.Tensor:
    """``total``, behind a check that every head's loss is finite (NaN and inf).

    An update that depends on the returned tensor never applies a non-finite
    loss: the check fails first, and ``headkit.errors`` names the heads and step.

    Example:
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("y", spec.Regression())])
        >>> terms = {"y": HeadTerms(None, None, None, tf.constant(1.0))}
        >>> float(finite_guard(heads, terms, tf.constant(1.0), tf.constant(3)))
        1.0
    """
    with tf.control_dependencies([assert_finite(heads, finite_flags(heads, terms, total), step)]):
        return tf.identity(total)


def finite_flags(heads: HeadSet, terms: Mapping[str, HeadTerms], total: tf.Tensor) -> tf.Tensor:
    """Whether each trained head's loss, then the total, is finite: bool ``[heads + 1]``.

    What :func:`assert_finite` checks; a compiled step returns it, since XLA drops ``Assert``.

    Example:
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("y", spec.Regression())])
        >>> terms = {"y": HeadTerms(None, None, None, tf.constant(float("nan")))}
        >>> finite_flags(heads, terms, tf.constant(1.0)).numpy().tolist()
        [False, True]
    """
    return tf.math.is_finite(tf.stack([terms[h.name].loss for h in heads.trained_heads] + [total]))


def assert_finite(heads: HeadSet, finite: Any, step: Any) -> Any:
    """The finite-loss check: an ``Assert`` that every flag of ``finite`` is true.

    ``finite`` holds one flag per trained head, then one for the total loss
    (bool or int32); the failure names the heads whose flag is false, and
    ``step``.

    Example:
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("y", spec.Regression())])
        >>> assert_finite(heads, tf.constant([True, True]), tf.constant(3)) is not None
        True
    """
    names = [h.name for h in heads.trained_heads] + ["(total)"]
    finite = tf.convert_to_tensor(finite)
    flags = finite if finite.dtype == tf.int32 else tf.cast(finite, tf.int32)
    return tf.debugging.Assert(
        tf.reduce_all(finite if finite.dtype == tf.bool else tf.cast(finite, tf.bool)),
        # Only strings and int32, and no work but a cast: this runs on every step.
        non_finite_assert_data(tf.cast(step, tf.int32), tf.constant(names), flags),
        summarize=len(names),
        name="headkit_finite_loss_check",
    )


def commit_if_finite(finite: Any, commit: Callable[[], Any], state: Any, before: Any) -> Any:
    """Inside an XLA-compiled step: ``commit()`` when every flag of ``finite`` holds, else
    put each variable of ``state`` back to its value in ``before``.

    XLA drops ``Assert`` ops, so a compiled step cannot stop on a NaN loss
    before its update; it applies the update (``commit``, which may assign
    anything) only when the loss is finite, and otherwise undoes what its
    forward pass moved (batch-norm statistics, read into ``before`` first).
    The check after the step (:func:`assert_finite`) then stops training.
    Returns a bool tensor: whether the update was applied.

    Example:
        >>> v = tf.Variable(1.0)
        >>> bool(commit_if_finite(tf.constant([False]), lambda: v.assign(5.0), [v], [2.0]))
        False
        >>> float(v.numpy())
        2.0
    """
    def apply() -> Any:
        with tf.control_dependencies([commit()]):
            return tf.constant(True)

    def put_back() -> Any:
        with tf.control_dependencies([v.assign(b) for v, b in zip(state, before)]):
            return tf.constant(False)

    return tf.cond(tf.reduce_all(tf.cast(finite, tf.bool)), apply, put_back)
