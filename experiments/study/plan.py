"""The studies' plan: their runs, the CSV of finished ones, the planners.

The plan is a pure function of the CSV: ``planned_runs(rows)`` lists every
run that the finished ``rows`` define, in run order; the planners
(``plan_study``, ``plan_budget``, ``plan_baseline``, ``plan_ratio``) also say
what their finished grids selected. A grid is a ``Grid`` tuned by
``tune_grid`` (the edge-extension rule of docs/study_design.md); the numbers
are in ``design``. The driver (run.py) and the report (report.py) import it.
"""
from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.study import design

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "results", "large_batch.csv")
COLUMNS = tuple("""model batch_norm optimizer formula batch_size learning_rate warmup_steps
    epochs steps seed val_accuracy test_accuracy train_loss wall_time_s device phase
    bias_and_norm warmup_fraction reference_learning_rate val_loss test_loss status
    examples_per_sec resumed_from_step val_curve study momentum_kind last_batch_loss
    code_version superseded trust_ratios""".split())  # docs/study_design.md
CHANCE = 0.1  # accuracy of a guess among Fashion-MNIST's 10 classes
MODEL_OF = {spec["batch_norm"]: letter for letter, spec in design.MODELS.items()}


def lr_key(learning_rate: float) -> str:
  """A learning rate as it identifies a run (6 significant digits)."""
  return f"{float(learning_rate):.6g}"


def rule_name(exclude_bias_and_norm: bool) -> str:
  return "excluded" if exclude_bias_and_norm else "adapted"


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a study: ``key()`` is its identity, ``row()`` its
  columns of the CSV, ``from_row`` the run a row records."""

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
            f"_lr{lr_key(self.learning_rate)}_s{self.seed}_w{self.warmup_fraction:g}"
            f"_e{self.epochs:g}_{rule_name(self.exclude_bias_and_norm)}")

  def config(self):
    config = design.run_config(
        self.model, self.optimizer, self.batch_size, self.learning_rate, self.seed,
        warmup_fraction=self.warmup_fraction, epochs=self.epochs,
        exclude_bias_and_norm=self.exclude_bias_and_norm, nesterov=self.nesterov)
    config.log_trust_ratios = self.study == 3  # where the arms differ
    return config

  def row(self) -> dict[str, Any]:
    reference = self.reference_learning_rate
    return dict(
        model=design.MODELS[self.model]["model"],
        batch_norm=design.MODELS[self.model]["batch_norm"], optimizer=self.optimizer,
        batch_size=self.batch_size, learning_rate=f"{self.learning_rate:.8g}",
        epochs=f"{self.epochs:g}", seed=self.seed, phase=self.phase,
        bias_and_norm=rule_name(self.exclude_bias_and_norm),
        warmup_fraction=f"{self.warmup_fraction:g}",
        reference_learning_rate="" if math.isnan(reference) else f"{reference:.8g}",
        study=self.study, momentum_kind=self.momentum_kind)

  @classmethod
  def from_row(cls, row: Mapping[str, str]) -> Run:
    return cls(MODEL_OF[row["batch_norm"]], row["optimizer"], int(row["batch_size"]),
               float(row["learning_rate"]), int(row["seed"]), row["phase"],
               float(row["warmup_fraction"]), float(row["epochs"]),
               row["bias_and_norm"] == rule_name(True),
               as_float(row["reference_learning_rate"]), int(row["study"]),
               row["momentum_kind"] == "nesterov")


def row_key(row: Mapping[str, str]) -> tuple:
  """A CSV row's identity: its run's ``key()``."""
  return Run.from_row(row).key()


def read_rows(path: str, *, superseded: bool = False) -> list[dict[str, str]]:
  """The CSV's complete rows (a line cut by a kill is skipped), without the
  superseded ones unless ``superseded``, collapsed runs labelled as such."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path, newline="") as f:
    fcntl.flock(f, fcntl.LOCK_SH)  # not while another driver appends
    for row in csv.DictReader(f):
      try:
        if all(row.get(c) is not None for c in COLUMNS) and row_key(row):
          rows.append(row)
      except (KeyError, ValueError):
        continue
  return relabel_collapsed([r for r in rows if superseded or not r["superseded"]])


