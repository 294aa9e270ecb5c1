r"""The large-batch study: plan, run, resume and summarise.

  python -m experiments.large_batch --manual_dir=../shared/datasets   # run / resume
  python -m experiments.large_batch --pilot --manual_dir=../shared/datasets
  python -m experiments.large_batch --summarize                      # table + plots

The design (grids, schedule, models, seeds) lives in
``experiments/configs/large_batch.py``; the summary (verdict table, steps to
target, plots, pilot report) in ``experiments/large_batch_summary.py``. This
module turns the design into runs, one at a time, through
``train.train_and_evaluate``, and appends one CSV row per finished run (a
diverged run is a row too). The plan is a pure function of the
CSV, recomputed after every run, so the study can be killed and restarted at
will: finished runs are skipped and a half-finished run resumes from its
orbax checkpoint (``<workdir>/<run tag>/checkpoints``, every 2 epochs).

Order of the runs, most informative first:

1. Phase "grid", seed 0, model A (the primary model) then model B; within a
   model batch 128 first (it defines R, the reference accuracy, and the best
   SGD learning rate that the larger batches' SGD grids are scaled from),
   then 4096 and 8192 (where the two optimizers are expected to differ),
   then 2048, 1024 and 512 last (least likely to separate them). Within a
   batch, learning rates from the middle of the grid outwards, alternating
   optimizers, so a partial grid already brackets the optimum; edge
   extensions follow as soon as the grid they extend is complete.
2. Phase "seed": seeds 1 and 2 at each optimizer's selected learning rate for
   every batch size, in the same model and batch order.
3. Phase "ablation": batch 4096 with the longer warm-up, seeds 0-2, at each
   optimizer's selected learning rate, model A then B.

The claim test: R = the higher of the two optimizers' mean test accuracy at
batch 128 (at their selected learning rates). At batch B, G = R - mean test
accuracy at the selected learning rate. The claim holds at B when G_LARS <= 1
point and G_SGD - G_LARS >= max(1 point, 2 SE), where SE = sqrt(SE_LARS^2 +
SE_SGD^2) is the standard error of the difference of the two means over
their seeds (std with ddof=1 / sqrt(n); 0 where a batch has one seed). Steps
to target: the fewest steps any seed-0 run of the grid at (model, batch,
optimizer) needs to reach validation accuracy R - 1.5 points.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from absl import app
from absl import flags
from absl import logging

from experiments import cli
from experiments.configs import large_batch as study
from experiments.user_errors import UserError

RESULTS = os.path.join(os.path.dirname(__file__), "results", "large_batch.csv")
COLUMNS = (
    "model", "batch_norm", "optimizer", "formula", "batch_size",
    "learning_rate", "warmup_steps", "epochs", "steps", "seed",
    "val_accuracy", "test_accuracy", "train_loss", "wall_time_s", "device",
    # Provenance and diagnostics. A resumed run (resumed_from_step > 0) has
    # the wall time and speed of its last segment only. val_curve: JSON
    # [[step, validation accuracy], ...], every quarter epoch and at the end.
    "phase", "bias_and_norm", "warmup_fraction", "reference_learning_rate",
    "val_loss", "test_loss", "status", "examples_per_sec",
    "resumed_from_step", "val_curve",
    # study: 1 (the 20-epoch study) or 2 (budget and tuned baseline).
    # train_loss: over the whole training split at the end, in evaluation
    # mode (empty for study 1, whose checkpoints are gone); last_batch_loss:
    # the last logged minibatch's loss. status: ok | diverged (NaN) |
    # collapsed (final validation accuracy within 2 points of chance).
    "study", "momentum_kind", "last_batch_loss",
)
MODEL_BY_BATCH_NORM = {spec["batch_norm"]: name
                       for name, spec in study.MODELS.items()}


# --------------------------------------------------------------------------
# Runs and the CSV.
# --------------------------------------------------------------------------


def lr_key(learning_rate: float) -> str:
  """A learning rate as it identifies a run (6 significant digits)."""
  return f"{float(learning_rate):.6g}"


def rule_name(exclude_bias_and_norm: bool) -> str:
  return "excluded" if exclude_bias_and_norm else "adapted"


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the study."""

  model: str  # "A" | "B" (study.MODELS)
  optimizer: str  # "lars" | "sgd"
  batch_size: int
  learning_rate: float  # the schedule's peak
  seed: int = 0
  phase: str = "grid"  # "grid" | "seed" | "ablation" | "pilot"
  warmup_fraction: float = study.WARMUP_FRACTION
  epochs: float = study.EPOCHS
  exclude_bias_and_norm: bool = study.EXCLUDE_BIAS_AND_NORM
  reference_learning_rate: float = math.nan  # SGD: lr_128 * B / 128
  study: int = 1
  nesterov: bool = False

  @property
  def momentum_kind(self) -> str:
    return "nesterov" if self.nesterov else "heavy_ball"

  def key(self) -> tuple:
    return (self.study, study.MODELS[self.model]["batch_norm"], self.optimizer,
            self.momentum_kind, self.batch_size, lr_key(self.learning_rate),
            self.seed, f"{self.warmup_fraction:g}", f"{self.epochs:g}",
            rule_name(self.exclude_bias_and_norm))

  @property
  def tag(self) -> str:
    """Its workdir's name."""
    prefix = "" if self.study == 1 else f"study{self.study}_"
    momentum = "_nesterov" if self.nesterov else ""
    return (f"{prefix}{self.model}_{self.optimizer}{momentum}_b{self.batch_size}"
            f"_lr{lr_key(self.learning_rate)}_s{self.seed}"
            f"_w{self.warmup_fraction:g}_e{self.epochs:g}"
            f"_{rule_name(self.exclude_bias_and_norm)}")

  def config(self):
    return study.run_config(
        self.model, self.optimizer, self.batch_size, self.learning_rate,
        self.seed, warmup_fraction=self.warmup_fraction, epochs=self.epochs,
        exclude_bias_and_norm=self.exclude_bias_and_norm,
        nesterov=self.nesterov)


