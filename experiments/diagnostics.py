r"""Trust-ratio diagnostics: each layer's ||w||/||g|| and LARS lambda over training.

Trains the small CNN on Fashion-MNIST with ``lars_optax.lars`` and records,
per parameter leaf and per step, the norm of the weights the gradient was
taken at, the norm of the raw gradient, their ratio and the :math:`\lambda`
of that step (read with ``lars_optax.trust_ratios``):

  python -m experiments.diagnostics --manual_dir=../shared/datasets \
      --out=experiments/results/

writes ``trust_ratio_diagnostics.png`` (||w||/||g|| and lambda per layer over
steps, log scale) and ``trust_ratio_diagnostics.json`` (the arrays, the config
and the first-iteration table), and prints the table. The config is
``experiments/configs/diagnostics.py``; why and what it measured:
docs/results.md, "Trust-ratio diagnostics".
"""
from __future__ import annotations

import copy
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

import lars_optax
from experiments import models
from experiments import optimizers
from experiments import steps
from experiments.configs import diagnostics as diagnostics_config
from experiments.data import pipeline
from experiments.data import preparation
from experiments.data.datasets import DataConfig

#: The arrays recorded per layer, each of shape [num_steps].
KEYS = ("weight_norm", "grad_norm", "norm_ratio", "trust_ratio")
DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "results")
BASENAME = "trust_ratio_diagnostics"


def _norms(tree) -> dict[str, jax.Array]:
  """{'/'-joined leaf name: L2 norm in float32} (names as metrics.jsonl logs them)."""
  return {name: jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32))))
          for name, x in steps.flat_named(tree).items()}


def _network_order(model, names) -> list[str]:
  """``names`` sorted as the layers are defined (input to output), not A-Z."""

  def key(name):
    obj, position = model, []
    for part in name.split("/"):
      try:
        if part.isdigit():
          position.append(int(part))
          obj = obj[int(part)]
        else:
          fields = [k for k in vars(obj) if not k.startswith("_")]
          position.append(fields.index(part))
          obj = getattr(obj, part)
      except (TypeError, ValueError, KeyError, IndexError, AttributeError):
        position.append(10**6)  # unknown: last
    return tuple(position), name

  return sorted(names, key=key)


