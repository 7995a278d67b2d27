"""Body weights matched by layer structure: ownership, restored and skipped heads, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import headkit as hk
from headkit.body import KERAS_MAJOR, instantiate_body
from headkit.training.weights import (
    LayerWeights,
    apply_weights,
    body_structure,
    checkpoint_weights,
    match_weights,
)


def _body(width=8, kind_classes=3, size_name="size", extra_head=None):
    """Shared Dense + BatchNormalization trunk; 'kind' has two Dense layers, the others one."""
    x = tf.keras.Input((4,), name="x")
    h = tf.keras.layers.Dense(width, activation="relu")(x)
    h = tf.keras.layers.BatchNormalization()(h)
    kind = tf.keras.layers.Dense(6, activation="relu")(h)
    outputs = {
        "kind": tf.keras.layers.Dense(kind_classes, name="kind")(kind),
        size_name: tf.keras.layers.Dense(1, name=size_name)(h),
    }
    if extra_head:
        outputs[extra_head] = tf.keras.layers.Dense(1, name=extra_head)(h)
    return tf.keras.Model({"x": x}, outputs)


def _heads(kind_classes=3, size_name="size", extra_head=None):
    heads = [hk.Head("kind", hk.Classification(kind_classes), is_default=True),
             hk.Head(size_name, hk.Regression())]
    if extra_head:
        heads.append(hk.Head(extra_head, hk.Classification(2)))
    return hk.HeadSet(heads)


def _randomized(model, seed=0):
    """``model`` with every weight random, BN moving statistics far from their 0 / 1 defaults."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.uniform(2.0, 3.0, w.shape).astype("float32")
                           for w in layer.get_weights()])
    return model


def _restore(source_model, source_heads, target_model, target_heads, head_map=None):
    match = match_weights(body_structure(source_model, source_heads),
                          body_structure(target_model, target_heads, with_values=False),
                          head_map=head_map)
    apply_weights(target_model, match)
    return match


def _same_weights(source_layer, target_layer):
    return all(np.array_equal(a, b) for a, b in
               zip(source_layer.get_weights(), target_layer.get_weights()))


@pytest.fixture(scope="module")
def source():
    return _randomized(_body())


def test_ownership_follows_the_outputs_each_layer_reaches(source):
    structure = body_structure(source, _heads())
    assert [(w.class_name, w.owner) for w in structure] == [
        ("Dense", None), ("BatchNormalization", None),
        ("Dense", "kind"), ("Dense", "kind"), ("Dense", "size")]
    assert [w.index for w in structure] == [1, 2, 3, 4, 5]  # the Input layer has no weights
    assert structure[1].shapes == ((8,), (8,), (8,), (8,))  # gamma, beta, moving mean, variance
    assert body_structure(source, _heads(), with_values=False)[0].values is None


def test_a_copy_of_itself_is_restored_whole_including_batch_norm_statistics(source):
    target = _body()
    match = _restore(source, _heads(), target, _heads())
    assert not match.skipped and len(match.restored) == 5
    for old, new in zip(source.layers, target.layers):
        assert _same_weights(old, new), new.name
    moving_mean = target.layers[2].moving_mean.numpy()
    assert moving_mean.min() >= 2.0 and np.array_equal(moving_mean,
                                                       source.layers[2].moving_mean.numpy())


def test_a_new_head_is_skipped_and_the_shared_body_restored(source):
    target = _body(extra_head="flag")
    match = _restore(source, _heads(), target, _heads(extra_head="flag"))
    assert [(r.name, r.reason) for r in match.skipped] == [("flag", "new head")]
    assert [r.owner for r in match.restored].count(None) == 2
    assert _same_weights(source.layers[1], target.layers[1])
    assert "skipped layer 4 'flag' (head 'flag'): new head" in match.report()  # Keras' order


def test_a_head_with_more_classes_is_skipped_for_its_shapes(source):
    target = _body(kind_classes=4)
    match = _restore(source, _heads(), target, _heads(kind_classes=4))
    assert {r.owner for r in match.skipped} == {"kind"} and len(match.skipped) == 2
    assert all(r.reason.startswith("shapes differ: [(6, 4), (4,)] (target)")
               for r in match.skipped)
    assert {r.owner for r in match.restored} == {None, "size"}
    assert not _same_weights(source.layers[4], target.layers[3])  # kind's first layer: fresh


def test_a_renamed_head_is_new_unless_head_map_maps_it(source):
    match = _restore(source, _heads(), _body(size_name="mass"), _heads(size_name="mass"))
    assert [(r.name, r.reason) for r in match.skipped] == [("mass", "new head")]
    assert match.dropped_heads == ("size",)
    assert "Source head(s) not used: 'size'." in match.report()

    target = _body(size_name="mass")
    match = _restore(source, _heads(), target, _heads(size_name="mass"),
                     head_map={"mass": "size"})
    assert not match.skipped and not match.dropped_heads
    assert _same_weights(source.get_layer("size"), target.get_layer("mass"))
    with pytest.raises(hk.ConfigError, match=r"head_map maps 'mas' -> 'size', but the target "
                                             r"has no layers .* owned by head 'mas'"):
        _restore(source, _heads(), target, _heads(size_name="mass"), head_map={"mas": "size"})


