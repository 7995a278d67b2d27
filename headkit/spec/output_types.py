"""Output types: what a head predicts (a class, a set of classes, values, or a raw tensor).

This module imports no TensorFlow: an output type is plain configuration,
checked when it is built. Its ``kind`` names the module in ``headkit.kinds``
that implements it; :data:`OUTPUT_TYPES` is what config files may name.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union

import attrs

from headkit.errors import ConfigError, ConfigTypeError
from headkit.spec.scalars import as_float, as_int

__all__ = ["Classification", "MultiLabel", "Regression", "Poisson", "Logistic", "Predict",
           "OutputType", "OUTPUT_TYPES", "class_weights_by_id"]


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


def _check_classes(output: Any, advice: str) -> None:
    """Check ``n_classes`` and ``vocabulary`` of a class-based output; fill ``n_classes`` in.

    ``advice`` ends the message for ``n_classes`` < 2: the output type to use instead.
    """
    vocabulary = output.vocabulary
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
        if output.n_classes is None:
            object.__setattr__(output, "n_classes", len(vocabulary))
    n_classes = output.n_classes
    if n_classes is None:
        name = type(output).__name__
        raise ConfigError(
            f"{name} needs n_classes or a vocabulary (got neither). "
            f"Write hk.{name}(n_classes=3) or hk.{name}(vocabulary=(...)).",
            field="n_classes",
        )
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ConfigError(
            f"n_classes must be an integer >= 2 (got {n_classes!r}). {advice}",
            field="n_classes",
        )
    if vocabulary is not None and len(vocabulary) != n_classes:
        raise ConfigError(
            f"n_classes={n_classes} but the vocabulary has {len(vocabulary)} entries "
            f"{vocabulary!r}. Give one name per class, or leave n_classes out.",
            field="vocabulary",
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def class_weights_by_id(head_name: str, class_weight: Mapping[Any, Any], n_classes: int,
                        vocabulary: Optional[Tuple[str, ...]]) -> Tuple[float, ...]:
    """One weight per class id from ``{class: weight}``; a class left out weighs 1.0.

    Keys are class names when there is a vocabulary, class ids otherwise.
    Shared by every output type with classes.

    Example:
        >>> class_weights_by_id("sex", {"male": 2.0}, 2, ("female", "male"))
        (1.0, 2.0)
        >>> class_weights_by_id("flag", {0: 0.5}, 2, None)
        (0.5, 1.0)
    """
    if vocabulary is not None:
        unknown = [k for k in class_weight if k not in vocabulary]
        if unknown:
            raise ConfigError(
                f"Head {head_name!r}: class_weight names {unknown!r}, not in the vocabulary "
                f"{vocabulary!r}. Key class weights by the vocabulary's names, e.g. "
                f"class_weight={{{vocabulary[-1]!r}: 2.0}}.", field="class_weight",
            )
        ids = {vocabulary.index(k): k for k in class_weight}
    else:
        unknown = [k for k in class_weight if isinstance(k, bool) or not isinstance(k, int)
                   or not 0 <= k < n_classes]
        if unknown:
            raise ConfigError(
                f"Head {head_name!r}: class_weight keys must be class ids in [0, {n_classes}), "
                f"since the head has no vocabulary (got {unknown!r}). Write e.g. "
                f"class_weight={{{n_classes - 1}: 2.0}}, or give the output a vocabulary to "
                "key them by name.", field="class_weight",
            )
        ids = {k: k for k in class_weight}
    bad = {k: w for k, w in class_weight.items()
           if not _is_number(w) or not math.isfinite(w) or w < 0}
    if bad:
        raise ConfigError(
            f"Head {head_name!r}: class weights must be finite numbers >= 0 (got {bad!r}). "
            "1.0 is a class's default weight; 0 leaves its examples out of the loss.",
            field="class_weight",
        )
    weights = [1.0] * n_classes
    for index, key in ids.items():
        weights[index] = float(class_weight[key])
    return tuple(weights)


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
        _check_classes(self, "Use hk.Regression() for a single continuous output.")

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

    def class_weight_vector(self, head_name: str,
                            class_weight: Mapping[Any, Any]) -> Tuple[float, ...]:
        """The weight of each class id (see :func:`class_weights_by_id`)."""
        return class_weights_by_id(head_name, class_weight, self.n_classes, self.vocabulary)

    def to_dict(self) -> dict:
        data: dict = {"type": "classification", "n_classes": self.n_classes}
        if self.vocabulary is not None:
            data["vocabulary"] = list(self.vocabulary)
        return data


def _check_threshold(output: Any, attribute: attrs.Attribute, threshold: Any) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
            0.0 < threshold < 1.0):
        raise ConfigError(
            f"threshold must be a number strictly between 0 and 1 (got {threshold!r}). "
            "A class is predicted when its probability is above it; 0.5 is the usual choice.",
            field="threshold",
        )


@attrs.frozen
class MultiLabel:
    """A head that picks any number of ``n_classes`` classes: one sigmoid per class.

    The body gives ``n_classes`` logits. Labels are multi-hot rows
    ``[n, n_classes]`` of 0 and 1 or, with a ``vocabulary``, a list of class
    names per row (``[]`` for none). A class is predicted when its
    probability is above ``threshold``. The loss is the sigmoid cross entropy
    averaged over the classes, as in ``tf.estimator.MultiLabelHead``.

    Args:
        n_classes: number of classes, at least 2. May be left out when a
            vocabulary is given.
        vocabulary: the class names, in class-id order.
        threshold: the probability above which a class is predicted (in
            ``class_ids``, ``classes``, and the ``precision`` and ``recall``
            metrics).

    Example:
        >>> MultiLabel(vocabulary=("red", "round", "sweet")).n_classes
        3
        >>> MultiLabel(4, threshold=0.3).threshold
        0.3
    """

    n_classes: Optional[int] = attrs.field(default=None, converter=as_int)
    vocabulary: Optional[Tuple[str, ...]] = attrs.field(
        default=None, converter=_optional_tuple_of_str
    )
    threshold: float = attrs.field(default=0.5, converter=as_float, validator=_check_threshold,
                                   kw_only=True)

    kind = "multi_label"
    is_trained = True
    #: Binary-only metrics are for two-class Classification heads (auc, precision and
    #: recall of a MultiLabel head are micro-averaged over its classes instead).
    is_binary = False

    def __attrs_post_init__(self) -> None:
        _check_classes(self, "For one yes/no target use hk.Classification(2).")

    def missing_label_expected(self, missing: Any) -> Optional[str]:
        """What ``missing_label`` must be, when ``missing`` is not acceptable; else None.

        A row whose every entry is ``missing_label`` has no label; the input
        functions fill the rows given as None or NaN with it.
        """
        if isinstance(missing, int) and not isinstance(missing, bool) and missing not in (0, 1):
            return None
        return "an integer other than 0 and 1, e.g. -1"

    def class_weight_vector(self, head_name: str,
                            class_weight: Mapping[Any, Any]) -> Tuple[float, ...]:
        """The weight of each class's term in the loss (see :func:`class_weights_by_id`)."""
        return class_weights_by_id(head_name, class_weight, self.n_classes, self.vocabulary)

    def to_dict(self) -> dict:
        data: dict = {"type": "multi_label", "n_classes": self.n_classes}
        if self.vocabulary is not None:
            data["vocabulary"] = list(self.vocabulary)
        if self.threshold != 0.5:
            data["threshold"] = self.threshold
        return data


