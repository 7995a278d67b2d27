"""Gradients of one training step: plain, or with gradient surgery (PCGrad, Yu et al. 2020).

Backend-neutral: a backend passes its way to take a gradient
(``tf.gradients`` in the Estimator's graph, the tape's ``gradient`` in Keras)
and gets ``(gradient, variable)`` pairs to apply.

PCGrad takes one backward pass per head with ``weight > 0``. For each head
``i``, its gradient ``g_i`` meets the other heads' gradients ``g_j`` in a
random order; where ``g_i . g_j < 0`` it loses its component along ``g_j``:
``g_i -= (g_i . g_j) / |g_j|^2 * g_j``. The projected gradients are summed.
Only variables that two or more heads reach (the shared body) are
projected: a head's own output layer gets its own gradient. The order is
drawn from ``(seed, global step)`` alone, so a resumed run repeats it.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from headkit.spec.headset import HeadSet

__all__ = ["head_orders", "project_conflicting", "step_gradients", "step_orders"]

#: ``gradient(target, variables) -> [gradient or None per variable]``.
GradientFn = Callable[[Any, Sequence[tf.Variable]], List[Optional[Any]]]


def head_orders(count: int, seed: int, step: Any) -> tf.Tensor:
    """``[count, count]`` int32: row ``i`` is the order in which head ``i`` meets the heads.

    A pure function of ``(seed, step)``: stateless random numbers, sorted.

    Example:
        >>> head_orders(3, seed=0, step=5).shape.as_list()
        [3, 3]
    """
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.argsort(tf.random.stateless_uniform([count, count], seed=key), axis=1)


def step_orders(heads: HeadSet, step: Any) -> Optional[tf.Tensor]:
    """PCGrad's :func:`head_orders` of the weighted heads at ``step`` (None without PCGrad).

    Example:
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("a", spec.Regression(), is_default=True),
        ...                       spec.Head("b", spec.Regression())], gradient_surgery="pcgrad")
        >>> step_orders(heads, 3).shape.as_list()
        [2, 2]
    """
    surgery = heads.gradient_surgery
    if surgery is None:
        return None
    return head_orders(len(heads.weighted_heads), surgery.seed, step)


def _dense(gradient: Any) -> tf.Tensor:
    return tf.convert_to_tensor(gradient)  # IndexedSlices (embeddings) become dense


def project_conflicting(per_head: Sequence[Sequence[Optional[Any]]], shapes: Sequence[Any],
                        orders: tf.Tensor) -> List[Optional[Any]]:
    """PCGrad: the sum over heads of each head's gradient, projected off its conflicts.

    Args:
        per_head: ``per_head[i][v]``, head ``i``'s gradient of variable ``v``
            (None where the head does not reach it).
        shapes: each variable's shape.
        orders: :func:`head_orders` for this step.

    Returns:
        One gradient per variable (None where no head reaches it).

    Example:
        >>> g1, g2 = [tf.constant([1.0, 0.0])], [tf.constant([-1.0, 1.0])]
        >>> [g.numpy().tolist() for g in project_conflicting([g1, g2], [[2]],
        ...                                                  head_orders(2, 0, 0))]
        [[0.5, 1.5]]
    """
    count, n_variables = len(per_head), len(shapes)
    reached = [[per_head[i][v] is not None for i in range(count)] for v in range(n_variables)]
    shared = [v for v in range(n_variables) if sum(reached[v]) >= 2]
    result: List[Optional[Any]] = []
    for v in range(n_variables):  # variables one head or none reaches: as they are
        own = [per_head[i][v] for i in range(count) if reached[v][i]]
        result.append(own[0] if len(own) == 1 else None)
    if not shared:
        return result
    # Every projected gradient is a combination of the original ones, so the algorithm
    # runs on their Gram matrix (K x K) and K coefficients per head; the gradients are
    # combined once at the end. The same arithmetic as projecting the vectors themselves,
    # without K^2 temporaries of the body's size.
    stacked = {v: tf.stack([tf.reshape(_dense(per_head[i][v]), [-1]) if reached[v][i]
                            else tf.zeros([tf.TensorShape(shapes[v]).num_elements()])
                            for i in range(count)]) for v in shared}
    gram = tf.add_n([tf.matmul(g, g, transpose_b=True) for g in stacked.values()])
    identity = tf.eye(count)
    coefficients = []
    for i in range(count):
        combination = identity[i]  # g_i^PC = sum_k combination[k] * g_k
        for position in range(count):
            j = orders[i, position]
            dot = tf.reduce_sum(combination * tf.gather(gram, j))  # g_i^PC . g_j
            conflict = tf.logical_and(dot < 0.0, tf.not_equal(j, i))
            scale = tf.where(conflict, tf.math.divide_no_nan(dot, gram[j, j]), 0.0)
            combination = combination - scale * tf.gather(identity, j)
        coefficients.append(combination)
    total = tf.add_n(coefficients)
    for v, gradients in stacked.items():
        result[v] = tf.reshape(tf.linalg.matvec(gradients, total, transpose_a=True), shapes[v])
    return result


def _add(a: Optional[Any], b: Optional[Any]) -> Optional[Any]:
    if a is None:
        return b
    if b is None:
        return a
    return _dense(a) + _dense(b)


def step_gradients(heads: HeadSet, gradient: GradientFn, total: tf.Tensor,
                   terms: Mapping[str, tf.Tensor], regularization: Sequence[Any],
                   variables: Sequence[tf.Variable], weighting_variables: Sequence[tf.Variable],
                   step: Any, orders: Optional[tf.Tensor] = None) -> List[Tuple[Any, tf.Variable]]:
    """The ``(gradient, variable)`` pairs of one training step (None gradients left out).

    Without ``heads.gradient_surgery``: the gradient of ``total``. With
    PCGrad: the body's ``variables`` get the projected sum of the weighted
    heads' ``terms`` (one backward pass each) plus the gradient of the
    regularization losses; the learned loss weights get the gradient of
    ``total``, unprojected. ``orders`` are PCGrad's :func:`step_orders` for
    ``step``, when they were computed already (outside an XLA-compiled step,
    whose random numbers differ from TensorFlow's).

    Example:
        >>> pairs = step_gradients(heads, tape.gradient, total, terms, [],
        ...                        body.trainable_variables, [], step)  # doctest: +SKIP
    """
    surgery = heads.gradient_surgery
    variables, weighting_variables = list(variables), list(weighting_variables)
    if surgery is None:
        everything = variables + weighting_variables
        return [(g, v) for g, v in zip(gradient(total, everything), everything) if g is not None]
    names = [h.name for h in heads.weighted_heads]
    per_head = [gradient(terms[name], variables) for name in names]
    if orders is None:
        orders = step_orders(heads, step)
    combined = project_conflicting(per_head, [v.shape for v in variables], orders)
    if regularization:
        extra = gradient(tf.add_n([tf.cast(r, tf.float32) for r in regularization]), variables)
        combined = [_add(g, e) for g, e in zip(combined, extra)]
    pairs = list(zip(combined, variables))
    if weighting_variables:
        pairs += list(zip(gradient(total, weighting_variables), weighting_variables))
    return [(g, v) for g, v in pairs if g is not None]
