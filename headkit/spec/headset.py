"""HeadSet: the heads of one model, checked together, and their names.

Imports no TensorFlow, except to rebuild Keras metrics named in a dict.
Reading and writing dicts and JSON or TOML files is in ``headkit.spec.config``.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Sequence, Tuple, Union

import attrs

from headkit.errors import ConfigError, ConfigTypeError
from headkit.spec import config, weighting
from headkit.spec.head import Head
from headkit.spec.keys import LOSS_WEIGHT, RESERVED_NAMES, TOTAL_LOSS, metric_key
from headkit.spec.weighting import LossWeighting, PCGrad

__all__ = ["HeadSet"]


def _to_heads(heads: Iterable[Head]) -> Tuple[Head, ...]:
    if isinstance(heads, Head):
        return (heads,)
    return tuple(heads)


@attrs.frozen
class HeadSet:
    """The heads of one model, checked across each other.

    Checks: at least one head, unique names, no reserved name (``loss``,
    ``predict``, ``serving_default``), exactly one default head (a lone head
    is the default by itself), and at least one trained head.

    Args:
        heads: the heads, in order.
        loss_weighting: how the heads' losses make the total: ``"fixed"`` (the
            default: ``sum(weight * loss)``), ``"uncertainty"`` or
            ``hk.UncertaintyWeighting()``, ``"dynamic_weight_average"`` or
            ``hk.DynamicWeightAverage(temperature=2.0, period=100)``. A learned
            weighting reports ``"<head>/loss_weight"`` for every trained head.
        gradient_surgery: None, or ``"pcgrad"`` / ``hk.PCGrad(seed=0)``; needs
            two or more trained heads with ``weight > 0``.

    Example:
        >>> heads = HeadSet([
        ...     Head("species", Classification(3), metrics=("accuracy",), is_default=True),
        ...     Head("mass", Regression(), metrics=("rmse",), weight=0.5),
        ... ])
        >>> heads.default_head.name
        'species'
        >>> heads.metric_names
        ('loss', 'species/loss', 'species/accuracy', 'mass/loss', 'mass/rmse')
    """

    heads: Tuple[Head, ...] = attrs.field(converter=_to_heads)
    loss_weighting: LossWeighting = attrs.field(
        default=weighting.FixedWeighting(), converter=weighting.loss_weighting, kw_only=True)
    gradient_surgery: Optional[PCGrad] = attrs.field(
        default=None, converter=weighting.gradient_surgery, kw_only=True)

    def __attrs_post_init__(self) -> None:
        heads = self.heads
        if not heads:
            raise ConfigError("A HeadSet needs at least one head (got none).", field="heads")
        not_heads = [h for h in heads if not isinstance(h, Head)]
        if not_heads:
            raise ConfigTypeError(
                f"HeadSet takes hk.Head objects (got {not_heads!r}). "
                "Wrap each output as hk.Head(name, output_type).", field="heads",
            )
        names = [h.name for h in heads]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(
                f"Head names must be unique (repeated: {repeated!r}). Each name is a label "
                "key, an output key and a signature key; rename one of them.", field="heads",
            )
        reserved = [n for n in names if n in RESERVED_NAMES]
        if reserved:
            raise ConfigError(
                f"Head name {reserved[0]!r} is reserved: {RESERVED_NAMES!r} are signature keys "
                f"or the total loss. Rename the head, e.g. {reserved[0] + '_head'!r}.",
                field="heads",
            )
        defaults = [h.name for h in heads if h.is_default]
        if len(heads) > 1 and len(defaults) != 1:
            found = "none" if not defaults else f"{len(defaults)}: {defaults!r}"
            raise ConfigError(
                f"Exactly one head must have is_default=True (found {found}) among "
                f"{names!r}. It serves 'serving_default'; set is_default=True on one head.",
                field="heads",
            )
        if not any(h.is_trained for h in heads):
            raise ConfigError(
                f"At least one head must be trained (Classification or Regression); all of "
                f"{names!r} are Predict heads, so there is no loss to minimize.", field="heads",
            )
        label_keys = [h.label_key for h in heads if h.is_trained]
        shared = sorted({k for k in label_keys if label_keys.count(k) > 1})
        if shared:
            readers = [h.name for h in heads if h.is_trained and h.label_key in shared]
            raise ConfigError(
                f"Heads {readers!r} read the same label key {shared[0]!r}. Each trained head "
                "reads its own label column; give each head its own label_key (copy the "
                "column if two heads really learn the same target).", field="heads",
            )
        weighted = [h.name for h in self.weighted_heads]
        if self.gradient_surgery is not None and len(weighted) < 2:
            raise ConfigError(
                f"gradient_surgery={self.gradient_surgery!r} needs two or more trained heads "
                f"with weight > 0 (got {weighted!r} among {names!r}): with one head there is "
                "no other gradient to conflict with. Drop gradient_surgery, or train more heads.",
                field="gradient_surgery",
            )

    def __iter__(self) -> Iterator[Head]:
        return iter(self.heads)

    def __len__(self) -> int:
        return len(self.heads)

    def __getitem__(self, name: str) -> Head:
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(f"No head named {name!r}; heads are {list(self.names)!r}.")

    @property
    def names(self) -> Tuple[str, ...]:
        """Head names, in order."""
        return tuple(h.name for h in self.heads)

    @property
    def default_head(self) -> Head:
        """The head that serves ``serving_default``."""
        if len(self.heads) == 1:
            return self.heads[0]
        return next(h for h in self.heads if h.is_default)

    @property
    def trained_heads(self) -> Tuple[Head, ...]:
        """Heads with labels and a loss (Classification and Regression)."""
        return tuple(h for h in self.heads if h.is_trained)

    @property
    def weighted_heads(self) -> Tuple[Head, ...]:
        """Trained heads with ``weight > 0``: the heads whose losses train the model."""
        return tuple(h for h in self.trained_heads if h.weight > 0)

    @property
    def label_keys(self) -> Tuple[str, ...]:
        """The label keys the trained heads read, without repeats."""
        return tuple(dict.fromkeys(h.label_key for h in self.trained_heads))

    @property
    def metric_names(self) -> Tuple[str, ...]:
        """Every key ``evaluate()`` reports: ``loss``, then ``<head>/<metric>``.

        A learned ``loss_weighting`` adds ``<head>/loss_weight`` after each
        trained head's metrics.
        """
        keys = [TOTAL_LOSS]
        for head in self.trained_heads:
            keys.extend(metric_key(head.name, m) for m in head.metric_names)
            if self.loss_weighting.is_learned:
                keys.append(metric_key(head.name, LOSS_WEIGHT))
        return tuple(keys)

    def select(self, names: Optional[Sequence[str]] = None,
               default: Optional[str] = None) -> "HeadSet":
        """The HeadSet of the heads ``names`` (in this HeadSet's order), ``default`` serving.

        What an export of a subset of heads serves. ``names=None`` keeps every
        head; ``default=None`` keeps this HeadSet's default head, which must
        then be among ``names``.

        Raises:
            ConfigError: an unknown or repeated name, no name, a ``default``
                outside ``names``, or this HeadSet's default left out without
                a ``default=``.

        Example:
            >>> heads = HeadSet([Head("species", Classification(3), is_default=True),
            ...                  Head("mass", Regression()), Head("sex", Classification(2))])
            >>> subset = heads.select(["mass", "sex"], default="sex")
            >>> subset.names, subset.default_head.name
            (('mass', 'sex'), 'sex')
        """
        if isinstance(names, str):
            raise ConfigTypeError(
                f"heads must be a list of head names (got the string {names!r}); write "
                f"heads=[{names!r}].", field="heads")
        chosen = list(self.names if names is None else names)
        unknown = [n for n in chosen if n not in self.names]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), self.names, n=1)
            raise ConfigError(
                f"heads: {unknown!r} are not heads of this model; its heads are "
                f"{list(self.names)!r}." + (f" Did you mean {close[0]!r}?" if close else ""),
                field="heads")
        repeated = sorted({n for n in chosen if chosen.count(n) > 1})
        if not chosen or repeated:
            raise ConfigError(
                f"heads must name each exported head once (got {chosen!r}); the model's heads "
                f"are {list(self.names)!r}.", field="heads")
        if default is None:
            default = self.default_head.name if len(chosen) > 1 else chosen[0]
            if default not in chosen:
                raise ConfigError(
                    f"default= is required: the HeadSet's default head {default!r} is not among "
                    f"the exported heads {chosen!r}. Pass default= one of them; it serves "
                    "'serving_default'.", field="default")
        elif default not in chosen:
            raise ConfigError(
                f"default={default!r} must be one of the exported heads {chosen!r}: it serves "
                "'serving_default'.", field="default")
        subset = [attrs.evolve(h, is_default=h.name == default)
                  for h in self.heads if h.name in chosen]
        # The training options stay with the heads (a manifest shows how they were trained);
        # gradient surgery only while two weighted heads remain to conflict.
        weighted = [h for h in subset if h.is_trained and h.weight > 0]
        surgery = self.gradient_surgery if len(weighted) >= 2 else None
        try:
            return HeadSet(subset, loss_weighting=self.loss_weighting, gradient_surgery=surgery)
        except ConfigError as error:
            raise type(error)(f"heads={chosen!r}: {error}", field="heads") from error

    # ----------------------------------------------------------------- dicts

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict; ``HeadSet.from_dict`` reads it back.

        Callable losses and metric factories are saved as ``"module:name"``
        and must be importable; Keras metric instances as class and config.

        Example:
            >>> h = HeadSet([Head("y", Regression())])
            >>> HeadSet.from_dict(h.to_dict()) == h
            True
        """
        return config.headset_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  custom_objects: Optional[Mapping[str, Any]] = None) -> "HeadSet":
        """Build a HeadSet from a dict such as ``to_dict`` writes or a config file holds.

        Errors name the path of the bad field, e.g. ``heads[1].output``. A
        custom loss or metric, written ``{"callable": "module:name"}``, is
        taken from ``custom_objects`` (by that full name or by ``name``):
        nothing named in a dict is ever imported.

        Example:
            >>> HeadSet.from_dict({"heads": [
            ...     {"name": "y", "output": {"type": "regression"}, "metrics": ["mae"]}
            ... ]}).names
            ('y',)
        """
        heads = config.heads_from_dict(data, custom_objects)
        options = config.headset_options_from_dict(data)
        try:
            return cls(heads, **options)
        except ConfigError as error:
            field = error.field or "heads"
            message = str(error)
            if not message.startswith(field):
                message = f"{field}: {message}"
            raise type(error)(message, field=field) from error

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"],
                  custom_objects: Optional[Mapping[str, Any]] = None) -> "HeadSet":
        """Read a HeadSet from a ``.json`` or ``.toml`` file holding what ``to_dict`` writes.

        In TOML each head is a ``[[heads]]`` table with an ``[heads.output]``
        table; leave out any field to take its default. Unknown keys, and a
        JSON key given twice, are errors. Errors start with the file's path,
        then the field's path. ``custom_objects`` resolves custom losses and
        metrics, as for :meth:`from_dict`.

        Example:
            >>> heads = HeadSet.from_file("examples/heads.toml")  # doctest: +SKIP
            >>> heads.default_head.name  # doctest: +SKIP
            'species'

        The file::

            [[heads]]
            name = "species"
            is_default = true
            metrics = ["accuracy"]
            [heads.output]
            type = "classification"
            vocabulary = ["Adelie", "Chinstrap", "Gentoo"]
        """
        return config.read_file(path, lambda data: cls.from_dict(data, custom_objects))