Statistic = Union[float, Tuple[float, ...], None]


def _statistic(value: Any) -> Any:
    """A number, or one number per dimension, as a float or a tuple of floats (1-tuples: float)."""
    if value is None or isinstance(value, (str, bytes)):
        return value
    if getattr(value, "shape", None) == ():  # a 0-d array is one number
        return as_float(value.item())
    if hasattr(value, "__iter__"):
        values = tuple(as_float(v) for v in value)
        return values[0] if len(values) == 1 else values
    return as_float(value)


def _per_dimension(value: Statistic, dimension: int, default: float) -> Tuple[float, ...]:
    if value is None:
        return (default,) * dimension
    if isinstance(value, tuple):
        return value
    return (value,) * dimension


def _label_columns(values: Any, missing_label: Any = None) -> List[List[float]]:
    """Label values (a list, an array, a Series or DataFrame; rows of numbers for a wider
    head) by column.

    NaN, None and ``missing_label`` (missing labels) are left out.
    """
    if hasattr(values, "to_numpy"):  # pandas: the values, not the column names
        values = values.to_numpy()
    rows = values.tolist() if hasattr(values, "tolist") else values
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__iter__"):
        raise ConfigTypeError(
            f"from_labels: labels must be a column of values (got {values!r}). Pass the "
            'training labels of the head, e.g. train["body_mass_g"].', field="labels")
    rows = list(rows)
    columns: List[List[float]] = []
    for index, row in enumerate(rows):
        row = list(row) if isinstance(row, (list, tuple)) else [row]
        if not columns:
            columns = [[] for _ in row]
        if len(row) != len(columns):
            raise ConfigError(
                f"from_labels: row {index} holds {len(row)} value(s), the first row "
                f"{len(columns)}. Pass one label column, or rows of equal length.",
                field="labels")
        for column, value in zip(columns, row):
            if value is None or (isinstance(value, float) and math.isnan(value)) or (
                    missing_label is not None and value == missing_label):
                continue
            value = as_float(value)
            if not _is_number(value) or not math.isfinite(value):
                raise ConfigTypeError(
                    f"from_labels: labels must be finite numbers (got {value!r} in row "
                    f"{index}). Pass the training labels of the head, e.g. "
                    'train["body_mass_g"].', field="labels")
            column.append(float(value))
    return columns


