"""The Estimator backend: ``hk.Estimator`` on tf.estimator (TensorFlow 2.13 to 2.15).

Everything that touches tf.estimator lives here: the model_fn, optimizers,
hooks, resume, the checkpoint guard, the SavedModel writer and the native
``train_and_evaluate`` loop.
"""

from headkit.estimator.estimator import Estimator

__all__ = ["Estimator"]
