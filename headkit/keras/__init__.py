"""The Keras backend: ``hk.KerasModel``, the same HeadSet and export without tf.estimator.

Runs on TensorFlow 2.15 (tf.keras 2) and on the newest TensorFlow.
"""

from headkit.keras.model import KerasModel

__all__ = ["KerasModel"]