def relabel_collapsed(rows: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
  """``rows`` with status "collapsed" where the design's rule says so."""
  def cell(row):
    return (row["study"], row["batch_norm"], row["batch_size"], f"{float(row['epochs']):g}")
  best: dict[tuple, float] = {}
  for row in rows:
    if not math.isnan(accuracy := as_float(row["val_accuracy"])):
      best[cell(row)] = max(best.get(cell(row), 0.0), accuracy)
  out = [dict(row) for row in rows]
  for row in out:
    if row["status"] != "diverged" and (
        as_float(row["val_accuracy"]) < design.COLLAPSED_FRACTION_OF_BEST * best.get(cell(row), 0)
        or as_float(row["train_loss"]) >= design.COLLAPSED_LOSS):
      row["status"] = "collapsed"
  return out


def append_row(path: str, row: Mapping[str, Any]) -> None:
  """Appends one full CSV line in one write (header first in a new file),
  after cutting off a line that a kill left incomplete."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
  with open(path, "a+b") as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # one driver at a time
    f.seek(0)
    if not (data := f.read()).endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)
    if data.rfind(b"\n") < 0:
      writer.writeheader()
    writer.writerow({c: row.get(c, "") for c in COLUMNS})
    f.write(buffer.getvalue().encode())
    f.flush()
    os.fsync(f.fileno())


def as_float(value: str | None) -> float:
  """A CSV value as a float; NaN where it is empty or not a number."""
  try:
    return float(value)  # type: ignore[arg-type]
  except (TypeError, ValueError):
    return math.nan


def accuracy_or_chance(row: Mapping[str, str], column: str) -> float:
  """A row's accuracy, a diverged run's (NaN) counted as chance."""
  accuracy = as_float(row[column])
  return CHANCE if math.isnan(accuracy) else accuracy


def _scores(rows: Sequence[Mapping[str, str]]) -> dict[tuple, float]:
  """Key -> validation accuracy for selection; -inf for a failed run."""
  return {row_key(r): -math.inf if r["status"] != "ok" or math.isnan(as_float(
      r["val_accuracy"])) else as_float(r["val_accuracy"]) for r in rows}


def _field():
  return dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Plan:
  """Every run defined so far, in order, and what the finished ones decided:
  ``selected`` (point -> {optimizer: learning rate}) and ``warmups`` where
  tuned; ``grids`` (grid -> {optimizer: learning rates}), ``extensions``
  (grid -> values added (below, above)); ``undefined``: phase -> runs that
  wait for other runs before they are defined."""

  runs: list[Run] = dataclasses.field(default_factory=list)
  selected: dict[tuple, dict[str, float]] = _field()
  grids: dict[tuple, dict[str, list[float]]] = _field()
  extensions: dict[tuple, tuple[int, int]] = _field()
  undefined: dict[str, int] = _field()
  warmups: dict[tuple, dict[str, float]] = _field()

  def grid_runs(self, model: str, batch_size: int, optimizer: str,
                warmup_fraction: float | None = None) -> list[Run]:
    """The seed-0 runs of the grid at (model, batch, optimizer) of study 1 or
    2, at one warm-up or all."""
    return [run for run in self.runs
            if run.phase in ("grid", "budget", "baseline") and run.seed == 0
            and (run.model, run.batch_size, run.optimizer) == (model, batch_size, optimizer)
            and warmup_fraction in (None, run.warmup_fraction)]


@dataclasses.dataclass
class Grid:
  """One grid: each optimizer's learning rates ``base`` (None while unknown)
  before edge extensions; its runs have ``fields``, ``per_optimizer`` on top."""

  key: tuple
  base: dict[str, list[float] | None]
  fields: dict[str, Any]
  per_optimizer: dict[str, dict[str, Any]] = _field()

  def run(self, optimizer: str, learning_rate: float, **changes) -> Run:
    return Run(optimizer=optimizer, learning_rate=learning_rate, **{
        **self.fields, **self.per_optimizer.get(optimizer, {}), **changes})

  def seeds(self, plan: Plan, selected: Mapping[str, float] | None, phase: str,
            seeds: Sequence[int] = design.SEEDS[1:], **changes) -> list[Run]:
    """Runs at each optimizer's ``selected`` learning rate for ``seeds``;
    while the grid has not selected, they count as undefined in ``plan``."""
    if selected is None:
      plan.undefined[phase] = plan.undefined.get(phase, 0) + len(self.base) * len(seeds)
      return []
    return [self.run(o, lr, seed=seed, phase=phase, **changes)
            for o, lr in selected.items() for seed in seeds]


def _with_extensions(base: list[float], low: int, high: int) -> list[float]:
  """``base`` with ``low`` values below and ``high`` above, a factor apart."""
  below = [base[0] / design.EDGE_FACTOR**i for i in range(low, 0, -1)]
  above = [base[-1] * design.EDGE_FACTOR**i for i in range(1, high + 1)]
  return below + base + above


def _ordered_runs(grid: Grid, values: Mapping[str, list[float]], low: int,
                  high: int) -> list[Run]:
  """A grid's runs: its base values from the middle outwards, then the
  extensions (outermost last), alternating optimizers."""
  orders = []
  for optimizer, lrs in values.items():
    n = len(lrs) - low - high
    middle = low + (n - 1) / 2
    first = sorted(range(low, low + n), key=lambda i: (abs(i - middle), i))
    rest = sorted(set(range(len(lrs))) - set(first),
                  key=lambda i: (min(abs(i - low), abs(i - (low + n - 1))), i))
    orders.append([grid.run(optimizer, lrs[i]) for i in first + rest])
  return [order[i] for i in range(max(map(len, orders), default=0))
          for order in orders if i < len(order)]


def tune_grid(plan: Plan, grid: Grid, done: Mapping[tuple, float]) -> dict[str, float] | None:
  """Adds ``grid``'s runs to ``plan`` as far as the finished runs (``done``:
  key -> selection score) define them; returns its selection once complete.

  Where one optimizer's best is at an edge (or none of its runs learns),
  every optimizer gets one more value there, up to MAX_EDGE_EXTENSIONS.
  """
  low = high = 0
  while True:
    values = {o: _with_extensions(b, low, high) for o, b in grid.base.items() if b}
    runs = _ordered_runs(grid, values, low, high)
    plan.grids[grid.key], plan.extensions[grid.key] = values, (low, high)
    if len(values) < len(grid.base) or any(r.key() not in done for r in runs):
      plan.runs += runs
      return None  # waits for its runs (or for the values of one optimizer)
    best = {}
    for optimizer, lrs in values.items():
      scores = [done[grid.run(optimizer, lr).key()] for lr in lrs]
      best[optimizer] = max(range(len(lrs)), key=lambda i: (scores[i], -i))
      if max(scores) < design.NO_LEARNING_BELOW:
        best[optimizer] = 0
    cap = design.MAX_EDGE_EXTENSIONS
    extend_low = low < cap and 0 in best.values()
    extend_high = high < cap and any(i == len(values[o]) - 1 for o, i in best.items())
    if not (extend_low or extend_high):
      plan.runs += runs
      return {o: values[o][i] for o, i in best.items()}
    low, high = low + extend_low, high + extend_high


def _scaled(sgd_128: float | None, batch_size: int) -> float:
  """SGD's linearly scaled learning rate at ``batch_size`` (NaN if unknown)."""
  return math.nan if sgd_128 is None else sgd_128 * batch_size / design.REFERENCE_BATCH_SIZE