def row_key(row: Mapping[str, str]) -> tuple:
  return (int(row["study"]), row["batch_norm"], row["optimizer"],
          row["momentum_kind"], int(row["batch_size"]),
          lr_key(float(row["learning_rate"])), int(row["seed"]),
          f"{float(row['warmup_fraction']):g}", f"{float(row['epochs']):g}",
          row["bias_and_norm"])


def read_rows(path: str) -> list[dict[str, str]]:
  """The CSV's complete rows (a line cut by a kill is skipped)."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, newline="") as f:
    for row in csv.DictReader(f):
      if any(row.get(c) is None for c in COLUMNS):
        continue
      try:
        row_key(row)
      except (KeyError, ValueError):
        continue
      rows.append(row)
  return rows


def append_row(path: str, row: Mapping[str, Any]) -> None:
  """Appends one full CSV line in one write (header first in a new file).

  A line left incomplete by a kill during an earlier write is cut off first,
  so the file is always a header plus whole rows.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
  with open(path, "a+b") as f:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size:
      f.seek(0)
      data = f.read()
      if not data.endswith(b"\n"):
        f.truncate(data.rfind(b"\n") + 1)
        size = data.rfind(b"\n") + 1
    if not size:
      writer.writeheader()
    writer.writerow({c: row.get(c, "") for c in COLUMNS})
    f.write(buffer.getvalue().encode())
    f.flush()
    os.fsync(f.fileno())


# --------------------------------------------------------------------------
# The plan: a pure function of the finished runs.
# --------------------------------------------------------------------------


def _score(row: Mapping[str, str]) -> float:
  """A row's validation accuracy for selection; -inf for a failed run."""
  x = float(row["val_accuracy"])
  return -math.inf if row["status"] != "ok" or math.isnan(x) else x


def _middle_out(n: int) -> list[int]:
  """Indices of a grid of n values from its middle outwards."""
  middle = (n - 1) / 2
  return sorted(range(n), key=lambda i: (abs(i - middle), i))


def _with_extensions(base: list[float], low: int, high: int) -> list[float]:
  """``base`` with ``low`` values below and ``high`` above, a factor apart."""
  below = [base[0] / study.EDGE_FACTOR**i for i in range(low, 0, -1)]
  above = [base[-1] * study.EDGE_FACTOR**i for i in range(1, high + 1)]
  return below + base + above


def grid_values(optimizer: str, batch_size: int, *, sgd_reference: float | None,
                low: int = 0, high: int = 0) -> list[float] | None:
  """The learning rates of one grid with ``low``/``high`` edge extensions.

  None for SGD at a batch above the reference while the reference batch's
  best SGD learning rate (``sgd_reference``) is not known yet.
  """
  if optimizer == "lars":
    base = list(study.LARS_LEARNING_RATES)
  elif batch_size == study.REFERENCE_BATCH_SIZE:
    base = list(study.SGD_LEARNING_RATES)
  elif sgd_reference is None:
    return None
  else:
    scaled = sgd_reference * batch_size / study.REFERENCE_BATCH_SIZE
    base = [scaled * f for f in study.SGD_SCALE_FACTORS]
  return _with_extensions(base, low, high)


