r"""The large-batch study's report: claim test, steps to target, plots.

``python -m experiments.study.run --summarize`` calls ``summarize``, which
reads only the CSV, so it works on a partial study and says what is missing.
The first study's tables use its rows only (``study`` column 1); study 2's
sections use the plans of its Q1 and Q2.

The claim test: R = the higher of the two optimizers' mean test accuracy at
batch 128 (at their selected learning rates). At batch B, G = R - mean test
accuracy at the selected learning rate. The claim holds at B when G_LARS <= 1
point and G_SGD - G_LARS >= max(1 point, 2 SE), where SE = sqrt(SE_LARS^2 +
SE_SGD^2) is the standard error of the difference of the two means over
their seeds (std with ddof=1 / sqrt(n); 0 where a batch has one seed). Steps
to target: the fewest steps any seed-0 run of the grid at (model, batch,
optimizer) needs to reach validation accuracy R - 1.5 points.

Study 2 reads the same two conditions apart. Q1 (80 epochs, against R80, the
same R at batch 128 with 80 epochs): step starvation explains LARS's loss at B
when G80_LARS <= 1 point; SGD's loss is not only starvation when G80_SGD -
G80_LARS >= max(1 point, 2 SE). Q2 (20 epochs, each optimizer at the best
trial of its search over warm-up and learning rate): the claim test against
the first study's R, with SGD with Nesterov momentum as the baseline, for LARS
and for LAMB.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence

from experiments.configs import large_batch as design
from experiments.study.plan import (Plan, Run, accuracy_or_chance, as_first_run,
                                    as_float, pilot_path, plan_baseline,
                                    plan_budget, plan_ratio, plan_study,
                                    read_rows, row_key, rule_name)

SUMMARY = "large_batch_summary.md"
PLOTS = ("large_batch_test_accuracy.png", "large_batch_steps_to_target.png",
         "large_batch_learning_rates.png", "large_batch_study2_learning_rates.png",
         "large_batch_study3_arms.png")
POINT = 0.01  # one percentage point of accuracy
TARGET_BELOW_R = 1.5 * POINT
PHASES = ("grid", "seed", "ablation")
STUDY2_PHASES = ("budget", "budget_seed", "baseline", "baseline_seed")
GRID_PHASES = ("grid", "budget", "baseline")  # seed-0 runs that tune a grid


# --------------------------------------------------------------------------
# Wall-time estimate.
# --------------------------------------------------------------------------


def _timed(rows: Iterable[Mapping[str, str]]):
  """(batch, examples/s, wall s, steps) of the rows whose speed counts: runs
  that trained to the end (a collapsed run's speed is a speed) in one piece."""
  for row in rows:
    eps = as_float(row["examples_per_sec"])
    if (row["status"] != "diverged" and math.isfinite(eps)
        and row["resumed_from_step"] in ("", "0")):
      yield (int(row["batch_size"]), eps, as_float(row["wall_time_s"]),
             int(row["steps"]))


class TimeModel:
  """Run time = (set-up + steps * batch / throughput(batch)) * slowdown.

  Fitted on finished rows. ``examples_per_sec`` of a row is measured from the
  end of its first (compiling) step to its last one, periodic validations
  included, so it carries the study's quarter-epoch validation cost.
  Throughput at other batch sizes is interpolated in log2 of the batch
  (constant outside the measured range); set-up (data, compilation, the final
  evaluations) is the median of what is left of the rows' wall time. The
  slowdown is the median of fitted / measured throughput over the ``recent``
  rows (1 without them): how much more the machine is loaded now.
  """

  def __init__(self, rows: Iterable[Mapping[str, str]],
               recent: Iterable[Mapping[str, str]] = ()):
    by_batch: dict[int, list[float]] = {}
    setup = []
    for batch, eps, wall_s, steps in _timed(rows):
      by_batch.setdefault(batch, []).append(eps)
      setup.append(wall_s - steps * batch / eps)
    self.throughput = {b: _median(v) for b, v in sorted(by_batch.items())}
    self.setup_s = max(_median(setup), 0.0) if setup else 0.0
    ratios = [self.examples_per_sec(batch) / eps
              for batch, eps, _, _ in _timed(recent)]
    self.slowdown = _median(ratios) if ratios else 1.0

  def examples_per_sec(self, batch_size: int) -> float:
    if not self.throughput:
      return math.nan
    points = sorted(self.throughput.items())
    x = math.log2(batch_size)
    if x <= math.log2(points[0][0]):
      return points[0][1]
    for (b0, t0), (b1, t1) in zip(points, points[1:]):
      x0, x1 = math.log2(b0), math.log2(b1)
      if x <= x1:
        return t0 + (t1 - t0) * (x - x0) / (x1 - x0)
    return points[-1][1]

  def seconds(self, run: Run) -> float:
    steps = design.num_steps(run.batch_size, run.epochs)
    return self.slowdown * (self.setup_s + steps * run.batch_size
                            / self.examples_per_sec(run.batch_size))


def _median(values: Sequence[float]) -> float:
  values = sorted(values)
  n = len(values)
  return (values[(n - 1) // 2] + values[n // 2]) / 2


def _waiting_seed_runs(plan: Plan, phase: str) -> list[Run]:
  """Stand-ins for the seed runs that wait for one of ``plan``'s grids to
  select: one per later seed and optimizer of the grid, with its batch and
  epochs (what counting and timing need), not yet its learning rate."""
  grids = {(run.model, run.batch_size, run.optimizer): run
           for run in plan.runs if run.phase in GRID_PHASES}
  return [dataclasses.replace(run, seed=seed, phase=phase)
          for (model, batch_size, _), run in grids.items()
          if (model, batch_size) not in plan.selected
          for seed in design.SEEDS[1:]]


# --------------------------------------------------------------------------
# The selected configurations, the claim test, steps to target.
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Cell:
  """The selected configuration of (model, batch, optimizer), over its seeds."""

  learning_rate: float
  test: list[float]
  val: list[float]
  last_batch_loss: list[float]  # the last logged minibatch's loss
  reference_learning_rate: float = math.nan
  warmup_fraction: float = design.WARMUP_FRACTION

  @property
  def n(self) -> int:
    return len(self.test)

  @property
  def mean(self) -> float:
    return sum(self.test) / self.n if self.n else math.nan

  @property
  def standard_error(self) -> float:
    """std (ddof=1) / sqrt(n); 0 for one seed, nan for none."""
    if self.n == 0:
      return math.nan
    if self.n == 1:
      return 0.0
    m = self.mean
    return math.sqrt(sum((x - m) ** 2 for x in self.test) / (self.n - 1) / self.n)


def selected_cells(rows: Sequence[Mapping[str, str]], plan: Plan, *,
                   warmup_fraction: float | None = None
                   ) -> dict[tuple[str, int, str], Cell]:
  """(model, batch, optimizer) -> the finished seeds of ``plan``'s runs at its
  selected learning rate and warm-up (``warmup_fraction``; by default the
  plan's selected one, Q2's, or else the design's)."""
  by_key = {row_key(r): r for r in rows}
  cells: dict[tuple[str, int, str], Cell] = {}
  for run in plan.runs:
    point = (run.model, run.batch_size)
    warmup = warmup_fraction
    if warmup is None:
      warmup = plan.warmups.get(point, {}).get(run.optimizer,
                                               design.WARMUP_FRACTION)
    if (run.learning_rate != plan.selected.get(point, {}).get(run.optimizer)
        or run.warmup_fraction != warmup):
      continue
    cell = cells.setdefault((*point, run.optimizer), Cell(
        run.learning_rate, [], [], [], warmup_fraction=warmup))
    row = by_key.get(run.key())
    if row is not None:
      cell.test.append(accuracy_or_chance(row, "test_accuracy"))
      cell.val.append(as_float(row["val_accuracy"]))
      cell.last_batch_loss.append(as_float(row["last_batch_loss"]))
      cell.reference_learning_rate = as_float(row["reference_learning_rate"])
  return cells


@dataclasses.dataclass
class Verdict:
  """The claim test at one batch: ``optimizer`` (LARS, LAMB) against a baseline."""

  batch_size: int
  gap: float  # G = R - the optimizer's mean test accuracy
  baseline_gap: float  # G of the baseline
  difference: float  # baseline_gap - gap
  standard_error: float  # of the difference
  needed: float  # max(1 point, 2 SE)
  seeds: tuple[int, int]  # (optimizer, baseline)

  @property
  def within_point(self) -> bool:
    """G <= 1 point (Q1: step starvation explains LARS's loss)."""
    return self.gap <= POINT + 1e-12

  @property
  def separated(self) -> bool:
    """G_baseline - G >= max(1 point, 2 SE) (Q1: SGD's loss is not only
    starvation)."""
    return self.difference >= self.needed - 1e-12

  @property
  def holds(self) -> bool:
    return self.within_point and self.separated


def reference_accuracy(cells: Mapping[tuple[str, int, str], Cell],
                       model: str) -> float:
  """R: the higher of the two optimizers' mean test accuracy at batch 128
  (NaN until both have a finished run there)."""
  at_reference = [cells.get((model, design.REFERENCE_BATCH_SIZE, o))
                  for o in design.OPTIMIZERS]
  if not all(c is not None and c.n for c in at_reference):
    return math.nan
  return max(c.mean for c in at_reference if c is not None)


def claim_test(cells: Mapping[tuple[str, int, str], Cell], model: str, *,
               r: float | None = None, optimizer: str = "lars",
               baseline: str = "sgd") -> tuple[float, list[Verdict]]:
  """R and the claim at each batch of ``model`` where ``optimizer`` and
  ``baseline`` both have a finished run; ``r`` defaults to R of ``cells``."""
  ref = design.REFERENCE_BATCH_SIZE
  r = reference_accuracy(cells, model) if r is None else r
  if math.isnan(r):
    return r, []
  verdicts = []
  for batch_size in sorted({b for m, b, _ in cells if m == model} - {ref}):
    tested = cells.get((model, batch_size, optimizer))
    base = cells.get((model, batch_size, baseline))
    if tested is None or base is None or not tested.n or not base.n:
      continue
    gap, baseline_gap = r - tested.mean, r - base.mean
    se = math.sqrt(tested.standard_error**2 + base.standard_error**2)
    verdicts.append(Verdict(batch_size, gap, baseline_gap, baseline_gap - gap,
                            se, max(POINT, 2 * se), (tested.n, base.n)))
  return r, verdicts


def _grid_runs(plan: Plan, model: str, batch_size: int, optimizer: str,
               warmup_fraction: float | None = None) -> list[Run]:
  """The seed-0 runs of ``plan``'s grid at (model, batch, optimizer), at one
  warm-up or all."""
  return [run for run in plan.runs
          if run.phase in GRID_PHASES and run.seed == 0
          and (run.model, run.batch_size, run.optimizer)
          == (model, batch_size, optimizer)
          and warmup_fraction in (None, run.warmup_fraction)]


def steps_to_target(rows: Sequence[Mapping[str, str]], plan: Plan,
                    target: float, model: str, batch_size: int, optimizer: str
                    ) -> tuple[int | None, float | None]:
  """Fewest steps of any seed-0 grid run to validation accuracy >= target,
  and that run's learning rate (the lowest on a tie); (None, None) if none."""
  by_key = {row_key(r): r for r in rows}
  reached = []
  for run in _grid_runs(plan, model, batch_size, optimizer):
    row = by_key.get(run.key())
    curve = json.loads(row["val_curve"] or "[]") if row is not None else []
    steps = next((int(s) for s, a in curve if a >= target - 1e-12), None)
    if steps is not None:
      reached.append((steps, run.learning_rate))
  return min(reached) if reached else (None, None)


# --------------------------------------------------------------------------
# The summary's text.
# --------------------------------------------------------------------------


def _pct(x: float) -> str:
  return "–" if math.isnan(x) else f"{100 * x:.2f}"


def _cell_text(cell: Cell | None, expected_seeds: int, *,
               warmup: bool = False) -> str:
  if cell is None:
    return "pending"
  if not cell.n:
    return f"pending (lr {cell.learning_rate:g})"
  text = f"{_pct(cell.mean)}"
  if cell.n > 1:
    text += f" ± {_pct(cell.standard_error)}"
  text += f" (lr {cell.learning_rate:g}"
  if warmup:
    text += f", warm-up {cell.warmup_fraction:.0%}"
  text += f", n={cell.n}"
  if cell.n < expected_seeds:
    text += f" of {expected_seeds}"
  return text + ")"


def _missing_lines(remaining: Sequence[Run], waiting: Sequence[Run],
                   n_undefined: int, time_model: TimeModel,
                   why: str) -> list[str]:
  """How many runs are missing, their time, and which grids they are."""
  hours = sum(time_model.seconds(run) for run in [*remaining, *waiting]) / 3600
  speed = ""
  if math.isfinite(hours):
    speed = (f" (about {hours:.1f} h of run time at the speed measured so far"
             + (", the waiting runs included" if waiting else ""))
    if time_model.slowdown != 1.0:
      speed += (f"; this study's runs so far took {time_model.slowdown:.1f}x "
                "the time the earlier rows' speed predicts")
    speed += "; drivers that run at once share it)"
  pending = dict.fromkeys((run.model, run.batch_size, run.phase)
                          for run in remaining)
  return ["", f"Missing: {len(remaining)} defined runs{speed}, and "
          f"{n_undefined} runs that wait for them ({why}).",
          "Pending, in run order: "
          + ", ".join(f"{m}/{b} {p}" for m, b, p in pending) + "."]


def _edge_lines(plan: Plan, what: str) -> list[str]:
  """Grids of ``what`` extended at an edge, and selections still at an edge
  (Q2's grids are one per warm-up)."""

  def label(key) -> str:
    model, batch_size, *warmup = key
    return f"{model}/{batch_size}" + (f" warm-up {warmup[0]:.0%}" if warmup else "")

  edges = [label(key) for key, (lo, hi) in plan.extensions.items() if lo or hi]
  at_edge = []
  for point, chosen in plan.selected.items():
    for optimizer, lr in chosen.items():
      key = point if point in plan.grids else (
          *point, plan.warmups[point][optimizer])
      values = plan.grids[key][optimizer]
      if lr in (values[0], values[-1]):
        at_edge.append(f"{label(key)} {optimizer}")
  lines = []
  if edges:
    lines.append(f"{what}: grids extended at an edge: " + ", ".join(edges) + ".")
  if at_edge:
    lines.append(f"{what}: selected learning rate still at the grid's edge "
                 "(extension cap reached): " + ", ".join(at_edge) + ".")
  return lines


def _progress_lines(title: str, rows, runs: Sequence[Run],
                    undefined: Mapping[str, int], phases: Sequence[str],
                    time_model: TimeModel, why: str,
                    waiting: Sequence[Run] = ()) -> list[str]:
  """Runs finished and missing per phase, with the time the missing ones need
  (``waiting``: stand-ins for the undefined runs that can be timed)."""
  done = {row_key(r) for r in rows}
  expected = collections.Counter(run.phase for run in runs)
  expected.update(undefined)
  finished = collections.Counter(run.phase for run in runs if run.key() in done)
  remaining = [run for run in runs if run.key() not in done]
  lines = [title, "",
           "| phase | finished | planned so far (incl. not yet defined) |",
           "| --- | --- | --- |"]
  for phase in phases:
    lines.append(f"| {phase} | {finished[phase]} | {expected[phase]} "
                 f"({undefined.get(phase, 0)} not yet defined) |")
  if remaining:
    return lines + _missing_lines(remaining, waiting, sum(undefined.values()),
                                  time_model, why)
  return lines + ["", "Every planned run is finished."]


def _expected_seeds(batch_size: int) -> int:
  return len(design.SEEDS) if batch_size >= design.SEEDS_FROM_BATCH_SIZE else 1


def _gap_columns(r: float, r_name: str, batch_size: int,
                 verdict: Verdict | None, answers: Sequence[str]) -> list[str]:
  """G, G of the baseline, their difference, what it needs, and the
  ``answers`` (Verdict properties) as yes/no."""
  rest = [""] * (len(answers) - 1)
  if batch_size == design.REFERENCE_BATCH_SIZE:
    return [f"{r_name} = {_pct(r)}", "", "", "", "reference", *rest]
  if verdict is None:
    return ["", "", "", ""] + ["pending"] * len(answers)
  provisional = min(verdict.seeds) < _expected_seeds(batch_size)
  return [_pct(verdict.gap), _pct(verdict.baseline_gap),
          _pct(verdict.difference), _pct(verdict.needed)] + [
              ("yes" if getattr(verdict, a) else "no")
              + (" (provisional)" if provisional else "") for a in answers]


def _verdict_row(model: str, batch_size: int, cells, r: float,
                 verdict: Verdict | None) -> str:
  """One batch's line of the verdict table."""
  expected_seeds = _expected_seeds(batch_size)
  lars = cells.get((model, batch_size, "lars"))
  sgd = cells.get((model, batch_size, "sgd"))
  ratio = "–"
  if sgd is not None and math.isfinite(sgd.reference_learning_rate):
    ratio = f"{sgd.learning_rate / sgd.reference_learning_rate:.3g}"
  losses = " / ".join(
      f"{sum(c.last_batch_loss) / c.n:.3f}" if c is not None and c.n else "–"
      for c in (lars, sgd))
  cols = _gap_columns(r, "R", batch_size, verdict, ("holds",))
  return (f"| {batch_size} | {_cell_text(lars, expected_seeds)} | "
          f"{_cell_text(sgd, expected_seeds)} | {ratio} | {losses} | "
          + " | ".join(cols) + " |")


def _outcome(model: str, r: float, verdicts: Sequence[Verdict]) -> str:
  """The largest batch where the claim holds, and whether that is final."""
  holding = [v.batch_size for v in verdicts if v.holds]
  complete = len(verdicts) == len(design.BATCH_SIZES[model]) - 1 and all(
      min(v.seeds) >= _expected_seeds(v.batch_size) for v in verdicts)
  if math.isnan(r):
    return "R is not known yet (batch 128's grid is incomplete)."
  if holding:
    outcome = (f"Largest batch where the claim holds: {max(holding)} "
               f"(holds at {', '.join(str(b) for b in sorted(holding))}).")
  else:
    outcome = "The claim holds nowhere."
  if not complete:
    outcome += " Provisional: some batches or seeds are still missing."
  return outcome


def _model_heading(model: str) -> str:
  spec = design.MODELS[model]
  return f"### Model {model} ({spec['model']}, batch norm: {spec['batch_norm']})"


def _verdict_lines(model: str, cells, r: float,
                   verdicts: Sequence[Verdict]) -> list[str]:
  """One model's verdict table and its outcome line."""
  lines = [_model_heading(model), "",
           "| batch | LARS test | SGD test | SGD lr / linearly scaled | "
           "last-minibatch loss LARS / SGD | G_LARS | G_SGD | G_SGD - G_LARS | "
           "needed | holds |", "| --- |" + " --- |" * 9]
  by_batch = {v.batch_size: v for v in verdicts}
  for batch_size in sorted(design.BATCH_SIZES[model]):
    lines.append(_verdict_row(model, batch_size, cells, r,
                              by_batch.get(batch_size)))
  return lines + ["", _outcome(model, r, verdicts), ""]


def _steps_lines(rows, plan: Plan, model: str, r: float,
                 batch_sizes: Iterable[int], steps_table: dict) -> list[str]:
  """One model's steps-to-target table (target r - 1.5 points); fills
  ``steps_table`` for the plot."""
  lines = [f"Model {model}: target "
           + (f"{_pct(r - TARGET_BELOW_R)} %" if not math.isnan(r) else "pending")
           + ".", "", "| batch | LARS steps (lr) | SGD steps (lr) |",
           "| --- | --- | --- |"]
  for batch_size in sorted(batch_sizes):
    cols = []
    for optimizer in design.OPTIMIZERS:
      if math.isnan(r) or (model, batch_size) not in plan.selected:
        cols.append("pending")
        continue
      steps, lr = steps_to_target(rows, plan, r - TARGET_BELOW_R, model,
                                  batch_size, optimizer)
      steps_table[(model, batch_size, optimizer)] = steps
      cols.append("not reached" if steps is None else f"{steps} ({lr:g})")
    lines.append(f"| {batch_size} | " + " | ".join(cols) + " |")
  return lines + [""]


def _ablation_lines(rows, plan: Plan, cells) -> list[str]:
  ablation = selected_cells(rows, plan,
                            warmup_fraction=design.ABLATION_WARMUP_FRACTION)
  short = f"{design.WARMUP_FRACTION:.0%}"
  long = f"{design.ABLATION_WARMUP_FRACTION:.0%}"
  lines = [f"## Warm-up ablation at batch {design.ABLATION_BATCH_SIZE}", "",
           f"Test accuracy at the selected learning rate with warm-up {short} "
           f"vs {long} of the steps.", "",
           f"| model | optimizer | warm-up {short} | warm-up {long} |",
           "| --- | --- | --- | --- |"]
  for model in design.MODELS:
    for optimizer in design.OPTIMIZERS:
      key = (model, design.ABLATION_BATCH_SIZE, optimizer)
      lines.append(f"| {model} | {optimizer} | "
                   f"{_cell_text(cells.get(key), len(design.SEEDS))} | "
                   f"{_cell_text(ablation.get(key), len(design.SEEDS))} |")
  return lines + [""]


def _header_lines(path: str, rule: bool, ignored: int) -> list[str]:
  lines = [
      "# Large-batch study: summary",
      "",
      "Written by `python -m experiments.study.run --summarize` from "
      f"`{os.path.basename(path)}`; design: `experiments/configs/large_batch.py`."
      f" Biases and normalisation parameters: {rule_name(rule)}.",
      "Accuracies in %; ± is the standard error over seeds; lr is the peak "
      "learning rate selected on validation accuracy (seed 0).",
      "",
  ]
  if ignored:
    lines += [f"({ignored} rows with the other bias/normalisation rule are "
              "ignored.)", ""]
  return lines


def _study1_lines(rows, plan: Plan, cells, r: Mapping[str, float],
                  steps_table: dict) -> list[str]:
  """The first study's claim test, steps to target and warm-up ablation."""
  lines = ["## The claim test", "",
           "R = the higher mean test accuracy of the two optimizers at batch "
           f"{design.REFERENCE_BATCH_SIZE}; G = R - accuracy. The claim holds at "
           "B when G_LARS <= 1 point and G_SGD - G_LARS >= max(1 point, 2 SE), "
           "SE = sqrt(SE_LARS^2 + SE_SGD^2). Last-minibatch loss: the loss of "
           "the last logged training minibatch, mean over seeds (one batch, not "
           "the loss over the training split).", ""]
  for model in design.MODELS:
    lines += _verdict_lines(model, cells, *claim_test(cells, model))
  lines += ["## Steps to target", "",
            "Fewest steps of any seed-0 run of the grid to reach validation "
            "accuracy R - 1.5 points (validation every quarter epoch; "
            "\"not reached\" within 20 epochs).", ""]
  for model in design.MODELS:
    lines += _steps_lines(rows, plan, model, r[model],
                          design.BATCH_SIZES[model], steps_table)
  return lines + _ablation_lines(rows, plan, cells)


def _budget_lines(rows, budget: Plan, cells, steps_table: dict) -> list[str]:
  """Study 2, Q1: the 80-epoch verdicts against R80, and steps to target."""
  lines = ["## Study 2, Q1: budget (80 epochs)", "",
           "R80 = the higher mean test accuracy of the two optimizers at batch "
           f"{design.REFERENCE_BATCH_SIZE} with 80 epochs; G80 = R80 - accuracy "
           "at 80 epochs. Step starvation explains LARS's loss at B when "
           "G80_LARS <= 1 point; SGD's loss is not only starvation when "
           "G80_SGD - G80_LARS >= max(1 point, 2 SE).", ""]
  r80 = {}
  for model, batch_sizes in design.BUDGET_POINTS.items():
    r80[model], verdicts = claim_test(cells, model)
    by_batch = {v.batch_size: v for v in verdicts}
    lines += [_model_heading(model), "",
              "| batch | LARS test | SGD test | G80_LARS | G80_SGD | "
              "G80_SGD - G80_LARS | needed | starvation explains LARS? | "
              "SGD not only starvation? |", "| --- |" + " --- |" * 8]
    for b in sorted(batch_sizes):
      texts = [_cell_text(cells.get((model, b, o)), _expected_seeds(b))
               for o in design.OPTIMIZERS]
      cols = _gap_columns(r80[model], "R80", b, by_batch.get(b),
                          ("within_point", "separated"))
      lines.append(f"| {b} | " + " | ".join(texts + cols) + " |")
    lines.append("")
  lines += ["Steps to target at 80 epochs: fewest steps of any seed-0 run of "
            "the 80-epoch grid to reach validation accuracy R80 - 1.5 points.",
            ""]
  for model, batch_sizes in design.BUDGET_POINTS.items():
    lines += _steps_lines(rows, budget, model, r80[model], batch_sizes,
                          steps_table)
  return lines


BASELINE_NAMES = {"sgd": "SGD (Nesterov)", "lars": "LARS", "lamb": "LAMB"}


def _baseline_lines(cells, r: Mapping[str, float]) -> list[str]:
  """Study 2, Q2: each optimizer's best trial and the claim against Nesterov."""
  lines = ["## Study 2, Q2: tuned Nesterov baseline (20 epochs)", "",
           "Each optimizer's best trial (validation, seed 0) over warm-up "
           + " and ".join(f"{w:.0%}" for w in design.BASELINE_WARMUP_FRACTIONS)
           + " x its learning rates, then seeds 1 and 2 there; G = R - test "
           "accuracy, R from the first study (batch 128, 20 epochs). The claim "
           "test as in the first study, with SGD with Nesterov momentum as the "
           "baseline.", ""]
  candidates = [o for o in design.BASELINE_OPTIMIZERS if o != "sgd"]
  for model in design.MODELS:
    verdicts = {(v.batch_size, o): v for o in candidates
                for v in claim_test(cells, model, r=r[model], optimizer=o)[1]}
    lines += [_model_heading(model), "", f"R = {_pct(r[model])} %.", "",
              "| batch | optimizer | test, best trial (lr, warm-up, n) | G | "
              "G_Nesterov - G | needed | claim holds |", "| --- |" + " --- |" * 6]
    for b in sorted(b for m, b in design.BASELINE_POINTS if m == model):
      for optimizer in ["sgd", *candidates]:
        cell = cells.get((model, b, optimizer))
        gap = r[model] - cell.mean if cell is not None and cell.n else math.nan
        cols = (["baseline", "", ""] if optimizer == "sgd" else _gap_columns(
            r[model], "R", b, verdicts.get((b, optimizer)), ("holds",))[2:])
        lines.append(f"| {b} | {BASELINE_NAMES[optimizer]} | "
                     f"{_cell_text(cell, _expected_seeds(b), warmup=True)} | "
                     f"{_pct(gap)} | " + " | ".join(cols) + " |")
    lines.append("")
  return lines


def _study2_progress_lines(all_rows, pilot_rows, budget: Plan,
                           baseline: Plan) -> list[str]:
  """Study 2's runs finished and missing, with the time the missing ones need
  at the speed its runs so far had."""
  waiting = (_waiting_seed_runs(budget, "budget_seed")
             + _waiting_seed_runs(baseline, "baseline_seed"))
  recent = [r for r in all_rows if r["study"] == "2"]
  lines = _progress_lines(
      "## Study 2: progress", all_rows, baseline.runs + budget.runs,
      collections.Counter(run.phase for run in waiting), STUDY2_PHASES,
      TimeModel(all_rows + pilot_rows, recent),
      "seeds 1 and 2 wait for the grid they select from", waiting)
  return (lines + _edge_lines(budget, "Q1 (budget)")
          + _edge_lines(baseline, "Q2 (baseline)") + [""])


# --------------------------------------------------------------------------
# The record: superseded rows, labels, time; steps against the fastest run.
# --------------------------------------------------------------------------


def _b_verdicts(rows) -> dict[str, str]:
  """Every verdict that model B's study-1 rows decide: study 1's claim test
  and Q2's (both against R), with study 2 centred on study 1 as it was run."""
  first = [r for r in rows if r["study"] == "1"]
  plan = plan_study(first)
  cells = selected_cells(first, plan)
  r, verdicts = claim_test(cells, "B")
  out = {f"study 1, B/{v.batch_size}": "holds" if v.holds else "fails"
         for v in verdicts}
  baseline = plan_baseline(rows, plan_study(as_first_run(rows)))
  baseline_cells = selected_cells(rows, baseline)
  for optimizer in ("lars", "lamb"):
    for v in claim_test(baseline_cells, "B", r=r, optimizer=optimizer)[1]:
      out[f"Q2, B/{v.batch_size} {optimizer}"] = "holds" if v.holds else "fails"
  out["R (model B)"] = _pct(r)
  return out


def _record_lines(all_rows, rows) -> list[str]:
  """Superseded rows against their reruns, the verdicts they change, the
  collapse labels, and the run time."""
  superseded = [r for r in all_rows if r["superseded"]]
  current = {row_key(r): r for r in rows}
  pairs = [(r, current[row_key(r)]) for r in superseded if row_key(r) in current]
  same = sum((a["val_accuracy"], a["test_accuracy"])
             == (b["val_accuracy"], b["test_accuracy"]) for a, b in pairs)
  largest = max((abs(as_float(a["val_accuracy"]) - as_float(b["val_accuracy"]))
                 for a, b in pairs), default=math.nan)
  reasons = collections.Counter(r["superseded"] for r in superseded)
  lines = ["## The record", ""]
  for reason, n in reasons.items():
    lines.append(f"- {n} rows superseded ({reason}); {len(pairs)} rerun so far "
                 f"on code that records its version: {same} identical in "
                 f"validation and test accuracy, the largest validation "
                 f"difference {_pct(largest)} points.")
  before, after = _b_verdicts(as_first_run(all_rows)), _b_verdicts(rows)
  changed = [f"{k}: {before.get(k, 'pending')} -> {after.get(k, 'pending')}"
             for k in sorted(set(before) | set(after))
             if before.get(k) != after.get(k)]
  lines.append("- Model B's verdicts recomputed on the reruns (study 1, Q2; "
               "Q1's R80 comes from study 2): "
               + ("; ".join(changed) if changed else "none changes") + ".")
  relabelled = [r for r in rows if r["status"] == "collapsed"]
  lines.append(f"- {len(relabelled)} runs collapsed by the rule (below half "
               "their cell's best validation accuracy, or a training-split "
               f"loss of at least {design.COLLAPSED_LOSS:.2f}).")
  hours = collections.defaultdict(float)
  for row in rows:
    hours[row["study"]] += as_float(row["wall_time_s"]) / 3600
  pieces = sum(1 for r in rows if r["resumed_from_step"] not in ("", "0")
               and not r["code_version"])
  lines.append("- Run time: " + ", ".join(
      f"study {k} {v:.1f} h" for k, v in sorted(hours.items()))
      + f". {pieces} resumed rows from before code_version count only their "
      "last piece; later rows sum their pieces.")
  return lines + [""]


def _fewest_steps(rows, model: str, batch_size: int, target: float
                  ) -> tuple[int, Mapping[str, str]] | None:
  """The fewest steps any seed-0 row of (model, batch), of any study,
  optimizer and schedule, needs to reach validation ``target``, and its row."""
  best = None
  for row in rows:
    if (row["seed"], row["batch_norm"], int(row["batch_size"])) != (
        "0", design.MODELS[model]["batch_norm"], batch_size):
      continue
    curve = json.loads(row["val_curve"] or "[]")
    steps = next((int(s) for s, a in curve if a >= target - 1e-12), None)
    if steps is not None and (best is None or steps < best[0]):
      best = (steps, row)
  return best


def _speedup_lines(rows, r: Mapping[str, float]) -> list[str]:
  """Steps to R - 1.5 points against the fastest batch-128 run of any
  schedule (Shallue et al.), and what each doubling of the batch saves."""
  lines = ["## Steps to target against the fastest batch-128 run", "",
           "Fewest steps of any seed-0 run (any study, optimizer, schedule) to "
           "reach validation accuracy R - 1.5 points; the speed-up is against "
           f"the fastest such run at batch {design.REFERENCE_BATCH_SIZE}.", ""]
  for model in design.MODELS:
    if math.isnan(r[model]):
      continue
    target = r[model] - TARGET_BELOW_R
    lines += [f"Model {model}, target {_pct(target)} %:", "",
              "| batch | fewest steps (run) | speed-up | saved by doubling the "
              "batch |", "| --- |" + " --- |" * 3]
    base, previous = None, (0, 0)  # previous: (batch, its fewest steps)
    for b in sorted(design.BATCH_SIZES[model]):
      found = _fewest_steps(rows, model, b, target)
      if found is None:
        lines.append(f"| {b} | not reached | | |")
        previous = (0, 0)
        continue
      steps, row = found
      base = base or steps
      saved = f"{1 - steps / previous[1]:.0%}" if b == 2 * previous[0] else ""
      lines.append(
          f"| {b} | {steps} ({row['optimizer']}, study {row['study']}, "
          f"{float(row['epochs']):g} epochs, warm-up "
          f"{float(row['warmup_fraction']):.0%}, lr "
          f"{as_float(row['learning_rate']):g}) | {base / steps:.1f}x | {saved} |")
      previous = (b, steps)
    lines.append("")
  return lines


# --------------------------------------------------------------------------
# Study 3: the per-layer ratio against one ratio and a bounded step.
# --------------------------------------------------------------------------

RATIO_NAMES = {"lars": "LARS (per-layer ratio)",
               "lars_global": "one ratio for the network",
               "sgd_clip": f"Nesterov, clipped at norm {design.RATIO_CLIP_NORM:g}",
               "sgd": "Nesterov"}


def ratio_cells(rows, plan: Plan) -> dict[tuple[float, str], Cell]:
  """(epochs, arm) -> the finished seeds at the arm's selection."""
  by_key = {row_key(r): r for r in rows}
  cells: dict[tuple[float, str], Cell] = {}
  for run in plan.runs:
    chosen = plan.selected.get((run.model, run.batch_size, run.epochs), {})
    if run.learning_rate != chosen.get(run.optimizer):
      continue
    cell = cells.setdefault((run.epochs, run.optimizer), Cell(
        run.learning_rate, [], [], [], warmup_fraction=run.warmup_fraction))
    row = by_key.get(run.key())
    if row is not None:
      cell.test.append(accuracy_or_chance(row, "test_accuracy"))
      cell.val.append(as_float(row["val_accuracy"]))
      cell.last_batch_loss.append(as_float(row["last_batch_loss"]))
  return cells


def ratio_verdicts(cells, epochs: float) -> dict[str, Verdict]:
  """LARS against each other arm at ``epochs``: its lead and what it needs."""
  model, batch_size = design.RATIO_POINT
  by_arm = {(model, batch_size, arm): c for (e, arm), c in cells.items()
            if e == epochs}
  return {arm: v for arm in design.RATIO_ARMS[1:]
          for v in claim_test(by_arm, model, r=0.0, baseline=arm)[1]}


def _trust_ratio_lines(rows, plan: Plan, epochs: float) -> list[str]:
  """Per-layer lambda of LARS's selected seed-0 run against the one ratio of
  the network-wide arm's, at the steps both logged."""
  model, batch_size = design.RATIO_POINT
  chosen = plan.selected.get((model, batch_size, epochs), {})
  logged = {}
  for row in rows:
    if (row["study"] == "3" and row["seed"] == "0" and row["trust_ratios"]
        and f"{float(row['epochs']):g}" == f"{epochs:g}"
        and as_float(row["learning_rate"]) == chosen.get(row["optimizer"])):
      logged[row["optimizer"]] = dict(
          (s, layers) for s, layers in json.loads(row["trust_ratios"]))
  if not {"lars", "lars_global"} <= logged.keys():
    return []
  steps = sorted(set(logged["lars"]) & set(logged["lars_global"]))
  one = {s: next(iter(logged["lars_global"][s].values())) for s in steps}
  lines = ["Trust ratios of the selected seed-0 runs, per layer for LARS and "
           "as a multiple of the network-wide arm's one ratio at the same step "
           f"(that ratio: {', '.join(f'{one[s]:.3g} at step {s}' for s in steps)}):",
           "", "| layer | " + " | ".join(f"step {s}" for s in steps) + " |",
           "| --- |" + " --- |" * len(steps)]
  for layer in logged["lars"][steps[0]]:
    lines.append(f"| {layer} | " + " | ".join(
        f"{logged['lars'][s][layer]:.3g} ({logged['lars'][s][layer] / one[s]:.2g}x)"
        for s in steps) + " |")
  return lines + [""]


def _ratio_lines(rows, plan: Plan) -> list[str]:
  """Study 3's tables, its decision per budget, and the trust ratios."""
  model, batch_size = design.RATIO_POINT
  cells = ratio_cells(rows, plan)
  lines = [f"## Study 3: the per-layer ratio or a bounded step? ({model}/{batch_size})",
           "", "Each arm at its best learning rate (validation, seed 0), then "
           "seeds 1 and 2; the per-layer ratio matters at a budget if and only "
           "if LARS leads both the network-wide ratio and the clipped Nesterov "
           "by at least max(1 point, 2 SE).", ""]
  for epochs in design.RATIO_EPOCHS:
    verdicts = ratio_verdicts(cells, epochs)
    lines += [f"### {epochs:g} epochs", "",
              "| arm | test (lr, warm-up, n) | LARS's lead | needed | LARS leads? |",
              "| --- |" + " --- |" * 4]
    for arm in design.RATIO_ARMS:
      cell, v = cells.get((epochs, arm)), verdicts.get(arm)
      cols = (["", "", ""] if arm == "lars" else ["pending"] * 3 if v is None
              else [_pct(v.difference), _pct(v.needed),
                    "yes" if v.separated else "no"])
      lines.append(f"| {RATIO_NAMES[arm]} | "
                   f"{_cell_text(cell, len(design.SEEDS), warmup=True)} | "
                   + " | ".join(cols) + " |")
    decisive = [verdicts.get(arm) for arm in ("lars_global", "sgd_clip")]
    if all(v is not None and min(v.seeds) == len(design.SEEDS) for v in decisive):
      matters = all(v.separated for v in decisive if v is not None)
      lines += ["", f"The per-layer ratio matters at {epochs:g} epochs: "
                f"{'yes' if matters else 'no'}."]
    else:
      lines += ["", f"At {epochs:g} epochs: pending."]
    lines += [""] + _trust_ratio_lines(rows, plan, epochs)
  return lines + _edge_lines(plan, "Study 3") + [""]


def summarize(path: str, *, rule: bool = design.EXCLUDE_BIAS_AND_NORM,
              plots: bool = True) -> str:
  """Writes large_batch_summary.md (+ PNGs) next to the CSV; returns its text."""
  all_rows = read_rows(path, superseded=True)
  current = [r for r in all_rows if not r["superseded"]]
  first = [r for r in current if r["study"] == "1"]
  rows = [r for r in first if r["bias_and_norm"] == rule_name(rule)]
  pilot_rows = read_rows(pilot_path(path))
  plan = plan_study(rows, rule=rule)
  first_as_run = plan_study(as_first_run(all_rows), rule=rule)
  budget = plan_budget(current, first_as_run)
  baseline = plan_baseline(current, first_as_run)
  ratio = plan_ratio(current, baseline)
  cells = selected_cells(rows, plan)
  budget_cells = selected_cells(current, budget)
  baseline_cells = selected_cells(current, baseline)
  r = {model: reference_accuracy(cells, model) for model in design.MODELS}
  steps: dict[tuple[str, int, str], int | None] = {}
  steps80: dict[tuple[str, int, str], int | None] = {}

  lines = _header_lines(path, rule, len(first) - len(rows))
  lines += _record_lines(all_rows, current)
  lines += _progress_lines(
      "## Progress", rows, plan.runs, plan.undefined, PHASES,
      TimeModel(rows + pilot_rows), "SGD grids wait for batch 128's grid; "
      "seeds and the ablation for the grid they select from")
  lines += _edge_lines(plan, "Study 1") + [""]
  lines += _study1_lines(rows, plan, cells, r, steps)
  lines += _study2_progress_lines(current, pilot_rows, budget, baseline)
  lines += _budget_lines(current, budget, budget_cells, steps80)
  lines += _baseline_lines(baseline_cells, r)
  lines += _speedup_lines(current, r)
  lines += _ratio_lines(current, ratio)
  if plots:
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in PLOTS] + [""]
  text = "\n".join(lines)
  out_dir = os.path.dirname(os.path.abspath(path))
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, SUMMARY), "w") as f:
    f.write(text)
  if plots:
    paths = [os.path.join(out_dir, p) for p in PLOTS]
    _plot_accuracy(_accuracy_series(cells, budget_cells, baseline_cells),
                   r, {m: reference_accuracy(budget_cells, m)
                       for m in design.MODELS}, paths[0])
    _plot_steps([("20 epochs, to R - 1.5", steps, "-"),
                 ("80 epochs, to R80 - 1.5", steps80, "--")], paths[1])
    _plot_learning_rates(rows, plan, paths[2])
    _plot_study2_learning_rates(current, budget, baseline, paths[3])
    _plot_ratio_arms(ratio_cells(current, ratio), paths[4])
  return text


