"""The catalog: every kind's names, the canned heads' metric names, directions and their absence.

No TensorFlow here: the catalog is plain data.
"""

from __future__ import annotations

import pytest

import headkit as hk
from headkit.spec import catalog
from headkit.spec.output_types import OUTPUT_TYPES


def test_every_trained_kind_has_a_default_loss_and_only_known_kinds_are_listed():
    trained = {kind for kind, cls in OUTPUT_TYPES.items() if cls.is_trained}
    assert trained == {"classification", "multi_label", "regression", "poisson", "logistic"}
    assert all(catalog.loss_names(kind) for kind in trained)
    listed = {k for info in [*catalog.LOSSES.values(), *catalog.METRICS.values()]
              for k in info.kinds}
    assert listed == trained
    assert [catalog.loss_names(k)[0] for k in ("multi_label", "poisson", "logistic")] == [
        "sigmoid_cross_entropy", "log_poisson", "sigmoid_cross_entropy"]


@pytest.mark.parametrize("kind, canned_metrics", [
    # What each tf.estimator head reports by default, in headkit's spelling.
    ("classification", ("accuracy", "accuracy_baseline", "auc", "auc_pr", "label_mean",
                        "prediction_mean", "precision", "recall")),
    ("multi_label", ("auc", "auc_pr")),
    ("regression", ("label_mean", "prediction_mean")),
    ("poisson", ("label_mean", "prediction_mean")),
    ("logistic", ("label_mean", "prediction_mean")),
])
def test_the_canned_heads_metrics_are_named_for_their_kind(kind, canned_metrics):
    assert set(canned_metrics) <= set(catalog.metric_names(kind))
    assert all("/" not in name for name in catalog.METRICS)


@pytest.mark.parametrize("metric", ["label_mean", "prediction_mean", "accuracy_baseline"])
def test_a_metric_without_direction_needs_mode(metric):
    with pytest.raises(hk.ConfigError, match=rf"metric 'y/{metric}': '{metric}' has no better "
                       r"direction: it describes the eval labels or the predictions.*pass "
                       r"mode='min' or mode='max'"):
        catalog.metric_direction(f"y/{metric}")
    assert catalog.metric_direction(f"y/{metric}", mode="max") == "max"
    with pytest.raises(hk.ConfigError, match="has no better direction"):
        hk.EarlyStopping(f"y/{metric}")


def test_new_metric_directions():
    assert catalog.metric_direction("tags/auc_pr") == "max"
    assert catalog.metric_direction("visits/rmse") == "min"


def test_binary_only_metrics_need_two_classes_only_for_classification():
    with pytest.raises(hk.ConfigError, match=r"metric 'label_mean' needs a binary head "
                       r"\(n_classes=2, got 3\)"):
        hk.Head("kind", hk.Classification(3), metrics=("label_mean",))
    hk.Head("flag", hk.Classification(2), metrics=("label_mean", "accuracy_baseline", "auc_pr"))
    hk.Head("size", hk.Regression(), metrics=("label_mean", "prediction_mean"))
    hk.Head("tags", hk.MultiLabel(5), metrics=("auc", "auc_pr", "precision", "recall"))
    with pytest.raises(hk.ConfigError, match=r"unknown metric 'accuracy_baseline' for a "
                       r"regression head"):
        hk.Head("size", hk.Regression(), metrics=("accuracy_baseline",))
