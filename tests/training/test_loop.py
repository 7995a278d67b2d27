"""train_and_evaluate drives any backend of the protocol: a pure-Python fake, no TensorFlow.

The fake trains nothing: its evaluations follow a script, so early stopping,
best exports, the state file and resume are checked for any backend, exactly.
"""

from __future__ import annotations

import io
import json
import os

import pytest

import headkit as hk
from headkit.training.protocol import Backend
from headkit.training.rules import EarlyStopping, count_evaluation, export_rank, new_count
from headkit.training.state import STATE_FILE

HEADS = hk.HeadSet([hk.Head("y", hk.Regression(), metrics=("rmse",))])


class FakeBackend:
    """Steps are counters; ``evaluate`` returns ``script[step]``; exports are folders."""

    is_chief = True

    def __init__(self, model_dir, script, heads=HEADS, input_ends_at=None):
        self.model_dir, self.heads, self.body = model_dir, heads, None
        self.script, self.input_ends_at = script, input_ends_at
        self.calls = []
        os.makedirs(model_dir, exist_ok=True)

    def global_step(self):
        path = os.path.join(self.model_dir, "step")
        return int(open(path).read()) if os.path.exists(path) else 0

    def latest_checkpoint(self):
        return f"{self.model_dir}/ckpt-{self.global_step()}" if self.global_step() else None

    def train(self, input_fn, max_steps=None):
        self.calls.append(("train", max_steps))
        step = max_steps if self.input_ends_at is None else min(max_steps, self.input_ends_at)
        with open(os.path.join(self.model_dir, "step"), "w") as handle:
            handle.write(str(step))

    def evaluate(self, input_fn, steps=None):
        step = self.global_step()
        self.calls.append(("evaluate", step))
        return {"global_step": step, **self.script[step]}

    def predict(self, input_fn):
        return iter(())

    def export(self, export_dir_base, **options):
        self.exports = getattr(self, "exports", 0) + 1
        path = os.path.join(export_dir_base, f"{self.exports:04d}")
        os.makedirs(path)
        with open(os.path.join(path, "manifest.json"), "w") as handle:
            json.dump(options.get("extra_manifest", {}), handle)
        return path


def _metrics(loss, rmse):
    return {"loss": loss, "y/loss": loss, "y/rmse": rmse}


PLATEAU = {10: _metrics(1.0, 3.0), 20: _metrics(0.5, 2.0), 30: _metrics(0.6, 2.5),
           40: _metrics(0.7, 2.2), 50: _metrics(0.8, 2.1), 60: _metrics(0.9, 1.0)}


def test_the_fake_is_a_backend():
    assert isinstance(FakeBackend("/tmp/x", {}), Backend)


def test_early_stopping_fires_after_patience_evaluations_without_improvement(tmp_path):
    model = FakeBackend(str(tmp_path), PLATEAU)
    result = hk.train_and_evaluate(model, lambda: None, lambda: None, max_steps=60,
                                   eval_every=10, early_stopping=hk.EarlyStopping("loss",
                                                                                  patience=2),
                                   progress=False)
    assert (result.steps, result.stopped_early, result.best_step) == (40, True, 20)
    assert [e.step for e in result.history] == [10, 20, 30, 40]
    assert "loss did not improve by more than 0.0 for 2 evaluations (best 0.5 at step 20)" in (
        result.stop_reason)
    assert model.calls[-1] == ("evaluate", 40)  # nothing ran after the deciding evaluation


def test_best_exports_keep_the_n_best_by_the_chosen_metric_and_delete_the_rest(tmp_path):
    model = FakeBackend(str(tmp_path), PLATEAU)
    result = hk.train_and_evaluate(model, lambda: None, lambda: None, max_steps=60,
                                   eval_every=10, export=hk.BestExport("y/rmse", keep=2),
                                   progress=False)
    kept = [json.load(open(os.path.join(p, "manifest.json")))["best_export"]["step"]
            for p in result.exports]
    assert kept == [60, 20]  # rmse 1.0 and 2.0; by loss they would be 20 and 30
    best = os.path.join(str(tmp_path), "export", "best")
    assert sorted(os.listdir(best)) == sorted(os.path.basename(p) for p in result.exports)
    final = json.load(open(os.path.join(result.final_export, "manifest.json")))
    assert final["final_export"]["step"] == 60


def test_a_rerun_continues_the_count_from_the_state_file(tmp_path):
    rule = hk.EarlyStopping("loss", patience=3)
    model = FakeBackend(str(tmp_path), PLATEAU)
    first = hk.train_and_evaluate(model, lambda: None, lambda: None, max_steps=40,
                                  eval_every=10, early_stopping=rule, progress=False)
    assert not first.stopped_early and first.steps == 40
    with open(tmp_path / STATE_FILE) as handle:
        assert json.load(handle)["early_stopping"]["evals_without_improvement"] == 2
    again = hk.train_and_evaluate(FakeBackend(str(tmp_path), PLATEAU), lambda: None,
                                  lambda: None, max_steps=60, eval_every=10,
                                  early_stopping=rule, progress=False)
    assert (again.steps, again.stopped_early) == (50, True)  # a fresh count would stop at 60
    assert [e.step for e in again.history] == [10, 20, 30, 40, 50]


