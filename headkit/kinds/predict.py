"""The predict kind: a body output exported as it is, never trained (an embedding, a score).

A tensor is exported under the key ``outputs``; a dict of tensors keeps its keys.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import tensorflow as tf

from headkit.kinds.base import PREDICT, Kind
from headkit.spec.head import Head

__all__ = ["Predict", "KIND"]


class Predict(Kind):
    """The :class:`~headkit.spec.output_types.Predict` output type's kind.

    Example:
        >>> from headkit import spec
        >>> sorted(KIND.predictions(spec.Head("e", spec.Predict()), tf.zeros([1, 4])))
        ['outputs']
    """

    name = "predict"

    def check_output(self, head: Head, output: Any) -> Any:
        return output

    def predictions(self, head: Head, output: Any) -> Dict[str, tf.Tensor]:
        if isinstance(output, Mapping):
            return dict(output)
        return {"outputs": output}

    def natural_method(self, head: Head) -> str:
        return PREDICT


KIND = Predict()
