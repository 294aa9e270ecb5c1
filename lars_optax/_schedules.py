"""Learning-rate schedules and batch-size scaling used with LARS."""

import math
from typing import NamedTuple

import jax.numpy as jnp
import optax


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def warmup_polynomial_decay_schedule(
    peak_value: float,
    warmup_steps: int,
    total_steps: int,
    *,
    init_value: float = 0.0,
    end_value: float = 0.0,
    power: float = 2.0,
) -> optax.Schedule:
  r"""Linear warm-up, then polynomial decay (the LARS paper's schedule).

  .. math::

    \gamma_t = \begin{cases}
      \gamma_{init} + (\gamma_{peak} - \gamma_{init}) \, t / t_w
        & t < t_w \\
      \gamma_{end} + (\gamma_{peak} - \gamma_{end})
        \left(1 - \frac{t - t_w}{T - t_w}\right)^p & t_w \le t < T \\
      \gamma_{end} & t \ge T
    \end{cases}

  With ``warmup_steps=0``, ``end_value=0`` and ``power=2`` this is the
  paper's :math:`\gamma_0 (1 - t/T)^2`.

  Args:
    peak_value: :math:`\gamma_{peak}`, reached at the end of warm-up.
    warmup_steps: :math:`t_w`, steps of linear warm-up (may be 0).
    total_steps: :math:`T`, step at which the decay reaches ``end_value``.
    init_value: learning rate at step 0 of the warm-up.
    end_value: learning rate at and after ``total_steps``.
    power: :math:`p`, the power of the decay (2 in the paper and MLPerf).

  Returns:
    An :class:`optax.Schedule` (step -> learning rate), jit-friendly.

  Example:
    >>> sched = warmup_polynomial_decay_schedule(10.0, 5, 105, end_value=1e-4)
    >>> [round(float(sched(t)), 4) for t in (0, 5, 55, 105)]
    [0.0, 10.0, 2.5001, 0.0001]

  References:
    You, Gitman and Ginsburg, `Scaling SGD Batch Size to 32K for ImageNet
    Training <https://arxiv.org/abs/1708.03888>`_, Technical Report
    UCB/EECS-2017-156, 2017.
  """
  for name, value in (("peak_value", peak_value), ("init_value", init_value),
                      ("end_value", end_value)):
    _require(math.isfinite(value) and value >= 0,
             f"`{name}` must be finite and non-negative, got {value!r}.")
  _require(isinstance(warmup_steps, int) and warmup_steps >= 0,
           f"`warmup_steps` must be a non-negative int, got {warmup_steps!r}.")
  _require(isinstance(total_steps, int) and total_steps > warmup_steps,
           f"`total_steps` must be an int > warmup_steps={warmup_steps}, "
           f"got {total_steps!r}.")
  _require(math.isfinite(power) and power > 0,
           f"`power` must be positive, got {power!r}.")
  decay_steps = total_steps - warmup_steps

  def schedule(count):
    # The default float dtype: float32, or float64 under jax_enable_x64.
    t = jnp.asarray(count, jnp.result_type(float))
    if warmup_steps > 0:
      warm = init_value + (peak_value - init_value) * t / warmup_steps
    else:
      warm = jnp.asarray(peak_value, t.dtype)
    progress = jnp.clip((t - warmup_steps) / decay_steps, 0.0, 1.0)
    decay = end_value + (peak_value - end_value) * (1.0 - progress) ** power
    return jnp.where(t < warmup_steps, warm, decay)

  return schedule


