"""The saved input position is a position, not the data: a rerun never replays old rows.

Each run is its own process, as a user's rerun is.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tensorflow as tf

from headkit.estimator.resume import FINGERPRINT, POSITION
from tests.conftest import ROOT

MARKER = "replay-marker-7f3a"  # a feature value only the first run's data holds

RUN = """
import sys
import numpy as np
import tensorflow as tf
import headkit as hk
from tests.conftest import make_data, tiny_body, tiny_heads

model_dir, max_steps, variant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
features, labels = make_data(64, seed=0 if variant == "first" else 1)
if variant == "first":
    features["tag"] = np.full((64, 1), "{marker}")
heads = tiny_heads()
estimator = hk.Estimator(tiny_body, heads, learning_rate=0.05, model_dir=model_dir,
                         config=tf.estimator.RunConfig(save_checkpoints_steps=3))
train = hk.input_fn(features, labels, heads, batch_size=8, shuffle=True, num_epochs=None, seed=0)
estimator.train(train, max_steps=max_steps)
""".format(marker=MARKER)


def _run(model_dir: str, max_steps: int, variant: str) -> str:
    done = subprocess.run([sys.executable, "-c", RUN, model_dir, str(max_steps), variant],
                          cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def _position(model_dir: str):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
    return int(reader.get_tensor(POSITION)), reader.get_tensor(FINGERPRINT).decode()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("replay") / "model")
    _run(model_dir, 6, "first")
    return model_dir


def test_checkpoints_hold_a_position_and_never_the_rows(first_run):
    position, fingerprint = _position(first_run)
    assert position == 6 and len(fingerprint) == 32
    for name in os.listdir(first_run):
        path = os.path.join(first_run, name)
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                assert MARKER.encode() not in handle.read(), f"{name} holds the training rows"


@pytest.mark.timeout(300)
def test_a_rerun_on_the_same_data_continues_from_the_saved_position(first_run, tmp_path):
    import shutil

    model_dir = str(tmp_path / "same")
    shutil.copytree(first_run, model_dir)
    log = _run(model_dir, 9, "first")
    assert "training data changed" not in log
    assert _position(model_dir)[0] == 9


@pytest.mark.timeout(300)
def test_a_rerun_on_new_data_starts_it_from_its_beginning_and_says_so(first_run, tmp_path):
    import shutil

    model_dir = str(tmp_path / "changed")
    shutil.copytree(first_run, model_dir)
    old_fingerprint = _position(model_dir)[1]
    log = _run(model_dir, 9, "second")
    assert "the training data changed since the checkpoint" in log
    assert "instead of batch 6" in log
    position, fingerprint = _position(model_dir)
    assert position == 3 and fingerprint != old_fingerprint  # 3 batches of the new data
