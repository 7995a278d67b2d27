"""One batch through the heads: class weights combine with weight_column and masks, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.kinds import batch

VOCABULARY = ("Adelie", "Chinstrap", "Gentoo")
LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0],
                   [1.0, 1.0, 1.0]], "float32")
LABELS = np.array(["Adelie", "Chinstrap", "", "Gentoo", "Chinstrap"])  # "" has no label
ROW_WEIGHTS = np.array([1.0, 2.0, 5.0, 0.5, 1.0], "float32")
CLASS_WEIGHT = {"Chinstrap": 3.0, "Gentoo": 0.25}


def _cross_entropy(logits, label):
    shifted = logits - logits.max()
    return float(np.log(np.exp(shifted).sum()) - shifted[label])


def _terms(**fields):
    head = hk.Head("species", hk.Classification(vocabulary=VOCABULARY), missing_label="",
                   weight_column="w", **fields)
    heads = hk.HeadSet([head])
    return batch.head_terms(heads, {"species": tf.constant(LOGITS)},
                            {"species": tf.constant(LABELS)}, {"w": tf.constant(ROW_WEIGHTS)})


def test_class_weights_weigh_each_example_by_its_label_class_with_the_row_weights_and_mask():
    term = _terms(class_weight=CLASS_WEIGHT)["species"]
    # By hand: the mask drops row 2; each row's loss counts weight_column x its class's
    # weight; the sum is divided by the rows' weights (mask x weight_column) only, as
    # weight_column alone is: class weights stay out of the divisor.
    weighted_sum, row_weight = 0.0, 0.0
    for row, label in enumerate(LABELS):
        if label == "":
            continue
        loss = _cross_entropy(LOGITS[row], VOCABULARY.index(label))
        weighted_sum += ROW_WEIGHTS[row] * CLASS_WEIGHT.get(label, 1.0) * loss
        row_weight += ROW_WEIGHTS[row]
    assert float(term.loss) == pytest.approx(weighted_sum / row_weight, rel=1e-6)
    assert term.weights.numpy().tolist() == pytest.approx([1.0, 2.0, 0.0, 0.5, 1.0])


def test_without_mask_or_weight_column_class_weights_divide_by_the_batch_size():
    heads = hk.HeadSet([hk.Head("species", hk.Classification(vocabulary=VOCABULARY),
                                class_weight=CLASS_WEIGHT)])
    labels = np.array(["Adelie", "Chinstrap", "Chinstrap", "Gentoo", "Chinstrap"])
    term = batch.head_terms(heads, {"species": tf.constant(LOGITS)},
                            {"species": tf.constant(labels)}, {})["species"]
    expected = sum(CLASS_WEIGHT.get(label, 1.0) * _cross_entropy(z, VOCABULARY.index(label))
                   for z, label in zip(LOGITS, labels)) / len(labels)
    assert float(term.loss) == pytest.approx(expected, rel=1e-6)  # as the canned heads do
    # A batch of one class still feels its weight (a weighted mean would cancel it).
    lone = batch.head_terms(heads, {"species": tf.constant(LOGITS[1:2])},
                            {"species": tf.constant(labels[1:2])}, {})["species"]
    assert float(lone.loss) == pytest.approx(3.0 * _cross_entropy(LOGITS[1], 1), rel=1e-6)


def test_class_weights_leave_the_metric_weights_alone():
    weighted, plain = _terms(class_weight=CLASS_WEIGHT)["species"], _terms()["species"]
    np.testing.assert_array_equal(weighted.weights.numpy(), plain.weights.numpy())
    assert float(weighted.loss) != pytest.approx(float(plain.loss))


def test_equal_class_weights_scale_the_loss():
    same = _terms(class_weight={name: 4.0 for name in VOCABULARY})["species"]
    assert float(same.loss) == pytest.approx(4.0 * float(_terms()["species"].loss), rel=1e-6)


def test_class_weights_by_id_on_a_sigmoid_head():
    heads = hk.HeadSet([hk.Head("flag", hk.Classification(2), class_weight={1: 4.0})])
    logits = np.array([[0.5], [-1.0], [2.0]], "float32")
    labels = np.array([[1], [0], [1]])
    term = batch.head_terms(heads, {"flag": tf.constant(logits)}, {"flag": tf.constant(labels)},
                            {})["flag"]
    per_row = [np.log1p(np.exp(-z)) if y else np.log1p(np.exp(z))
               for z, y in zip(logits[:, 0], labels[:, 0])]
    expected = (4.0 * per_row[0] + per_row[1] + 4.0 * per_row[2]) / 3.0  # batch size
    assert float(term.loss) == pytest.approx(expected, rel=1e-6)


def test_multi_label_class_weights_weigh_each_class_term_with_the_row_weights_and_mask():
    vocabulary = ("red", "round", "sweet")
    head = hk.Head("tags", hk.MultiLabel(vocabulary=vocabulary), missing_label=-1,
                   weight_column="w", class_weight={"round": 3.0, "sweet": 0.5})
    logits = np.array([[1.0, -2.0, 0.5], [0.0, 0.3, -1.0], [2.0, 2.0, 2.0]], "float32")
    multi_hot = np.array([[1, 0, 1], [0, 1, 1], [-1, -1, -1]])  # row 2 has no label
    row_weights = np.array([2.0, 1.0, 7.0], "float32")
    terms = batch.head_terms(hk.HeadSet([head]), {"tags": tf.constant(logits)},
                             {"tags": tf.constant(multi_hot)}, {"w": tf.constant(row_weights)})
    term = terms["tags"]
    # By hand: each class's sigmoid cross entropy times its class weight, averaged over the
    # classes; rows weighted by weight_column, row 2 masked; the weighted sum over the weights.
    class_weights = np.array([1.0, 3.0, 0.5])
    per_row = []
    for z, y in zip(logits[:2], multi_hot[:2]):
        terms = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        per_row.append(float((terms * class_weights).mean()))
    expected = (2.0 * per_row[0] + 1.0 * per_row[1]) / 3.0
    assert float(term.loss) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(term.example_losses.numpy()[:2], per_row, rtol=1e-6)


def test_multi_label_class_weights_need_the_default_loss():
    with pytest.raises(hk.ConfigError, match=r"Head 'tags': class_weight weighs each class's term "
                                             r"of the multi-label loss 'sigmoid_cross_entropy'; "
                                             r"a custom loss .* Drop class_weight") as raised:
        hk.Head("tags", hk.MultiLabel(2), class_weight={1: 2.0}, loss=lambda y, z: z[:, 0])
    assert raised.value.field == "class_weight"
    with pytest.raises(hk.ConfigError, match=r"class_weight names \['blue'\], not in the "
                                             r"vocabulary \('red', 'round'\)"):
        hk.Head("tags", hk.MultiLabel(vocabulary=("red", "round")), class_weight={"blue": 2.0})


# ------------------------------------------------------------------ normalised regression


def test_a_normalised_regression_learns_normalised_labels_and_reports_in_label_units():
    output = hk.Regression(mean=4200.0, std=800.0)
    heads = hk.HeadSet([hk.Head("mass", output, metrics=("rmse",), missing_label=float("nan"))])
    body_output = tf.constant([[0.5], [-1.0], [0.0]])
    labels = tf.constant([[4600.0], [float("nan")], [4000.0]])
    term = batch.head_terms(heads, {"mass": body_output}, {"mass": labels}, {})["mass"]
    np.testing.assert_allclose(term.labels.numpy()[[0, 2], 0], [0.5, -0.25])
    assert float(term.loss) == pytest.approx((0.0 + 0.25**2) / 2)  # on the normalised scale
    from headkit import kinds

    kind = kinds.get(heads["mass"])
    predictions = kind.predictions(heads["mass"], body_output)
    np.testing.assert_allclose(predictions["predictions"].numpy()[:, 0], [4600.0, 3400.0, 4200.0])
    y_true, y_pred = kind.metric_inputs(heads["mass"], "rmse", term.labels, predictions)
    np.testing.assert_allclose(y_true.numpy()[[0, 2], 0], [4600.0, 4000.0], rtol=1e-6)
    np.testing.assert_allclose(y_pred.numpy()[:, 0], [4600.0, 3400.0, 4200.0])


def test_a_wider_regression_normalises_each_dimension():
    head = hk.Head("xy", hk.Regression(2, mean=(1.0, 100.0), std=(2.0, 10.0)))
    from headkit import kinds

    ready, _ = kinds.get(head).prepare_labels(head, tf.constant([[3.0, 80.0]]))
    np.testing.assert_allclose(ready.numpy(), [[1.0, -2.0]])
