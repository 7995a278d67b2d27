"""Shared fixtures (a tiny 3-head model, trained once per session, and its export) and the
``estimator`` marker.

A test marked ``estimator`` needs tf.estimator, so TensorFlow 2.15 with
``headkit[estimator]``; the newest-TensorFlow run of ``.ci/run`` deselects them
(``-m "not estimator"``). A test gets the mark:

- from ``@pytest.mark.estimator`` (or a module's ``pytestmark``);
- by living in ``tests/estimator/``;
- by using a fixture that builds an ``hk.Estimator``: ``trained`` and ``exported``
  here, and those a test module names in its ``ESTIMATOR_FIXTURES``.

Where tf.estimator cannot run, ``tests/estimator/`` is not collected (its modules
import the backend) and other marked tests are skipped, saying why.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

#: The repository root.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The fixtures below that build an hk.Estimator.
ESTIMATOR_FIXTURES = ("trained", "exported", "with_ids", "lifecycle")
_ESTIMATOR_DIR = os.path.join(ROOT, "tests", "estimator")


def _estimator_unavailable():
    """Why tf.estimator cannot run here (None when it can); imports TensorFlow."""
    from headkit.estimator import unavailable_reason

    return unavailable_reason()


#: Modules outside tests/estimator/ that need tf.estimator as they are imported (they
#: compare with its canned heads or build hk.Estimator models at module level); each has
#: ``pytestmark = pytest.mark.estimator`` and is listed in tests/test_selection.py.
ESTIMATOR_MODULES = tuple(os.path.join(ROOT, *path.split("/")) for path in (
    "tests/kinds/test_logistic.py", "tests/kinds/test_multi_label.py",
    "tests/kinds/test_poisson.py", "tests/training/test_warm_start.py",
))


def pytest_ignore_collect(collection_path, config):
    path = str(collection_path)
    if (path == _ESTIMATOR_DIR or path in ESTIMATOR_MODULES) and _estimator_unavailable():
        return True
    return None


def needs_estimator(item) -> bool:
    """Whether a collected test needs tf.estimator (see the module docstring)."""
    fixtures = ESTIMATOR_FIXTURES + tuple(getattr(item.module, "ESTIMATOR_FIXTURES", ()))
    return (item.get_closest_marker("estimator") is not None
            or str(item.path).startswith(_ESTIMATOR_DIR + os.sep)
            or any(name in fixtures for name in item.fixturenames))


def pytest_collection_modifyitems(config, items):
    reason = None
    for item in items:
        if not needs_estimator(item):
            continue
        item.add_marker(pytest.mark.estimator)
        reason = reason or _estimator_unavailable()
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"needs tf.estimator: {reason}"))

VOCABULARY = ("a", "b", "c")


def make_data(n: int = 96, seed: int = 0):
    """Features {"x": [n, 4] float32, "tag": [n, 1] str} and labels for the tiny heads."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    tag = np.array(["u", "v"])[rng.integers(0, 2, n)].reshape(-1, 1)
    labels = {
        "kind": np.array(VOCABULARY)[np.argmax(x[:, :3], axis=1)],
        "size": (x.sum(axis=1) * 2.0).astype("float32"),
        "flag": (x[:, 3] > 0).astype("int64"),
    }
    return {"x": x, "tag": tag}, labels


def tiny_heads(default: str = "kind"):
    import headkit as hk

    return hk.HeadSet(
        [
            hk.Head("kind", hk.Classification(vocabulary=VOCABULARY), metrics=("accuracy",),
                    is_default=default == "kind"),
            hk.Head("size", hk.Regression(), metrics=("rmse", "mae"), weight=0.5,
                    is_default=default == "size"),
            hk.Head("flag", hk.Classification(2), metrics=("accuracy", "auc"),
                    is_default=default == "flag"),
        ]
    )


