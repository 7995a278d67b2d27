"""Head and output types: what a head accepts, and what it derives. No TensorFlow."""

from __future__ import annotations

import pytest

import headkit as hk


def test_label_key_defaults_to_the_name():
    assert hk.Head("species", hk.Classification(3)).label_key == "species"
    assert hk.Head("mass", hk.Regression(), label_key="body_mass_g").label_key == "body_mass_g"


def test_vocabulary_sets_n_classes():
    assert hk.Classification(vocabulary=["a", "b", "c"]).n_classes == 3


def test_vocabulary_given_as_one_string_is_rejected():
    with pytest.raises(TypeError, match=r"not one string \(got 'abc'\)"):
        hk.Classification(vocabulary="abc")


def test_default_loss_follows_the_output_type():
    assert hk.Head("c", hk.Classification(2)).loss_name == "cross_entropy"
    assert hk.Head("y", hk.Regression()).loss_name == "mse"
    assert hk.Head("e", hk.Predict()).loss_name is None


def test_metric_names_put_loss_first_and_predict_heads_have_none():
    assert hk.Head("y", hk.Regression(), metrics=["rmse"]).metric_names == ("loss", "rmse")
    assert hk.Head("e", hk.Predict()).metric_names == ()


def test_a_name_ending_in_a_newline_is_rejected():
    with pytest.raises(ValueError, match=r"Head name must match .* \(got 'y\\n'\)"):
        hk.Head("y\n", hk.Regression())


def test_nan_missing_labels_compare_equal_and_hash_alike():
    a = hk.Head("y", hk.Regression(), missing_label=float("nan"))
    b = hk.Head("y", hk.Regression(), missing_label=float("nan"))
    assert a == b and hash(a) == hash(b)
    assert a != hk.Head("y", hk.Regression(), missing_label=-1.0)
    assert a != hk.Head("y", hk.Regression())


@pytest.mark.parametrize(
    "output, missing, expected",
    [
        (hk.Classification(vocabulary=("a", "b")), "", ""),
        (hk.Classification(3), -1, -1),
        (hk.Regression(), -999.0, -999.0),
    ],
)
def test_missing_label_outside_the_label_space_is_kept(output, missing, expected):
    assert hk.Head("h", output, missing_label=missing).missing_label == expected


def test_missing_label_of_the_wrong_kind_names_the_head_and_the_fix():
    with pytest.raises(ValueError, match=r"Head 'c': missing_label must be an integer outside "
                                         r"\[0, 3\), e.g. -1 \(got 'none'\)"):
        hk.Head("c", hk.Classification(3), missing_label="none")


def test_output_of_the_wrong_type_shows_an_example():
    with pytest.raises(TypeError, match=r"Head 'y': output must be .* \(got 'regression'\)\. "
                                        r"For example hk\.Head\('y', hk\.Regression\(\)\)"):
        hk.Head("y", "regression")


# ------------------------------------------------------------ NumPy scalars and custom losses


def test_numpy_scalars_are_accepted_where_python_numbers_are():
    import numpy as np

    head = hk.Head("c", hk.Classification(np.int64(3)), weight=np.float32(0.5),
                   is_default=np.bool_(True))
    assert (head.output.n_classes, head.weight, head.is_default) == (3, 0.5, True)
    assert type(head.output.n_classes) is int and type(head.weight) is float
    assert type(head.is_default) is bool
    assert hk.Regression(dimension=np.int32(2)).dimension == 2


def test_numpy_scalars_are_accepted_by_the_training_rules():
    import numpy as np

    rule = hk.EarlyStopping("loss", patience=np.int64(2), min_delta=np.float32(0.25))
    assert (rule.patience, rule.min_delta) == (2, 0.25) and type(rule.patience) is int
    assert hk.BestExport(keep=np.int64(2), final=np.bool_(False)).keep == 2


def test_a_numpy_float_where_an_integer_is_needed_is_still_refused():
    import numpy as np

    with pytest.raises(ValueError, match=r"patience must be an int >= 1 \(got 2.5\)"):
        hk.EarlyStopping("loss", patience=np.float64(2.5))


class _LossClass:
    """Stands for a Keras loss class (tf.keras.losses.MeanSquaredError), without TensorFlow."""

    __module__ = "keras.src.losses"

    def __init__(self, from_logits=False, reduction="auto"):
        self.reduction = reduction

    def __call__(self, y_true, y_pred, sample_weight=None):
        return y_pred


class _OneArgument:
    def __call__(self, outputs):
        return outputs


def _three_arguments(labels, outputs, delta):
    return outputs


@pytest.mark.parametrize("loss, error, message", [
    (_LossClass, TypeError,
     r"Head 'y': loss is the class _LossClass, not a loss.*Pass an instance: "
     r"loss=tf\.keras\.losses\._LossClass\(from_logits=True, reduction='none'\)"),
    (_LossClass(), ValueError,
     r"Head 'y': the Keras loss _LossClass reduces the batch to one number "
     r"\(reduction='auto'\).*Pass _LossClass\(reduction='none'\)"),
    (lambda labels: labels, TypeError,
     r"Head 'y': loss <lambda>\(labels\) cannot be called as loss\(labels, outputs\)"),
    (_three_arguments, TypeError,
     r"loss _three_arguments\(labels, outputs, delta\) cannot be called as loss\(labels, "
     r"outputs\).*def loss\(labels, outputs\)"),
    (_OneArgument(), TypeError, r"loss _OneArgument\(outputs\) cannot be called"),
], ids=["keras-class", "keras-reducing-instance", "one-argument", "three-arguments",
        "callable-object-one-argument"])
def test_a_custom_loss_that_cannot_work_is_refused_when_the_head_is_built(loss, error, message):
    with pytest.raises(error, match=message) as raised:
        hk.Head("y", hk.Regression(), loss=loss)
    assert isinstance(raised.value, hk.ConfigError) and raised.value.field == "loss"


@pytest.mark.parametrize("loss", [
    _LossClass(reduction="none"),
    lambda labels, outputs: outputs,
    lambda labels, outputs, delta=1.0: outputs,
    lambda *tensors: tensors[1],
], ids=["keras-per-example", "two-arguments", "optional-third", "varargs"])
def test_a_loss_callable_with_labels_and_outputs_is_accepted(loss):
    assert hk.Head("y", hk.Regression(), loss=loss).loss is loss


def test_two_heads_reading_one_label_key_are_refused():
    with pytest.raises(ValueError, match=r"Heads \['a', 'b'\] read the same label key 'y'.*"
                                         r"give each head its own label_key"):
        hk.HeadSet([hk.Head("a", hk.Regression(), label_key="y", is_default=True),
                    hk.Head("b", hk.Regression(), label_key="y")])
    predict_only = hk.HeadSet([hk.Head("a", hk.Regression(), label_key="y", is_default=True),
                               hk.Head("b", hk.Predict())])
    assert predict_only.label_keys == ("y",)
