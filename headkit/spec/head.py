"""Declarative heads: one model output with its type, loss, metrics and weight.

This module imports no TensorFlow: a head is plain configuration, checked
when it is built. Loss and metric names are checked against
``headkit.spec.catalog``; each error names the field (``ConfigError.field``).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import attrs

from headkit.errors import ConfigError, ConfigTypeError
from headkit.spec import catalog
from headkit.spec.keys import LOSS_WEIGHT, NAME_PATTERN, TOTAL_LOSS
from headkit.spec.output_types import OUTPUT_TYPES, OutputType
from headkit.spec.scalars import as_bool, as_float, as_int

__all__ = ["Head", "LossFn", "metric_name"]

#: A per-example loss: ``(labels, outputs) -> losses`` of shape ``[batch]``.
LossFn = Callable[[Any, Any], Any]


def _check_name(head: "Head", attribute: attrs.Attribute, name: Any) -> None:
    # fullmatch: with match(), `$` would also accept a name ending in a newline.
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"Head name must match {NAME_PATTERN.pattern} (got {name!r}): it is used as a "
            "label key, a body output key, a metric prefix and a signature key. "
            "Use letters, digits, '_', '-' or '.', starting with a letter.", field="name",
        )


def _check_output(head: "Head", attribute: attrs.Attribute, output: Any) -> None:
    types = tuple(OUTPUT_TYPES.values())
    if not isinstance(output, types):
        names = [f"hk.{t.__name__}" for t in types]
        raise ConfigTypeError(
            f"Head {head.name!r}: output must be {', '.join(names[:-1])} or {names[-1]} "
            f"(got {output!r}). For example hk.Head({head.name!r}, hk.Regression()).",
            field="output",
        )


def _check_weight(head: "Head", attribute: attrs.Attribute, weight: Any) -> None:
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not math.isfinite(weight)
        or weight < 0
    ):
        raise ConfigError(
            f"Head {head.name!r}: weight must be a finite number >= 0 (got {weight!r}). "
            "It scales the head's loss in the total; use 0 to evaluate without training.",
            field="weight",
        )


_NAN = float("nan")


def _parameters(function: Any) -> Tuple[str, ...]:
    """The parameter names of a callable; () when Python cannot tell (a builtin)."""
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return ()


def _check_loss_callable(head_name: str, loss: Callable) -> None:
    """What can be known of a custom loss before any graph: an instance, per example, 2 args."""
    if isinstance(loss, type):  # e.g. tf.keras.losses.MeanSquaredError, not ...Error()
        module, arguments, note = loss.__module__ or "", "reduction='none'", ""
        if "from_logits" in _parameters(loss):
            arguments = f"from_logits=True, {arguments}"
            note = " (from_logits=True when the head's output is logits, as for Classification)"
        keras_loss = "keras" in module and "losses" in module
        example = f"tf.keras.losses.{loss.__name__}({arguments})" if keras_loss else (
            f"{loss.__name__}(...)")
        raise ConfigTypeError(
            f"Head {head_name!r}: loss is the class {loss.__name__}, not a loss; called with "
            f"(labels, outputs) it would build a {loss.__name__} instead of computing a loss. "
            f"Pass an instance: loss={example}{note if keras_loss else ''}.", field="loss",
        )
    reduction = getattr(loss, "reduction", None)  # Keras losses reduce the batch by default
    if isinstance(reduction, str) and reduction.lower() != "none":
        name = type(loss).__name__
        raise ConfigError(
            f"Head {head_name!r}: the Keras loss {name} reduces the batch to one number "
            f"(reduction={reduction!r}), but a head needs one loss per example, to mask rows "
            f"without a label and to weight rows. Pass {name}(reduction='none').", field="loss",
        )
    try:
        signature = inspect.signature(loss)
    except (TypeError, ValueError):  # a builtin without a signature: checked at graph build
        return
    try:
        signature.bind(None, None)
    except TypeError:
        name = getattr(loss, "__name__", None) or type(loss).__name__
        raise ConfigTypeError(
            f"Head {head_name!r}: loss {name}{signature} cannot be called as loss(labels, "
            "outputs). A loss takes two arguments, the labels and the body's output for the "
            "head, and returns one loss per example, shape [batch]; e.g. "
            "def loss(labels, outputs): return tf.reduce_mean(tf.abs(outputs - labels), axis=-1)",
            field="loss",
        ) from None


def _same_nan(value: Any) -> Any:
    """Every NaN becomes one object, so heads holding NaN compare equal."""
    value = as_float(value) if not isinstance(value, str) else value
    if isinstance(value, float) and math.isnan(value):
        return _NAN
    return value


def _same_label(a: Any, b: Any) -> bool:
    """Equality of missing_label values, where NaN equals NaN (``==`` says it does not).

    ``_same_nan`` turns every NaN into one object, so ``is`` finds them equal.
    """
    return a is b or a == b


def _to_class_weight(value: Any) -> Any:
    """``{class: weight}`` as a new dict of plain Python keys and numbers; other values as given."""
    if isinstance(value, Mapping):
        return {as_int(k): as_float(w) for k, w in value.items()}
    return value


def _to_tuple(value: Any) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return (value,)
    return tuple(value)


def metric_name(head_name: str, metric: Any, field: str = "metrics") -> str:
    """The short name of one metric spec: a registered name, or a Keras metric's name.

    Example:
        >>> metric_name("y", "rmse")
        'rmse'
    """
    if isinstance(metric, str):
        return metric
    name = getattr(metric, "name", None)
    if isinstance(name, str) and not isinstance(metric, type):
        return name
    if isinstance(metric, type) or callable(metric):
        try:
            built = metric()
        except Exception as error:  # the user's factory: report what it raised
            raise ConfigError(
                f"Head {head_name!r}: metric {metric!r} could not be built without "
                f"arguments ({error}). Pass an instance, e.g. tf.keras.metrics.AUC(name='auc_pr', "
                "curve='PR'), or a zero-argument factory.", field=field,
            ) from error
        name = getattr(built, "name", None)
        if isinstance(name, str):
            return name
    raise ConfigTypeError(
        f"Head {head_name!r}: a metric must be a registered name ({', '.join(catalog.METRICS)}), "
        f"a Keras metric instance or class, or a zero-argument factory (got {metric!r}).",
        field=field,
    )


@attrs.frozen(kw_only=False)
class Head:
    """One output of a multi-head model, declared.

    A head's ``name`` is its label key (unless ``label_key`` says otherwise),
    the key of its output in the body's output dict, the prefix of its
    metrics (``"<name>/<metric>"``) and its signature key in exports.

    Args:
        name: the head's name.
        output: an output type: ``Classification``, ``MultiLabel``, ``Regression``,
            ``Poisson``, ``Logistic`` or ``Predict``.
        loss: ``None`` for the output type's default (the first of its names
            in ``headkit.spec.catalog.LOSSES``), a name from there, or a callable
            ``(labels, outputs) -> per-example loss`` (a Keras loss instance
            with ``reduction='none'``). A class, a callable that cannot take
            two arguments, or a Keras loss that reduces the batch is refused.
        metrics: names from ``headkit.spec.catalog.METRICS``, Keras metric instances
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
        class_weight: ``{class: weight}`` for a head with classes: keyed by
            class name when the output has a vocabulary, by class id
            otherwise; a class left out weighs 1.0. Each example's loss is
            weighted by its label's class (times ``weight_column`` and the
            missing-label mask). It weights the loss, not the other metrics.

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
    weight: float = attrs.field(default=1.0, converter=as_float, validator=_check_weight,
                                kw_only=True)
    is_default: bool = attrs.field(default=False, converter=as_bool, kw_only=True)
    label_key: str = attrs.field(
        default=attrs.Factory(lambda self: self.name, takes_self=True), kw_only=True
    )
    missing_label: Any = attrs.field(
        default=None, converter=_same_nan, eq=attrs.cmp_using(eq=_same_label), hash=False,
        kw_only=True,
    )
    weight_column: Optional[str] = attrs.field(default=None, kw_only=True)
    class_weight: Optional[Dict[Any, float]] = attrs.field(
        default=None, converter=_to_class_weight, hash=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.is_default, bool):
            raise ConfigTypeError(
                f"Head {self.name!r}: is_default must be True or False (got {self.is_default!r}).",
                field="is_default",
            )
        for field in ("label_key", "weight_column"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigTypeError(
                    f"Head {self.name!r}: {field} must be a non-empty string or None "
                    f"(got {value!r}).", field=field,
                )
        if not self.output.is_trained:
            self._check_untrained_head()
            return
        self._check_loss()
        self._check_missing_label()
        self._check_class_weight()
        names = [metric_name(self.name, m, f"metrics[{i}]") for i, m in enumerate(self.metrics)]
        for index, (metric, short) in enumerate(zip(self.metrics, names)):
            if isinstance(metric, str):
                self._check_metric_name(metric, f"metrics[{index}]")
            if "/" in short or short in (TOTAL_LOSS, LOSS_WEIGHT):
                raise ConfigError(
                    f"Head {self.name!r}: metric name {short!r} is not allowed: 'loss' is "
                    "reported for every trained head, 'loss_weight' under a learned loss "
                    "weighting, and '/' separates head and metric. "
                    "Give the Keras metric another name=.", field=f"metrics[{index}]",
                )
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(
                f"Head {self.name!r}: metric names must be unique (repeated: {repeated!r}). "
                "Give each Keras metric its own name=.", field="metrics",
            )

    def _check_loss(self) -> None:
        loss, kind = self.loss, self.output.kind
        known = catalog.loss_names(kind)
        if isinstance(loss, str):
            if loss not in known:
                raise ConfigError(
                    f"Head {self.name!r}: unknown loss {loss!r} for a {kind} head. "
                    f"Known losses: {', '.join(known)}; or pass a callable "
                    "(labels, outputs) -> per-example loss.", field="loss",
                )
        elif loss is not None and not callable(loss):
            raise ConfigTypeError(
                f"Head {self.name!r}: loss must be a name from {known}, a callable "
                f"(labels, outputs) -> per-example loss, or None (got {loss!r}).", field="loss",
            )
        elif loss is not None:
            _check_loss_callable(self.name, loss)

    def _check_metric_name(self, metric: str, field: str) -> None:
        kind = self.output.kind
        known = catalog.metric_names(kind)
        if metric not in known:
            raise ConfigError(
                f"Head {self.name!r}: unknown metric {metric!r} for a {kind} head. "
                f"Known metrics: {', '.join(known)}; or pass a Keras metric, "
                "e.g. tf.keras.metrics.TopKCategoricalAccuracy(k=2).", field=field,
            )
        if kind in catalog.METRICS[metric].binary_only and not self.output.is_binary:
            raise ConfigError(
                f"Head {self.name!r}: metric {metric!r} needs a binary head (n_classes=2, got "
                f"{self.output.n_classes}). For several classes pass a Keras metric with the "
                "averaging you want, e.g. tf.keras.metrics.AUC(multi_label=True).", field=field,
            )

    def _check_missing_label(self) -> None:
        missing = self.missing_label
        if missing is None:
            return
        expected = self.output.missing_label_expected(missing)
        if expected is not None:
            raise ConfigError(
                f"Head {self.name!r}: missing_label must be {expected} (got {missing!r}), "
                "so that it cannot be mistaken for a real label.", field="missing_label",
            )

    def _check_class_weight(self) -> None:
        class_weight = self.class_weight
        if class_weight is None:
            return
        if not isinstance(class_weight, Mapping):
            raise ConfigTypeError(
                f"Head {self.name!r}: class_weight must be a dict {{class: weight}} (got "
                f"{class_weight!r}), e.g. class_weight={{'Chinstrap': 2.0}}.",
                field="class_weight",
            )
        if not hasattr(self.output, "class_weight_vector"):
            raise ConfigError(
                f"Head {self.name!r}: class_weight applies to heads with classes "
                f"(hk.Classification, hk.MultiLabel); a {self.output.kind} head has none (got "
                f"{class_weight!r}). Remove it, or weight rows with weight_column.",
                field="class_weight",
            )
        self.output.class_weight_vector(self.name, class_weight)
        if self.output.kind == "multi_label" and self.loss not in (None, "sigmoid_cross_entropy"):
            raise ConfigError(
                f"Head {self.name!r}: class_weight weighs each class's term of the multi-label "
                f"loss 'sigmoid_cross_entropy'; a custom loss ({self.loss!r}) has no per-class "
                "terms headkit can weigh. Drop class_weight and weigh the classes inside the "
                "loss, or use the default loss.", field="class_weight",
            )

    def _check_untrained_head(self) -> None:
        given = {
            "loss": self.loss,
            "metrics": self.metrics or None,
            "label_key": None if self.label_key == self.name else self.label_key,
            "missing_label": self.missing_label,
            "weight_column": self.weight_column,
            "class_weight": self.class_weight,
        }
        given = {k: v for k, v in given.items() if v is not None}
        if self.weight != 1.0:
            given["weight"] = self.weight
        if given:
            raise ConfigError(
                f"Head {self.name!r}: a Predict head is exported, never trained, so it takes "
                f"no {', '.join(given)} (got {given!r}). Remove them, or use "
                "hk.Classification / hk.Regression to train this output.", field=next(iter(given)),
            )

    @property
    def kind(self) -> str:
        """The output kind's name: the module of ``headkit.kinds`` that implements it."""
        return self.output.kind

    @property
    def is_trained(self) -> bool:
        """Whether the head has labels, a loss and metrics (not a ``Predict`` head)."""
        return self.output.is_trained

    @property
    def class_weights(self) -> Optional[Tuple[float, ...]]:
        """The weight of each class id from ``class_weight`` (1.0 for a class left out), or None."""
        if self.class_weight is None:
            return None
        return self.output.class_weight_vector(self.name, self.class_weight)

    @property
    def loss_name(self) -> Union[str, LossFn, None]:
        """The loss to use: the given one or the output type's default."""
        if not self.is_trained:
            return None
        return self.loss if self.loss is not None else catalog.loss_names(self.kind)[0]

    @property
    def metric_names(self) -> Tuple[str, ...]:
        """Short names of the metrics evaluation reports, ``loss`` first."""
        if not self.is_trained:
            return ()
        return (TOTAL_LOSS,) + tuple(metric_name(self.name, m) for m in self.metrics)
