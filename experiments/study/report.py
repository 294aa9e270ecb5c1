r"""The large-batch study's report: claim test, steps to target, plots, pilot report.

``python -m experiments.study.run --summarize`` (and ``--pilot``) call
``summarize`` / ``summarize_pilot``; both read only the CSV, so they work on a
partial study and say what is missing. The first study's tables use its rows
only (``study`` column 1).

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

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence

from experiments.configs import large_batch as design
from experiments.study.plan import (MODEL_BY_BATCH_NORM, Plan, Run,
                                    accuracy_or_chance, as_float, pilot_path,
                                    plan_study, read_rows, row_key, rule_name)

SUMMARY = "large_batch_summary.md"
PLOTS = ("large_batch_test_accuracy.png", "large_batch_steps_to_target.png",
         "large_batch_learning_rates.png")
POINT = 0.01  # one percentage point of accuracy
TARGET_BELOW_R = 1.5 * POINT
PHASES = ("grid", "seed", "ablation")


# --------------------------------------------------------------------------
# Wall-time estimate.
# --------------------------------------------------------------------------


class TimeModel:
  """Run time = set-up + steps * batch / throughput(batch), fitted on finished rows.

  ``examples_per_sec`` of a row is measured from the end of its first
  (compiling) step to its last one, periodic validations included, so it
  carries the study's quarter-epoch validation cost. Throughput at other batch
  sizes is interpolated in log2 of the batch (constant outside the measured
  range); set-up (data, compilation, the final evaluations) is the median of
  what is left of the rows' wall time. Runs that trained to the end count
  (a collapsed run's speed is a speed); diverged and resumed ones do not.
  """

  def __init__(self, rows: Iterable[Mapping[str, str]]):
    by_batch: dict[int, list[float]] = {}
    setup = []
    for row in rows:
      eps = as_float(row["examples_per_sec"])
      if (row["status"] == "diverged" or not math.isfinite(eps)
          or row["resumed_from_step"] not in ("", "0")):
        continue
      batch, steps = int(row["batch_size"]), int(row["steps"])
      by_batch.setdefault(batch, []).append(eps)
      setup.append(as_float(row["wall_time_s"]) - steps * batch / eps)
    self.throughput = {b: _median(v) for b, v in sorted(by_batch.items())}
    self.setup_s = max(_median(setup), 0.0) if setup else 0.0

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
    return self.setup_s + steps * run.batch_size / self.examples_per_sec(
        run.batch_size)


def _median(values: Sequence[float]) -> float:
  values = sorted(values)
  n = len(values)
  return (values[(n - 1) // 2] + values[n // 2]) / 2


def _expected_runs(plan: Plan) -> dict[str, int]:
  """Runs per phase, done or not, as far as the plan knows them."""
  counts = dict.fromkeys(PHASES, 0)
  for run in plan.runs:
    counts[run.phase] += 1
  for phase, n in plan.undefined.items():
    counts[phase] += n
  return counts


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
                   warmup_fraction: float = design.WARMUP_FRACTION,
                   rule: bool = design.EXCLUDE_BIAS_AND_NORM
                   ) -> dict[tuple[str, int, str], Cell]:
  """(model, batch, optimizer) -> its selected configuration's seeds."""
  by_key = {row_key(r): r for r in rows}
  cells = {}
  for (model, batch_size), chosen in plan.selected.items():
    for optimizer, lr in chosen.items():
      cell = Cell(lr, [], [], [])
      for seed in design.SEEDS:
        row = by_key.get(Run(model, optimizer, batch_size, lr, seed,
                             warmup_fraction=warmup_fraction,
                             exclude_bias_and_norm=rule).key())
        if row is None:
          continue
        cell.test.append(accuracy_or_chance(row, "test_accuracy"))
        cell.val.append(as_float(row["val_accuracy"]))
        cell.last_batch_loss.append(as_float(row["last_batch_loss"]))
        cell.reference_learning_rate = as_float(row["reference_learning_rate"])
      cells[(model, batch_size, optimizer)] = cell
  return cells


@dataclasses.dataclass
class Verdict:
  batch_size: int
  gap_lars: float
  gap_sgd: float
  difference: float
  standard_error: float
  needed: float
  holds: bool
  seeds: tuple[int, int]  # (LARS, SGD)


def claim_test(cells: Mapping[tuple[str, int, str], Cell], model: str
               ) -> tuple[float, list[Verdict]]:
  """R and the claim at each batch of ``model`` with both optimizers selected."""
  ref = design.REFERENCE_BATCH_SIZE
  if not all((model, ref, o) in cells and cells[(model, ref, o)].n
             for o in design.OPTIMIZERS):
    return math.nan, []
  r = max(cells[(model, ref, o)].mean for o in design.OPTIMIZERS)
  verdicts = []
  for batch_size in sorted(design.BATCH_SIZES[model]):
    if batch_size == ref:
      continue
    lars, sgd = cells.get((model, batch_size, "lars")), cells.get(
        (model, batch_size, "sgd"))
    if lars is None or sgd is None or not lars.n or not sgd.n:
      continue
    gap_lars, gap_sgd = r - lars.mean, r - sgd.mean
    se = math.sqrt(lars.standard_error**2 + sgd.standard_error**2)
    needed = max(POINT, 2 * se)
    difference = gap_sgd - gap_lars
    verdicts.append(Verdict(batch_size, gap_lars, gap_sgd, difference, se,
                            needed, gap_lars <= POINT + 1e-12
                            and difference >= needed - 1e-12,
                            (lars.n, sgd.n)))
  return r, verdicts


def steps_to_target(rows: Sequence[Mapping[str, str]], plan: Plan,
                    target: float, model: str, batch_size: int, optimizer: str,
                    *, rule: bool = design.EXCLUDE_BIAS_AND_NORM
                    ) -> tuple[int | None, float | None]:
  """Fewest steps of any seed-0 grid run to validation accuracy >= target."""
  by_key = {row_key(r): r for r in rows}
  best: tuple[int | None, float | None] = (None, None)
  for lr in plan.grids.get((model, batch_size), {}).get(optimizer, []):
    row = by_key.get(Run(model, optimizer, batch_size, lr,
                         exclude_bias_and_norm=rule).key())
    if row is None:
      continue
    for step, accuracy in json.loads(row["val_curve"] or "[]"):
      if accuracy >= target - 1e-12:
        if best[0] is None or step < best[0]:
          best = (int(step), lr)
        break
  return best


# --------------------------------------------------------------------------
# The summary's text.
# --------------------------------------------------------------------------


def _pct(x: float) -> str:
  return "–" if math.isnan(x) else f"{100 * x:.2f}"


def _cell_text(cell: Cell | None, expected_seeds: int) -> str:
  if cell is None:
    return "pending"
  if not cell.n:
    return f"pending (lr {cell.learning_rate:g})"
  text = f"{_pct(cell.mean)}"
  if cell.n > 1:
    text += f" ± {_pct(cell.standard_error)}"
  text += f" (lr {cell.learning_rate:g}, n={cell.n}"
  if cell.n < expected_seeds:
    text += f" of {expected_seeds}"
  return text + ")"


def _missing_lines(remaining: Sequence[Run], plan: Plan, time_rows) -> list[str]:
  """How many defined runs are missing, their time, and which grids they are."""
  # The speed measured so far, the pilot's included.
  hours = sum(TimeModel(time_rows).seconds(run) for run in remaining) / 3600
  pending = sorted({(run.model, run.batch_size, run.phase) for run in remaining},
                   key=lambda t: (t[2] != "grid", t[0], t[1]))
  return ["", f"Missing: {len(remaining)} defined runs"
          + (f" (about {hours:.1f} h at the speed measured so far)"
             if math.isfinite(hours) else "")
          + f", and {sum(plan.undefined.values())} runs that wait for "
          "them (SGD grids wait for batch 128's grid; seeds and the "
          "ablation for the grid they select from).",
          "Pending: " + ", ".join(f"{m}/{b} {p}" for m, b, p in pending) + "."]


def _edge_lines(plan: Plan) -> list[str]:
  """Grids extended at an edge, and selections still at an edge."""
  edges = [f"{m}/{b}" for (m, b), (lo, hi) in plan.extensions.items()
           if (lo or hi) and (m, b) in plan.selected]
  at_edge = [f"{m}/{b} {o}" for (m, b), chosen in plan.selected.items()
             for o, lr in chosen.items()
             if lr in (plan.grids[(m, b)][o][0], plan.grids[(m, b)][o][-1])]
  lines = []
  if edges:
    lines.append("Grids extended at an edge: " + ", ".join(edges) + ".")
  if at_edge:
    lines.append("Selected learning rate still at the grid's edge (extension "
                 "cap reached): " + ", ".join(at_edge) + ".")
  return lines


def _progress_lines(rows, plan: Plan, pilot_rows) -> list[str]:
  """Runs finished and missing per phase, with the time the missing ones need."""
  done = {row_key(r) for r in rows}
  expected = _expected_runs(plan)
  finished = dict.fromkeys(PHASES, 0)
  for run in plan.runs:
    if run.key() in done:
      finished[run.phase] += 1
  remaining = [run for run in plan.runs if run.key() not in done]
  lines = ["## Progress", "",
           "| phase | finished | planned so far (incl. not yet defined) |",
           "| --- | --- | --- |"]
  for phase in finished:
    lines.append(f"| {phase} | {finished[phase]} | {expected[phase]} "
                 f"({plan.undefined[phase]} not yet defined) |")
  if remaining:
    lines += _missing_lines(remaining, plan, list(rows) + list(pilot_rows))
  else:
    lines += ["", "Every planned run is finished."]
  return lines + _edge_lines(plan) + [""]


def _expected_seeds(batch_size: int) -> int:
  return len(design.SEEDS) if batch_size >= design.SEEDS_FROM_BATCH_SIZE else 1


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
  if batch_size == design.REFERENCE_BATCH_SIZE:
    cols = [f"R = {_pct(r)}", "", "", "", "reference"]
  elif verdict is None:
    cols = ["", "", "", "", "pending"]
  else:
    provisional = min(verdict.seeds) < expected_seeds
    cols = [_pct(verdict.gap_lars), _pct(verdict.gap_sgd),
            _pct(verdict.difference), _pct(verdict.needed),
            ("yes" if verdict.holds else "no")
            + (" (provisional)" if provisional else "")]
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


def _verdict_lines(model: str, cells, r: float,
                   verdicts: Sequence[Verdict]) -> list[str]:
  """One model's verdict table and its outcome line."""
  spec = design.MODELS[model]
  lines = [f"### Model {model} ({spec['model']}, batch norm: "
           f"{spec['batch_norm']})", "",
           "| batch | LARS test | SGD test | SGD lr / linearly scaled | "
           "last-minibatch loss LARS / SGD | G_LARS | G_SGD | G_SGD - G_LARS | "
           "needed | holds |", "| --- |" + " --- |" * 9]
  by_batch = {v.batch_size: v for v in verdicts}
  for batch_size in sorted(design.BATCH_SIZES[model]):
    lines.append(_verdict_row(model, batch_size, cells, r,
                              by_batch.get(batch_size)))
  return lines + ["", _outcome(model, r, verdicts), ""]


def _steps_lines(rows, plan: Plan, model: str, r: float, rule: bool,
                 steps_table: dict) -> list[str]:
  """One model's steps-to-target table; fills ``steps_table`` for the plot."""
  lines = [f"Model {model}: target "
           + (f"{_pct(r - TARGET_BELOW_R)} %" if not math.isnan(r) else "pending")
           + ".", "", "| batch | LARS steps (lr) | SGD steps (lr) |",
           "| --- | --- | --- |"]
  for batch_size in sorted(design.BATCH_SIZES[model]):
    cols = []
    for optimizer in design.OPTIMIZERS:
      if math.isnan(r) or (model, batch_size) not in plan.selected:
        cols.append("pending")
        continue
      steps, lr = steps_to_target(rows, plan, r - TARGET_BELOW_R, model,
                                  batch_size, optimizer, rule=rule)
      steps_table[(model, batch_size, optimizer)] = steps
      cols.append("not reached" if steps is None else f"{steps} ({lr:g})")
    lines.append(f"| {batch_size} | " + " | ".join(cols) + " |")
  return lines + [""]


def _ablation_lines(rows, plan: Plan, cells, rule: bool) -> list[str]:
  ablation = selected_cells(rows, plan, rule=rule,
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


def _header_lines(path: str, rule: bool, ignored: int, other_studies: int
                  ) -> list[str]:
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
  if other_studies:
    lines += [f"({other_studies} rows of later studies are not part of these "
              "tables.)", ""]
  return lines


def summarize(path: str, *, rule: bool = design.EXCLUDE_BIAS_AND_NORM,
              plots: bool = True) -> str:
  """Writes large_batch_summary.md (+ PNGs) next to the CSV; returns its text."""
  all_rows = read_rows(path)
  first = [r for r in all_rows if r["study"] == "1"]
  rows = [r for r in first if r["bias_and_norm"] == rule_name(rule)]
  plan = plan_study(rows, rule=rule)
  cells = selected_cells(rows, plan, rule=rule)
  lines = _header_lines(path, rule, len(first) - len(rows),
                        len(all_rows) - len(first))
  lines += _progress_lines(rows, plan, read_rows(pilot_path(path)))

  lines += ["## The claim test", "",
            "R = the higher mean test accuracy of the two optimizers at batch "
            f"{design.REFERENCE_BATCH_SIZE}; G = R - accuracy. The claim holds at "
            "B when G_LARS <= 1 point and G_SGD - G_LARS >= max(1 point, 2 SE), "
            "SE = sqrt(SE_LARS^2 + SE_SGD^2). Last-minibatch loss: the loss of "
            "the last logged training minibatch, mean over seeds (one batch, not "
            "the loss over the training split).", ""]
  verdict_by_model = {model: claim_test(cells, model) for model in design.MODELS}
  for model, (r, verdicts) in verdict_by_model.items():
    lines += _verdict_lines(model, cells, r, verdicts)

  lines += ["## Steps to target", "",
            "Fewest steps of any seed-0 run of the grid to reach validation "
            "accuracy R - 1.5 points (validation every quarter epoch; "
            "\"not reached\" within 20 epochs).", ""]
  steps_table: dict[tuple[str, int, str], int | None] = {}
  for model, (r, _) in verdict_by_model.items():
    lines += _steps_lines(rows, plan, model, r, rule, steps_table)

  lines += _ablation_lines(rows, plan, cells, rule)
  if plots:
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in PLOTS] + [""]
  text = "\n".join(lines)
  out_dir = os.path.dirname(os.path.abspath(path))
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, SUMMARY), "w") as f:
    f.write(text)
  if plots:
    _plot_accuracy(cells, verdict_by_model, os.path.join(out_dir, PLOTS[0]))
    _plot_steps(steps_table, os.path.join(out_dir, PLOTS[1]))
    _plot_learning_rates(rows, plan, rule, os.path.join(out_dir, PLOTS[2]))
  return text


