"""Loss weighting and gradient surgery as configuration: names, objects, errors. No TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest

import headkit as hk


def two_heads(**options):
    return hk.HeadSet([
        hk.Head("species", hk.Classification(3), metrics=("accuracy",), is_default=True),
        hk.Head("mass", hk.Regression(), metrics=("rmse",)),
    ], **options)


def test_fixed_is_the_default_and_reports_no_loss_weight():
    heads = two_heads()
    assert heads.loss_weighting.name == "fixed" and heads.gradient_surgery is None
    assert heads == two_heads(loss_weighting="fixed")
    assert not any(name.endswith("/loss_weight") for name in heads.metric_names)


@pytest.mark.parametrize("given, expected", [
    ("uncertainty", hk.UncertaintyWeighting()),
    (hk.UncertaintyWeighting(), hk.UncertaintyWeighting()),
    ("dynamic_weight_average", hk.DynamicWeightAverage()),
    (hk.DynamicWeightAverage(temperature=np.float32(1.5), period=np.int64(10)),
     hk.DynamicWeightAverage(temperature=1.5, period=10)),
])
def test_a_weighting_is_given_by_name_or_object(given, expected):
    assert two_heads(loss_weighting=given).loss_weighting == expected


def test_a_learned_weighting_reports_each_trained_heads_loss_weight():
    assert two_heads(loss_weighting="uncertainty").metric_names == (
        "loss", "species/loss", "species/accuracy", "species/loss_weight",
        "mass/loss", "mass/rmse", "mass/loss_weight")


def test_dynamic_weight_average_defaults():
    method = hk.DynamicWeightAverage()
    assert (method.temperature, method.period) == (2.0, 100)


@pytest.mark.parametrize("temperature", [0, -1.0, float("inf"), float("nan"), "2", True])
def test_a_temperature_that_is_not_a_positive_number_is_refused(temperature):
    with pytest.raises(hk.ConfigError, match=r"temperature must be a finite number > 0 \(got "
                                             + r".*\).*Use e\.g\. temperature=2\.0") as raised:
        hk.DynamicWeightAverage(temperature=temperature)
    assert raised.value.field == "temperature"


def test_an_unknown_weighting_name_lists_the_known_ones_and_a_close_match():
    with pytest.raises(hk.ConfigError, match=r"loss_weighting: unknown name 'uncertainity'\. "
                                             r"Known names: 'fixed', 'uncertainty', "
                                             r"'dynamic_weight_average'; did you mean "
                                             r"'uncertainty'\?") as raised:
        two_heads(loss_weighting="uncertainity")
    assert raised.value.field == "loss_weighting"


def test_a_weighting_of_the_wrong_type_is_refused():
    with pytest.raises(TypeError, match=r"loss_weighting must be a name .* or one of "
                                        r"hk\.FixedWeighting\(\), hk\.UncertaintyWeighting\(\)"):
        two_heads(loss_weighting=hk.PCGrad())


def test_pcgrad_is_given_by_name_or_object():
    assert two_heads(gradient_surgery="pcgrad").gradient_surgery == hk.PCGrad(seed=0)
    assert two_heads(gradient_surgery=hk.PCGrad(seed=3)).gradient_surgery.seed == 3


def test_pcgrad_with_a_single_trained_head_is_refused_when_the_headset_is_built():
    with pytest.raises(hk.ConfigError, match=r"gradient_surgery=PCGrad\(seed=0\) needs two or "
                                             r"more trained heads with weight > 0 \(got "
                                             r"\['y'\] among \['y', 'e'\]\).*Drop "
                                             r"gradient_surgery") as raised:
        hk.HeadSet([hk.Head("y", hk.Regression(), is_default=True),
                    hk.Head("e", hk.Predict())], gradient_surgery=hk.PCGrad())
    assert raised.value.field == "gradient_surgery"


def test_a_head_of_weight_zero_does_not_count_for_pcgrad():
    with pytest.raises(hk.ConfigError, match=r"got \['species'\]"):
        hk.HeadSet([hk.Head("species", hk.Classification(3), is_default=True),
                    hk.Head("mass", hk.Regression(), weight=0.0)], gradient_surgery="pcgrad")


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_a_pcgrad_seed_must_be_a_whole_number(seed):
    with pytest.raises(hk.ConfigError, match=r"seed must be an integer >= 0"):
        hk.PCGrad(seed=seed)


def test_loss_weight_is_no_metric_name():
    with pytest.raises(hk.ConfigError, match=r"metric name 'loss_weight' is not allowed"):
        hk.Head("y", hk.Regression(), metrics=(_Named("loss_weight"),))


class _Named:
    def __init__(self, name):
        self.name = name
