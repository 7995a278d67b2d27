"""HeadSet: cross-head checks and names. No TensorFlow: one test proves it in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import headkit as hk
from tests.conftest import ROOT

EXAMPLES = os.path.join(ROOT, "examples")


def heads():
    return hk.HeadSet([
        hk.Head("species", hk.Classification(3), metrics=("accuracy",)),
        hk.Head("mass", hk.Regression(), label_key="body_mass_g", is_default=True),
        hk.Head("embedding", hk.Predict()),
    ])


def test_the_default_head_need_not_be_first():
    assert heads().default_head.name == "mass"


def test_label_keys_are_the_trained_heads_keys():
    assert heads().label_keys == ("species", "body_mass_g")


def test_metric_names_cover_trained_heads_only():
    assert heads().metric_names == ("loss", "species/loss", "species/accuracy", "mass/loss")


def test_unknown_head_lookup_lists_the_heads():
    with pytest.raises(KeyError, match=r"No head named 'size'; heads are \['species', 'mass', "):
        heads()["size"]


def test_a_lone_head_is_the_default():
    assert hk.HeadSet([hk.Head("y", hk.Regression())]).default_head.name == "y"


def test_select_keeps_the_named_heads_in_order_with_the_default_given():
    subset = heads().select(["mass", "species"])  # the HeadSet's default is among them
    assert subset.names == ("species", "mass") and subset.default_head.name == "mass"
    subset = heads().select(["species", "embedding"], default="species")
    assert subset.default_head.name == "species" and not subset["embedding"].is_default
    assert heads().select(["species"]).default_head.name == "species"  # a lone head
    assert heads().select() == heads()


def test_select_keeps_the_loss_weighting_and_surgery_while_two_heads_can_conflict():
    trained = hk.HeadSet(list(heads()), loss_weighting="uncertainty", gradient_surgery="pcgrad")
    both = trained.select(["species", "mass"])
    assert both.loss_weighting == hk.UncertaintyWeighting() and both.gradient_surgery == hk.PCGrad()
    lone = trained.select(["mass"])  # PCGrad needs two heads: a one-head export has none
    assert lone.loss_weighting == hk.UncertaintyWeighting() and lone.gradient_surgery is None


@pytest.mark.parametrize("names, default, error, message", [
    (["species", "embedding"], None, hk.ConfigError,
     r"default= is required: the HeadSet's default head 'mass' is not among the exported heads "
     r"\['species', 'embedding'\]\. Pass default= one of them; it serves 'serving_default'\."),
    (["species"], "mass", hk.ConfigError,
     r"default='mass' must be one of the exported heads \['species'\]"),
    (["specis"], None, hk.ConfigError,
     r"heads: \['specis'\] are not heads of this model; its heads are \['species', 'mass', "
     r"'embedding'\]\. Did you mean 'species'\?"),
    (["mass", "mass"], None, hk.ConfigError, r"heads must name each exported head once"),
    ([], None, hk.ConfigError, r"heads must name each exported head once \(got \[\]\)"),
    ("mass", None, TypeError, r"heads must be a list of head names \(got the string 'mass'\); "
                              r"write heads=\['mass'\]"),
    (["embedding"], None, hk.ConfigError,
     r"heads=\['embedding'\]: At least one head must be trained"),
])
def test_select_names_what_is_wrong_and_the_fix(names, default, error, message):
    with pytest.raises(error, match=message):
        heads().select(names, default)


def test_config_classes_and_file_reading_import_no_tensorflow():
    code = textwrap.dedent(f"""
        import sys
        import headkit as hk
        heads = hk.HeadSet.from_file({os.path.join(EXAMPLES, "heads.toml")!r})
        assert hk.HeadSet.from_dict(heads.to_dict()) == heads
        heads.metric_names
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
        print(loaded)
        sys.exit(1 if loaded else 0)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