def tiny_body():
    """x (4 floats) and tag (a string looked up in the body) -> three head outputs."""
    import tensorflow as tf

    x = tf.keras.Input((4,), name="x")
    tag = tf.keras.Input((1,), name="tag", dtype=tf.string)
    tag_id = tf.keras.layers.StringLookup(vocabulary=["u", "v"])(tag)
    tag_vector = tf.keras.layers.Flatten()(tf.keras.layers.Embedding(3, 2)(tag_id))
    h = tf.keras.layers.Concatenate()([x, tag_vector])
    h = tf.keras.layers.Dense(16, activation="relu")(h)
    return tf.keras.Model(
        {"x": x, "tag": tag},
        {
            "kind": tf.keras.layers.Dense(3, name="kind")(h),
            "size": tf.keras.layers.Dense(1, name="size")(h),
            "flag": tf.keras.layers.Dense(1, name="flag")(h),
        },
    )


def numeric_body():
    """The tiny heads on a body XLA can compile: numbers in, an L2 penalty and batch norm."""
    import tensorflow as tf

    x = tf.keras.Input((4,), name="x")
    h = tf.keras.layers.Dense(8, activation="relu",
                              kernel_regularizer=tf.keras.regularizers.l2(0.5))(x)
    h = tf.keras.layers.BatchNormalization()(h)
    return tf.keras.Model({"x": x}, {"kind": tf.keras.layers.Dense(3, name="kind")(h),
                                     "size": tf.keras.layers.Dense(1, name="size")(h),
                                     "flag": tf.keras.layers.Dense(1, name="flag")(h)})


def signature_contract(export_dir):
    """What TF Serving sees of an export: each signature's method, inputs and outputs with dtypes
    and shapes (TF 2's internal ``__saved_model_init_op`` left out)."""
    from headkit.serving.contract import read_signature_defs

    def tensors(infos):
        return {n: (t.dtype, [d.size for d in t.tensor_shape.dim]) for n, t in infos.items()}

    return {key: (sig.method_name, tensors(sig.inputs), tensors(sig.outputs))
            for key, sig in read_signature_defs(export_dir).items() if not key.startswith("__")}


def numpy_input_fn(features, labels=None, batch_size=32, repeat=True):
    import tensorflow as tf

    def input_fn():
        data = dict(features) if labels is None else (dict(features), dict(labels))
        dataset = tf.data.Dataset.from_tensor_slices(data)
        if repeat:
            dataset = dataset.repeat()
        return dataset.batch(batch_size)

    return input_fn


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny 3-head hk.Estimator trained for 30 steps, with its data."""
    import headkit as hk

    features, labels = make_data()
    estimator = hk.Estimator(
        tiny_body, tiny_heads(), optimizer="adam", learning_rate=0.05,
        model_dir=str(tmp_path_factory.mktemp("tiny_model")),
    )
    estimator.train(numpy_input_fn(features, labels), steps=30)
    return estimator, features, labels


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """The export of the session's tiny model: (estimator, export_dir, features)."""
    estimator, features, _ = trained
    export_dir = estimator.export(str(tmp_path_factory.mktemp("tiny_exports")))
    return estimator, export_dir, features


# ------------------------------------------------------------------ lifecycle


def lifecycle_heads(n_kind: int = 3, size_name: str = "size", flag: bool = False):
    """'kind' (a vocabulary of ``n_kind`` classes) and a regression head, plus 'flag' if asked."""
    import headkit as hk

    heads = [hk.Head("kind", hk.Classification(vocabulary=("a", "b", "c", "d")[:n_kind]),
                     metrics=("accuracy",), is_default=True),
             hk.Head(size_name, hk.Regression(), metrics=("rmse",))]
    if flag:
        heads.append(hk.Head("flag", hk.Classification(2)))
    return hk.HeadSet(heads)


def lifecycle_body(n_kind: int = 3, size_name: str = "size", flag: bool = False):
    """A shared Dense + BatchNormalization trunk and one Dense layer per head."""
    import tensorflow as tf

    x = tf.keras.Input((4,), name="x")
    h = tf.keras.layers.Dense(8, activation="relu")(x)
    h = tf.keras.layers.BatchNormalization()(h)
    outputs = {"kind": tf.keras.layers.Dense(n_kind, name="kind")(h),
               size_name: tf.keras.layers.Dense(1, name=size_name)(h)}
    if flag:
        outputs["flag"] = tf.keras.layers.Dense(1, name="flag")(h)
    return tf.keras.Model({"x": x}, outputs)


