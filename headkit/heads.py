"""Declarative heads: one model output with its type, loss, metrics and weight.

This module imports no TensorFlow: a head is plain configuration, checked
when it is built.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Optional, Tuple, Union

import attrs

from headkit.output_types import Classification, OutputType, Predict, Regression

__all__ = [
    "Classification",
    "Regression",
    "Predict",
    "Head",
    "OutputType",
    "LOSS_NAMES",
    "METRIC_NAMES",
    "NAME_PATTERN",
]

#: A head name: a letter, then letters, digits, ``_``, ``-`` or ``.``; at most 64.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")

#: Loss names each output kind accepts; the first is the default.
LOSS_NAMES = {
    "classification": ("cross_entropy",),
    "regression": ("mse", "mae", "huber"),
    "predict": (),
}

#: Metric names each output kind accepts. ``binary`` ones need ``n_classes=2``.
METRIC_NAMES = {
    "classification": ("accuracy", "auc", "precision", "recall"),
    "regression": ("mse", "rmse", "mae"),
    "predict": (),
}
_BINARY_ONLY_METRICS = ("auc", "precision", "recall")

#: A per-example loss: ``(labels, outputs) -> losses`` of shape ``[batch]``.
LossFn = Callable[[Any, Any], Any]


def _check_name(head: "Head", attribute: attrs.Attribute, name: Any) -> None:
    # fullmatch: with match(), `$` would also accept a name ending in a newline.
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"Head name must match {NAME_PATTERN.pattern} (got {name!r}): it is used as a "
            "label key, a body output key, a metric prefix and a signature key. "
            "Use letters, digits, '_', '-' or '.', starting with a letter."
        )


def _check_output(head: "Head", attribute: attrs.Attribute, output: Any) -> None:
    if not isinstance(output, (Classification, Regression, Predict)):
        raise TypeError(
            f"Head {head.name!r}: output must be hk.Classification, hk.Regression or "
            f"hk.Predict (got {output!r}). For example hk.Head({head.name!r}, hk.Regression())."
        )


def _check_weight(head: "Head", attribute: attrs.Attribute, weight: Any) -> None:
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not math.isfinite(weight)
        or weight < 0
    ):
        raise ValueError(
            f"Head {head.name!r}: weight must be a finite number >= 0 (got {weight!r}). "
            "It scales the head's loss in the total; use 0 to evaluate without training."
        )


_NAN = float("nan")


def _same_nan(value: Any) -> Any:
    """Every NaN becomes one object, so heads holding NaN compare equal."""
    if isinstance(value, float) and math.isnan(value):
        return _NAN
    return value


def _same_label(a: Any, b: Any) -> bool:
    """Equality of missing_label values, where NaN equals NaN (``==`` says it does not).

    ``_same_nan`` turns every NaN into one object, so ``is`` finds them equal.
    """
    return a is b or a == b


def _to_tuple(value: Any) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return (value,)
    return tuple(value)


def metric_name(head_name: str, metric: Any) -> str:
    """The short name of one metric spec: a registered name, or a Keras metric's name."""
    if isinstance(metric, str):
        return metric
    name = getattr(metric, "name", None)
    if isinstance(name, str) and not isinstance(metric, type):
        return name
    if isinstance(metric, type) or callable(metric):
        try:
            built = metric()
        except Exception as error:  # the user's factory: report what it raised
            raise ValueError(
                f"Head {head_name!r}: metric {metric!r} could not be built without "
                f"arguments ({error}). Pass an instance, e.g. tf.keras.metrics.AUC(name='auc_pr', "
                "curve='PR'), or a zero-argument factory."
            ) from error
        name = getattr(built, "name", None)
        if isinstance(name, str):
            return name
    raise TypeError(
        f"Head {head_name!r}: a metric must be a name from {METRIC_NAMES}, a Keras metric "
        f"instance or class, or a zero-argument factory (got {metric!r})."
    )