def scale_learning_rate(
    base_learning_rate: float,
    global_batch_size: int,
    *,
    base_batch_size: int = 256,
    rule: str = "linear",
) -> float:
  r"""Scales a learning rate tuned at ``base_batch_size`` to another batch size.

  .. math::

    \gamma = \gamma_{base} \cdot \frac{B}{B_{base}} \ \text{(linear, Goyal et
    al. 2017)}, \qquad
    \gamma = \gamma_{base} \sqrt{\frac{B}{B_{base}}} \ \text{(sqrt)}.

  Args:
    base_learning_rate: learning rate at ``base_batch_size``.
    global_batch_size: the batch size summed over all devices.
    base_batch_size: batch size at which ``base_learning_rate`` was tuned.
    rule: ``"linear"`` or ``"sqrt"``.

  Returns:
    The scaled learning rate, a float.

  Example:
    >>> scale_learning_rate(0.1, 8192)
    3.2
  """
  _require(math.isfinite(base_learning_rate) and base_learning_rate >= 0,
           "`base_learning_rate` must be finite and non-negative, "
           f"got {base_learning_rate!r}.")
  _require(isinstance(global_batch_size, int) and global_batch_size > 0,
           f"`global_batch_size` must be a positive int, got {global_batch_size!r}.")
  _require(isinstance(base_batch_size, int) and base_batch_size > 0,
           f"`base_batch_size` must be a positive int, got {base_batch_size!r}.")
  ratio = global_batch_size / base_batch_size
  if rule == "linear":
    return base_learning_rate * ratio
  if rule == "sqrt":
    return base_learning_rate * math.sqrt(ratio)
  raise ValueError(f"`rule` must be 'linear' or 'sqrt', got {rule!r}.")


class LarsPreset(NamedTuple):
  """Hyperparameters of a published LARS recipe.

  Attributes:
    peak_learning_rate: learning rate at the end of warm-up (used as is, not
      scaled with the batch size).
    warmup_epochs: epochs of linear warm-up from 0.
    end_learning_rate: learning rate at the end of the polynomial decay.
    power: power of the polynomial decay.
    trust_coefficient: the trust coefficient eta.
    eps: the epsilon of the trust-ratio denominator.
  """

  peak_learning_rate: float
  warmup_epochs: float
  end_learning_rate: float = 1e-4
  power: float = 2.0
  trust_coefficient: float = 0.001
  eps: float = 0.0

  def schedule(self, steps_per_epoch: int, total_epochs: float) -> optax.Schedule:
    """The warm-up + polynomial decay schedule of this preset, in steps."""
    _require(isinstance(steps_per_epoch, int) and steps_per_epoch > 0,
             f"`steps_per_epoch` must be a positive int, got {steps_per_epoch!r}.")
    _require(total_epochs > self.warmup_epochs,
             f"`total_epochs` must exceed warmup_epochs={self.warmup_epochs}, "
             f"got {total_epochs!r}.")
    return warmup_polynomial_decay_schedule(
        self.peak_learning_rate,
        int(round(self.warmup_epochs * steps_per_epoch)),
        int(round(total_epochs * steps_per_epoch)),
        end_value=self.end_learning_rate,
        power=self.power,
    )


def mlperf_resnet50_lars(global_batch_size: int) -> LarsPreset:
  """The MLPerf ResNet-50 LARS table: batch size -> peak LR and warm-up.

  From the MLPerf training reference (target 75.9% top-1): batch < 16K: LR
  10, 5 warm-up epochs; < 32K: 25, 5; >= 32K: 31.2, 25; polynomial decay of
  power 2 to 1e-4, eps 0.

  Args:
    global_batch_size: the batch size summed over all devices.

  Returns:
    A :class:`LarsPreset`; ``preset.schedule(steps_per_epoch, epochs)`` gives
    the learning-rate schedule.

  Example:
    >>> mlperf_resnet50_lars(8192).peak_learning_rate
    10.0
  """
  _require(isinstance(global_batch_size, int) and global_batch_size > 0,
           f"`global_batch_size` must be a positive int, got {global_batch_size!r}.")
  if global_batch_size < 16384:
    return LarsPreset(peak_learning_rate=10.0, warmup_epochs=5)
  if global_batch_size < 32768:
    return LarsPreset(peak_learning_rate=25.0, warmup_epochs=5)
  return LarsPreset(peak_learning_rate=31.2, warmup_epochs=25)
