"""Output types: what a head predicts (a class, continuous values, or a raw tensor).

This module imports no TensorFlow: an output type is plain configuration,
checked when it is built. ``headkit.heads`` re-exports every name here.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import attrs

__all__ = ["Classification", "Regression", "Predict", "OutputType"]


def _optional_tuple_of_str(value: Any) -> Optional[Tuple[str, ...]]:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(
            f"vocabulary must be a sequence of strings, not one string (got {value!r}). "
            f"Write vocabulary=({value!r},...)."
        )
    return tuple(value)


@attrs.frozen
class Classification:
    """A head that picks one of ``n_classes`` classes.

    The body gives ``n_classes`` logits, or a single logit when ``n_classes``
    is 2 (sigmoid). With a ``vocabulary``, labels are strings from it and the
    exported ``classes`` are those strings; without one, labels are class ids
    in ``[0, n_classes)`` and ``classes`` are the ids as strings.

    Args:
        n_classes: number of classes, at least 2. May be left out when a
            vocabulary is given.
        vocabulary: the class names, in class-id order.

    Example:
        >>> Classification(vocabulary=("Adelie", "Chinstrap", "Gentoo")).n_classes
        3
        >>> Classification(2).vocabulary is None
        True
    """

    n_classes: Optional[int] = attrs.field(default=None)
    vocabulary: Optional[Tuple[str, ...]] = attrs.field(
        default=None, converter=_optional_tuple_of_str
    )

    kind = "classification"

    def __attrs_post_init__(self) -> None:
        vocabulary = self.vocabulary
        if vocabulary is not None:
            bad = [v for v in vocabulary if not isinstance(v, str) or not v]
            if bad:
                raise ValueError(
                    f"vocabulary entries must be non-empty strings (got {bad!r}). "
                    "Map your classes to names, or leave vocabulary out and use class ids."
                )
            duplicates = sorted({v for v in vocabulary if vocabulary.count(v) > 1})
            if duplicates:
                raise ValueError(
                    f"vocabulary entries must be unique (repeated: {duplicates!r})."
                )
            if self.n_classes is None:
                object.__setattr__(self, "n_classes", len(vocabulary))
        n_classes = self.n_classes
        if n_classes is None:
            raise ValueError(
                "Classification needs n_classes or a vocabulary (got neither). "
                "Write hk.Classification(n_classes=3) or hk.Classification(vocabulary=(...))."
            )
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(
                f"n_classes must be an integer >= 2 (got {n_classes!r}). "
                "Use hk.Regression() for a single continuous output."
            )
        if vocabulary is not None and len(vocabulary) != n_classes:
            raise ValueError(
                f"n_classes={n_classes} but the vocabulary has {len(vocabulary)} entries "
                f"{vocabulary!r}. Give one name per class, or leave n_classes out."
            )

    def to_dict(self) -> dict:
        data: dict = {"type": "classification", "n_classes": self.n_classes}
        if self.vocabulary is not None:
            data["vocabulary"] = list(self.vocabulary)
        return data


@attrs.frozen
class Regression:
    """A head that predicts ``dimension`` continuous values.

    Its natural signature is ``tensorflow/serving/regress`` when ``dimension``
    is 1. A regress signature holds one value per example, so a wider head
    is served by a predict signature instead.

    Example:
        >>> Regression().dimension
        1
    """

    dimension: int = 1
    kind = "regression"

    def __attrs_post_init__(self) -> None:
        d = self.dimension
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(
                f"dimension must be an integer >= 1 (got {d!r}). "
                "It is the number of values the head predicts per example."
            )

    def to_dict(self) -> dict:
        return {"type": "regression", "dimension": self.dimension}


@attrs.frozen
class Predict:
    """A head that is exported but never trained (an embedding, a score).

    The body's output for the head goes to serving as is: a tensor is
    exported under the key ``outputs``; a dict of tensors keeps its keys.

    Example:
        >>> Predict().kind
        'predict'
    """

    kind = "predict"

    def to_dict(self) -> dict:
        return {"type": "predict"}


OutputType = Union[Classification, Regression, Predict]