@dataclasses.dataclass
class Plan:
  """Every run defined so far, in order, and what the finished ones decided."""

  runs: list[Run]
  # (model, batch) -> {optimizer: selected learning rate}, once its grid
  # (with edge extensions) is complete.
  selected: dict[tuple[str, int], dict[str, float]]
  # (model, batch) -> {optimizer: [grid learning rates]} as far as defined.
  grids: dict[tuple[str, int], dict[str, list[float]]]
  # (model, batch) -> (values added below, above) to both optimizers' grids.
  extensions: dict[tuple[str, int], tuple[int, int]]
  # Runs not yet defined because they wait for other runs, by phase.
  undefined: dict[str, int]


def _ordered_runs(grids: Mapping[str, list[float]], make_run, low: int,
                  high: int) -> list[Run]:
  """A grid's runs: middle-out over the base values, then the extensions
  (outermost last), alternating optimizers."""
  orders = {}
  for optimizer, values in grids.items():
    n_base = len(values) - low - high
    base = [low + i for i in _middle_out(n_base)]
    extra = sorted(set(range(len(values))) - set(base),
                   key=lambda i: (min(abs(i - low), abs(i - (low + n_base - 1))), i))
    orders[optimizer] = [make_run(optimizer, values[i]) for i in base + extra]
  runs = []
  for i in range(max((len(o) for o in orders.values()), default=0)):
    for optimizer in study.OPTIMIZERS:
      if optimizer in orders and i < len(orders[optimizer]):
        runs.append(orders[optimizer][i])
  return runs


@dataclasses.dataclass
class Grid:
  """One (model, batch) grid as far as the finished runs define it."""

  runs: list[Run]
  values: dict[str, list[float]]  # optimizer -> learning rates
  selected: dict[str, float] | None  # once complete
  extensions: tuple[int, int]  # (below, above)
  complete_values: bool  # every optimizer's values are known


def tune_grid(values_fn, make_run, done: Mapping[tuple, float]) -> Grid:
  """Both optimizers' grids with the edge-extension rule (module doc).

  ``values_fn(optimizer, low, high)`` gives an optimizer's learning rates
  with ``low``/``high`` extensions (None while they are not known);
  ``make_run(optimizer, lr)`` its run; ``done`` maps finished runs' keys to
  their selection score.
  """
  low = high = 0
  while True:
    values = {}
    for optimizer in study.OPTIMIZERS:
      v = values_fn(optimizer, low, high)
      if v is not None:
        values[optimizer] = v
    runs = _ordered_runs(values, make_run, low, high)
    grid = Grid(runs, values, None, (low, high),
                len(values) == len(study.OPTIMIZERS))
    if not grid.complete_values or any(r.key() not in done for r in runs):
      return grid
    best = {}
    for optimizer, lrs in values.items():
      scores = [done[make_run(optimizer, lr).key()] for lr in lrs]
      best[optimizer] = max(range(len(lrs)), key=lambda i: (scores[i], -i))
      if max(scores) < study.NO_LEARNING_BELOW:  # every run failed: the
        best[optimizer] = 0  # optimum is below the grid (see the config)
    extend_low = low < study.MAX_EDGE_EXTENSIONS and any(
        i == 0 for i in best.values())
    extend_high = high < study.MAX_EDGE_EXTENSIONS and any(
        i == len(values[o]) - 1 for o, i in best.items())
    if not (extend_low or extend_high):
      grid.selected = {o: values[o][i] for o, i in best.items()}
      return grid
    low += extend_low
    high += extend_high