# --------------------------------------------------------------------------
# The plots.
# --------------------------------------------------------------------------

COLORS = {"lars": "tab:blue", "sgd": "tab:orange"}


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


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


def _plot_accuracy(cells, verdict_by_model, path: str) -> None:
  """Test accuracy at the selected learning rate against batch size."""
  plt = _pyplot()
  models = list(design.MODELS)
  fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4),
                           squeeze=False)
  for ax, model in zip(axes[0], models):
    r = verdict_by_model[model][0]
    for optimizer in design.OPTIMIZERS:
      xs, ys, es = [], [], []
      for b in sorted(design.BATCH_SIZES[model]):
        cell = cells.get((model, b, optimizer))
        if cell is not None and cell.n:
          xs.append(b)
          ys.append(100 * cell.mean)
          es.append(100 * cell.standard_error)
      if xs:
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=optimizer,
                    color=COLORS[optimizer])
    if not math.isnan(r):
      ax.axhline(100 * r, color="gray", linestyle=":", label="R")
      ax.axhline(100 * (r - POINT), color="gray", linestyle="--",
                 linewidth=0.8, label="R - 1 point")
    _batch_axis(ax, sorted(design.BATCH_SIZES[model]))
    ax.set(xlabel="global batch size", ylabel="test accuracy (%)",
           title=f"model {model} (batch norm: {design.MODELS[model]['batch_norm']})")
    _grid_and_legend(ax)
  _save(fig, path)