def test_a_training_input_that_ends_early_ends_the_loop_and_says_so(tmp_path):
    model = FakeBackend(str(tmp_path), {**PLATEAU, 25: _metrics(0.4, 1.5)},
                        input_ends_at=25)
    stream = io.StringIO()
    result = hk.train_and_evaluate(model, lambda: None, lambda: None, max_steps=60,
                                   eval_every=10, progress=stream)
    assert result.steps == 25 and [e.step for e in result.history] == [10, 20, 25]
    assert "the training input ended at step 25, before max_steps=60" in result.stop_reason
    assert "step 25/60" in stream.getvalue()


def test_a_model_that_is_not_a_backend_is_refused_naming_what_it_lacks(tmp_path):
    class Half:
        heads = HEADS
        model_dir = str(tmp_path)

        def train(self, input_fn, max_steps=None):
            pass

    with pytest.raises(hk.ConfigError, match=r"needs a headkit model .* which lacks "
                                             r"\['evaluate', 'export', 'latest_checkpoint', "
                                             r"'global_step'\]"):
        hk.train_and_evaluate(Half(), lambda: None, None, max_steps=10)


# ------------------------------------------------------------------ pure rules


def test_count_evaluation_is_pure_and_ignores_nan():
    rule = EarlyStopping("loss", patience=2, min_delta=0.1)
    start = new_count(rule)
    after = count_evaluation(rule, start, 10, {"loss": float("nan")})
    assert start["evals_without_improvement"] == 0 and after["evals_without_improvement"] == 1
    after = count_evaluation(rule, after, 20, {"loss": 1.0})
    after = count_evaluation(rule, after, 30, {"loss": 0.95})  # not by more than 0.1
    assert (after["best_step"], after["evals_without_improvement"], after["stop_step"]) == (
        20, 1, None)


@pytest.mark.parametrize("kept, value, direction, keep, rank", [
    ([0.9, 0.8], 0.85, "max", 2, 1),
    ([0.9, 0.8], 0.8, "max", 3, 2),  # a tie keeps the earlier one first
    ([0.9, 0.8], 0.7, "max", 2, None),
    ([1.0, 2.0], 0.5, "min", 2, 0),
    ([], float("nan"), "min", 2, None),
])
def test_export_rank(kept, value, direction, keep, rank):
    assert export_rank(kept, value, direction, keep) == rank


def test_best_export_passes_its_subset_of_heads_to_every_export(tmp_path):
    heads = hk.HeadSet([hk.Head("y", hk.Regression(), metrics=("rmse",), is_default=True),
                        hk.Head("z", hk.Regression())])
    model = FakeBackend(str(tmp_path), {10: {**_metrics(1.0, 3.0), "z/loss": 1.0},
                                        20: {**_metrics(0.5, 2.0), "z/loss": 1.0}}, heads=heads)
    calls = []
    real = model.export
    model.export = lambda base, **options: calls.append(options) or real(base, **options)
    hk.train_and_evaluate(model, lambda: None, lambda: None, max_steps=20, eval_every=10,
                          export=hk.BestExport("y/rmse", keep=1, heads=["z"], default="z"),
                          progress=False)
    assert len(calls) == 3  # two best exports, one final
    assert all(c["heads"] == ("z",) and c["default"] == "z" for c in calls)


@pytest.mark.parametrize("rule, message", [
    (dict(heads=["y", "w"]), r"BestExport: heads: \['w'\] are not heads of this model"),
    (dict(heads=["z", "q"]), r"BestExport: default= is required: the HeadSet's default head "
                             r"'y' is not among the exported heads \['z', 'q'\]"),
])
def test_a_best_export_subset_is_checked_against_the_heads_before_training(rule, message,
                                                                          tmp_path):
    heads = hk.HeadSet([hk.Head("y", hk.Regression(), is_default=True),
                        hk.Head("z", hk.Regression()), hk.Head("q", hk.Regression())])
    model = FakeBackend(str(tmp_path / "m"), {}, heads=heads)
    with pytest.raises(hk.ConfigError, match=message):
        hk.train_and_evaluate(model, lambda: None, lambda: None, max_steps=20, eval_every=10,
                              export=hk.BestExport(keep=1, **rule), progress=False)
    assert model.calls == []


@pytest.mark.parametrize("rule, error, message", [
    (dict(heads="y"), TypeError, r"BestExport.heads must be a non-empty list of head names "
                                 r"\(got 'y'\); e.g. heads=\['species', 'sex'\]"),
    (dict(heads=["y"], default="z"), hk.ConfigError,
     r"BestExport.default='z' must be one of the exported heads \['y'\]"),
])
def test_a_best_export_subset_is_checked_when_built(rule, error, message):
    with pytest.raises(error, match=message):
        hk.BestExport(**rule)