@attrs.frozen
class Regression:
    """A head that predicts ``dimension`` continuous values.

    Its natural signature is ``tensorflow/serving/regress`` when ``dimension``
    is 1. A regress signature holds one value per example, so a wider head
    is served by a predict signature instead.

    With ``mean`` and ``std`` (or :meth:`from_labels`, which computes them
    from the training labels) the head learns normalised targets: the loss
    compares ``(y - mean) / std`` with the body's output, which can be a
    plain ``Dense(dimension)``; predictions, metrics, exports and ``hk.load``
    give ``output * std + mean``, in the labels' units.

    Args:
        dimension: values per example, >= 1.
        mean: the labels' mean: a number, or one per dimension; None for 0.
        std: the labels' standard deviation: a number > 0, or one per
            dimension; None for 1.

    Example:
        >>> Regression().dimension
        1
        >>> Regression.from_labels([3000.0, 4000.0, 5000.0])
        Regression(dimension=1, mean=4000.0, std=816.496580927726)
    """

    dimension: int = attrs.field(default=1, converter=as_int)
    mean: Statistic = attrs.field(default=None, converter=_statistic, kw_only=True)
    std: Statistic = attrs.field(default=None, converter=_statistic, kw_only=True)
    kind = "regression"

    def __attrs_post_init__(self) -> None:
        d = self.dimension
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ConfigError(
                f"dimension must be an integer >= 1 (got {d!r}). "
                "It is the number of values the head predicts per example.", field="dimension",
            )
        for field, value, lowest in (("mean", self.mean, None), ("std", self.std, 0.0)):
            if value is None:
                continue
            values = value if isinstance(value, tuple) else (value,)
            if isinstance(value, tuple) and len(value) != d:
                raise ConfigError(
                    f"{field} has {len(value)} values {value!r}, but dimension={d}. Give one "
                    f"number for every dimension, or {d} numbers.", field=field,
                )
            bad = [v for v in values if not _is_number(v) or not math.isfinite(v)
                   or (lowest is not None and v <= lowest)]
            if bad:
                expected = "a finite number > 0" if lowest is not None else "a finite number"
                raise ConfigError(
                    f"{field} must be {expected}, or one per dimension (got {value!r}). It is "
                    f"the labels' {'standard deviation' if field == 'std' else 'mean'}: let "
                    'hk.Regression.from_labels(train["<label>"]) compute it.', field=field,
                )

    is_trained = True
    is_binary = False

    @classmethod
    def from_labels(cls, values: Iterable[Any], missing_label: Any = None,
                    **fields: Any) -> "Regression":
        """A Regression whose ``mean`` and ``std`` are the training labels' own.

        ``std`` is the population standard deviation (``ddof=0``); NaN, None
        and ``missing_label`` (give the head's, e.g. ``-1``) are left out. A
        column of rows (``[n, d]``) gives ``dimension=d`` and one statistic
        per dimension.

        Args:
            values: the training labels: a list, an array, a pandas Series or
                DataFrame.
            missing_label: the head's ``missing_label``, when it is a number.
            **fields: more Regression fields (``dimension`` is checked
                against the labels).

        Example:
            >>> Regression.from_labels([[1.0, 10.0], [3.0, 30.0]]).std
            (1.0, 10.0)
        """
        given = sorted(set(fields) & {"mean", "std"})
        if given:
            raise ConfigError(
                f"from_labels computes mean and std from the labels, so it takes no {given!r} "
                f"(got {', '.join(f'{k}={fields[k]!r}' for k in given)}). Write "
                "hk.Regression(mean=..., std=...) to give them yourself.", field=given[0])
        columns = _label_columns(values, missing_label)
        if not columns or not columns[0]:
            raise ConfigError(
                "from_labels: no label values to compute the mean and std from (got "
                f"{values!r}). Pass the training labels, e.g. train[\"body_mass_g\"].",
                field="labels")
        means, stds = [], []
        for column in columns:
            mean = math.fsum(column) / len(column)
            means.append(mean)
            stds.append(math.sqrt(math.fsum((v - mean) ** 2 for v in column) / len(column)))
        if any(s == 0 for s in stds):
            raise ConfigError(
                f"from_labels: the labels have no spread (std {stds!r}, mean {means!r}): every "
                "value is the same, so there is nothing to learn. Check the column.",
                field="labels")
        dimension = fields.pop("dimension", len(columns))
        if as_int(dimension) != len(columns):
            raise ConfigError(
                f"from_labels: dimension={dimension!r}, but the labels have {len(columns)} "
                f"column(s). Pass rows of {dimension} values, or leave dimension out.",
                field="dimension")
        return cls(dimension, mean=means, std=stds, **fields)

    @property
    def is_normalized(self) -> bool:
        """Whether the head learns ``(y - mean) / std`` (``mean`` or ``std`` is set)."""
        return self.mean is not None or self.std is not None

    @property
    def means(self) -> Tuple[float, ...]:
        """``mean`` for each dimension (0.0 when not set)."""
        return _per_dimension(self.mean, self.dimension, 0.0)

    @property
    def stds(self) -> Tuple[float, ...]:
        """``std`` for each dimension (1.0 when not set)."""
        return _per_dimension(self.std, self.dimension, 1.0)

    def missing_label_expected(self, missing: Any) -> Optional[str]:
        """What ``missing_label`` must be, when ``missing`` is not acceptable; else None."""
        if isinstance(missing, (int, float)) and not isinstance(missing, bool):
            return None
        return "a number, or float('nan')"

    def to_dict(self) -> dict:
        data: dict = {"type": "regression", "dimension": self.dimension}
        for field in ("mean", "std"):  # written when set, so older dicts stay as they were
            value = getattr(self, field)
            if value is not None:
                data[field] = list(value) if isinstance(value, tuple) else value
        return data


