"""The Estimator backend: ``hk.Estimator`` on tf.estimator (TensorFlow 2.13 to 2.15).

Everything that touches tf.estimator lives here: the model_fn, optimizers,
hooks, resume, the checkpoint guard, the SavedModel writer and the native
``train_and_evaluate`` loop.

tf.estimator ends at TensorFlow 2.15. On a newer TensorFlow, or without
``tensorflow-estimator``, ``hk.Estimator`` is a stand-in whose construction
raises :class:`~headkit.errors.BackendUnavailableError` saying what to
install, so ``import headkit`` and every other backend keep working.
"""

from __future__ import annotations

from typing import Any, Optional

from headkit.errors import BackendUnavailableError

__all__ = ["Estimator", "unavailable_reason"]

#: The last TensorFlow (major, minor) with tf.estimator.
LAST_TENSORFLOW = (2, 15)


def unavailable_reason() -> Optional[str]:
    """Why tf.estimator cannot run here, or None when it can.

    Example:
        >>> unavailable_reason() is None  # on TensorFlow 2.15 with headkit[estimator]
        True
    """
    import tensorflow as tf

    version = tuple(int(part) for part in tf.__version__.split(".")[:2])
    if version > LAST_TENSORFLOW:
        return f"TensorFlow {tf.__version__} has no tf.estimator (it ends at 2.15)"
    try:
        import tensorflow_estimator  # noqa: F401
    except ImportError:
        return f"tensorflow-estimator is not installed beside TensorFlow {tf.__version__}"
    return None


_REASON = unavailable_reason()

if _REASON is None:
    from headkit.estimator.estimator import Estimator
else:

    class Estimator:  # type: ignore[no-redef]
        """A stand-in for ``hk.Estimator`` where tf.estimator cannot run: building one raises.

        Example:
            >>> hk.Estimator(build_body, heads)  # doctest: +SKIP
            Traceback (most recent call last):
            ...
            headkit.errors.BackendUnavailableError: hk.Estimator needs tf.estimator, ...
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise BackendUnavailableError(
                f"hk.Estimator needs tf.estimator, and {_REASON}. Install it in a virtualenv "
                "with TensorFlow 2.13 to 2.15: pip install 'headkit[estimator]' (it brings "
                "tensorflow<2.16 and tensorflow-estimator). Or use hk.KerasModel, which takes "
                "the same body and heads and runs on every TensorFlow headkit supports."
            )
