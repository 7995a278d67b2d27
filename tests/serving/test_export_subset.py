"""Exporting a subset of heads: their signatures only, a default among them, recorded and shown."""

from __future__ import annotations

import os

import pytest

import headkit as hk
from headkit import cli
from headkit.serving.inspection import describe_export, format_table
from tests.conftest import make_data


@pytest.fixture(scope="module")
def subset(trained, tmp_path_factory):
    estimator, _, _ = trained
    return estimator.export(str(tmp_path_factory.mktemp("subset")), heads=["size", "flag"],
                            default="flag")


def test_a_subset_export_holds_its_heads_signatures_only(subset):
    served = hk.load(subset)
    assert sorted(served.signatures) == ["flag", "flag/predict", "predict", "serving_default",
                                         "size", "size/predict"]
    assert served.signatures["serving_default"]["method"] == "tensorflow/serving/classify"
    assert served.signatures["serving_default"]["heads"] == ["flag"]
    assert {key.split("/")[0] for key in served.signatures["predict"]["outputs"]} == {
        "size", "flag"}
    result = served.predict(make_data(2)[0])
    assert sorted(result) == ["flag", "size"] and result["size"]["predictions"].shape == (2, 1)


def test_the_manifest_load_and_inspect_show_the_subset(subset, capsys):
    served = hk.load(subset)
    assert served.heads.names == ("size", "flag") and served.default_head.name == "flag"
    assert served.model_heads == ["kind", "size", "flag"] and served.is_subset
    description = describe_export(subset)
    assert description["model_heads"] == ["kind", "size", "flag"]
    assert "heads: size, flag (a subset of the model's kind, size, flag)   default head: flag" \
        in format_table(description)
    assert cli.main(["inspect", subset]) == 0
    assert "(a subset of the model's kind, size, flag)" in capsys.readouterr().out


def test_default_alone_points_serving_default_at_another_head(trained, tmp_path):
    estimator, _, _ = trained
    served = hk.load(estimator.export(str(tmp_path), default="size"))
    assert served.default_head.name == "size" and not served.is_subset
    assert served.signatures["serving_default"]["method"] == "tensorflow/serving/regress"


@pytest.mark.parametrize("options, message", [
    (dict(heads=["size", "flag"]), r"default= is required: the HeadSet's default head 'kind' "
                                   r"is not among the exported heads \['size', 'flag'\]"),
    (dict(heads=["size"], default="kind"), r"default='kind' must be one of the exported heads "
                                           r"\['size'\]"),
    (dict(heads=["sise"]), r"heads: \['sise'\] are not heads of this model; its heads are "
                           r"\['kind', 'size', 'flag'\]\. Did you mean 'size'\?"),
])
def test_a_subset_that_cannot_serve_is_refused_before_anything_is_written(trained, tmp_path,
                                                                          options, message):
    estimator, _, _ = trained
    with pytest.raises(hk.ConfigError, match=message):
        estimator.export(str(tmp_path / "exports"), **options)
    assert not os.path.exists(tmp_path / "exports")
