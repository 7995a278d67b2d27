"""A HeadSet's loss weighting as TensorFlow: its variables, each head's term, the total.

Backend-neutral: the Estimator's model_fn and the Keras train step each build
one :class:`LossWeights` (the Estimator once per graph, Keras once per model)
and ask it for each head's weighted term, the total, the reported weights and,
for Dynamic Weight Average, the update after a training step. Its variables
belong to the model: saved in checkpoints, never exported.

With ``c_i`` the head's fixed ``weight`` and ``L_i`` its loss (see
``docs/multitask.md``):

- fixed: ``c_i * L_i``;
- uncertainty: ``c_i * f_i * (exp(-s_i) * L_i + s_i)``, ``s_i`` learned,
  ``f_i`` the kind's ``uncertainty_factor`` (1/2 for regression);
- dynamic weight average: ``c_i * w_i * L_i``, ``w_i`` from the windows' losses.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from headkit import kinds
from headkit.spec.headset import HeadSet
from headkit.spec.weighting import DynamicWeightAverage, UncertaintyWeighting

__all__ = ["SCOPE", "LossWeights", "dwa_weights"]

#: The name scope of the weighting's variables (their names in an Estimator checkpoint).
SCOPE = "headkit_loss_weighting"


def dwa_weights(previous: tf.Tensor, before: tf.Tensor, temperature: float) -> tf.Tensor:
    """``K * softmax((previous / before) / temperature)``: DWA's weights from two windows' losses.

    Example:
        >>> dwa_weights(tf.constant([1.0, 1.0]), tf.constant([2.0, 1.0]), 2.0).numpy().round(3)
        array([0.876, 1.124], dtype=float32)
    """
    ratio = tf.math.divide_no_nan(previous, before)
    count = tf.cast(tf.size(ratio), tf.float32)
    return count * tf.nn.softmax(ratio / temperature)


class LossWeights(tf.Module):
    """The loss weighting of one model: its variables and the weighted terms of a batch.

    Args:
        heads: the HeadSet; its ``loss_weighting`` says what to keep.

    Example:
        >>> from headkit import spec
        >>> heads = spec.HeadSet([spec.Head("y", spec.Regression())],
        ...                      loss_weighting=spec.UncertaintyWeighting())
        >>> weighting = LossWeights(heads)
        >>> terms, weights = weighting.weigh({"y": tf.constant(2.0)})
        >>> float(terms["y"]), float(weights["y"])  # 1/2 * (exp(0) * 2 + 0), 1/2 * exp(0)
        (1.0, 0.5)
    """

    def __init__(self, heads: HeadSet) -> None:
        super().__init__(name=SCOPE)
        method = heads.loss_weighting
        # Plain names and numbers only: tf.Module walks its attributes for variables.
        self.method_name = method.name
        self.is_learned = bool(method.is_learned)
        self.head_weights = tuple((h.name, float(h.weight)) for h in heads.trained_heads)
        self.weighted_names = tuple(h.name for h in heads.weighted_heads)
        self.factors = {h.name: float(kinds.get(h).uncertainty_factor)
                        for h in heads.weighted_heads}
        self.log_variances: Dict[str, tf.Variable] = {}
        with self.name_scope:  # SCOPE: the module opened it (a graph would rename a second one)
            if isinstance(method, UncertaintyWeighting):
                for name in self.weighted_names:
                    with tf.name_scope(name):
                        self.log_variances[name] = tf.Variable(
                            0.0, dtype=tf.float32, trainable=True, name="log_variance")
            if isinstance(method, DynamicWeightAverage):
                self.temperature, self.period = method.temperature, method.period
                self._make_dwa_variables(len(self.weighted_names))

    def _make_dwa_variables(self, count: int) -> None:
        with tf.name_scope("dynamic_weight_average"):
            def vector(name: str, value: float) -> tf.Variable:
                return tf.Variable(tf.fill([count], value), trainable=False, name=name)

            self.weights = vector("weights", 1.0)           # w_i used in this window
            self.window_sum = vector("window_sum", 0.0)     # sum of L_i over this window
            self.previous = vector("previous", 0.0)         # L_i(t-1): the last window's mean
            self.before = vector("before", 0.0)             # L_i(t-2)
            self.window_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                            name="window_steps")
            self.windows = tf.Variable(0, dtype=tf.int64, trainable=False, name="windows")

    def weigh(self, losses: Mapping[str, Any], labelled: Optional[Mapping[str, Any]] = None
              ) -> Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor]]:
        """``(terms, loss_weights)``: each trained head's term in the total, and its weight.

        ``losses`` maps each trained head to its loss ``L_i``. A head's
        ``loss_weight`` is the factor on ``L_i`` in its term (``c_i`` when
        fixed, ``c_i * f_i * exp(-s_i)``, ``c_i * w_i``). Each variable is read
        once, so the terms and the reported weights agree within a step.

        ``labelled`` (head -> bool tensor, ``HeadTerms.labelled``): a batch in
        which no row weighs in a head's loss leaves its uncertainty term out
        entirely; ``+ s_i`` alone would push ``s_i`` down on every such batch
        and grow the head's weight without bound while its labels are absent.
        """
        dwa = None
        if self.method_name == DynamicWeightAverage.name and self.weighted_names:
            dwa = tf.unstack(tf.convert_to_tensor(self.weights), num=len(self.weighted_names))
            dwa = dict(zip(self.weighted_names, dwa))
        terms, weights = {}, {}
        for name, weight in self.head_weights:
            loss = losses[name]
            if name in self.log_variances:
                s = tf.convert_to_tensor(self.log_variances[name])
                scale = weight * self.factors[name]
                term = scale * (tf.exp(-s) * loss + s)
                if labelled is not None and name in labelled:
                    term = term * tf.cast(labelled[name], term.dtype)
                terms[name] = term
                weights[name] = scale * tf.exp(-s)
            elif dwa is not None and name in dwa:
                terms[name] = weight * dwa[name] * loss
                weights[name] = weight * dwa[name]
            else:  # fixed, or a head with weight 0
                terms[name] = weight * loss
                weights[name] = tf.constant(weight, tf.float32)
        return terms, weights

    def total(self, terms: Mapping[str, tf.Tensor],
              regularization: Sequence[Any] = ()) -> tf.Tensor:
        """The sum of the heads' terms (from :meth:`weigh`) and the body's regularization losses."""
        parts = [terms[name] for name, _ in self.head_weights]
        parts.extend(tf.cast(r, tf.float32) for r in regularization)
        return tf.add_n(parts)

    def update(self, losses: Mapping[str, Any]) -> Optional[Any]:
        """After a training step: add the heads' losses to DWA's window (None for the others).

        When a window of ``period`` steps is full, its mean losses shift into
        ``L(t-1)`` (and ``L(t-1)`` into ``L(t-2)``), and from the second full
        window on the weights become :func:`dwa_weights` of the two.
        """
        if self.method_name != DynamicWeightAverage.name or not self.weighted_names:
            return None
        losses = tf.stack([tf.cast(losses[n], tf.float32) for n in self.weighted_names])
        steps = self.window_steps + 1
        full = steps >= self.period
        window_sum = self.window_sum + losses
        mean = window_sum / float(self.period)
        windows = self.windows + tf.cast(full, tf.int64)
        before = tf.where(full, tf.convert_to_tensor(self.previous), self.before)
        previous = tf.where(full, mean, self.previous)
        weights = tf.where(tf.logical_and(full, windows >= 2),
                           dwa_weights(previous, before, self.temperature), self.weights)
        values = [weights, before, previous, windows, steps, window_sum]
        # Every read above happens before any write below (a graph orders nothing by itself).
        with tf.control_dependencies(values):
            return tf.group(
                self.weights.assign(weights), self.before.assign(before),
                self.previous.assign(previous), self.windows.assign(windows),
                self.window_steps.assign(tf.where(full, tf.zeros_like(steps), steps)),
                self.window_sum.assign(tf.where(full, tf.zeros_like(window_sum), window_sum)))
