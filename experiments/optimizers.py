"""The optimizer and its learning-rate schedule, built from a training config."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from absl import logging

import lars_optax
from experiments import steps
from experiments.user_errors import ConfigError

OPTIMIZERS = ("lars", "lars_global", "optax_lars", "sgd", "lamb")
LR_SCALING_RULES = ("linear", "sqrt", "none")


@dataclasses.dataclass(frozen=True)
class Schedule:
  fn: optax.Schedule
  peak_learning_rate: float
  warmup_steps: int
  total_steps: int
  steps_per_epoch: int


def peak_learning_rate(config) -> float:
  """``base_learning_rate`` scaled from ``base_batch_size`` by ``lr_scaling``."""
  if config.lr_scaling == "none":
    return float(config.base_learning_rate)
  return float(lars_optax.scale_learning_rate(
      config.base_learning_rate, config.global_batch_size,
      base_batch_size=config.base_batch_size, rule=config.lr_scaling))


def check_config(config) -> None:
  """Builds the schedule's shape and the optimizer once: a value the library
  rejects becomes one ConfigError, before any data is read."""
  try:
    peak = peak_learning_rate(config)
    create_optimizer(config, peak)
    lars_optax.warmup_polynomial_decay_schedule(
        peak, 0, 1, end_value=config.end_learning_rate, power=config.power)
  except ValueError as error:
    raise ConfigError(f"the optimizer or its schedule rejects the config: "
                      f"{error}") from None


def create_learning_rate_schedule(config, steps_per_epoch: int) -> Schedule:
  """Warm-up then polynomial decay, peak LR scaled from base_batch_size.

  The run lasts ``config.num_train_steps`` steps, or, when that is 0,
  ``config.num_epochs`` epochs. Warm-up lasts ``config.warmup_epochs`` epochs,
  or longer where ``config.warmup_fraction`` (of the run) or
  ``config.min_warmup_steps`` ask for more.
  """
  peak = peak_learning_rate(config)
  total = config.num_train_steps
  if total <= 0:
    total = max(1, int(round(config.num_epochs * steps_per_epoch)))
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  warmup = max(warmup, math.ceil(config.warmup_fraction * total),
               config.min_warmup_steps)
  if warmup >= total:  # a run shorter than its warm-up (a smoke test)
    logging.warning("Warm-up of %d steps >= the run's %d steps: warming up "
                    "for %d steps instead.", warmup, total, total - 1)
    warmup = total - 1
  fn = lars_optax.warmup_polynomial_decay_schedule(
      peak, warmup, total, init_value=0.0,
      end_value=config.end_learning_rate, power=config.power)
  return Schedule(fn, peak, warmup, total, steps_per_epoch)


def layer_mask(config) -> Callable[[Any], Any] | None:
  """The leaves adapted and decayed: biases and norms excluded, or all (None)."""
  return lars_optax.exclude_bias_and_norm if config.exclude_bias_and_norm else None


def adapted_leaves(config, params) -> dict[str, bool]:
  """{leaf name (as metrics.jsonl logs it): adapted and decayed?} by ``layer_mask``."""
  mask = layer_mask(config)
  flags = mask(params) if mask else jax.tree.map(lambda _: True, params)
  return {name: bool(v) for name, v in steps.flat_named(flags).items()}


def scale_by_global_trust_ratio(*, weight_decay: float, trust_coefficient: float
                                ) -> optax.GradientTransformation:
  r"""``scale_by_lars`` with ONE trust ratio for the whole network.

  .. math::

    \lambda = \frac{\eta \, \|w\|}{\|g\| + \beta \|w\|}, \qquad
    u_l = \lambda \, (g_l + \beta w_l),

  with :math:`\|w\|` and :math:`\|g\|` the norms of all leaves together
  (1 where a norm is zero). The large-batch study's control arm: the same
  chain as LARS, without the per-layer ratio. Every leaf is adapted and
  decayed. The state is a ``ScaleByLarsState`` holding :math:`\lambda` for
  every leaf, so ``lars_optax.trust_ratios`` logs it.
  """
  def init_fn(params):
    return lars_optax.ScaleByLarsState(
        count=jnp.zeros([], jnp.int32),
        trust_ratio=jax.tree.map(lambda _: jnp.ones([], jnp.float32), params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("scale_by_global_trust_ratio needs the params.")
    w_norm, g_norm = optax.tree.norm(params), optax.tree.norm(updates)
    denominator = g_norm + weight_decay * w_norm
    ratio = jnp.where((w_norm > 0) & (denominator > 0),
                      trust_coefficient * w_norm / denominator, 1.0)
    updates = jax.tree.map(lambda g, w: ratio * (g + weight_decay * w),
                           updates, params)
    return updates, lars_optax.ScaleByLarsState(
        count=optax.safe_int32_increment(state.count),
        trust_ratio=jax.tree.map(lambda _: ratio.astype(jnp.float32), params))

  return optax.GradientTransformation(init_fn, update_fn)


def create_optimizer(config, learning_rate: optax.ScalarOrSchedule
                     ) -> optax.GradientTransformation:
  """The optimizer named by ``config.optimizer``.

  ``config.exclude_bias_and_norm`` (default True) removes biases and BatchNorm
  parameters (every leaf with ndim <= 1) from weight decay and, for the LARS
  variants, from the trust-ratio adaptation, so they get the plain global LR.
  The paper adapts every layer; then a zero-initialised bias has trust ratio
  1, a step about 1/trust_coefficient larger than its neighbours' (see
  configs/default.py). Set it False for the paper's rule.
  """
  tx = _optimizer(config, learning_rate)
  if config.clip_gradient_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.clip_gradient_norm), tx)
  return tx


def _optimizer(config, learning_rate: optax.ScalarOrSchedule
               ) -> optax.GradientTransformation:
  mask = layer_mask(config)
  if config.optimizer == "lars":
    return lars_optax.lars(
        learning_rate,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        nesterov=config.nesterov,
        trust_coefficient=config.lars.trust_coefficient,
        eps=config.lars.eps,
        formula=config.lars.formula,
        trust_clip=config.lars.trust_clip,
        weight_decay_mask=mask,
        trust_ratio_mask=mask,
    )
  if config.optimizer == "lars_global":  # the chain of lars(), one ratio
    return optax.chain(
        scale_by_global_trust_ratio(
            weight_decay=config.weight_decay,
            trust_coefficient=config.lars.trust_coefficient),
        optax.scale_by_learning_rate(learning_rate),
        optax.trace(decay=config.momentum, nesterov=config.nesterov),
    )
  if config.optimizer == "optax_lars":
    return optax.lars(
        learning_rate,
        weight_decay=config.weight_decay,
        weight_decay_mask=mask if mask is not None else True,
        trust_coefficient=config.lars.trust_coefficient,
        eps=config.lars.eps,
        trust_ratio_mask=mask if mask is not None else True,
        momentum=config.momentum,
        nesterov=config.nesterov,
    )
  if config.optimizer == "lamb":  # Adam's b1, b2, eps at lars_optax's defaults
    return lars_optax.lamb(
        learning_rate,
        weight_decay=config.weight_decay,
        weight_decay_mask=mask,
        trust_ratio_mask=mask,
    )
  if config.optimizer == "sgd":
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=mask),
        optax.sgd(learning_rate, momentum=config.momentum,
                  nesterov=config.nesterov),
    )
  raise ValueError(f"Unknown optimizer {config.optimizer!r}.")