@attrs.frozen(kw_only=False)
class Head:
    """One output of a multi-head model, declared.

    A head's ``name`` is its label key (unless ``label_key`` says otherwise),
    the key of its output in the body's output dict, the prefix of its
    metrics (``"<name>/<metric>"``) and its signature key in exports.

    Args:
        name: the head's name.
        output: ``Classification``, ``Regression`` or ``Predict``.
        loss: ``None`` for the output type's default (``cross_entropy`` or
            ``mse``), a name from ``LOSS_NAMES``, or a callable
            ``(labels, outputs) -> per-example loss``.
        metrics: metric names from ``METRIC_NAMES``, Keras metric instances
            or classes, or zero-argument factories returning a Keras metric.
        weight: the head's weight in the total loss, >= 0.
        is_default: whether this head serves ``serving_default``.
        label_key: the labels key, when it differs from ``name``.
        missing_label: the label value that means "this row has no label
            for this head" (e.g. ``-1``, ``""`` or ``float("nan")``). Such rows
            are masked out of the head's loss and metrics, not dropped. The
            input functions turn NaN and None in the data into this value.
            ``None`` (the default): every row must carry this head's label.
        weight_column: a feature holding per-row weights for this head.

    Example:
        >>> head = Head("species", Classification(vocabulary=("a", "b", "c")),
        ...             metrics=("accuracy",), is_default=True)
        >>> head.label_key, head.metric_names
        ('species', ('loss', 'accuracy'))
    """

    name: str = attrs.field(validator=_check_name)
    output: OutputType = attrs.field(validator=_check_output)
    loss: Union[str, LossFn, None] = attrs.field(default=None, kw_only=True)
    metrics: Tuple[Any, ...] = attrs.field(default=(), converter=_to_tuple, kw_only=True)
    weight: float = attrs.field(default=1.0, validator=_check_weight, kw_only=True)
    is_default: bool = attrs.field(default=False, kw_only=True)
    label_key: str = attrs.field(
        default=attrs.Factory(lambda self: self.name, takes_self=True), kw_only=True
    )
    missing_label: Any = attrs.field(
        default=None, converter=_same_nan, eq=attrs.cmp_using(eq=_same_label), hash=False,
        kw_only=True,
    )
    weight_column: Optional[str] = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        kind = self.output.kind
        if not isinstance(self.is_default, bool):
            raise TypeError(
                f"Head {self.name!r}: is_default must be True or False (got {self.is_default!r})."
            )
        for field in ("label_key", "weight_column"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(
                    f"Head {self.name!r}: {field} must be a non-empty string or None "
                    f"(got {value!r})."
                )
        if kind == "predict":
            self._check_predict_head()
            return
        loss = self.loss
        if isinstance(loss, str):
            if loss not in LOSS_NAMES[kind]:
                raise ValueError(
                    f"Head {self.name!r}: unknown loss {loss!r} for a {kind} head. "
                    f"Known losses: {', '.join(LOSS_NAMES[kind])}; or pass a callable "
                    "(labels, outputs) -> per-example loss."
                )
        elif loss is not None and not callable(loss):
            raise TypeError(
                f"Head {self.name!r}: loss must be a name from {LOSS_NAMES[kind]}, a callable "
                f"(labels, outputs) -> per-example loss, or None (got {loss!r})."
            )
        self._check_missing_label()
        names = [metric_name(self.name, m) for m in self.metrics]
        for metric, short in zip(self.metrics, names):
            if isinstance(metric, str):
                self._check_metric_name(metric)
            if "/" in short or short == "loss":
                raise ValueError(
                    f"Head {self.name!r}: metric name {short!r} is not allowed: 'loss' is "
                    "reported for every trained head and '/' separates head and metric. "
                    "Give the Keras metric another name=."
                )
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"Head {self.name!r}: metric names must be unique (repeated: {repeated!r}). "
                "Give each Keras metric its own name=."
            )

    def _check_metric_name(self, metric: str) -> None:
        kind = self.output.kind
        if metric not in METRIC_NAMES[kind]:
            raise ValueError(
                f"Head {self.name!r}: unknown metric {metric!r} for a {kind} head. "
                f"Known metrics: {', '.join(METRIC_NAMES[kind])}; or pass a Keras metric, "
                "e.g. tf.keras.metrics.TopKCategoricalAccuracy(k=2)."
            )
        if metric in _BINARY_ONLY_METRICS and self.output.n_classes != 2:
            raise ValueError(
                f"Head {self.name!r}: metric {metric!r} needs a binary head (n_classes=2, got "
                f"{self.output.n_classes}). For several classes pass a Keras metric with the "
                "averaging you want, e.g. tf.keras.metrics.AUC(multi_label=True)."
            )

    def _check_missing_label(self) -> None:
        missing, output = self.missing_label, self.output
        if missing is None:
            return
        if output.kind == "regression":
            ok = isinstance(missing, (int, float)) and not isinstance(missing, bool)
            expected = "a number, or float('nan')"
        elif output.vocabulary is not None:
            ok = isinstance(missing, str) and missing not in output.vocabulary
            expected = f"a string outside the vocabulary {output.vocabulary!r}, e.g. ''"
        else:
            ok = (
                isinstance(missing, int)
                and not isinstance(missing, bool)
                and not 0 <= missing < output.n_classes
            )
            expected = f"an integer outside [0, {output.n_classes}), e.g. -1"
        if not ok:
            raise ValueError(
                f"Head {self.name!r}: missing_label must be {expected} (got {missing!r}), "
                "so that it cannot be mistaken for a real label."
            )

    def _check_predict_head(self) -> None:
        given = {
            "loss": self.loss,
            "metrics": self.metrics or None,
            "label_key": None if self.label_key == self.name else self.label_key,
            "missing_label": self.missing_label,
            "weight_column": self.weight_column,
        }
        given = {k: v for k, v in given.items() if v is not None}
        if self.weight != 1.0:
            given["weight"] = self.weight
        if given:
            raise ValueError(
                f"Head {self.name!r}: a Predict head is exported, never trained, so it takes "
                f"no {', '.join(given)} (got {given!r}). Remove them, or use "
                "hk.Classification / hk.Regression to train this output."
            )

    @property
    def is_trained(self) -> bool:
        """Whether the head has labels, a loss and metrics (not a ``Predict`` head)."""
        return self.output.kind != "predict"

    @property
    def loss_name(self) -> Union[str, LossFn, None]:
        """The loss to use: the given one or the output type's default."""
        if not self.is_trained:
            return None
        return self.loss if self.loss is not None else LOSS_NAMES[self.output.kind][0]

    @property
    def metric_names(self) -> Tuple[str, ...]:
        """Short names of the metrics evaluation reports, ``loss`` first."""
        if not self.is_trained:
            return ()
        return ("loss",) + tuple(metric_name(self.name, m) for m in self.metrics)