def plan_study(rows: Sequence[Mapping[str, str]], *,
               rule: bool = study.EXCLUDE_BIAS_AND_NORM) -> Plan:
  """The first study's runs in order, given the finished ``rows`` (module doc)."""
  done = {row_key(r): _score(r) for r in rows}
  grid_runs: list[Run] = []
  selected: dict[tuple[str, int], dict[str, float]] = {}
  grids: dict[tuple[str, int], dict[str, list[float]]] = {}
  extensions: dict[tuple[str, int], tuple[int, int]] = {}
  undefined = {"grid": 0, "seed": 0, "ablation": 0}
  n_sgd = len(study.SGD_SCALE_FACTORS)

  for model in study.MODELS:
    sgd_reference = None
    for batch_size in study.GRID_ORDER[model]:
      reference = (sgd_reference * batch_size / study.REFERENCE_BATCH_SIZE
                   if sgd_reference is not None else math.nan)

      def make_run(optimizer, lr, model=model, batch_size=batch_size,
                   reference=reference):
        return Run(model, optimizer, batch_size, lr, exclude_bias_and_norm=rule,
                   reference_learning_rate=(
                       reference if optimizer == "sgd" else math.nan))

      def values_fn(optimizer, low, high, batch_size=batch_size,
                    sgd_reference=sgd_reference):
        return grid_values(optimizer, batch_size, sgd_reference=sgd_reference,
                           low=low, high=high)

      grid = tune_grid(values_fn, make_run, done)
      if not grid.complete_values:
        undefined["grid"] += n_sgd
      if grid.selected is not None:
        selected[(model, batch_size)] = grid.selected
      grid_runs.extend(grid.runs)
      grids[(model, batch_size)] = grid.values
      extensions[(model, batch_size)] = grid.extensions
      if batch_size == study.REFERENCE_BATCH_SIZE:
        sgd_reference = grid.selected["sgd"] if grid.selected else None

  def reference_for(model, batch_size):
    chosen = selected.get((model, study.REFERENCE_BATCH_SIZE))
    if chosen is None or batch_size == study.REFERENCE_BATCH_SIZE:
      return math.nan
    return chosen["sgd"] * batch_size / study.REFERENCE_BATCH_SIZE

  seed_runs, ablation_runs = [], []
  for model in study.MODELS:
    for batch_size in study.GRID_ORDER[model]:
      if batch_size < study.SEEDS_FROM_BATCH_SIZE:
        continue
      chosen = selected.get((model, batch_size))
      if chosen is None:
        undefined["seed"] += len(study.OPTIMIZERS) * (len(study.SEEDS) - 1)
        continue
      for optimizer in study.OPTIMIZERS:
        for seed in study.SEEDS[1:]:
          seed_runs.append(Run(
              model, optimizer, batch_size, chosen[optimizer], seed, "seed",
              exclude_bias_and_norm=rule,
              reference_learning_rate=(reference_for(model, batch_size)
                                       if optimizer == "sgd" else math.nan)))
  for model in study.MODELS:
    if study.ABLATION_BATCH_SIZE not in study.GRID_ORDER[model]:
      continue
    chosen = selected.get((model, study.ABLATION_BATCH_SIZE))
    if chosen is None:
      undefined["ablation"] += len(study.OPTIMIZERS) * len(study.SEEDS)
      continue
    for optimizer in study.OPTIMIZERS:
      for seed in study.SEEDS:
        ablation_runs.append(Run(
            model, optimizer, study.ABLATION_BATCH_SIZE, chosen[optimizer],
            seed, "ablation", warmup_fraction=study.ABLATION_WARMUP_FRACTION,
            exclude_bias_and_norm=rule,
            reference_learning_rate=(
                reference_for(model, study.ABLATION_BATCH_SIZE)
                if optimizer == "sgd" else math.nan)))
  return Plan(grid_runs + seed_runs + ablation_runs, selected, grids,
              extensions, undefined)


