r"""Batch-size sweep: best test accuracy against batch size, per optimizer.

Runs the grid of ``experiments/configs/sweep.py`` (batch sizes x optimizers x
learning rates x seeds) through ``train.train_and_evaluate``, one run at a
time, appending a row per finished run to a CSV. A rerun skips the runs that
the CSV already holds, so the sweep can be stopped and resumed at will:

  python -m experiments.sweep --manual_dir=../shared/datasets        # run / resume
  python -m experiments.sweep --summarize                           # table + plot

``--summarize`` writes ``sweep_summary.md`` and ``sweep_best_accuracy.png`` next
to the CSV. ``--batch_sizes`` / ``--optimizers`` / ``--max_runs`` restrict one
invocation to part of the grid (the notebook's small sweep uses them).
"""
from __future__ import annotations

import csv
import math
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax

import lars_optax
from experiments import train
from experiments.configs import sweep as sweep_config

RESULTS = os.path.join(os.path.dirname(__file__), "results", "sweep.csv")
COLUMNS = ("optimizer", "formula", "batch_size", "learning_rate",
           "base_learning_rate", "lr_scaling", "warmup_epochs", "epochs",
           "steps", "seed", "test_accuracy", "test_loss", "status",
           "wall_time_s", "device")

_WORKDIR = flags.DEFINE_string("workdir", "runs/sweep", "Parent of the runs' workdirs.")
_RESULTS = flags.DEFINE_string("results", RESULTS, "The CSV of finished runs.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "tfds manual_dir root.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", None, "Subset of the grid's batch sizes.")
_OPTIMIZERS = flags.DEFINE_list("optimizers", None, "Subset, e.g. sgd,lars/paper.")
_NUM_EPOCHS = flags.DEFINE_float("num_epochs", None, "Override the epoch budget.")
_MAX_RUNS = flags.DEFINE_integer("max_runs", 0, "Stop after this many new runs (0: all).")
_SUMMARIZE = flags.DEFINE_bool("summarize", False, "Only write the table and the plot.")


def run_key(row) -> tuple:
  return (row["optimizer"], row["formula"], int(row["batch_size"]),
          float(row["base_learning_rate"]), int(row["seed"]), float(row["epochs"]))


def read_rows(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def append_row(path: str, row: dict) -> None:
  new = not os.path.exists(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    if new:
      writer.writeheader()
    writer.writerow(row)


def configure(name: str, batch_size: int, base_learning_rate: float, seed: int,
              num_epochs: float | None = None):
  """The config of one run of the grid; ``name`` is "optimizer[/formula]"."""
  optimizer, _, formula = name.partition("/")
  config = sweep_config.get_config()
  config.optimizer = optimizer
  if formula:
    config.lars.formula = formula
  config.lr_scaling = "linear" if optimizer == "sgd" else "none"
  config.global_batch_size = batch_size
  config.base_learning_rate = base_learning_rate
  config.seed = seed
  if num_epochs is not None:
    config.num_epochs = num_epochs
  return config


def _best_learning_rates(rows: Sequence[dict]) -> dict[tuple[str, int], float]:
  """(name, batch) -> the base LR with the best seed-0 accuracy."""
  best: dict[tuple[str, int], tuple[float, float]] = {}
  for row in rows:
    if int(row["seed"]) != 0:
      continue
    key = (_name(row), int(row["batch_size"]))
    accuracy = _accuracy(row)
    if key not in best or accuracy > best[key][0]:
      best[key] = (accuracy, float(row["base_learning_rate"]))
  return {key: lr for key, (_, lr) in best.items()}


def planned_runs(rows: Sequence[dict], names: Sequence[str],
                 batch_sizes: Sequence[int]) -> Iterator[tuple[str, int, float, int]]:
  """The grid in the order it is run: small batches first, extra seeds last."""
  for batch_size in batch_sizes:
    for name in names:
      lrs = sweep_config.LEARNING_RATES[name]
      if batch_size in sweep_config.EDGE_BATCH_SIZES:
        lrs += sweep_config.EDGE_LEARNING_RATES[name]
      for lr in lrs:
        for seed in sweep_config.SEEDS:
          yield name, batch_size, lr, seed
  best = _best_learning_rates(rows)
  for batch_size in batch_sizes:
    if batch_size not in sweep_config.EXTRA_SEED_BATCH_SIZES:
      continue
    for name in names:
      if (name, batch_size) in best:  # known once the seed-0 runs are done
        for seed in sweep_config.EXTRA_SEEDS:
          yield name, batch_size, best[(name, batch_size)], seed


def _name(row) -> str:
  return row["optimizer"] + (f"/{row['formula']}" if row["formula"] else "")


def _accuracy(row) -> float:
  value = float(row["test_accuracy"])
  return -1.0 if math.isnan(value) else value


def run_one(name: str, batch_size: int, lr: float, seed: int, *, workdir: str,
            num_epochs: float | None = None, manual_dir: str | None = None,
            data_dir: str | None = None,
            overrides: Mapping[str, Any] | None = None) -> dict:
  """Trains one grid point and returns its CSV row (a divergence is a row too).

  ``overrides`` maps dotted config keys to values (e.g. ``{"model":
  "cnn_tiny", "data.train_split": "train[:1024]"}``) for small reruns.
  """
  config = configure(name, batch_size, lr, seed, num_epochs)
  config.data.manual_dir = manual_dir
  config.data.data_dir = data_dir
  if overrides:
    config.update_from_flattened_dict(dict(overrides))
  optimizer, _, formula = name.partition("/")
  tag = f"{optimizer}_{formula or 'none'}_b{batch_size}_lr{lr:g}_s{seed}_e{config.num_epochs:g}"
  start = time.time()
  try:
    metrics = train.train_and_evaluate(config, os.path.join(workdir, tag))
    status, accuracy, loss = "ok", metrics["test_accuracy"], metrics["test_loss"]
    steps = metrics["step"]
  except FloatingPointError as e:  # diverged (non-finite loss): a result too
    logging.warning("%s diverged: %s", tag, e)
    status, accuracy, loss, steps = "diverged", math.nan, math.nan, ""
  schedule_lr = lr
  if config.lr_scaling == "linear":
    schedule_lr = lars_optax.scale_learning_rate(
        lr, batch_size, base_batch_size=config.base_batch_size)
  return {
      "optimizer": optimizer, "formula": formula, "batch_size": batch_size,
      "learning_rate": f"{schedule_lr:g}", "base_learning_rate": f"{lr:g}",
      "lr_scaling": config.lr_scaling, "warmup_epochs": config.warmup_epochs,
      "epochs": config.num_epochs, "steps": steps, "seed": seed,
      "test_accuracy": f"{accuracy:.4f}", "test_loss": f"{loss:.4f}",
      "status": status, "wall_time_s": f"{time.time() - start:.1f}",
      "device": f"{jax.devices()[0].device_kind} x{jax.device_count()} "
                f"({platform.machine()}, {os.cpu_count()} cores)",
  }


def claim_check(table: dict[tuple[str, int], tuple[float, float, int]],
                batch_sizes: Sequence[int], *, small: int = 512,
                large: int = 8192, tolerance: float = 0.01) -> str:
  """The paper's claim: LARS keeps at large batches the accuracy SGD loses.

  It holds if LARS at every batch >= ``large`` is within ``tolerance`` of the
  best accuracy of any optimizer at batch <= ``small``, while SGD-momentum
  falls by more.
  """
  reference = max((acc for (_, b), (acc, _, _) in table.items() if b <= small),
                  default=float("nan"))
  lines = [f"Best accuracy at batch <= {small}: {100 * reference:.2f} %."]
  verdicts = {}
  for name in ("lars/paper", "lars/combined", "sgd"):
    gaps = [(b, reference - table[(name, b)][0]) for b in batch_sizes
            if b >= large and (name, b) in table]
    if gaps:
      verdicts[name] = all(gap <= tolerance for _, gap in gaps)
      lines.append(f"{name}: " + ", ".join(
          f"{100 * gap:.2f} points below at {b}" for b, gap in gaps) + ".")
  if {"lars/paper", "sgd"} <= set(verdicts):
    holds = verdicts["lars/paper"] and not verdicts["sgd"]
    lines.append(f"The claim (LARS within {100 * tolerance:g} point at batch >= "
                 f"{large} while SGD-momentum falls by more) "
                 f"{'holds' if holds else 'does not hold'} here.")
  return "\n".join(lines)


def summarize(path: str) -> str:
  """Writes sweep_summary.md and sweep_best_accuracy.png; returns the table."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  rows = read_rows(path)
  names = [n for n in sweep_config.LEARNING_RATES if any(_name(r) == n for r in rows)]
  batch_sizes = sorted({int(r["batch_size"]) for r in rows})
  # Best over learning rates of the mean over seeds.
  table: dict[tuple[str, int], tuple[float, float, int]] = {}
  for name in names:
    for b in batch_sizes:
      by_lr: dict[float, list[float]] = {}
      for r in rows:
        if _name(r) == name and int(r["batch_size"]) == b:
          by_lr.setdefault(float(r["base_learning_rate"]), []).append(_accuracy(r))
      if by_lr:
        lr, accs = max(by_lr.items(), key=lambda kv: (np.mean(kv[1]), -len(kv[1])))
        table[(name, b)] = (float(np.mean(accs)), lr, len(accs))
  lines = ["| optimizer | " + " | ".join(str(b) for b in batch_sizes) + " |",
           "| --- |" + " --- |" * len(batch_sizes)]
  for name in names:
    cells = []
    for b in batch_sizes:
      if (name, b) in table:
        acc, lr, n = table[(name, b)]
        cells.append(f"{100 * acc:.2f} (lr {lr:g}{', %d seeds' % n if n > 1 else ''})"
                     if acc >= 0 else "diverged")
      else:
        cells.append("")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  text = "\n".join(lines) + "\n\n" + claim_check(table, batch_sizes)
  out_dir = os.path.dirname(os.path.abspath(path))
  with open(os.path.join(out_dir, "sweep_summary.md"), "w") as f:
    f.write("Best test accuracy (%) over the learning-rate grid, mean over seeds; "
            "Fashion-MNIST, cnn, fixed epoch budget.\n\n" + text + "\n")
  fig, ax = plt.subplots(figsize=(6, 4))
  for name in names:
    xs = [b for b in batch_sizes if (name, b) in table and table[(name, b)][0] >= 0]
    ax.plot(xs, [100 * table[(name, b)][0] for b in xs], marker="o", label=name)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("global batch size")
  ax.set_ylabel("best test accuracy (%)")
  ax.set_title("Fashion-MNIST, fixed epoch budget")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "sweep_best_accuracy.png"), dpi=120)
  plt.close(fig)
  return text


def main(argv):
  del argv
  path = _RESULTS.value
  if _SUMMARIZE.value:
    print(summarize(path))
    return
  names = _OPTIMIZERS.value or list(sweep_config.LEARNING_RATES)
  unknown = [n for n in names if n not in sweep_config.LEARNING_RATES]
  if unknown:
    raise app.UsageError(f"--optimizers: unknown {unknown}; the grid has "
                         f"{list(sweep_config.LEARNING_RATES)}")
  batch_sizes = [int(b) for b in (_BATCH_SIZES.value or sweep_config.BATCH_SIZES)]
  epochs = _NUM_EPOCHS.value or sweep_config.get_config().num_epochs
  new_runs = 0
  while True:  # the extra seeds become known as the seed-0 runs finish
    rows = read_rows(path)
    done = {run_key(r) for r in rows}
    todo = [run for run in planned_runs(rows, names, batch_sizes)
            if (run[0].partition("/")[0], run[0].partition("/")[2], run[1],
                run[2], run[3], epochs) not in done]
    if not todo or (_MAX_RUNS.value and new_runs >= _MAX_RUNS.value):
      break
    name, batch_size, lr, seed = todo[0]
    logging.info("sweep: %d runs to go; now %s batch %d lr %g seed %d",
                 len(todo), name, batch_size, lr, seed)
    row = run_one(name, batch_size, lr, seed, workdir=_WORKDIR.value,
                  num_epochs=_NUM_EPOCHS.value, manual_dir=_MANUAL_DIR.value,
                  data_dir=_DATA_DIR.value)
    append_row(path, row)
    print(",".join(str(row[c]) for c in COLUMNS), flush=True)
    new_runs += 1
  print(summarize(path))


if __name__ == "__main__":
  app.run(main)
