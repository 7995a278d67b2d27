"""The loss weighting's math, eagerly: each head's term, its reported weight, DWA's windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.multitask import LossWeights, dwa_weights

LOSSES = {"species": 0.8, "mass": 0.3, "sex": 0.5}


def _heads(weighting, mass_weight=1.0, sex_weight=2.0):
    return hk.HeadSet([
        hk.Head("species", hk.Classification(3), is_default=True),
        hk.Head("mass", hk.Regression(), weight=mass_weight),
        hk.Head("sex", hk.Classification(2), weight=sex_weight),
        hk.Head("embedding", hk.Predict()),
    ], loss_weighting=weighting)


def _weigh(weighting, losses=LOSSES):
    terms, weights = weighting.weigh({k: tf.constant(v) for k, v in losses.items()})
    return ({k: float(v) for k, v in terms.items()}, {k: float(v) for k, v in weights.items()})


def test_fixed_is_weight_times_loss_and_matches_the_total_of_before():
    weighting = LossWeights(_heads("fixed"))
    terms, weights = _weigh(weighting)
    assert terms == pytest.approx({"species": 0.8, "mass": 0.3, "sex": 1.0})
    assert weights == {"species": 1.0, "mass": 1.0, "sex": 2.0}
    assert not weighting.variables and not weighting.is_learned
    total = weighting.total({k: tf.constant(v) for k, v in terms.items()}, [tf.constant(0.1)])
    assert float(total) == pytest.approx(2.2)


def test_uncertainty_terms_follow_kendall_with_half_factors_for_regression():
    weighting = LossWeights(_heads("uncertainty"))
    assert {v.name for v in weighting.trainable_variables} == {
        "headkit_loss_weighting/species/log_variance:0",
        "headkit_loss_weighting/mass/log_variance:0", "headkit_loss_weighting/sex/log_variance:0"}
    s = {"species": 0.4, "mass": -1.2, "sex": 0.7}
    for name, value in s.items():
        weighting.log_variances[name].assign(value)
    terms, weights = _weigh(weighting)
    c = {"species": 1.0, "mass": 1.0, "sex": 2.0}
    f = {"species": 1.0, "mass": 0.5, "sex": 1.0}
    for name in s:
        expected = c[name] * f[name] * (math.exp(-s[name]) * LOSSES[name] + s[name])
        assert terms[name] == pytest.approx(expected, rel=1e-6), name
        assert weights[name] == pytest.approx(c[name] * f[name] * math.exp(-s[name]), rel=1e-6)


def test_uncertainty_learns_nothing_for_a_head_of_weight_zero():
    weighting = LossWeights(_heads("uncertainty", mass_weight=0.0))
    assert set(weighting.log_variances) == {"species", "sex"}
    terms, weights = _weigh(weighting)
    assert terms["mass"] == 0.0 and weights["mass"] == 0.0


def test_uncertainty_gradient_moves_s_towards_the_log_of_the_loss():
    weighting = LossWeights(_heads("uncertainty"))
    s = weighting.log_variances["species"]
    for _ in range(300):
        with tf.GradientTape() as tape:
            terms, _ = weighting.weigh({k: tf.constant(v) for k, v in LOSSES.items()})
        s.assign_sub(0.1 * tape.gradient(terms["species"], s))
    assert float(s) == pytest.approx(math.log(LOSSES["species"]), abs=1e-3)


def test_uncertainty_leaves_a_head_without_labels_in_the_batch_alone():
    # A batch where 'sex' has no labelled row: its loss is 0 and its whole term, s_i
    # included, is left out, so its weight does not grow while its labels are absent.
    heads = hk.HeadSet([hk.Head("species", hk.Classification(3), is_default=True),
                        hk.Head("sex", hk.Classification(2), missing_label=-1)],
                       loss_weighting="uncertainty")
    weighting = LossWeights(heads)
    s = weighting.log_variances["sex"]
    labelled = {"species": tf.constant(True), "sex": tf.constant(False)}
    for _ in range(200):
        with tf.GradientTape() as tape:
            terms, _ = weighting.weigh({"species": tf.constant(0.8), "sex": tf.constant(0.0)},
                                       labelled)
            total = weighting.total(terms)
        gradient = tape.gradient(total, s)
        s.assign_sub(0.05 * (0.0 if gradient is None else gradient))
    assert float(terms["sex"]) == 0.0
    assert float(s) == 0.0  # without the indicator: s -> -10, a weight of exp(10) ~ 22,000


def test_head_terms_say_whether_a_head_has_a_labelled_row():
    from headkit.kinds import batch

    heads = hk.HeadSet([hk.Head("species", hk.Classification(3), is_default=True),
                        hk.Head("sex", hk.Classification(2), missing_label=-1)])
    terms = batch.head_terms(
        heads, {"species": tf.zeros([2, 3]), "sex": tf.zeros([2, 1])},
        {"species": tf.constant([[0], [2]]), "sex": tf.constant([[-1], [-1]])}, {})
    assert bool(terms["species"].labelled) and not bool(terms["sex"].labelled)
    assert float(terms["sex"].loss) == 0.0


def test_dwa_weights_sum_to_the_number_of_heads_and_favour_the_slow_one():
    weights = dwa_weights(tf.constant([0.9, 0.5, 0.5]), tf.constant([1.0, 1.0, 1.0]), 2.0)
    assert float(tf.reduce_sum(weights)) == pytest.approx(3.0)
    ratios = np.array([0.9, 0.5, 0.5])
    expected = 3 * np.exp(ratios / 2.0) / np.exp(ratios / 2.0).sum()
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)


def test_dwa_keeps_weights_at_one_for_two_windows_then_uses_the_last_two_windows():
    weighting = LossWeights(_heads(hk.DynamicWeightAverage(temperature=2.0, period=2),
                                   sex_weight=1.0))
    names = ("species", "mass", "sex")
    schedule = [  # the heads' losses at steps 1..6; windows of 2 steps
        (1.0, 2.0, 3.0), (1.0, 2.0, 1.0),   # window 1: means 1.0, 2.0, 2.0
        (0.5, 2.0, 1.0), (0.5, 2.0, 1.0),   # window 2: means 0.5, 2.0, 1.0
        (0.5, 1.0, 1.0), (0.5, 1.0, 1.0),   # window 3: means 0.5, 1.0, 1.0
    ]
    seen = []
    for losses in schedule:
        seen.append(_weigh(weighting, dict(zip(names, losses)))[1])
        weighting.update({n: tf.constant(v) for n, v in zip(names, losses)})
    assert all(w == pytest.approx({n: 1.0 for n in names}) for w in seen[:4])

    def expected(previous, before):
        ratios = np.array(previous) / np.array(before)
        return dict(zip(names, 3 * np.exp(ratios / 2.0) / np.exp(ratios / 2.0).sum()))

    after_two = expected((0.5, 2.0, 1.0), (1.0, 2.0, 2.0))
    assert seen[4] == pytest.approx(after_two, rel=1e-6) and seen[5] == seen[4]
    assert _weigh(weighting)[1] == pytest.approx(
        expected((0.5, 1.0, 1.0), (0.5, 2.0, 1.0)), rel=1e-6)
    assert int(weighting.windows) == 3 and int(weighting.window_steps) == 0


def test_dwa_terms_multiply_the_fixed_weight():
    weighting = LossWeights(_heads(hk.DynamicWeightAverage(period=1)))
    weighting.weights.assign([0.5, 1.5, 1.0])
    terms, weights = _weigh(weighting)
    assert terms == pytest.approx({"species": 0.4, "mass": 0.45, "sex": 1.0})
    assert weights == pytest.approx({"species": 0.5, "mass": 1.5, "sex": 2.0})


def test_dwa_in_a_graph_reads_every_value_before_it_writes():
    heads = _heads(hk.DynamicWeightAverage(period=1), sex_weight=1.0)
    with tf.Graph().as_default():
        weighting = LossWeights(heads)
        losses = tf.compat.v1.placeholder(tf.float32, [3])
        update = weighting.update(dict(zip(("species", "mass", "sex"), tf.unstack(losses))))
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for value in ([1.0, 1.0, 1.0], [2.0, 1.0, 1.0], [2.0, 0.5, 1.0]):
                session.run(update, {losses: value})
            previous, before, weights = session.run(
                [weighting.previous, weighting.before, weighting.weights])
    np.testing.assert_allclose(previous, [2.0, 0.5, 1.0])
    np.testing.assert_allclose(before, [2.0, 1.0, 1.0])
    np.testing.assert_allclose(weights, dwa_weights(
        tf.constant(previous), tf.constant(before), 2.0).numpy(), rtol=1e-6)


def test_dwa_with_every_weight_zero_weighs_nothing_and_updates_nothing():
    heads = hk.HeadSet([hk.Head("y", hk.Regression(), weight=0.0)],
                       loss_weighting=hk.DynamicWeightAverage())
    weighting = LossWeights(heads)
    assert _weigh(weighting, {"y": 3.0}) == ({"y": 0.0}, {"y": 0.0})
    assert weighting.update({"y": tf.constant(3.0)}) is None