def test_another_shared_body_names_the_first_mismatched_layer(source):
    wider = _body(width=16)
    with pytest.raises(hk.ConfigError, match=(
            r"shared layer #0: target layer 1 'dense(_\d+)?' "
            r"\(Dense, shapes \[\(4, 16\), \(16,\)\]\) vs source layer 1 'dense(_\d+)?' "
            r"\(Dense, shapes \[\(4, 8\), \(8,\)\]\)\. "
            r"Use the same body .* new model_dir")):
        _restore(source, _heads(), wider, _heads())


def test_a_source_without_values_is_rejected(source):
    structure = body_structure(source, _heads(), with_values=False)
    with pytest.raises(hk.ConfigError, match=r"source layer 1 'dense.*' .* has no values"):
        match_weights(structure, structure)
    with pytest.raises(hk.ConfigError, match=r"values of shapes \[\(2,\)\] were given"):
        LayerWeights(index=0, name="d", class_name="Dense", owner=None, shapes=[(3,)],
                     values=[np.zeros(2)])


#: A tf.estimator checkpoint names its variables as tf.keras 2 did in a graph.
TF_KERAS_2_ONLY = pytest.mark.skipif(
    KERAS_MAJOR >= 3, reason="reads tf.estimator checkpoints, named by tf.keras 2 (TF 2.15)")


def _write_checkpoint(directory, body, step=7):
    """A tf.estimator-style checkpoint of ``body``: variables named as in a fresh graph."""
    known = {}
    with tf.Graph().as_default():
        model = instantiate_body(body)
        global_step = tf.compat.v1.train.get_or_create_global_step()
        rng = np.random.default_rng(1)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for variable in model.weights:
                known[variable.name] = rng.uniform(2.0, 3.0, variable.shape).astype("float32")
                session.run(variable.assign(known[variable.name]))
            session.run(global_step.assign(step))
            tf.compat.v1.train.Saver().save(session, str(directory / "model.ckpt"),
                                            global_step=step)
        names = [[w.name for w in layer.weights] for layer in model.layers]
    return [[known[name] for name in layer] for layer in names]


@TF_KERAS_2_ONLY
def test_checkpoint_weights_reads_an_estimator_checkpoint_by_structure(tmp_path):
    expected = _write_checkpoint(tmp_path, _body)
    structure = checkpoint_weights(_body, _heads(), str(tmp_path))
    assert [(w.index, w.owner) for w in structure] == [
        (1, None), (2, None), (3, "kind"), (4, "kind"), (5, "size")]
    for layer in structure:
        assert all(np.array_equal(a, b) for a, b in zip(layer.values, expected[layer.index]))

    target = _body()  # migration: the Estimator's body weights into an eager Keras model
    apply_weights(target, match_weights(structure, body_structure(target, _heads())))
    with pytest.raises(hk.ConfigError, match=r"layer 4 'kind' cannot take the matched weights"):
        apply_weights(_body(kind_classes=4), match_weights(structure, structure))
    assert np.array_equal(target.layers[2].moving_variance.numpy(), expected[2][3])


@TF_KERAS_2_ONLY
def test_checkpoint_weights_names_a_missing_layer_and_the_checkpoint(tmp_path):
    _write_checkpoint(tmp_path, _body)
    with pytest.raises(hk.ConfigError, match=(
            r"layer 4 'flag' \(Dense.*checkpoint '.*' has no variable 'flag/kernel'.*"
            r"pass the body it was trained with")):
        checkpoint_weights(lambda: _body(extra_head="flag"), _heads(extra_head="flag"),
                           str(tmp_path))
    with pytest.raises(hk.ConfigError, match=(
            r"layer 4 'kind' \(Dense.*holds 'kind/kernel' with shape \(6, 3\); shape \(6, 4\)")):
        checkpoint_weights(lambda: _body(kind_classes=4), _heads(kind_classes=4), str(tmp_path))
    with pytest.raises(hk.ConfigError, match=r"checkpoint '.*nowhere' cannot be read"):
        checkpoint_weights(_body, _heads(), str(tmp_path / "nowhere"))


@pytest.mark.skipif(KERAS_MAJOR < 3, reason="Keras 3 only: tf.keras 2 reads these checkpoints")
def test_checkpoint_weights_under_keras_3_says_to_read_it_on_tensorflow_2_15(tmp_path):
    with pytest.raises(hk.ConfigError, match=r"Keras 3 \(TensorFlow .*\) builds other names. "
                                             r"Read it on TensorFlow 2.15 with headkit\[esti"):
        checkpoint_weights(_body, _heads(), str(tmp_path))