def record_layer_ratios(config: ml_collections.ConfigDict, num_steps: int,
                        *, log_every: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """Trains ``num_steps`` steps with LARS and records per-layer norms.

  Step ``t`` (0-based) takes the gradient :math:`g_t` of the batch loss at the
  weights :math:`w_t` and applies the LARS update; the record of step ``t`` is
  :math:`\\|w_t\\|`, :math:`\\|g_t\\|` (the raw gradient, before weight decay),
  :math:`\\|w_t\\|/\\|g_t\\|` and the :math:`\\lambda_t` the update used.

  Args:
    config: a training config (``configs/diagnostics.py`` or any other)
      with ``optimizer="lars"``; ``num_train_steps`` is set to ``num_steps``
      so the learning-rate schedule spans the recorded steps.
    num_steps: number of training steps to record.
    log_every: print the loss every this many steps (0: never).

  Returns:
    ``{layer name: {"weight_norm", "grad_norm", "norm_ratio", "trust_ratio":
    float64 arrays of shape [num_steps]}}``, one entry per parameter leaf,
    named as in ``metrics.jsonl`` (e.g. ``"stages/0/conv/kernel"``); each
    entry also holds ``"adapted"`` (bool: LARS adapts and decays this leaf)
    and ``"size"`` (its number of parameters). ``norm_ratio`` is ``inf``
    where the gradient is exactly 0.

  Raises:
    ValueError: if the config's optimizer is not ``"lars"``.
  """
  if config.optimizer != "lars":
    raise ValueError(f"record_layer_ratios needs config.optimizer='lars' "
                     f"(lars_optax), got {config.optimizer!r}.")
  if num_steps <= 0:
    raise ValueError(f"num_steps must be positive, got {num_steps}.")
  config = copy.deepcopy(config)
  config.num_train_steps = int(num_steps)
  data_config = DataConfig.from_config(config.data)
  info = preparation.prepare(data_config)
  steps_per_epoch = pipeline.steps_per_epoch(info, config.global_batch_size)
  schedule = optimizers.create_learning_rate_schedule(config, steps_per_epoch)
  tx = optimizers.create_optimizer(config, schedule.fn)
  model = models.create_model(config.model, num_classes=info.num_classes,
                              rngs=nnx.Rngs(config.seed),
                              image_shape=tuple(info.image_shape))
  model.train()
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  batches = pipeline.train_iterator(
      data_config, info, global_batch_size=config.global_batch_size,
      seed=config.seed)
  records = _train_and_record(graphdef, tx, (params, batch_stats), batches,
                              num_steps, log_every)
  adapted = optimizers.adapted_leaves(config, params)
  sizes = {name: int(np.size(x)) for name, x in steps.flat_named(params).items()}
  return {name: _layer_arrays(records, name) | {"adapted": adapted[name],
                                                "size": sizes[name]}
          for name in _network_order(model, sizes)}


def _train_and_record(graphdef, tx, variables, batches, num_steps: int,
                      log_every: int) -> list[dict[str, Any]]:
  """Trains ``num_steps`` steps; each step's norms, trust ratios and loss."""
  loss_fn = steps.make_loss_fn(graphdef)

  @jax.jit
  def step(params, batch_stats, opt_state, batch):
    (loss, (_, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    record = {"weight_norm": _norms(params), "grad_norm": _norms(grads),
              "trust_ratio": steps.flat_named(lars_optax.trust_ratios(opt_state)),
              "loss": loss}
    return optax.apply_updates(params, updates), batch_stats, opt_state, record

  params, batch_stats = variables
  opt_state = tx.init(params)
  records = []
  start = time.time()
  for t in range(num_steps):
    params, batch_stats, opt_state, record = step(
        params, batch_stats, opt_state, next(batches))
    records.append(record)
    if log_every and (t + 1) % log_every == 0:
      print(f"step {t + 1}/{num_steps}: loss {float(record['loss']):.4f} "
            f"({time.time() - start:.0f} s)", flush=True)
  return jax.device_get(records)


def _layer_arrays(records, name: str) -> dict[str, np.ndarray]:
  """One layer's ``KEYS`` arrays over the recorded steps."""
  w = np.array([r["weight_norm"][name] for r in records], np.float64)
  g = np.array([r["grad_norm"][name] for r in records], np.float64)
  lam = np.array([np.asarray(r["trust_ratio"][name]).item() for r in records],
                 np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = np.where(g > 0, w / np.where(g > 0, g, 1.0), np.inf)
  return {"weight_norm": w, "grad_norm": g, "norm_ratio": ratio,
          "trust_ratio": lam}


def first_iteration_table(ratios: dict[str, dict[str, Any]]) -> list[dict]:
  """One row per layer at step 0: layer, ||w||, ||g||, ||w||/||g||, lambda."""
  return [{"layer": name, "weight_norm": float(r["weight_norm"][0]),
           "grad_norm": float(r["grad_norm"][0]),
           "norm_ratio": float(r["norm_ratio"][0]),
           "trust_ratio": float(r["trust_ratio"][0])}
          for name, r in ratios.items()]


def spread(ratios: dict[str, dict[str, Any]], step: int = 0,
           *, kernels_only: bool = True) -> dict[str, Any]:
  """max/min of ||w||/||g|| over layers at ``step`` (layers with ||w|| > 0).

  ``kernels_only`` keeps the leaves with more than one dimension (conv and
  dense kernels), the layers the paper's Table 2 compares.
  """
  values = {}
  for name, r in ratios.items():
    ratio = float(r["norm_ratio"][step])
    if r["weight_norm"][step] > 0 and np.isfinite(ratio) and ratio > 0:
      if not kernels_only or not name.endswith(("bias", "scale")):
        values[name] = ratio
  low, high = min(values, key=values.get), max(values, key=values.get)
  factor = values[high] / values[low]
  return {"min_layer": low, "min": values[low], "max_layer": high,
          "max": values[high], "factor": factor,
          "orders_of_magnitude": float(np.log10(factor))}


def format_table(rows: list[dict]) -> str:
  """The first-iteration table as markdown (like the paper's Table 2)."""
  lines = ["| layer | ‖w‖ | ‖g‖ | ‖w‖/‖g‖ | λ |", "| --- | ---: | ---: | ---: | ---: |"]
  for row in rows:
    lines.append(f"| {row['layer']} | {row['weight_norm']:.4g} | "
                 f"{row['grad_norm']:.4g} | {row['norm_ratio']:.4g} | "
                 f"{row['trust_ratio']:.4g} |")
  return "\n".join(lines)


def plot_layer_ratios(ratios: dict[str, dict[str, Any]], out_path: str, *,
                      title: str = "") -> None:
  """Writes a PNG: ||w||/||g|| (left) and lambda (right) per layer over steps."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
  colors = plt.get_cmap("tab20").colors
  for i, (name, r) in enumerate(ratios.items()):
    style = dict(color=colors[i % len(colors)], linewidth=1.2,
                 linestyle="-" if r["adapted"] else ":")
    steps = np.arange(1, len(r["norm_ratio"]) + 1)
    for ax, key in zip(axes, ("norm_ratio", "trust_ratio")):
      y = np.asarray(r[key], np.float64)
      y = np.where(np.isfinite(y) & (y > 0), y, np.nan)  # log scale
      if np.any(np.isfinite(y)):
        ax.plot(steps, y, label=name, **style)
  axes[0].set(title="‖w‖ / ‖g‖ per layer", xlabel="step", yscale="log")
  axes[1].set(title="LARS trust ratio λ = η‖w‖ / (‖g‖ + β‖w‖)",
              xlabel="step", yscale="log")
  for ax in axes:
    ax.grid(alpha=0.3, which="both")
  axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)


def run(config: ml_collections.ConfigDict, num_steps: int, out_dir: str, *,
        log_every: int = 0) -> dict[str, Any]:
  """Records, writes ``<out_dir>/trust_ratio_diagnostics.{png,json}``; returns the JSON."""
  start = time.time()
  ratios = record_layer_ratios(config, num_steps, log_every=log_every)
  wall = time.time() - start
  os.makedirs(out_dir, exist_ok=True)
  table = first_iteration_table(ratios)
  summary = {
      "description": (
          "Per-layer ||w|| (weights the gradient is taken at), ||g|| (raw "
          "gradient), ||w||/||g|| and LARS lambda at every step; step 0 is the "
          "first iteration (compare You et al. 2017, Table 2: AlexNet conv1 "
          "5.76 ... fc6 1345)."),
      "model": config.model, "dataset": config.data.name,
      "global_batch_size": config.global_batch_size,
      "num_steps": num_steps, "wall_time_s": round(wall, 1),
      "device": f"{jax.devices()[0].device_kind} x1",
      "config": json.loads(config.to_json()),
      "first_iteration": table,
      "first_iteration_spread_kernels": spread(ratios, 0),
      "first_iteration_spread_all": spread(ratios, 0, kernels_only=False),
      "last_step_spread_kernels": spread(ratios, num_steps - 1),
      "layers": {name: {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                        for k, v in r.items()} for name, r in ratios.items()},
  }
  # inf (a zero gradient) is not JSON: write null.
  for r in summary["layers"].values():
    r["norm_ratio"] = [x if np.isfinite(x) else None for x in r["norm_ratio"]]
  with open(os.path.join(out_dir, BASENAME + ".json"), "w") as f:
    json.dump(summary, f, indent=1)
  plot_layer_ratios(
      ratios, os.path.join(out_dir, BASENAME + ".png"),
      title=f"{config.model} on {config.data.name}, LARS, batch "
            f"{config.global_batch_size}, {num_steps} steps")
  return summary


def main(argv) -> None:
  del argv
  config = diagnostics_config.get_config()
  config.data.manual_dir = _MANUAL_DIR.value
  config.data.data_dir = _DATA_DIR.value
  config.global_batch_size = _BATCH_SIZE.value
  config.base_learning_rate = _LEARNING_RATE.value
  summary = run(config, _NUM_STEPS.value, _OUT.value, log_every=10)
  print(format_table(summary["first_iteration"]))
  for key in ("first_iteration_spread_kernels", "first_iteration_spread_all",
              "last_step_spread_kernels"):
    s = summary[key]
    print(f"{key}: {s['min_layer']} {s['min']:.4g} .. {s['max_layer']} "
          f"{s['max']:.4g}: x{s['factor']:.3g} "
          f"({s['orders_of_magnitude']:.2f} orders of magnitude)")
  print(f"wrote {os.path.join(_OUT.value, BASENAME)}.{{png,json}} "
        f"in {summary['wall_time_s']} s")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  _MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "tfds manual_dir root.")
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir.")
  _OUT = flags.DEFINE_string("out", DEFAULT_OUT, "Output folder.")
  _NUM_STEPS = flags.DEFINE_integer("num_steps", 120, "Steps to record.")
  _BATCH_SIZE = flags.DEFINE_integer("batch_size", 4096, "Global batch size.")
  _LEARNING_RATE = flags.DEFINE_float("learning_rate", 10.0, "Peak LR.")
  app.run(main)
