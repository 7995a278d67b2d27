"""Multi-task training math shared by both backends: loss weighting and gradient surgery.

The configuration (``hk.UncertaintyWeighting``, ``hk.DynamicWeightAverage``,
``hk.PCGrad``) is in ``headkit.spec.weighting``; the formulas are on the
docs page ``docs/multitask.md``.
"""

from headkit.multitask.surgery import (
    head_orders,
    project_conflicting,
    step_gradients,
    step_orders,
)
from headkit.multitask.weighting import SCOPE, LossWeights, dwa_weights

__all__ = ["LossWeights", "SCOPE", "dwa_weights", "head_orders", "project_conflicting",
           "step_gradients", "step_orders"]
