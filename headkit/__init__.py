"""headkit: declarative multi-head tf.estimator models with a Keras body.

Example:
    >>> import headkit as hk
    >>> heads = hk.HeadSet([hk.Head("y", hk.Regression(), metrics=("rmse",))])
    >>> heads.metric_names
    ('loss', 'y/loss', 'y/rmse')
"""

import importlib

from headkit.heads import Classification, Head, Predict, Regression
from headkit.headset import HeadSet, metric_key

__version__ = "0.1.0"

# TensorFlow-backed names load on first use, so `import headkit` and the
# config classes stay free of TensorFlow (fast, and testable without it).
_LAZY = {
    "Estimator": "headkit.estimator",
    "export": "headkit.serving",
    "load": "headkit.serving",
    "ExportError": "headkit.serving",
    "LoadedModel": "headkit.serving",
    "DataError": "headkit.errors",
    "NonFiniteLossError": "headkit.errors",
    "CheckpointError": "headkit.checkpoints",
    "input_fn": "headkit.inputs",
    "input_fn_from_dataframe": "headkit.inputs",
    "train_and_evaluate": "headkit.training",
    "EarlyStopping": "headkit.training",
    "BestExport": "headkit.training",
    "TrainResult": "headkit.run_state",
    "Evaluation": "headkit.run_state",
    "quiet_tensorflow": "headkit.progress",
}

__all__ = [
    "Classification",
    "Regression",
    "Predict",
    "Head",
    "HeadSet",
    "metric_key",
    *_LAZY,
    "__version__",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'headkit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