def _plot_steps(steps_table, path: str) -> None:
  """Steps to target against batch size."""
  plt = _pyplot()
  models = list(design.MODELS)
  fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4),
                           squeeze=False)
  for ax, model in zip(axes[0], models):
    for optimizer in design.OPTIMIZERS:
      points = [(b, steps_table.get((model, b, optimizer)))
                for b in sorted(design.BATCH_SIZES[model])]
      points = [(b, s) for b, s in points if s is not None]
      if points:
        ax.plot(*zip(*points), marker="o", label=optimizer,
                color=COLORS[optimizer])
    _batch_axis(ax, sorted(design.BATCH_SIZES[model]))
    ax.set_yscale("log")
    ax.set(xlabel="global batch size", ylabel="steps to R - 1.5 points (val)",
           title=f"model {model}")
    _grid_and_legend(ax)
  _save(fig, path)


FAILURE_MARKERS = {  # status -> how the learning-rate plot marks its runs
    "collapsed": dict(marker="x", color="black", markersize=7, linestyle="none",
                      label="collapsed to chance"),
    "diverged": dict(marker="v", color="red", markersize=7, linestyle="none",
                     label="diverged (NaN), drawn at 10 %"),
}


def _grid_points(by_key, plan: Plan, model: str, batch_size: int,
                 optimizer: str, rule: bool) -> list[tuple[float, float, str]]:
  """(learning rate, validation accuracy in %, status) of a grid's finished runs."""
  points = []
  for lr in plan.grids.get((model, batch_size), {}).get(optimizer, []):
    row = by_key.get(Run(model, optimizer, batch_size, lr,
                         exclude_bias_and_norm=rule).key())
    if row is not None:
      accuracy = 100 * max(accuracy_or_chance(row, "val_accuracy"), 0.0)
      points.append((lr, accuracy, row["status"]))
  return points


