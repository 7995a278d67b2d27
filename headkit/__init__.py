"""headkit: declarative multi-head tf.estimator models with a Keras body.

Example:
    >>> import headkit as hk
    >>> heads = hk.HeadSet([hk.Head("y", hk.Regression(), metrics=("rmse",))])
    >>> heads.metric_names
    ('loss', 'y/loss', 'y/rmse')
"""

from headkit.heads import Classification, Head, Predict, Regression
from headkit.headset import HeadSet, metric_key

__version__ = "0.1.0"

__all__ = [
    "Classification",
    "Regression",
    "Predict",
    "Head",
    "HeadSet",
    "metric_key",
    "Estimator",
    "__version__",
]


def __getattr__(name):
    # TensorFlow-backed names load on first use, so `import headkit` and the
    # config classes stay free of TensorFlow (fast, and testable without it).
    if name == "Estimator":
        from headkit.estimator import Estimator

        return Estimator
    raise AttributeError(f"module 'headkit' has no attribute {name!r}")