@attrs.frozen
class Poisson:
    """A head that predicts a count: Poisson regression with a log link.

    The body gives one value per example, the log of the rate; predictions
    and the regress signature give the rate ``exp(output)``. Labels are
    counts (numbers >= 0). The loss is ``tf.nn.log_poisson_loss`` with the
    full loss (Stirling's term), as in ``tf.estimator.PoissonRegressionHead``.

    Example:
        >>> Poisson().kind, Poisson().dimension
        ('poisson', 1)
    """

    kind = "poisson"
    #: One value per example (what ``headkit.kinds.regression`` reads for it).
    dimension = 1
    is_trained = True
    is_binary = False

    def missing_label_expected(self, missing: Any) -> Optional[str]:
        """What ``missing_label`` must be, when ``missing`` is not acceptable; else None."""
        if _is_number(missing) and not missing >= 0:  # NaN or a negative number
            return None
        return "float('nan') or a negative number, e.g. -1.0 (a count is >= 0)"

    def to_dict(self) -> dict:
        return {"type": "poisson"}


@attrs.frozen
class Logistic:
    """A head that predicts a value in [0, 1]: regression with a sigmoid link.

    The body gives one logit per example; predictions and the regress
    signature give ``sigmoid(output)``. Labels are numbers in ``[0, 1]`` (a
    share, a probability, or 0/1). The loss is the sigmoid cross entropy, as
    in ``tf.estimator.LogisticRegressionHead``.

    Example:
        >>> Logistic().to_dict()
        {'type': 'logistic'}
    """

    kind = "logistic"
    #: One value per example (what ``headkit.kinds.regression`` reads for it).
    dimension = 1
    is_trained = True
    is_binary = False

    def missing_label_expected(self, missing: Any) -> Optional[str]:
        """What ``missing_label`` must be, when ``missing`` is not acceptable; else None."""
        if _is_number(missing) and not 0.0 <= missing <= 1.0:  # NaN or outside [0, 1]
            return None
        return "float('nan') or a number outside [0, 1], e.g. -1.0"

    def to_dict(self) -> dict:
        return {"type": "logistic"}


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


OutputType = Union[Classification, MultiLabel, Regression, Poisson, Logistic, Predict]

#: The ``type`` a config file names -> the output type class.
OUTPUT_TYPES = {cls.kind: cls for cls in (Classification, MultiLabel, Regression, Poisson,
                                          Logistic, Predict)}