def _plot_learning_rates(rows, plan: Plan, rule: bool, path: str) -> None:
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
      failed = {status: [] for status in FAILURE_MARKERS}
      for k, b in enumerate(batches):
        points = _grid_points(by_key, plan, model, b, optimizer, rule)
        if not points:
          continue
        xs, ys, statuses = zip(*points)
        color = cmap(k / max(len(batches) - 1, 1))
        ax.plot(xs, ys, marker="o", color=color, label=str(b))
        chosen = plan.selected.get((model, b), {}).get(optimizer)
        if chosen in xs:
          ax.plot([chosen], [ys[xs.index(chosen)]], marker="*", markersize=14,
                  color=color)
        for x, y, status in points:
          failed.get(status, []).append((x, y))
      for status, style in FAILURE_MARKERS.items():
        if failed[status]:
          ax.plot(*zip(*failed[status]), **style)
      ax.set_xscale("log", base=2)
      ax.set(xlabel="peak learning rate" + (" (gamma)" if optimizer == "lars" else ""),
             ylabel="validation accuracy (%)",
             title=f"model {model}, {optimizer} (star: selected)")
      _grid_and_legend(ax, title="batch", fontsize=7)
  _save(fig, path)


# --------------------------------------------------------------------------
# The pilot.
# --------------------------------------------------------------------------