def plan_budget(rows: Sequence[Mapping[str, str]]) -> Plan:
  """Study 2, Q1: the 80-epoch grids and their seeds (config's BUDGET_*).

  Every grid is centred on the first study's selection at the same (model,
  batch, optimizer) and tuned with the same edge-extension rule; seeds 1 and
  2 follow at each selection.
  """
  first = plan_study(rows).selected
  done = {row_key(r): _score(r) for r in rows}
  runs: list[Run] = []
  selected, grids, extensions = {}, {}, {}
  for model, batch_sizes in study.BUDGET_POINTS.items():
    for batch_size in batch_sizes:
      if not {(model, batch_size),
              (model, study.REFERENCE_BATCH_SIZE)} <= first.keys():
        continue  # waits for the first study's selection
      centre = first[(model, batch_size)]
      factors = (study.BUDGET_REFERENCE_FACTORS
                 if batch_size == study.REFERENCE_BATCH_SIZE
                 else study.BUDGET_FACTORS)
      reference = (first[(model, study.REFERENCE_BATCH_SIZE)]["sgd"]
                   * batch_size / study.REFERENCE_BATCH_SIZE)

      def make_run(optimizer, lr, model=model, batch_size=batch_size,
                   reference=reference, seed=0, phase="budget"):
        return Run(model, optimizer, batch_size, lr, seed, phase,
                   epochs=study.BUDGET_EPOCHS, study=2,
                   reference_learning_rate=(
                       reference if optimizer == "sgd"
                       and batch_size != study.REFERENCE_BATCH_SIZE
                       else math.nan))

      def values_fn(optimizer, low, high, centre=centre, factors=factors):
        return _with_extensions([centre[optimizer] * f for f in factors],
                                low, high)

      grid = tune_grid(values_fn, make_run, done)
      runs.extend(grid.runs)
      grids[(model, batch_size)] = grid.values
      extensions[(model, batch_size)] = grid.extensions
      if grid.selected is not None:
        selected[(model, batch_size)] = grid.selected
        runs.extend(make_run(o, lr, seed=seed, phase="budget_seed")
                    for o, lr in grid.selected.items()
                    for seed in study.SEEDS[1:])
  # Seeds after every grid: the grids are the more informative runs.
  runs.sort(key=lambda run: run.phase == "budget_seed")
  return Plan(runs, selected, grids, extensions, {})


def planned_runs(rows: Sequence[Mapping[str, str]]) -> list[Run]:
  """Both studies' runs, in order."""
  return plan_study(rows).runs + plan_budget(rows).runs


def pilot_runs() -> list[Run]:
  """Both bias/normalisation rules on short runs, then the timing runs."""
  runs = []
  for model, optimizer, batch_size, lr in study.PILOT_RULE_RUNS:
    for rule in (False, True):
      runs.append(Run(model, optimizer, batch_size, lr, phase="pilot",
                      epochs=study.PILOT_EPOCHS, exclude_bias_and_norm=rule))
  for model, optimizer, batch_size, lr in study.PILOT_TIMING_RUNS:
    runs.append(Run(model, optimizer, batch_size, lr, phase="pilot",
                    epochs=study.PILOT_TIMING_EPOCHS))
  return runs


# --------------------------------------------------------------------------
# Running.
# --------------------------------------------------------------------------


def _metric_records(metrics_path: str) -> Iterator[dict[str, Any]]:
  """The records of a run's metrics.jsonl (a line cut by a kill is skipped)."""
  if not os.path.exists(metrics_path):
    return
  with open(metrics_path) as f:
    for line in f:
      try:
        yield json.loads(line)
      except json.JSONDecodeError:
        continue


def _validation_curve(metrics_path: str) -> list[tuple[int, float]]:
  curve = {}
  for record in _metric_records(metrics_path):
    if record.get("kind") == "validation":
      curve[int(record["step"])] = float(record["accuracy"])
  return sorted(curve.items())


def _last_train_loss(metrics_path: str) -> float:
  loss = math.nan
  for record in _metric_records(metrics_path):
    if record.get("kind") == "train" and "loss" in record:
      loss = float(record["loss"])
  return loss


def device_name() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return (f"{jax.devices()[0].device_kind} x{jax.device_count()} "
          f"({platform.machine()}, {os.cpu_count()} cores)")