def lifecycle_data(n: int = 64):
    """Features x, tag and example_id (one string per row); labels for every lifecycle head."""
    features, labels = make_data(n)
    features["example_id"] = np.array([f"row-{i}" for i in range(n)])
    labels["mass"] = labels["size"]
    return features, labels


def lifecycle_input(heads, n: int = 64, **options):
    import headkit as hk

    features, labels = lifecycle_data(n)
    labels = {key: labels[key] for key in heads.label_keys}
    return hk.input_fn(features, labels, heads, batch_size=16, num_epochs=None, **options)


#: The warm starts of the lifecycle fixture: name -> (body and heads options, head_map).
LIFECYCLE_CASES = {
    "flag": ({"flag": True}, None),            # a head added
    "four_classes": ({"n_kind": 4}, None),     # 'kind' reshaped: n_classes 3 -> 4
    "renamed": ({"size_name": "mass"}, {"mass": "size"}),  # 'size' renamed, mapped
}


@pytest.fixture(scope="session")
def lifecycle(tmp_path_factory):
    """An hk.Estimator trained 10 steps, and each LIFECYCLE_CASES warm start from it (1 step).

    Returns ``{"source" | case: (estimator, export_dir)}``.
    """
    import functools

    import headkit as hk

    root = tmp_path_factory.mktemp("lifecycle")
    source = hk.Estimator(lifecycle_body, lifecycle_heads(), learning_rate=0.05,
                          model_dir=str(root / "source"))
    source.train(lifecycle_input(source.heads, seed=0, shuffle=True), steps=10)
    models = {"source": source}
    for name, (options, head_map) in LIFECYCLE_CASES.items():
        models[name] = hk.Estimator(functools.partial(lifecycle_body, **options),
                                    lifecycle_heads(**options), learning_rate=0.05,
                                    model_dir=str(root / name), warm_start_from=source.model_dir,
                                    head_map=head_map)
        models[name].train(lifecycle_input(models[name].heads), steps=1)
    return {name: (model, model.export(str(root / "exports" / name)))
            for name, model in models.items()}


#: The pass-through features of ``with_ids``: one declared, one a body Input.
PASSTHROUGH = {"example_id": "declared", "tag": "body input"}


@pytest.fixture(scope="session")
def with_ids(trained, tmp_path_factory):
    """The session's tiny model passing example_id (declared) and tag (a body Input) through.

    Returns ``(estimator, export_dir)``; the export serves every head.
    """
    import tensorflow as tf

    import headkit as hk

    estimator, _, _ = trained
    with_ids = hk.Estimator(tiny_body, tiny_heads(), model_dir=estimator.model_dir,
                            passthrough={"example_id": tf.TensorSpec([None], tf.string),
                                         "tag": None})
    return with_ids, with_ids.export(str(tmp_path_factory.mktemp("with_ids")))


def multitask_data(n: int = 96, seed: int = 0):
    """make_data with the size label in "grams" (mean 5000, spread ~400): normalisation matters."""
    features, labels = make_data(n, seed)
    labels["size"] = (labels["size"] * 100.0 + 5000.0).astype("float32")
    return features, labels


def multitask_heads(labels, **options):
    """The tiny heads with a normalised size head and class weights, weights 1.0."""
    import headkit as hk

    return hk.HeadSet([
        hk.Head("kind", hk.Classification(vocabulary=VOCABULARY), metrics=("accuracy",),
                is_default=True, class_weight={"a": 2.0}),
        hk.Head("size", hk.Regression.from_labels(labels["size"]), metrics=("rmse",)),
        hk.Head("flag", hk.Classification(2), metrics=("accuracy",)),
    ], **options)