def _pilot_table(rows) -> list[str]:
  lines = ["| model | optimizer | batch | lr | biases & norm | steps | warm-up "
           "| status | val acc | last-minibatch loss | examples/s | wall s |",
           "| --- |" + " --- |" * 11]
  for row in rows:
    model = MODEL_BY_BATCH_NORM.get(row["batch_norm"], row["batch_norm"])
    lines.append(
        f"| {model} | {row['optimizer']} | {row['batch_size']} | "
        f"{row['learning_rate']} | {row['bias_and_norm']} | {row['steps']} | "
        f"{row['warmup_steps']} | {row['status']} | "
        f"{_pct(as_float(row['val_accuracy']))} | {row['last_batch_loss']} | "
        f"{row['examples_per_sec']} | {row['wall_time_s']} |")
  return lines + [""]


def _pilot_rule_lines(rows) -> list[str]:
  """The rule: the better worst case over the rule runs, then the better mean."""
  rule_runs = set(design.PILOT_RULE_RUNS)
  scores: dict[str, list[float]] = {"adapted": [], "excluded": []}
  for row in rows:
    spec = (MODEL_BY_BATCH_NORM.get(row["batch_norm"]), row["optimizer"],
            int(row["batch_size"]), float(row["learning_rate"]))
    if spec in rule_runs and float(row["epochs"]) == design.PILOT_EPOCHS:
      scores[row["bias_and_norm"]].append(accuracy_or_chance(row, "val_accuracy"))
  n_expected = len(design.PILOT_RULE_RUNS)
  if not all(len(v) == n_expected for v in scores.values()):
    return ["Rule comparison incomplete: "
            f"{sum(len(v) for v in scores.values())} of {2 * n_expected} runs.", ""]
  summary = {k: (min(v), sum(v) / len(v)) for k, v in scores.items()}
  a, e = summary["adapted"], summary["excluded"]
  if abs(a[0] - e[0]) > POINT:
    choice = "adapted" if a[0] > e[0] else "excluded"
    why = "its worst run is more than 1 point better"
  else:
    choice = "adapted" if a[1] > e[1] else "excluded"
    why = "worst runs within 1 point; its mean is higher"
  return [f"Rule runs, validation accuracy worst / mean: adapted "
          f"{_pct(a[0])} / {_pct(a[1])} %, excluded {_pct(e[0])} / "
          f"{_pct(e[1])} %. Recommended rule: **{choice}** ({why}); set "
          "`EXCLUDE_BIAS_AND_NORM = "
          f"{choice == 'excluded'}` in experiments/configs/large_batch.py.", ""]