def _centred(centre: Mapping[str, float], factors: Sequence[float]) -> dict[str, Any]:
  return {o: [lr * f for f in factors] for o, lr in centre.items()}


def plan_study(rows: Sequence[Mapping[str, str]]) -> Plan:
  """Study 1: every (model, batch) grid, then seeds 1 and 2 at each
  selection, then the warm-up ablation; SGD's grids scale from batch 128's."""
  done, plan, seeds, ablation = _scores(rows), Plan(), [], []
  plan.undefined = {"grid": 0, "seed": 0, "ablation": 0}
  for model in design.MODELS:
    sgd_128 = None  # batch 128's selected SGD learning rate
    for b in design.GRID_ORDER[model]:
      sgd = (list(design.SGD_LEARNING_RATES) if b == design.REFERENCE_BATCH_SIZE
             else None if sgd_128 is None
             else [_scaled(sgd_128, b) * f for f in design.SGD_SCALE_FACTORS])
      grid = Grid((model, b), {"lars": list(design.LARS_LEARNING_RATES), "sgd": sgd},
                  dict(model=model, batch_size=b),
                  {"sgd": dict(reference_learning_rate=_scaled(sgd_128, b))})
      plan.undefined["grid"] += 0 if sgd else len(design.SGD_SCALE_FACTORS)
      if (selected := tune_grid(plan, grid, done)) is not None:
        plan.selected[grid.key] = selected
      if b == design.REFERENCE_BATCH_SIZE:
        sgd_128 = selected and selected["sgd"]
      if b >= design.SEEDS_FROM_BATCH_SIZE:
        seeds += grid.seeds(plan, selected, "seed")
      if b == design.ABLATION_BATCH_SIZE:
        ablation += grid.seeds(plan, selected, "ablation", design.SEEDS,
                               warmup_fraction=design.ABLATION_WARMUP_FRACTION)
  plan.runs += seeds + ablation
  return plan


def plan_budget(rows: Sequence[Mapping[str, str]], first_plan: Plan) -> Plan:
  """Study 2, Q1: the 80-epoch grids centred on study 1's selections
  (``first_plan``), then seeds 1 and 2 at each selection."""
  first, done, plan, seeds = first_plan.selected, _scores(rows), Plan(), []
  ref = design.REFERENCE_BATCH_SIZE
  for model, batch_sizes in design.BUDGET_POINTS.items():
    for b in batch_sizes:
      if not {(model, b), (model, ref)} <= first.keys():
        continue  # waits for study 1's selection
      factors = design.BUDGET_REFERENCE_FACTORS if b == ref else design.BUDGET_FACTORS
      reference = math.nan if b == ref else _scaled(first[(model, ref)]["sgd"], b)
      grid = Grid((model, b), _centred(first[(model, b)], factors),
                  dict(model=model, batch_size=b, phase="budget",
                       epochs=design.BUDGET_EPOCHS, study=2),
                  {"sgd": dict(reference_learning_rate=reference)})
      if (selected := tune_grid(plan, grid, done)) is not None:
        plan.selected[grid.key] = selected
      seeds += grid.seeds(plan, selected, "budget_seed")
  plan.runs += seeds  # after every grid: the grids are the more informative runs
  return plan


