"""headkit: declarative multi-head TensorFlow models with a Keras body.

Example:
    >>> import headkit as hk
    >>> heads = hk.HeadSet([hk.Head("y", hk.Regression(), metrics=("rmse",))])
    >>> heads.metric_names
    ('loss', 'y/loss', 'y/rmse')
"""

import importlib

from headkit.errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    DataError,
    ExportError,
    HeadkitError,
    NonFiniteLossError,
)
from headkit.spec import (
    Classification,
    DynamicWeightAverage,
    FixedWeighting,
    Head,
    HeadSet,
    Logistic,
    MultiLabel,
    PCGrad,
    Poisson,
    Predict,
    Regression,
    UncertaintyWeighting,
    metric_key,
)

__version__ = "0.1.0"

# TensorFlow-backed names load on first use, so `import headkit` and the
# config classes stay free of TensorFlow (fast, and testable without it).
_LAZY = {
    "Estimator": "headkit.estimator",
    "KerasModel": "headkit.keras",
    "export": "headkit.serving",
    "load": "headkit.serving.loading",
    "LoadedModel": "headkit.serving.loading",
    "input_fn": "headkit.data.inputs",
    "input_fn_from_dataframe": "headkit.data.inputs",
    "train_and_evaluate": "headkit.training.loop",
    "EarlyStopping": "headkit.training.rules",
    "BestExport": "headkit.training.rules",
    "TrainResult": "headkit.training.result",
    "Evaluation": "headkit.training.result",
    "quiet_tensorflow": "headkit.training.progress",
    "WeightMatch": "headkit.training.weights",
    "diff_exports": "headkit.serving.diff",
    "ExportDiff": "headkit.serving.diff",
}

__all__ = [
    "Classification",
    "MultiLabel",
    "Regression",
    "Poisson",
    "Logistic",
    "Predict",
    "Head",
    "HeadSet",
    "FixedWeighting",
    "UncertaintyWeighting",
    "DynamicWeightAverage",
    "PCGrad",
    "metric_key",
    "HeadkitError",
    "ConfigError",
    "DataError",
    "NonFiniteLossError",
    "ExportError",
    "CheckpointError",
    "BackendUnavailableError",
    *_LAZY,
    "__version__",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'headkit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