def run_one(run: Run, *, workdir: str, manual_dir: str | None = None,
            data_dir: str | None = None,
            overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Trains one run (resuming its checkpoint if any) and returns its CSV row.

  ``overrides`` maps dotted config keys to values (tests: small splits, few
  steps).
  """
  from experiments import optimizers  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  config = run.config()
  config.data.manual_dir = manual_dir
  config.data.data_dir = data_dir
  if overrides:
    config.update_from_flattened_dict(dict(overrides))
  run_dir = os.path.join(workdir, run.tag)
  start = time.time()
  try:
    final = train.train_and_evaluate(config, run_dir)
    status = ("collapsed" if final.get("val_accuracy", 1.0) < study.COLLAPSED_BELOW
              else "ok")
  except FloatingPointError as e:  # diverged: a result too
    logging.warning("%s diverged: %s", run.tag, e)
    final, status = {}, "diverged"
  metrics_path = os.path.join(run_dir, "metrics.jsonl")
  curve = _validation_curve(metrics_path)
  schedule = optimizers.create_learning_rate_schedule(config, steps_per_epoch=1)
  nan = math.nan
  return {
      "model": study.MODELS[run.model]["model"],
      "batch_norm": study.MODELS[run.model]["batch_norm"],
      "optimizer": run.optimizer,
      "formula": config.lars.formula if run.optimizer == "lars" else "",
      "batch_size": run.batch_size,
      "learning_rate": f"{run.learning_rate:.8g}",
      "warmup_steps": schedule.warmup_steps,
      "epochs": f"{run.epochs:g}",
      "steps": schedule.total_steps,
      "seed": run.seed,
      "val_accuracy": f"{final.get('val_accuracy', nan):.4f}",
      "test_accuracy": f"{final.get('test_accuracy', nan):.4f}",
      "train_loss": f"{final.get('train_split_loss', nan):.4f}",
      "wall_time_s": f"{final.get('wall_time_s', time.time() - start):.1f}",
      "device": device_name(),
      "phase": run.phase,
      "bias_and_norm": rule_name(run.exclude_bias_and_norm),
      "warmup_fraction": f"{run.warmup_fraction:g}",
      "reference_learning_rate": (
          "" if math.isnan(run.reference_learning_rate)
          else f"{run.reference_learning_rate:.8g}"),
      "val_loss": f"{final.get('val_loss', nan):.4f}",
      "test_loss": f"{final.get('test_loss', nan):.4f}",
      "status": status,
      "examples_per_sec": f"{final.get('examples_per_sec', nan):.0f}",
      "resumed_from_step": final.get("resumed_from_step", ""),
      "val_curve": json.dumps([[s, round(a, 4)] for s, a in curve],
                              separators=(",", ":")),
      "study": run.study,
      "momentum_kind": run.momentum_kind,
      "last_batch_loss":
          f"{final.get('train_loss', _last_train_loss(metrics_path)):.4f}",
  }


def run_all(plan_fn, results: str, workdir: str, *, max_runs: int = 0,
            **run_kwargs) -> int:
  """Runs ``plan_fn(rows)``'s unfinished runs in order; returns how many ran."""
  new_runs = 0
  while not (max_runs and new_runs >= max_runs):
    rows = read_rows(results)
    done = {row_key(r) for r in rows}
    todo = [run for run in plan_fn(rows) if run.key() not in done]
    if not todo:
      break
    run = todo[0]
    print(f"{len(todo)} defined runs to go; now {run.phase} {run.tag}",
          flush=True)
    row = run_one(run, workdir=workdir, **run_kwargs)
    append_row(results, row)
    print(f"{run.phase} {run.tag}: val {row['val_accuracy']} test "
          f"{row['test_accuracy']} ({row['status']}, {row['wall_time_s']} s)",
          flush=True)
    new_runs += 1
  return new_runs


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------

def pilot_path(results: str) -> str:
  stem, ext = os.path.splitext(results)
  return f"{stem}_pilot{ext}"


def define_flags() -> None:
  """Defines the command's flags (only when this module runs as the program:
  experiments.large_batch_summary imports it as a module too)."""
  flags.DEFINE_bool("pilot", False, "Run the short pilot instead of the study.")
  flags.DEFINE_string("workdir", "runs/large_batch", "Parent of the runs' workdirs.")
  flags.DEFINE_string("results", RESULTS, "The CSV of finished runs.")
  flags.DEFINE_string("manual_dir", None, "tfds manual_dir root.")
  flags.DEFINE_string("data_dir", None, "tfds data_dir.")
  flags.DEFINE_integer("max_runs", 0, "Stop after this many new runs (0: all).")
  flags.DEFINE_bool("summarize", False, "Only write the summary and the plots.")
  flags.DEFINE_bool("verbose", False, "Show the libraries' INFO and WARNING logs.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  if not args.verbose:
    cli.quiet_libraries()
  from experiments import large_batch_summary  # pylint: disable=g-import-not-at-top
  if args.pilot:
    path, plan_fn = pilot_path(args.results), lambda rows: pilot_runs()
    workdir = os.path.join(args.workdir, "pilot")
  else:
    path, plan_fn, workdir = args.results, planned_runs, args.workdir
  if not args.summarize:
    try:
      run_all(plan_fn, path, workdir, max_runs=args.max_runs,
              manual_dir=args.manual_dir, data_dir=args.data_dir)
    except UserError as error:
      cli.fail(str(error))
  print(large_batch_summary.summarize_pilot(path) if args.pilot
        else large_batch_summary.summarize(path))


if __name__ == "__main__":
  define_flags()
  app.run(main)