def plan_baseline(rows: Sequence[Mapping[str, str]], first_plan: Plan) -> Plan:
  """Study 2, Q2: Nesterov SGD, LARS and LAMB under one search over warm-up
  and learning rate centred on study 1's selections, then seeds 1 and 2 at
  each optimizer's best trial (``selected`` and ``warmups`` of the plan)."""
  first, done, plan, seeds = first_plan.selected, _scores(rows), Plan(), []
  for point in (p for p in design.BASELINE_POINTS if p in first):
    centre = {**first[point], "lamb": first[point]["lars"] * design.LARS_TRUST_COEFFICIENT}
    trials: dict[str, list[tuple[float, float, float]]] = {}
    for warmup in design.BASELINE_WARMUP_FRACTIONS:
      grid = Grid((*point, warmup), _centred(centre, design.BASELINE_FACTORS),
                  dict(model=point[0], batch_size=point[1], phase="baseline",
                       warmup_fraction=warmup, study=2), {"sgd": dict(nesterov=True)})
      for optimizer, lr in (tune_grid(plan, grid, done) or {}).items():
        trials.setdefault(optimizer, []).append(
            (done[grid.run(optimizer, lr).key()], -warmup, lr))
    best = {o: max(t) for o, t in trials.items()  # ties: the shorter warm-up
            if len(t) == len(design.BASELINE_WARMUP_FRACTIONS)}
    if len(best) < len(centre):
      grid.seeds(plan, None, "baseline_seed")
      continue
    plan.selected[point] = {o: lr for o, (_, _, lr) in best.items()}
    plan.warmups[point] = {o: -w for o, (_, w, _) in best.items()}
    seeds += [run for o, (_, w, lr) in best.items()
              for run in grid.seeds(plan, {o: lr}, "baseline_seed", warmup_fraction=-w)]
  plan.runs += seeds  # after every grid
  return plan


def plan_ratio(rows: Sequence[Mapping[str, str]], baseline: Plan) -> Plan:
  """Study 3: the arms' searches at RATIO_POINT, 20 then 80 epochs, each
  followed by seeds 1 and 2 at every arm's best; centred on Q2's selections
  (``baseline``) with its warm-ups, at 80 epochs on the 20-epoch selection."""
  point, done, plan = design.RATIO_POINT, _scores(rows), Plan()
  if point not in baseline.selected:
    return plan  # waits for Q2's selection
  source = design.RATIO_CENTRES
  centre = {arm: baseline.selected[point][source[arm]] for arm in design.RATIO_ARMS}
  warmups = {arm: baseline.warmups[point][source[arm]] for arm in design.RATIO_ARMS}
  for epochs in design.RATIO_EPOCHS:
    grid = Grid((*point, epochs), _centred(centre, design.RATIO_FACTORS),
                dict(model=point[0], batch_size=point[1], epochs=epochs, study=3,
                     phase="ratio"),
                {arm: dict(warmup_fraction=warmups[arm], nesterov=arm.startswith("sgd"))
                 for arm in design.RATIO_ARMS})
    if (centre := tune_grid(plan, grid, done)) is None:
      break  # the next budget is centred on this one's selections
    plan.selected[grid.key], plan.warmups[grid.key] = centre, warmups
    plan.runs += grid.seeds(plan, centre, "ratio_seed")
  return plan


def as_first_run(rows: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
  """The rows as study 2 was planned from them: study 1's original rows
  (superseded or not; its reruns carry a code_version) and every later one."""
  return [r for r in rows if not (r["study"] == "1" and r["code_version"])]


def planned_runs(rows: Sequence[Mapping[str, str]]) -> list[Run]:
  """Every study's runs, in order: study 3 at 20 epochs, study 1, study 3 at
  80 epochs, then study 2's Q2 and Q1. ``rows``: every row, the superseded
  ones too; study 2 is centred on study 1 as it was run (``as_first_run``)."""
  current = [r for r in rows if not r["superseded"]]
  first_as_run = plan_study(as_first_run(rows))
  baseline = plan_baseline(current, first_as_run)
  ratio = plan_ratio(current, baseline).runs
  short = [run for run in ratio if run.epochs == design.EPOCHS]
  return (short + plan_study(current).runs + [run for run in ratio if run not in short]
          + baseline.runs + plan_budget(current, first_as_run).runs)