# --------------------------------------------------------------------------
# The plots.
# --------------------------------------------------------------------------

COLORS = {"lars": "tab:blue", "sgd": "tab:orange", "lamb": "tab:purple"}
NESTEROV_COLOR = "tab:green"


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _model_axes(plt):
  """A figure with one panel per model, side by side: (figure, panels)."""
  n = len(design.MODELS)
  fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4), squeeze=False)
  return fig, axes[0]


def _batch_axis(ax, batch_sizes) -> None:
  ax.set_xscale("log", base=2)
  ax.set_xlim(min(batch_sizes) / 1.5, max(batch_sizes) * 1.5)
  ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes], fontsize=8)
  ax.minorticks_off()


def _grid_and_legend(ax, **legend_kwargs) -> None:
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(**legend_kwargs)


def _save(fig, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  _pyplot().close(fig)


def _accuracy_series(cells, budget_cells, baseline_cells) -> list:
  """(label, cells, optimizer, line style) of each line of the accuracy plot."""
  return [("LARS, 20 epochs", cells, "lars", dict(color=COLORS["lars"])),
          ("SGD, 20 epochs", cells, "sgd", dict(color=COLORS["sgd"])),
          ("LARS, 80 epochs", budget_cells, "lars",
           dict(color=COLORS["lars"], linestyle="--", marker="s")),
          ("SGD, 80 epochs", budget_cells, "sgd",
           dict(color=COLORS["sgd"], linestyle="--", marker="s")),
          ("SGD Nesterov, tuned (Q2, 20 epochs)", baseline_cells, "sgd",
           dict(color=NESTEROV_COLOR, linestyle="none", marker="D")),
          ("LARS, tuned alike (Q2, 20 epochs)", baseline_cells, "lars",
           dict(color=COLORS["lars"], linestyle="none", marker="D",
                fillstyle="none")),
          ("LAMB, tuned alike (Q2, 20 epochs)", baseline_cells, "lamb",
           dict(color=COLORS["lamb"], linestyle="none", marker="D",
                fillstyle="none"))]


def _plot_accuracy(series, r: Mapping[str, float], r80: Mapping[str, float],
                   path: str) -> None:
  """Test accuracy (mean over seeds, bars ± 1 SE) against batch size, one
  line per series; R, R - 1 point and R80 as horizontal lines."""
  fig, axes = _model_axes(_pyplot())
  for ax, model in zip(axes, design.MODELS):
    for label, cells, optimizer, style in series:
      points = sorted((b, 100 * c.mean, 100 * c.standard_error)
                      for (m, b, o), c in cells.items()
                      if (m, o) == (model, optimizer) and c.n)
      if points:
        xs, ys, errors = zip(*points)
        ax.errorbar(xs, ys, yerr=errors, capsize=3, label=label,
                    **{"marker": "o", **style})
    for name, value, style in (
        ("R", r[model], dict(linestyle=":")),
        ("R - 1 point", r[model] - POINT, dict(linestyle="--", linewidth=0.8)),
        ("R80", r80[model], dict(linestyle="-.", color="black"))):
      if not math.isnan(value):
        ax.axhline(100 * value, label=name, **{"color": "gray", **style})
    _batch_axis(ax, sorted(design.BATCH_SIZES[model]))
    ax.set(xlabel="global batch size", ylabel="test accuracy (%)",
           title=f"model {model} (batch norm: {design.MODELS[model]['batch_norm']})")
    _grid_and_legend(ax, title="bars: ± 1 SE over seeds", fontsize=7)
  _save(fig, path)


def _steps_panel(ax, model: str, series) -> None:
  """One model's steps to target: a line per (series, optimizer), "not
  reached" as a triangle at the top (hollow for the second series), perfect
  scaling (steps x 128 / batch) from batch 128's fewest steps."""
  ref = design.REFERENCE_BATCH_SIZE
  batches = sorted(design.BATCH_SIZES[model])
  for k, (label, table, linestyle) in enumerate(series):
    fill = "none" if k else None  # None: the line's colour
    missed = False
    for i, optimizer in enumerate(design.OPTIMIZERS):
      points = sorted((b, steps) for (m, b, o), steps in table.items()
                      if (m, o) == (model, optimizer))
      reached = [(b, steps) for b, steps in points if steps is not None]
      if reached:
        ax.plot(*zip(*reached), marker="o", linestyle=linestyle,
                color=COLORS[optimizer], label=f"{optimizer}, {label}")
      top = [b for b, steps in points if steps is None]
      if top:  # y in axes fraction: at the top, one height per optimizer
        ax.plot(top, [0.97 - 0.03 * i] * len(top), marker="^",
                linestyle="none", color=COLORS[optimizer], markerfacecolor=fill,
                transform=ax.get_xaxis_transform())
        missed = True
    if missed:
      ax.plot([], [], marker="^", linestyle="none", color="gray",
              markerfacecolor=fill, label=f"not reached, {label}")
    start = [steps for (m, b, _), steps in table.items()
             if (m, b) == (model, ref) and steps is not None]
    if start:
      ax.plot(batches, [min(start) * ref / b for b in batches], color="gray",
              linestyle=linestyle, linewidth=0.8,
              label=f"perfect scaling, {label}")
  _batch_axis(ax, batches)
  ax.set_yscale("log")
  ax.set(xlabel="global batch size", ylabel="steps to target (validation)",
         title=f"model {model}")
  _grid_and_legend(ax, fontsize=7)


def _plot_steps(series, path: str) -> None:
  """Steps to target against batch size; ``series``: (label, {(model, batch,
  optimizer): steps or None for not reached}, line style)."""
  fig, axes = _model_axes(_pyplot())
  for ax, model in zip(axes, design.MODELS):
    _steps_panel(ax, model, series)
  _save(fig, path)


FAILURE_MARKERS = {  # status -> how the learning-rate plots mark its runs
    "collapsed": dict(marker="x", color="black", markersize=7, linestyle="none",
                      label="collapsed to chance"),
    "diverged": dict(marker="v", color="red", markersize=7, linestyle="none",
                     label="diverged (NaN), drawn at 10 %"),
}


def _grid_points(by_key, plan: Plan, model: str, batch_size: int,
                 optimizer: str, warmup_fraction: float | None = None
                 ) -> list[tuple[float, float, str]]:
  """(learning rate, validation accuracy in %, status) of a grid's finished
  seed-0 runs, by learning rate."""
  points = []
  for run in _grid_runs(plan, model, batch_size, optimizer, warmup_fraction):
    row = by_key.get(run.key())
    if row is not None:
      accuracy = 100 * max(accuracy_or_chance(row, "val_accuracy"), 0.0)
      points.append((run.learning_rate, accuracy, row["status"]))
  return sorted(points)


def _grid_line(ax, points, chosen: float | None, failed: dict, **style) -> None:
  """One grid's line, a star at the ``chosen`` learning rate; adds its failed
  runs to ``failed`` (status -> points)."""
  if not points:
    return
  xs, ys, _ = zip(*points)
  ax.plot(xs, ys, marker="o", **style)
  if chosen in xs:
    ax.plot([chosen], [ys[xs.index(chosen)]], marker="*", markersize=14,
            color=style["color"])
  for x, y, status in points:
    failed.get(status, []).append((x, y))


def _failure_marks(ax, failed: dict) -> None:
  for status, style in FAILURE_MARKERS.items():
    if failed[status]:
      ax.plot(*zip(*failed[status]), **style)


def _plot_learning_rates(rows, plan: Plan, path: str) -> None:
  """Validation accuracy against learning rate, one line per batch; collapsed
  and diverged runs marked apart."""
  plt = _pyplot()
  models = list(design.MODELS)
  by_key = {row_key(r): r for r in rows}
  fig, axes = plt.subplots(len(models), len(design.OPTIMIZERS),
                           figsize=(6 * len(design.OPTIMIZERS), 3.8 * len(models)),
                           squeeze=False)
  cmap = plt.get_cmap("viridis")
  for i, model in enumerate(models):
    batches = sorted(design.BATCH_SIZES[model])
    for j, optimizer in enumerate(design.OPTIMIZERS):
      ax = axes[i][j]
      failed: dict[str, list] = {status: [] for status in FAILURE_MARKERS}
      for k, b in enumerate(batches):
        _grid_line(ax, _grid_points(by_key, plan, model, b, optimizer),
                   plan.selected.get((model, b), {}).get(optimizer), failed,
                   color=cmap(k / max(len(batches) - 1, 1)), label=str(b))
      _failure_marks(ax, failed)
      ax.set_xscale("log", base=2)
      ax.set(xlabel="peak learning rate" + (" (gamma)" if optimizer == "lars" else ""),
             ylabel="validation accuracy (%)",
             title=f"model {model}, {optimizer} (star: selected)")
      _grid_and_legend(ax, title="batch", fontsize=7)
  _save(fig, path)


def _plot_study2_learning_rates(rows, budget: Plan, baseline: Plan,
                                path: str) -> None:
  """Study 2's grids: validation accuracy against learning rate, a panel per
  (model, batch) and optimizer, a line per grid (Q1's; Q2's per warm-up)."""
  plt = _pyplot()
  by_key = {row_key(r): r for r in rows}
  points = sorted({*((m, b) for m, batch_sizes in design.BUDGET_POINTS.items()
                     for b in batch_sizes), *design.BASELINE_POINTS})
  grids = [("80 epochs (Q1)", budget, None, "tab:red")] + [
      (f"20 epochs, warm-up {w:.0%} (Q2)", baseline, w, color)
      for w, color in zip(design.BASELINE_WARMUP_FRACTIONS,
                          ("tab:cyan", "tab:blue"))]
  optimizers = design.BASELINE_OPTIMIZERS
  fig, axes = plt.subplots(len(points), len(optimizers), squeeze=False,
                           figsize=(4.5 * len(optimizers), 2.8 * len(points)))
  for (model, b), panels in zip(points, axes):
    for optimizer, ax in zip(optimizers, panels):
      failed: dict[str, list] = {status: [] for status in FAILURE_MARKERS}
      for label, plan, warmup, color in grids:
        chosen = plan.selected.get((model, b), {}).get(optimizer)
        if plan.warmups.get((model, b), {}).get(optimizer, warmup) != warmup:
          chosen = None  # selected at the other warm-up
        _grid_line(ax, _grid_points(by_key, plan, model, b, optimizer, warmup),
                   chosen, failed, color=color, label=label)
      _failure_marks(ax, failed)
      ax.set_xscale("log", base=2)
      name = ("SGD (Q1 heavy ball, Q2 Nesterov)" if optimizer == "sgd"
              else BASELINE_NAMES[optimizer])
      ax.set(xlabel="peak learning rate", ylabel="validation accuracy (%)")
      ax.set_title(f"{model}/{b}, {name} (star: selected)", fontsize=9)
      _grid_and_legend(ax, fontsize=6)
  _save(fig, path)


def _plot_ratio_arms(cells, path: str) -> None:
  """Study 3: test accuracy (mean ± 1 SE) of each arm, one marker per budget."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  arms = design.RATIO_ARMS
  for k, epochs in enumerate(design.RATIO_EPOCHS):
    points = [(i + 0.12 * (2 * k - 1), 100 * c.mean, 100 * c.standard_error)
              for i, arm in enumerate(arms)
              if (c := cells.get((epochs, arm))) is not None and c.n]
    if points:
      xs, ys, errors = zip(*points)
      ax.errorbar(xs, ys, yerr=errors, capsize=3, linestyle="none",
                  marker="os"[k], label=f"{epochs:g} epochs")
  ax.set_xticks(range(len(arms)), [RATIO_NAMES[a] for a in arms], fontsize=7)
  model, batch_size = design.RATIO_POINT
  ax.set(ylabel="test accuracy (%)",
         title=f"Study 3: model {model}, batch {batch_size} (bars: ± 1 SE over seeds)")
  _grid_and_legend(ax, fontsize=8)
  _save(fig, path)
