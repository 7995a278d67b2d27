"""Output types: what a head predicts (a class, continuous values, or a raw tensor).

This module imports no TensorFlow: an output type is plain configuration,
checked when it is built. Its ``kind`` names the module in ``headkit.kinds``
that implements it; :data:`OUTPUT_TYPES` is what config files may name.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import attrs

from headkit.errors import ConfigError, ConfigTypeError
from headkit.spec.scalars import as_int

__all__ = ["Classification", "Regression", "Predict", "OutputType", "OUTPUT_TYPES"]


def _optional_tuple_of_str(value: Any) -> Optional[Tuple[str, ...]]:
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigTypeError(
            f"vocabulary must be a sequence of strings, not one string (got {value!r}). "
            f"Write vocabulary=({value!r},...).", field="vocabulary",
        )
    if isinstance(value, (set, frozenset)) or not hasattr(value, "__iter__"):
        example = tuple(sorted(map(str, value))) if isinstance(value, (set, frozenset)) else ()
        raise ConfigTypeError(
            f"vocabulary must be an ordered sequence (a tuple or list) of class names (got "
            f"{type(value).__name__} {value!r}). The order gives each class its id, and a set "
            f"has no fixed order: write vocabulary={example!r} in the order you mean.",
            field="vocabulary",
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

    n_classes: Optional[int] = attrs.field(default=None, converter=as_int)
    vocabulary: Optional[Tuple[str, ...]] = attrs.field(
        default=None, converter=_optional_tuple_of_str
    )

    kind = "classification"

    def __attrs_post_init__(self) -> None:
        vocabulary = self.vocabulary
        if vocabulary is not None:
            bad = [v for v in vocabulary if not isinstance(v, str) or not v]
            if bad:
                raise ConfigError(
                    f"vocabulary entries must be non-empty strings (got {bad!r}). "
                    "Map your classes to names, or leave vocabulary out and use class ids.",
                    field="vocabulary",
                )
            duplicates = sorted({v for v in vocabulary if vocabulary.count(v) > 1})
            if duplicates:
                raise ConfigError(
                    f"vocabulary entries must be unique (repeated: {duplicates!r}).",
                    field="vocabulary",
                )
            if self.n_classes is None:
                object.__setattr__(self, "n_classes", len(vocabulary))
        n_classes = self.n_classes
        if n_classes is None:
            raise ConfigError(
                "Classification needs n_classes or a vocabulary (got neither). "
                "Write hk.Classification(n_classes=3) or hk.Classification(vocabulary=(...)).",
                field="n_classes",
            )
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ConfigError(
                f"n_classes must be an integer >= 2 (got {n_classes!r}). "
                "Use hk.Regression() for a single continuous output.", field="n_classes",
            )
        if vocabulary is not None and len(vocabulary) != n_classes:
            raise ConfigError(
                f"n_classes={n_classes} but the vocabulary has {len(vocabulary)} entries "
                f"{vocabulary!r}. Give one name per class, or leave n_classes out.",
                field="vocabulary",
            )

    is_trained = True

    @property
    def is_binary(self) -> bool:
        """Whether the head has two classes (binary-only metrics need it)."""
        return self.n_classes == 2

    def missing_label_expected(self, missing: Any) -> Optional[str]:
        """What ``missing_label`` must be, when ``missing`` is not acceptable; else None."""
        if self.vocabulary is not None:
            if isinstance(missing, str) and missing not in self.vocabulary:
                return None
            return f"a string outside the vocabulary {self.vocabulary!r}, e.g. ''"
        if isinstance(missing, int) and not isinstance(missing, bool) and not (
                0 <= missing < self.n_classes):
            return None
        return f"an integer outside [0, {self.n_classes}), e.g. -1"

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

    dimension: int = attrs.field(default=1, converter=as_int)
    kind = "regression"

    def __attrs_post_init__(self) -> None:
        d = self.dimension
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ConfigError(
                f"dimension must be an integer >= 1 (got {d!r}). "
                "It is the number of values the head predicts per example.", field="dimension",
            )

    is_trained = True
    is_binary = False

    def missing_label_expected(self, missing: Any) -> Optional[str]:
        """What ``missing_label`` must be, when ``missing`` is not acceptable; else None."""
        if isinstance(missing, (int, float)) and not isinstance(missing, bool):
            return None
        return "a number, or float('nan')"

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
    is_trained = False
    is_binary = False

    def missing_label_expected(self, missing: Any) -> Optional[str]:
        """A Predict head has no labels: any ``missing_label`` is refused by the Head."""
        return "None: a Predict head has no labels"

    def to_dict(self) -> dict:
        return {"type": "predict"}


OutputType = Union[Classification, Regression, Predict]

#: The ``type`` a config file names -> the output type class.
OUTPUT_TYPES = {cls.kind: cls for cls in (Classification, Regression, Predict)}
