"""PCGrad's projection by hand, its order from (seed, step) alone, and plain gradients."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.multitask import head_orders, project_conflicting, step_gradients


def _pcgrad_by_hand(gradients, orders):
    """Yu et al. 2020, Algorithm 1, in numpy: each g_i against the original g_j."""
    projected = []
    for i, g in enumerate(gradients):
        g = g.copy()
        for j in orders[i]:
            dot = g @ gradients[j]
            if j != i and dot < 0:
                g -= dot / (gradients[j] @ gradients[j]) * gradients[j]
        projected.append(g)
    return sum(projected)


def test_two_conflicting_gradients_lose_their_conflicting_components():
    combined = project_conflicting([[tf.constant([1.0, 0.0])], [tf.constant([-1.0, 1.0])]],
                                   [[2]], head_orders(2, 0, 0))
    # g1 - (g1.g2)/|g2|^2 g2 = (0.5, 0.5); g2 - (g2.g1)/|g1|^2 g1 = (0, 1)
    np.testing.assert_allclose(combined[0].numpy(), [0.5, 1.5])


def test_agreeing_gradients_are_summed_as_they_are():
    combined = project_conflicting([[tf.constant([1.0, 2.0])], [tf.constant([3.0, 0.5])]],
                                   [[2]], head_orders(2, 0, 0))
    np.testing.assert_allclose(combined[0].numpy(), [4.0, 2.5])


@pytest.mark.parametrize("seed, step", [(0, 0), (0, 7), (3, 7)])
def test_three_heads_match_the_papers_algorithm_in_the_drawn_order(seed, step):
    rng = np.random.default_rng(seed + step)
    gradients = [rng.normal(size=5).astype("float32") for _ in range(3)]
    orders = head_orders(3, seed, step)
    combined = project_conflicting([[tf.constant(g[:2]), tf.constant(g[2:].reshape(3, 1))]
                                    for g in gradients], [[2], [3, 1]], orders)
    flat = np.concatenate([combined[0].numpy(), combined[1].numpy().ravel()])
    np.testing.assert_allclose(flat, _pcgrad_by_hand(gradients, orders.numpy()), rtol=1e-5,
                               atol=1e-6)


def test_the_order_is_a_pure_function_of_seed_and_step():
    first = head_orders(4, seed=1, step=tf.constant(12, tf.int64)).numpy()
    np.testing.assert_array_equal(first, head_orders(4, seed=1, step=12).numpy())
    assert all(sorted(row) == [0, 1, 2, 3] for row in first.tolist())
    others = [head_orders(4, seed=1, step=s).numpy() for s in range(13, 20)]
    assert any((o != first).any() for o in others)


def test_a_variable_one_head_reaches_keeps_that_heads_gradient():
    own, shared_a, shared_b = tf.constant([5.0]), tf.constant([1.0, 0.0]), tf.constant([-1.0, 1.0])
    combined = project_conflicting([[own, shared_a, None], [None, shared_b, None]],
                                   [[1], [2], [3]], head_orders(2, 0, 0))
    assert combined[0] is own and combined[2] is None
    np.testing.assert_allclose(combined[1].numpy(), [0.5, 1.5])


def _two_heads(**options):
    return hk.HeadSet([hk.Head("a", hk.Regression(), is_default=True),
                       hk.Head("b", hk.Regression())], **options)


def test_step_gradients_without_surgery_are_the_gradients_of_the_total():
    w = tf.Variable([1.0, 2.0])
    heads = _two_heads()
    with tf.GradientTape() as tape:
        terms = {"a": tf.reduce_sum(w * [1.0, 0.0]), "b": tf.reduce_sum(w * [-2.0, 1.0])}
        total = terms["a"] + terms["b"]
    pairs = step_gradients(heads, tape.gradient, total, terms, [], [w], [], 0)
    np.testing.assert_allclose(pairs[0][0].numpy(), [-1.0, 1.0])


def test_step_gradients_with_pcgrad_project_the_heads_and_add_the_rest():
    w, s = tf.Variable([1.0, 2.0]), tf.Variable(0.5)
    heads = _two_heads(gradient_surgery=hk.PCGrad(seed=0))
    with tf.GradientTape(persistent=True) as tape:
        terms = {"a": tf.reduce_sum(w * [1.0, 0.0]) * s, "b": tf.reduce_sum(w * [-1.0, 1.0])}
        regularization = [tf.reduce_sum(w * w)]
        total = terms["a"] + terms["b"] + regularization[0]
    pairs = dict((v.ref(), g) for g, v in step_gradients(
        heads, tape.gradient, total, terms, regularization, [w], [s], tf.constant(3)))
    g_a, g_b = np.array([0.5, 0.0]), np.array([-1.0, 1.0])
    expected = _pcgrad_by_hand([g_a, g_b], head_orders(2, 0, 3).numpy()) + 2 * np.array([1, 2])
    np.testing.assert_allclose(pairs[w.ref()].numpy(), expected, rtol=1e-6)
    assert float(pairs[s.ref()]) == pytest.approx(1.0)  # d total / d s, unprojected
