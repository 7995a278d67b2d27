"""Numbers read from NumPy are numbers: ``np.int64(3)`` is accepted wherever ``3`` is.

Imports no NumPy: NumPy's scalar types register with :mod:`numbers`.
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["as_int", "as_float", "as_bool", "plain"]


def as_int(value: Any) -> Any:
    """A NumPy or other integral scalar as a plain ``int``; anything else as it is.

    Example:
        >>> import numpy as np
        >>> as_int(np.int64(3)), as_int(2.5)
        (3, 2.5)
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
        return int(value)
    return value


def as_float(value: Any) -> Any:
    """A NumPy real scalar as a plain ``float``; booleans and the rest as they are.

    Example:
        >>> import numpy as np
        >>> as_float(np.float32(0.5))
        0.5
    """
    if _is_bool(value):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, (int, float)):
        return float(value)
    return value


def as_bool(value: Any) -> Any:
    """A NumPy boolean as a plain ``bool``; anything else as it is.

    Example:
        >>> import numpy as np
        >>> as_bool(np.bool_(True))
        True
    """
    if _is_bool(value) and not isinstance(value, bool):
        return bool(value)
    return value


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool") and hasattr(
        value, "dtype")


def plain(value: Any) -> Any:
    """A NumPy scalar as the Python number it holds, for messages (NumPy 2 reprs name the type).

    Example:
        >>> import numpy as np
        >>> repr(plain(np.float64(2.5)))
        '2.5'
    """
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return value.item()
    return value
