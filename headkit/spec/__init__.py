"""The declarative layer: heads, output types, HeadSets, config files, the catalog of names.

Imports no TensorFlow (import-linter checks it): everything here is plain
configuration, checked when it is built.
"""

from headkit.spec.catalog import metric_direction
from headkit.spec.head import Head, LossFn
from headkit.spec.headset import HeadSet
from headkit.spec.keys import metric_key
from headkit.spec.output_types import (
    Classification,
    Logistic,
    MultiLabel,
    OutputType,
    Poisson,
    Predict,
    Regression,
)
from headkit.spec.weighting import (
    DynamicWeightAverage,
    FixedWeighting,
    PCGrad,
    UncertaintyWeighting,
)

__all__ = ["Head", "HeadSet", "Classification", "MultiLabel", "Regression", "Poisson", "Logistic",
           "Predict", "OutputType", "LossFn", "metric_key", "metric_direction",
           "FixedWeighting", "UncertaintyWeighting", "DynamicWeightAverage", "PCGrad"]
