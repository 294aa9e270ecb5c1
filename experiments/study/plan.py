r"""The large-batch study's plan: its runs, the CSV of finished ones, the planners.

The plan is a pure function of the CSV: ``plan_study(rows)`` (the first,
20-epoch study), then ``plan_budget(rows, first)`` and ``plan_baseline(rows,
first)`` (study 2's Q1, 80 epochs, and Q2, the tuned baseline, both centred on
the first study's selections) list every run that the finished ``rows``
define, in order, and what the finished grids selected. The driver
(``experiments/study/run.py``) runs the first run not in the CSV (that no
other driver holds) and plans again; the report
(``experiments/study/report.py``) reads the same plan.
The design's numbers live in ``experiments/configs/large_batch.py``.

Order of the first study's runs, most informative first:

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

Edge extensions: where either optimizer's best validation accuracy sits at an
edge of its grid, both optimizers get one more value on that side (a factor
``EDGE_FACTOR`` apart), up to ``MAX_EDGE_EXTENSIONS`` times per side; a grid
where no run learns counts as having its optimum at its low edge.
"""
from __future__ import annotations

import csv
import dataclasses
import fcntl
import functools
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from experiments.configs import large_batch as design

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "results", "large_batch.csv")
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
    # collapsed: see ``relabel_collapsed`` (the CSV keeps the driver's label).
    "study", "momentum_kind", "last_batch_loss",
    # code_version: the commit that ran it, "+dirty" with uncommitted changes
    # (empty: recorded before this column). superseded: why the row no longer
    # counts (it stays in the file); the planner and the report skip it.
    "code_version", "superseded",
    # trust_ratios: JSON [[step, {layer: lambda}], ...] where logged (study 3).
    "trust_ratios",
)
CHANCE = 0.1  # accuracy of a guess among Fashion-MNIST's 10 classes


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

  model: str  # "A" | "B" (design.MODELS)
  optimizer: str  # "lars" | "sgd" | "lamb" | study 3's arms
  batch_size: int
  learning_rate: float  # the schedule's peak
  seed: int = 0
  phase: str = "grid"  # "grid" | "seed" | "ablation" | "budget" | ...
  warmup_fraction: float = design.WARMUP_FRACTION
  epochs: float = design.EPOCHS
  exclude_bias_and_norm: bool = design.EXCLUDE_BIAS_AND_NORM
  reference_learning_rate: float = math.nan  # SGD: lr_128 * B / 128
  study: int = 1
  nesterov: bool = False

  @property
  def momentum_kind(self) -> str:
    """LAMB's first moment is Adam's; LARS and SGD use momentum."""
    if self.optimizer == "lamb":
      return "adam"
    return "nesterov" if self.nesterov else "heavy_ball"

  def key(self) -> tuple:
    return (self.study, design.MODELS[self.model]["batch_norm"], self.optimizer,
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
    config = design.run_config(
        self.model, self.optimizer, self.batch_size, self.learning_rate,
        self.seed, warmup_fraction=self.warmup_fraction, epochs=self.epochs,
        exclude_bias_and_norm=self.exclude_bias_and_norm,
        nesterov=self.nesterov)
    config.log_trust_ratios = self.study == 3  # where the arms differ
    return config


def row_key(row: Mapping[str, str]) -> tuple:
  """A CSV row's identity, as ``Run.key`` gives it."""
  return (int(row["study"]), row["batch_norm"], row["optimizer"],
          row["momentum_kind"], int(row["batch_size"]),
          lr_key(float(row["learning_rate"])), int(row["seed"]),
          f"{float(row['warmup_fraction']):g}", f"{float(row['epochs']):g}",
          row["bias_and_norm"])


def read_rows(path: str, *, superseded: bool = False) -> list[dict[str, str]]:
  """The CSV's complete rows (a line cut by a kill is skipped), without the
  superseded ones unless ``superseded``, collapsed runs labelled as such."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, newline="") as f:
    fcntl.flock(f, fcntl.LOCK_SH)  # not while another driver appends
    for row in csv.DictReader(f):
      if any(row.get(c) is None for c in COLUMNS):
        continue
      try:
        row_key(row)
      except (KeyError, ValueError):
        continue
      if superseded or not row["superseded"]:
        rows.append(row)
  return relabel_collapsed(rows)


def _cell(row: Mapping[str, str]) -> tuple:
  return (row["study"], row["batch_norm"], row["batch_size"],
          f"{float(row['epochs']):g}")


def relabel_collapsed(rows: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
  """``rows`` with status "collapsed" where the design's rule says so: a run
  that did not diverge and ended below ``COLLAPSED_FRACTION_OF_BEST`` of its
  cell's best validation accuracy, or with a training-split loss of at least
  ``COLLAPSED_LOSS``."""
  best: dict[tuple, float] = {}
  for row in rows:
    accuracy = as_float(row["val_accuracy"])
    if not math.isnan(accuracy):
      best[_cell(row)] = max(best.get(_cell(row), 0.0), accuracy)
  out = []
  for row in rows:
    row = dict(row)
    if row["status"] != "diverged" and (
        as_float(row["val_accuracy"])
        < design.COLLAPSED_FRACTION_OF_BEST * best.get(_cell(row), 0.0)
        or as_float(row["train_loss"]) >= design.COLLAPSED_LOSS):
      row["status"] = "collapsed"
    out.append(row)
  return out


def append_row(path: str, row: Mapping[str, Any]) -> None:
  """Appends one full CSV line in one write (header first in a new file).

  A line left incomplete by a kill during an earlier write is cut off first,
  so the file is always a header plus whole rows.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
  with open(path, "a+b") as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # one driver at a time
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


def pilot_path(results: str) -> str:
  """The pilot's CSV beside the study's: large_batch_pilot.csv."""
  stem, ext = os.path.splitext(results)
  return f"{stem}_pilot{ext}"


def as_float(value: str | None) -> float:
  """A CSV value as a float; NaN where it is empty or not a number."""
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def accuracy_or_chance(row: Mapping[str, str], column: str) -> float:
  """A row's accuracy, a diverged run's (NaN) counted as chance."""
  accuracy = as_float(row[column])
  return CHANCE if math.isnan(accuracy) else accuracy


def selection_score(row: Mapping[str, str]) -> float:
  """A row's validation accuracy for selection; -inf for a failed run
  (diverged or collapsed)."""
  accuracy = as_float(row["val_accuracy"])
  return -math.inf if row["status"] != "ok" or math.isnan(accuracy) else accuracy


# --------------------------------------------------------------------------
# Grids: a pure function of the finished runs.
# --------------------------------------------------------------------------


def _middle_out(n: int) -> list[int]:
  """Indices of a grid of n values from its middle outwards."""
  middle = (n - 1) / 2
  return sorted(range(n), key=lambda i: (abs(i - middle), i))


def _with_extensions(base: list[float], low: int, high: int) -> list[float]:
  """``base`` with ``low`` values below and ``high`` above, a factor apart."""
  below = [base[0] / design.EDGE_FACTOR**i for i in range(low, 0, -1)]
  above = [base[-1] * design.EDGE_FACTOR**i for i in range(1, high + 1)]
  return below + base + above


def grid_values(optimizer: str, batch_size: int, *, sgd_reference: float | None,
                low: int = 0, high: int = 0) -> list[float] | None:
  """The learning rates of one grid with ``low``/``high`` edge extensions.

  None for SGD at a batch above the reference while the reference batch's
  best SGD learning rate (``sgd_reference``) is not known yet.
  """
  if optimizer == "lars":
    base = list(design.LARS_LEARNING_RATES)
  elif batch_size == design.REFERENCE_BATCH_SIZE:
    base = list(design.SGD_LEARNING_RATES)
  elif sgd_reference is None:
    return None
  else:
    scaled = sgd_reference * batch_size / design.REFERENCE_BATCH_SIZE
    base = [scaled * f for f in design.SGD_SCALE_FACTORS]
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
  # (model, batch) -> {optimizer: selected warm-up fraction} (Q2 only).
  warmups: dict[tuple[str, int], dict[str, float]] = dataclasses.field(
      default_factory=dict)


def _ordered_runs(grids: Mapping[str, list[float]], make_run, low: int,
                  high: int, optimizers: Sequence[str]) -> list[Run]:
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
    for optimizer in optimizers:
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


def tune_grid(values_fn: Callable[[str, int, int], list[float] | None],
              make_run: Callable[[str, float], Run],
              done: Mapping[tuple, float],
              optimizers: Sequence[str] = design.OPTIMIZERS) -> Grid:
  """The optimizers' grids with the edge-extension rule (module doc): where
  one optimizer's best is at an edge, every optimizer gets one more value there.

  ``values_fn(optimizer, low, high)`` gives an optimizer's learning rates
  with ``low``/``high`` extensions (None while they are not known);
  ``make_run(optimizer, lr)`` its run; ``done`` maps finished runs' keys to
  their selection score.
  """
  low = high = 0
  while True:
    values = {}
    for optimizer in optimizers:
      v = values_fn(optimizer, low, high)
      if v is not None:
        values[optimizer] = v
    runs = _ordered_runs(values, make_run, low, high, optimizers)
    grid = Grid(runs, values, None, (low, high), len(values) == len(optimizers))
    if not grid.complete_values or any(r.key() not in done for r in runs):
      return grid
    best = {}
    for optimizer, lrs in values.items():
      scores = [done[make_run(optimizer, lr).key()] for lr in lrs]
      best[optimizer] = max(range(len(lrs)), key=lambda i: (scores[i], -i))
      if max(scores) < design.NO_LEARNING_BELOW:  # every run failed: the
        best[optimizer] = 0  # optimum is below the grid (see the config)
    extend_low = low < design.MAX_EDGE_EXTENSIONS and any(
        i == 0 for i in best.values())
    extend_high = high < design.MAX_EDGE_EXTENSIONS and any(
        i == len(values[o]) - 1 for o, i in best.items())
    if not (extend_low or extend_high):
      grid.selected = {o: values[o][i] for o, i in best.items()}
      return grid
    low += extend_low
    high += extend_high


# --------------------------------------------------------------------------
# The first study: grids, then seeds, then the warm-up ablation.
# --------------------------------------------------------------------------


def _scaled_reference(sgd_reference: float | None, batch_size: int) -> float:
  """SGD's linearly scaled learning rate at ``batch_size`` (NaN if unknown)."""
  if sgd_reference is None:
    return math.nan
  return sgd_reference * batch_size / design.REFERENCE_BATCH_SIZE


def _study_grids(done: Mapping[tuple, float], rule: bool, plan: Plan) -> list[Run]:
  """Every (model, batch) grid in order; fills ``plan``'s selections."""
  runs: list[Run] = []
  for model in design.MODELS:
    sgd_reference = None  # batch 128's selected SGD learning rate
    for batch_size in design.GRID_ORDER[model]:
      reference = _scaled_reference(sgd_reference, batch_size)

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
        plan.undefined["grid"] += len(design.SGD_SCALE_FACTORS)
      if grid.selected is not None:
        plan.selected[(model, batch_size)] = grid.selected
      runs.extend(grid.runs)
      plan.grids[(model, batch_size)] = grid.values
      plan.extensions[(model, batch_size)] = grid.extensions
      if batch_size == design.REFERENCE_BATCH_SIZE:
        sgd_reference = grid.selected["sgd"] if grid.selected else None
  return runs


def _selected_runs(plan: Plan, model: str, batch_size: int, seeds, phase: str,
                   rule: bool, warmup_fraction: float) -> list[Run]:
  """Both optimizers' runs at their selected learning rate, for ``seeds``."""
  chosen = plan.selected[(model, batch_size)]
  reference = math.nan
  if batch_size != design.REFERENCE_BATCH_SIZE:
    sgd_reference = plan.selected.get(
        (model, design.REFERENCE_BATCH_SIZE), {}).get("sgd")
    reference = _scaled_reference(sgd_reference, batch_size)
  return [Run(model, optimizer, batch_size, chosen[optimizer], seed, phase,
              warmup_fraction=warmup_fraction, exclude_bias_and_norm=rule,
              reference_learning_rate=(
                  reference if optimizer == "sgd" else math.nan))
          for optimizer in design.OPTIMIZERS for seed in seeds]


def _seed_and_ablation_runs(rule: bool, plan: Plan) -> list[Run]:
  """Seeds 1 and 2 at every selection, then the ablation, as far as selected."""
  seed_runs, ablation_runs = [], []
  for model in design.MODELS:
    for batch_size in design.GRID_ORDER[model]:
      if batch_size < design.SEEDS_FROM_BATCH_SIZE:
        continue
      if (model, batch_size) not in plan.selected:
        plan.undefined["seed"] += len(design.OPTIMIZERS) * (len(design.SEEDS) - 1)
        continue
      seed_runs += _selected_runs(plan, model, batch_size, design.SEEDS[1:],
                                  "seed", rule, design.WARMUP_FRACTION)
  for model in design.MODELS:
    if design.ABLATION_BATCH_SIZE not in design.GRID_ORDER[model]:
      continue
    if (model, design.ABLATION_BATCH_SIZE) not in plan.selected:
      plan.undefined["ablation"] += len(design.OPTIMIZERS) * len(design.SEEDS)
      continue
    ablation_runs += _selected_runs(plan, model, design.ABLATION_BATCH_SIZE,
                                    design.SEEDS, "ablation", rule,
                                    design.ABLATION_WARMUP_FRACTION)
  return seed_runs + ablation_runs


def plan_study(rows: Sequence[Mapping[str, str]], *,
               rule: bool = design.EXCLUDE_BIAS_AND_NORM) -> Plan:
  """The first study's runs in order, given the finished ``rows`` (module doc)."""
  done = {row_key(r): selection_score(r) for r in rows}
  plan = Plan([], {}, {}, {}, {"grid": 0, "seed": 0, "ablation": 0})
  plan.runs = _study_grids(done, rule, plan)
  plan.runs += _seed_and_ablation_runs(rule, plan)
  return plan


# --------------------------------------------------------------------------
# Study 2, Q1 (budget) and Q2 (baseline).
# --------------------------------------------------------------------------


def plan_budget(rows: Sequence[Mapping[str, str]], first_plan: Plan) -> Plan:
  """Study 2, Q1: the 80-epoch grids and their seeds (config's BUDGET_*).

  Every grid is centred on the first study's selection (``first_plan``, from
  ``plan_study(rows)``) at the same (model, batch, optimizer) and tuned with
  the same edge-extension rule; seeds 1 and 2 follow at each selection.
  """
  first = first_plan.selected
  done = {row_key(r): selection_score(r) for r in rows}
  runs: list[Run] = []
  selected, grids, extensions = {}, {}, {}
  for model, batch_sizes in design.BUDGET_POINTS.items():
    for batch_size in batch_sizes:
      if not {(model, batch_size),
              (model, design.REFERENCE_BATCH_SIZE)} <= first.keys():
        continue  # waits for the first study's selection
      centre = first[(model, batch_size)]
      factors = (design.BUDGET_REFERENCE_FACTORS
                 if batch_size == design.REFERENCE_BATCH_SIZE
                 else design.BUDGET_FACTORS)
      reference = (first[(model, design.REFERENCE_BATCH_SIZE)]["sgd"]
                   * batch_size / design.REFERENCE_BATCH_SIZE)

      def make_run(optimizer, lr, model=model, batch_size=batch_size,
                   reference=reference, seed=0, phase="budget"):
        return Run(model, optimizer, batch_size, lr, seed, phase,
                   epochs=design.BUDGET_EPOCHS, study=2,
                   reference_learning_rate=(
                       reference if optimizer == "sgd"
                       and batch_size != design.REFERENCE_BATCH_SIZE
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
                    for seed in design.SEEDS[1:])
  # Seeds after every grid: the grids are the more informative runs.
  runs.sort(key=lambda run: run.phase == "budget_seed")
  return Plan(runs, selected, grids, extensions, {})


def plan_baseline(rows: Sequence[Mapping[str, str]], first_plan: Plan) -> Plan:
  """Study 2, Q2: Nesterov SGD, LARS and LAMB under one search (config's
  BASELINE_*), then seeds 1 and 2 at each optimizer's best trial.

  The searches are centred on the first study's selections (``first_plan``).
  ``selected[(model, batch)]`` maps each optimizer to its best learning rate
  and ``warmups[(model, batch)]`` to its warm-up fraction there.
  """
  first = first_plan.selected
  done = {row_key(r): selection_score(r) for r in rows}
  plan = Plan([], {}, {}, {}, {})
  seed_runs = []
  for model, batch_size in design.BASELINE_POINTS:
    if (model, batch_size) not in first:
      continue  # waits for the first study's selection
    centre = dict(first[(model, batch_size)])
    centre["lamb"] = centre["lars"] * design.LARS_TRUST_COEFFICIENT

    def make_run(optimizer, lr, warmup, model=model, batch_size=batch_size,
                 seed=0, phase="baseline"):
      return Run(model, optimizer, batch_size, lr, seed, phase,
                 warmup_fraction=warmup, study=2, nesterov=optimizer == "sgd")

    def values_fn(optimizer, low, high, centre=centre):
      return _with_extensions(
          [centre[optimizer] * f for f in design.BASELINE_FACTORS], low, high)

    trials: dict[str, list[tuple[float, float, float]]] = {}
    for warmup in design.BASELINE_WARMUP_FRACTIONS:
      grid = tune_grid(values_fn, functools.partial(make_run, warmup=warmup),
                       done, design.BASELINE_OPTIMIZERS)
      plan.runs.extend(grid.runs)
      plan.grids[(model, batch_size, warmup)] = grid.values
      plan.extensions[(model, batch_size, warmup)] = grid.extensions
      for optimizer, lr in (grid.selected or {}).items():
        score = done[make_run(optimizer, lr, warmup).key()]
        trials.setdefault(optimizer, []).append((score, -warmup, lr))
    if any(len(t) < len(design.BASELINE_WARMUP_FRACTIONS)
           for t in trials.values()) or not trials:
      continue
    best = {o: max(t) for o, t in trials.items()}  # ties: the shorter warm-up
    plan.selected[(model, batch_size)] = {o: b[2] for o, b in best.items()}
    plan.warmups[(model, batch_size)] = {o: -b[1] for o, b in best.items()}
    seed_runs += [make_run(o, lr, -neg_warmup, seed=seed, phase="baseline_seed")
                  for o, (_, neg_warmup, lr) in best.items()
                  for seed in design.SEEDS[1:]]
  plan.runs.extend(seed_runs)  # seeds after every grid
  return plan


def as_first_run(rows: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
  """The rows as study 2 was planned from them: study 1's original rows
  (superseded or not; its reruns carry a code_version) and every later one."""
  return [r for r in rows if not (r["study"] == "1" and r["code_version"])]


def plan_ratio(rows: Sequence[Mapping[str, str]], baseline: Plan) -> Plan:
  """Study 3: the arms' searches at ``RATIO_POINT``, 20 then 80 epochs, each
  followed by seeds 1 and 2 at every arm's best (config's RATIO_*).

  The 20-epoch searches are centred on Q2's selections (``baseline``, from
  ``plan_baseline``) and use its warm-ups; the 80-epoch ones on the 20-epoch
  selection of the same arm.
  """
  model, batch_size = design.RATIO_POINT
  plan = Plan([], {}, {}, {}, {})
  if (model, batch_size) not in baseline.selected:
    return plan  # waits for Q2's selection
  q2_rates, q2_warmups = (baseline.selected[(model, batch_size)],
                          baseline.warmups[(model, batch_size)])
  source = {"lars": "lars", "lars_global": "lars", "sgd_clip": "sgd", "sgd": "sgd"}
  centre = {arm: q2_rates[source[arm]] for arm in design.RATIO_ARMS}
  done = {row_key(r): selection_score(r) for r in rows}
  for epochs in design.RATIO_EPOCHS:

    def make_run(arm, lr, epochs=epochs, seed=0, phase="ratio"):
      return Run(model, arm, batch_size, lr, seed, phase,
                 warmup_fraction=q2_warmups[source[arm]], epochs=epochs,
                 study=3, nesterov=arm.startswith("sgd"))

    def values_fn(arm, low, high, centre=centre):
      return _with_extensions(
          [centre[arm] * f for f in design.RATIO_FACTORS], low, high)

    grid = tune_grid(values_fn, make_run, done, design.RATIO_ARMS)
    plan.runs.extend(grid.runs)
    plan.grids[(model, batch_size, epochs)] = grid.values
    plan.extensions[(model, batch_size, epochs)] = grid.extensions
    if grid.selected is None:
      break  # the next budget is centred on this one's selections
    plan.selected[(model, batch_size, epochs)] = grid.selected
    plan.runs.extend(make_run(arm, lr, seed=seed, phase="ratio_seed")
                     for arm, lr in grid.selected.items()
                     for seed in design.SEEDS[1:])
    centre = grid.selected
  return plan


def planned_runs(rows: Sequence[Mapping[str, str]]) -> list[Run]:
  """Every study's runs, in order: study 3 at 20 epochs, study 1, study 3 at
  80 epochs, then study 2's Q2 and Q1.

  ``rows``: every row, the superseded ones too (``read_rows(path,
  superseded=True)``): study 2 is centred on study 1 as it was run
  (``as_first_run``), everything else on the current rows. Q2 goes
  before Q1: its runs are 20 epochs at large batches (minutes each), Q1's
  reference grids 80 epochs at batch 128 (34,375 steps per run).
  """
  current = [r for r in rows if not r["superseded"]]
  first = plan_study(current)
  first_as_run = plan_study(as_first_run(rows))
  baseline = plan_baseline(current, first_as_run)
  ratio = plan_ratio(current, baseline).runs
  short = [run for run in ratio if run.epochs == design.EPOCHS]
  return (short + first.runs + [run for run in ratio if run not in short]
          + baseline.runs + plan_budget(current, first_as_run).runs)

