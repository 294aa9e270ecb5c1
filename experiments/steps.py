"""The loss and the step functions that both data-parallel loops compile.

Models are Flax NNX modules used functionally: a loop ``nnx.split``s the model
into a graphdef and its ``Param`` / ``BatchStat`` states once, and the steps
``nnx.merge`` them inside the compiled function. The train state is a plain
dict ``{step, params, batch_stats, opt_state}``.

The steps are written once for both loops: with ``axis_name`` (pmap) they
average the gradients and metrics over that axis themselves; without it (jit
with shardings) GSPMD does the same from the shardings of the inputs.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import lars_optax

State = dict[str, Any]


def flat_named(tree) -> dict[str, Any]:
  """{'stages/0/conv/kernel': leaf, ...}: the names lars_optax masks match."""
  return dict(zip(lars_optax.parameter_names(tree), jax.tree.leaves(tree)))


def cross_entropy(logits, labels):
  """Softmax cross-entropy of integer labels, one value per example."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_loss_fn(graphdef):
  """(params, batch_stats, batch) -> (mean loss, (logits, new batch_stats)).

  The model runs in the mode ``graphdef`` was split in (train: BatchNorm uses
  and updates the batch statistics).
  """

  def loss_fn(params, batch_stats, batch):
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    logits = model(batch["image"])
    loss = jnp.mean(cross_entropy(logits, batch["label"]))
    return loss, (logits, nnx.state(model, nnx.BatchStat))

  return loss_fn


def micro_batches(batch, accum_steps: int, num_shards: int):
  """Splits a batch [B, ...] into ``accum_steps`` micro-batches [k, B/k, ...].

  Micro-batch i is the i-th 1/k of each of the ``num_shards`` contiguous
  shards of the batch (the devices' shards under jit; 1 under pmap, where the
  batch is already one device's), so splitting moves no data between devices.
  """
  def split(x):
    per_shard = x.shape[0] // num_shards
    x = x.reshape((num_shards, accum_steps, per_shard // accum_steps) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1).reshape(
        (accum_steps, x.shape[0] * x.shape[2]) + x.shape[3:])
  return jax.tree.map(split, batch)


def make_gradient_fn(loss_fn, accum_steps: int = 1, num_shards: int = 1):
  """(params, batch_stats, batch) -> (grads, loss, accuracy, new batch_stats).

  With ``accum_steps`` = k > 1 the batch is split into k micro-batches
  (``micro_batches``) and a ``lax.scan`` computes their gradients one after
  the other; the outputs are their means (docs/training.md, "Large batches on
  few GPUs").
  """
  def gradients(params, batch_stats, batch):
    (loss, (logits, new_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params, batch_stats, batch)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return grads, loss, accuracy, new_stats

  def accumulated_gradients(params, batch_stats, batch):
    def add(total, micro_batch):
      out = gradients(params, batch_stats, micro_batch)
      return jax.tree.map(jnp.add, total, out), None

    micro = micro_batches(batch, accum_steps, num_shards)
    zeros = jax.tree.map(
        jnp.zeros_like,
        jax.eval_shape(gradients, params, batch_stats,
                       jax.tree.map(lambda x: x[0], micro)))
    total, _ = jax.lax.scan(add, zeros, micro)
    return jax.tree.map(lambda x: x / accum_steps, total)

  return gradients if accum_steps == 1 else accumulated_gradients


def make_train_step(graphdef, tx, schedule: optax.Schedule, *,
                    axis_name: str | None, pmean_batch_stats: bool,
                    trust_ratio_names=(), accum_steps: int = 1,
                    num_shards: int = 1):
  """(state, batch) -> (state, metrics); metrics are scalars, averaged over devices.

  ``trust_ratio_names``: the params whose LARS trust ratio goes into the
  metrics as ``trust_ratio/<name>`` (empty: none). ``accum_steps`` = k > 1:
  the mean gradient of k micro-batches (``make_gradient_fn``) makes ONE
  optimizer update.
  """
  compute = make_gradient_fn(make_loss_fn(graphdef), accum_steps, num_shards)

  def train_step(state: State, batch) -> tuple[State, dict[str, jax.Array]]:
    params = state["params"]
    grads, loss, accuracy, batch_stats = compute(params, state["batch_stats"],
                                                 batch)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
      loss, accuracy = jax.lax.pmean((loss, accuracy), axis_name)
      if pmean_batch_stats:  # per-device BN: average the running statistics
        batch_stats = jax.lax.pmean(batch_stats, axis_name)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)
    metrics = {
        "loss": loss,
        "accuracy": accuracy,
        "learning_rate": jnp.asarray(schedule(state["step"]), jnp.float32),
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
    } | _trust_ratio_metrics(opt_state, trust_ratio_names)
    new_state = dict(state, step=state["step"] + 1, params=params,
                     batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics

  return train_step


def _trust_ratio_metrics(opt_state, names) -> dict[str, jax.Array]:
  """``trust_ratio/<name>`` for the named params (none if ``names`` is empty)."""
  if not names:
    return {}
  return {f"trust_ratio/{name}": jnp.asarray(ratio, jnp.float32)
          for name, ratio in lars_optax.trust_ratios_by_name(opt_state).items()
          if name in names}


def make_eval_step(graphdef, *, axis_name: str | None):
  """(state, batch with mask) -> sums of loss, correct and count."""

  def eval_step(state: State, batch):
    model = nnx.merge(graphdef, state["params"], state["batch_stats"], copy=True)
    logits = model(batch["image"])
    mask = batch["mask"].astype(jnp.float32)
    sums = {
        "loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
        "count": jnp.sum(mask),
    }
    if axis_name is not None:
      sums = jax.lax.psum(sums, axis_name)
    return sums

  return eval_step