def _design_runs() -> list[Run]:
  """Every run of the first study's design, without edge extensions (for
  timing: their batch sizes and epochs)."""
  runs = []
  for model in design.MODELS:
    for b in design.BATCH_SIZES[model]:
      n = len(design.LARS_LEARNING_RATES) + len(design.SGD_SCALE_FACTORS)
      if b >= design.SEEDS_FROM_BATCH_SIZE:
        n += len(design.OPTIMIZERS) * (len(design.SEEDS) - 1)
      if b == design.ABLATION_BATCH_SIZE:
        n += len(design.OPTIMIZERS) * len(design.SEEDS)
      runs += [Run(model, "lars", b, 1.0)] * n
  return runs


def _pilot_estimate_lines(rows) -> list[str]:
  """The full study's wall time from the pilot's measured speed."""
  time_model = TimeModel(rows)
  if not time_model.throughput:
    return []
  counts = _expected_runs(plan_study([], rule=design.EXCLUDE_BIAS_AND_NORM))
  runs = _design_runs()
  seconds = sum(time_model.seconds(run) for run in runs)
  speeds = ", ".join(f"{eps:.0f} at batch {b}"
                     for b, eps in time_model.throughput.items())
  return [
      f"Measured training speed (examples/s, quarter-epoch validation "
      f"included): {speeds}; per run about {time_model.setup_s:.0f} s of "
      "set-up, compilation and final evaluation.",
      f"Estimated full study ({len(runs)} runs without edge "
      f"extensions: {counts['grid']} grid, {counts['seed']} seed, "
      f"{counts['ablation']} ablation): about {seconds / 3600:.1f} h on "
      f"{rows[0]['device']}, each edge extension adding its runs "
      "(2 per affected batch).", ""]


def summarize_pilot(path: str) -> str:
  """Writes large_batch_pilot.md next to the pilot CSV; returns its text."""
  rows = read_rows(path)
  lines = ["# Large-batch study: pilot", "",
           "Written by `python -m experiments.study.run --pilot`. Short runs "
           f"({design.PILOT_EPOCHS:g} epochs) of both bias/normalisation rules "
           "where they differ most, and one-epoch runs for the wall-time "
           "estimate.", ""]
  lines += _pilot_table(rows) + _pilot_rule_lines(rows)
  lines += _pilot_estimate_lines(rows)
  text = "\n".join(lines)
  with open(os.path.join(os.path.dirname(os.path.abspath(path)),
                         "large_batch_pilot.md"), "w") as f:
    f.write(text)
  return text
