"""hk.train_and_evaluate evaluates in memory, and gets the numbers of checkpoint evaluation."""

from __future__ import annotations

import pytest
import tensorflow as tf

import headkit as hk
from tests.conftest import make_data, numpy_input_fn, tiny_body, tiny_heads


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    features, labels = make_data(96)
    estimator = hk.Estimator(tiny_body, tiny_heads(), learning_rate=0.05,
                             model_dir=str(tmp_path_factory.mktemp("in_memory")),
                             config=tf.estimator.RunConfig(tf_random_seed=0,
                                                           keep_checkpoint_max=10))
    eval_input = numpy_input_fn(features, labels, batch_size=32, repeat=False)
    result = hk.train_and_evaluate(estimator, numpy_input_fn(features, labels, batch_size=16),
                                   eval_input, max_steps=30, eval_every=10, progress=False)
    return estimator, eval_input, result


def test_every_checkpoint_is_evaluated_once_and_step_0_is_not(run):
    _, _, result = run
    assert [e.step for e in result.history] == [10, 20, 30]


@pytest.mark.parametrize("index", [0, 2])
def test_in_memory_metrics_equal_those_of_evaluate_on_the_checkpoint(run, index):
    estimator, eval_input, result = run
    evaluation = result.history[index]
    checkpoint = f"{estimator.model_dir}/model.ckpt-{evaluation.step}"
    from_checkpoint = estimator.evaluate(eval_input, checkpoint_path=checkpoint)
    assert set(from_checkpoint) - {"global_step"} == set(evaluation.metrics)
    for key, value in evaluation.metrics.items():
        assert value == pytest.approx(float(from_checkpoint[key]), rel=1e-6, abs=1e-7), key


def test_evaluation_summaries_are_written_for_tensorboard(run):
    import glob

    estimator, _, _ = run
    tags = set()
    for path in glob.glob(f"{estimator.model_dir}/eval/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {value.tag for value in event.summary.value}
    assert {"loss", "kind/accuracy", "size/rmse", "flag/auc"} <= tags
