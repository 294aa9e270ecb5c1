r"""The large-batch study's summary: claim test, steps to target, plots, pilot report.

``python -m experiments.large_batch --summarize`` (and ``--pilot``) call
``summarize`` / ``summarize_pilot``; both read only the CSV, so they work on a
partial study and say what is missing. The claim test and steps to target are
defined in ``experiments/large_batch.py``'s docstring.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence

from experiments import large_batch as lb
from experiments.configs import large_batch as study
from experiments.large_batch import Plan, Run, plan_study, read_rows, row_key

SUMMARY = "large_batch_summary.md"
PLOTS = ("large_batch_test_accuracy.png", "large_batch_steps_to_target.png",
         "large_batch_learning_rates.png")
POINT = 0.01  # one percentage point of accuracy
TARGET_BELOW_R = 1.5 * POINT


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
  what is left of the rows' wall time.
  """

  def __init__(self, rows: Iterable[Mapping[str, str]]):
    by_batch: dict[int, list[float]] = {}
    setup = []
    for row in rows:
      eps = _float(row["examples_per_sec"])
      if (row["status"] != "ok" or not math.isfinite(eps)
          or row["resumed_from_step"] not in ("", "0")):
        continue
      batch, steps = int(row["batch_size"]), int(row["steps"])
      by_batch.setdefault(batch, []).append(eps)
      setup.append(_float(row["wall_time_s"]) - steps * batch / eps)
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
    steps = study.num_steps(run.batch_size, run.epochs)
    return self.setup_s + steps * run.batch_size / self.examples_per_sec(
        run.batch_size)


def _median(values: Sequence[float]) -> float:
  values = sorted(values)
  n = len(values)
  return (values[(n - 1) // 2] + values[n // 2]) / 2


def _expected_runs(plan: Plan) -> dict[str, int]:
  """Runs per phase, done or not, as far as the plan knows them."""
  counts = {"grid": 0, "seed": 0, "ablation": 0}
  for run in plan.runs:
    counts[run.phase] += 1
  for phase, n in plan.undefined.items():
    counts[phase] += n
  return counts


# --------------------------------------------------------------------------
# The summary: verdict, steps to target, plots.
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Cell:
  """The selected configuration of (model, batch, optimizer), over its seeds."""

  learning_rate: float
  test: list[float]
  val: list[float]
  train_loss: list[float]
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


def _float(value: str) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def selected_cells(rows: Sequence[Mapping[str, str]], plan: Plan, *,
                   warmup_fraction: float = study.WARMUP_FRACTION,
                   rule: bool = study.EXCLUDE_BIAS_AND_NORM
                   ) -> dict[tuple[str, int, str], Cell]:
  """(model, batch, optimizer) -> its selected configuration's seeds."""
  by_key = {row_key(r): r for r in rows}
  cells = {}
  for (model, batch_size), chosen in plan.selected.items():
    for optimizer, lr in chosen.items():
      cell = Cell(lr, [], [], [])
      for seed in study.SEEDS:
        row = by_key.get(Run(model, optimizer, batch_size, lr, seed,
                             warmup_fraction=warmup_fraction,
                             exclude_bias_and_norm=rule).key())
        if row is None:
          continue
        # A diverged seed counts as chance accuracy (10 classes).
        test = _float(row["test_accuracy"])
        cell.test.append(0.1 if math.isnan(test) else test)
        cell.val.append(_float(row["val_accuracy"]))
        cell.train_loss.append(_float(row["train_loss"]))
        cell.reference_learning_rate = _float(row["reference_learning_rate"])
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
  ref = study.REFERENCE_BATCH_SIZE
  if not all((model, ref, o) in cells and cells[(model, ref, o)].n
             for o in study.OPTIMIZERS):
    return math.nan, []
  r = max(cells[(model, ref, o)].mean for o in study.OPTIMIZERS)
  verdicts = []
  for batch_size in sorted(study.BATCH_SIZES[model]):
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
                    *, rule: bool = study.EXCLUDE_BIAS_AND_NORM
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


def _progress_lines(rows, plan: Plan, pilot_rows) -> list[str]:
  """Runs finished and missing per phase, with the time the missing ones need."""
  done = {row_key(r) for r in rows}
  expected = _expected_runs(plan)
  finished = {"grid": 0, "seed": 0, "ablation": 0}
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
    # The speed measured so far, the pilot's included.
    time_model = TimeModel(list(rows) + list(pilot_rows))
    hours = sum(time_model.seconds(run) for run in remaining) / 3600
    lines += ["", f"Missing: {len(remaining)} defined runs"
              + (f" (about {hours:.1f} h at the speed measured so far)"
                 if math.isfinite(hours) else "")
              + f", and {sum(plan.undefined.values())} runs that wait for "
              "them (SGD grids wait for batch 128's grid; seeds and the "
              "ablation for the grid they select from)."]
    pending = sorted({(run.model, run.batch_size, run.phase) for run in remaining},
                     key=lambda t: (t[2] != "grid", t[0], t[1]))
    lines.append("Pending: " + ", ".join(
        f"{m}/{b} {p}" for m, b, p in pending) + ".")
  else:
    lines += ["", "Every planned run is finished."]
  edges = [f"{m}/{b}" for (m, b), (lo, hi) in plan.extensions.items()
           if (lo or hi) and (m, b) in plan.selected]
  at_edge = [f"{m}/{b} {o}" for (m, b), chosen in plan.selected.items()
             for o, lr in chosen.items()
             if lr in (plan.grids[(m, b)][o][0], plan.grids[(m, b)][o][-1])]
  if edges:
    lines.append("Grids extended at an edge: " + ", ".join(edges) + ".")
  if at_edge:
    lines.append("Selected learning rate still at the grid's edge (extension "
                 "cap reached): " + ", ".join(at_edge) + ".")
  return lines + [""]


def _expected_seeds(batch_size: int) -> int:
  return len(study.SEEDS) if batch_size >= study.SEEDS_FROM_BATCH_SIZE else 1


def _verdict_lines(model: str, cells, r: float,
                   verdicts: Sequence[Verdict]) -> list[str]:
  """One model's verdict table and its outcome line."""
  spec = study.MODELS[model]
  lines = [f"### Model {model} ({spec['model']}, batch norm: "
           f"{spec['batch_norm']})", "",
           "| batch | LARS test | SGD test | SGD lr / linearly scaled | "
           "train loss LARS / SGD | G_LARS | G_SGD | G_SGD - G_LARS | needed "
           "| holds |", "| --- |" + " --- |" * 9]
  by_batch = {v.batch_size: v for v in verdicts}
  for batch_size in sorted(study.BATCH_SIZES[model]):
    expected_seeds = _expected_seeds(batch_size)
    lars = cells.get((model, batch_size, "lars"))
    sgd = cells.get((model, batch_size, "sgd"))
    ratio = "–"
    if sgd is not None and math.isfinite(sgd.reference_learning_rate):
      ratio = f"{sgd.learning_rate / sgd.reference_learning_rate:.3g}"
    losses = " / ".join(
        f"{sum(c.train_loss) / c.n:.3f}" if c is not None and c.n else "–"
        for c in (lars, sgd))
    v = by_batch.get(batch_size)
    if batch_size == study.REFERENCE_BATCH_SIZE:
      cols = [f"R = {_pct(r)}", "", "", "", "reference"]
    elif v is None:
      cols = ["", "", "", "", "pending"]
    else:
      provisional = min(v.seeds) < expected_seeds
      cols = [_pct(v.gap_lars), _pct(v.gap_sgd), _pct(v.difference),
              _pct(v.needed),
              ("yes" if v.holds else "no") + (" (provisional)" if provisional
                                              else "")]
    lines.append(f"| {batch_size} | {_cell_text(lars, expected_seeds)} | "
                 f"{_cell_text(sgd, expected_seeds)} | {ratio} | {losses} | "
                 + " | ".join(cols) + " |")
  holding = [v.batch_size for v in verdicts if v.holds]
  complete = len(verdicts) == len(study.BATCH_SIZES[model]) - 1 and all(
      min(v.seeds) >= _expected_seeds(v.batch_size) for v in verdicts)
  if math.isnan(r):
    outcome = "R is not known yet (batch 128's grid is incomplete)."
  elif holding:
    outcome = (f"Largest batch where the claim holds: {max(holding)} "
               f"(holds at {', '.join(str(b) for b in sorted(holding))}).")
  else:
    outcome = "The claim holds nowhere."
  if not math.isnan(r) and not complete:
    outcome += " Provisional: some batches or seeds are still missing."
  return lines + ["", outcome, ""]


def _steps_lines(rows, plan: Plan, model: str, r: float, rule: bool,
                 steps_table: dict) -> list[str]:
  """One model's steps-to-target table; fills ``steps_table`` for the plot."""
  lines = [f"Model {model}: target "
           + (f"{_pct(r - TARGET_BELOW_R)} %" if not math.isnan(r) else "pending")
           + ".", "", "| batch | LARS steps (lr) | SGD steps (lr) |",
           "| --- | --- | --- |"]
  for batch_size in sorted(study.BATCH_SIZES[model]):
    cols = []
    for optimizer in study.OPTIMIZERS:
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
                            warmup_fraction=study.ABLATION_WARMUP_FRACTION)
  short = f"{study.WARMUP_FRACTION:.0%}"
  long = f"{study.ABLATION_WARMUP_FRACTION:.0%}"
  lines = [f"## Warm-up ablation at batch {study.ABLATION_BATCH_SIZE}", "",
           f"Test accuracy at the selected learning rate with warm-up {short} "
           f"vs {long} of the steps.", "",
           f"| model | optimizer | warm-up {short} | warm-up {long} |",
           "| --- | --- | --- | --- |"]
  for model in study.MODELS:
    for optimizer in study.OPTIMIZERS:
      key = (model, study.ABLATION_BATCH_SIZE, optimizer)
      lines.append(f"| {model} | {optimizer} | "
                   f"{_cell_text(cells.get(key), len(study.SEEDS))} | "
                   f"{_cell_text(ablation.get(key), len(study.SEEDS))} |")
  return lines + [""]


def summarize(path: str, *, rule: bool = study.EXCLUDE_BIAS_AND_NORM,
              plots: bool = True) -> str:
  """Writes large_batch_summary.md (+ PNGs) next to the CSV; returns its text."""
  all_rows = read_rows(path)
  rows = [r for r in all_rows if r["bias_and_norm"] == lb.rule_name(rule)]
  plan = plan_study(rows, rule=rule)
  cells = selected_cells(rows, plan, rule=rule)
  lines = [
      "# Large-batch study: summary",
      "",
      "Written by `python -m experiments.large_batch --summarize` from "
      f"`{os.path.basename(path)}`; design: `experiments/configs/large_batch.py`."
      f" Biases and normalisation parameters: {lb.rule_name(rule)}.",
      "Accuracies in %; ± is the standard error over seeds; lr is the peak "
      "learning rate selected on validation accuracy (seed 0).",
      "",
  ]
  if len(rows) < len(all_rows):
    lines += [f"({len(all_rows) - len(rows)} rows with the other bias/"
              "normalisation rule are ignored.)", ""]
  lines += _progress_lines(rows, plan, read_rows(lb.pilot_path(path)))

  lines += ["## The claim test", "",
            "R = the higher mean test accuracy of the two optimizers at batch "
            f"{study.REFERENCE_BATCH_SIZE}; G = R - accuracy. The claim holds at "
            "B when G_LARS <= 1 point and G_SGD - G_LARS >= max(1 point, 2 SE), "
            "SE = sqrt(SE_LARS^2 + SE_SGD^2).", ""]
  verdict_by_model = {model: claim_test(cells, model) for model in study.MODELS}
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
    _plot(rows, plan, cells, verdict_by_model, steps_table, out_dir, rule)
  return text


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
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _plot(rows, plan: Plan, cells, verdict_by_model, steps_table,
          out_dir: str, rule: bool) -> None:
  """The study's three figures: accuracy, steps to target, LR sensitivity."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  models = list(study.MODELS)
  colors = {"lars": "tab:blue", "sgd": "tab:orange"}

  # 1. Test accuracy at the selected learning rate against batch size.
  fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4),
                           squeeze=False)
  for ax, model in zip(axes[0], models):
    r = verdict_by_model[model][0]
    for optimizer in study.OPTIMIZERS:
      xs, ys, es = [], [], []
      for b in sorted(study.BATCH_SIZES[model]):
        cell = cells.get((model, b, optimizer))
        if cell is not None and cell.n:
          xs.append(b)
          ys.append(100 * cell.mean)
          es.append(100 * cell.standard_error)
      if xs:
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=optimizer,
                    color=colors[optimizer])
    if not math.isnan(r):
      ax.axhline(100 * r, color="gray", linestyle=":", label="R")
      ax.axhline(100 * (r - POINT), color="gray", linestyle="--",
                 linewidth=0.8, label="R - 1 point")
    _batch_axis(ax, sorted(study.BATCH_SIZES[model]))
    ax.set(xlabel="global batch size", ylabel="test accuracy (%)",
           title=f"model {model} (batch norm: {study.MODELS[model]['batch_norm']})")
    _grid_and_legend(ax)
  _save(fig, os.path.join(out_dir, PLOTS[0]))

  # 2. Steps to target against batch size.
  fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4),
                           squeeze=False)
  for ax, model in zip(axes[0], models):
    for optimizer in study.OPTIMIZERS:
      points = [(b, steps_table.get((model, b, optimizer)))
                for b in sorted(study.BATCH_SIZES[model])]
      points = [(b, s) for b, s in points if s is not None]
      if points:
        ax.plot(*zip(*points), marker="o", label=optimizer,
                color=colors[optimizer])
    _batch_axis(ax, sorted(study.BATCH_SIZES[model]))
    ax.set_yscale("log")
    ax.set(xlabel="global batch size", ylabel="steps to R - 1.5 points (val)",
           title=f"model {model}")
    _grid_and_legend(ax)
  _save(fig, os.path.join(out_dir, PLOTS[1]))

  # 3. Validation accuracy against learning rate, one line per batch.
  by_key = {row_key(r): r for r in rows}
  fig, axes = plt.subplots(len(models), len(study.OPTIMIZERS),
                           figsize=(6 * len(study.OPTIMIZERS), 3.8 * len(models)),
                           squeeze=False)
  cmap = plt.get_cmap("viridis")
  for i, model in enumerate(models):
    batches = sorted(study.BATCH_SIZES[model])
    for j, optimizer in enumerate(study.OPTIMIZERS):
      ax = axes[i][j]
      for k, b in enumerate(batches):
        xs, ys = [], []
        for lr in plan.grids.get((model, b), {}).get(optimizer, []):
          row = by_key.get(Run(model, optimizer, b, lr,
                               exclude_bias_and_norm=rule).key())
          if row is not None:
            xs.append(lr)
            ys.append(100 * max(_float(row["val_accuracy"]), 0.0)
                      if not math.isnan(_float(row["val_accuracy"])) else 10.0)
        if xs:
          color = cmap(k / max(len(batches) - 1, 1))
          ax.plot(xs, ys, marker="o", color=color, label=str(b))
          chosen = plan.selected.get((model, b), {}).get(optimizer)
          if chosen in xs:
            ax.plot([chosen], [ys[xs.index(chosen)]], marker="*", markersize=14,
                    color=color)
      ax.set_xscale("log", base=2)
      ax.set(xlabel="peak learning rate" + (" (gamma)" if optimizer == "lars" else ""),
             ylabel="validation accuracy (%)",
             title=f"model {model}, {optimizer} (star: selected; diverged: at 10 %)")
      _grid_and_legend(ax, title="batch", fontsize=7)
  _save(fig, os.path.join(out_dir, PLOTS[2]))


# --------------------------------------------------------------------------
# The pilot.
# --------------------------------------------------------------------------


def summarize_pilot(path: str) -> str:
  """Writes large_batch_pilot.md next to the pilot CSV; returns its text."""
  rows = read_rows(path)
  lines = ["# Large-batch study: pilot", "",
           "Written by `python -m experiments.large_batch --pilot`. Short runs "
           f"({study.PILOT_EPOCHS:g} epochs) of both bias/normalisation rules "
           "where they differ most, and one-epoch runs for the wall-time "
           "estimate.", "",
           "| model | optimizer | batch | lr | biases & norm | steps | warm-up "
           "| status | val acc | train loss | examples/s | wall s |",
           "| --- |" + " --- |" * 11]
  for row in rows:
    model = lb.MODEL_BY_BATCH_NORM.get(row["batch_norm"], row["batch_norm"])
    lines.append(
        f"| {model} | {row['optimizer']} | {row['batch_size']} | "
        f"{row['learning_rate']} | {row['bias_and_norm']} | {row['steps']} | "
        f"{row['warmup_steps']} | {row['status']} | {_pct(_float(row['val_accuracy']))}"
        f" | {row['train_loss']} | {row['examples_per_sec']} | {row['wall_time_s']} |")
  lines.append("")

  # The rule: the better worst case over the rule runs, then the better mean.
  rule_runs = {(m, o, b, lr) for m, o, b, lr in study.PILOT_RULE_RUNS}
  scores: dict[str, list[float]] = {"adapted": [], "excluded": []}
  for row in rows:
    model = lb.MODEL_BY_BATCH_NORM.get(row["batch_norm"])
    spec = (model, row["optimizer"], int(row["batch_size"]),
            float(row["learning_rate"]))
    if spec in rule_runs and float(row["epochs"]) == study.PILOT_EPOCHS:
      accuracy = _float(row["val_accuracy"])
      scores[row["bias_and_norm"]].append(0.0 if math.isnan(accuracy) else accuracy)
  n_expected = len(study.PILOT_RULE_RUNS)
  if all(len(v) == n_expected for v in scores.values()):
    summary = {k: (min(v), sum(v) / len(v)) for k, v in scores.items()}
    a, e = summary["adapted"], summary["excluded"]
    if abs(a[0] - e[0]) > POINT:
      choice = "adapted" if a[0] > e[0] else "excluded"
      why = "its worst run is more than 1 point better"
    else:
      choice = "adapted" if a[1] > e[1] else "excluded"
      why = "worst runs within 1 point; its mean is higher"
    lines += [f"Rule runs, validation accuracy worst / mean: adapted "
              f"{_pct(a[0])} / {_pct(a[1])} %, excluded {_pct(e[0])} / "
              f"{_pct(e[1])} %. Recommended rule: **{choice}** ({why}); set "
              "`EXCLUDE_BIAS_AND_NORM = "
              f"{choice == 'excluded'}` in experiments/configs/large_batch.py.", ""]
  else:
    lines += ["Rule comparison incomplete: "
              f"{sum(len(v) for v in scores.values())} of {2 * n_expected} runs.", ""]

  # Wall-time estimate of the full study from the measured speed.
  time_model = TimeModel(rows)
  if time_model.throughput:
    full_rule = study.EXCLUDE_BIAS_AND_NORM
    plan = plan_study([], rule=full_rule)
    counts = _expected_runs(plan)
    # Grid runs not yet defined are SGD runs at the larger batches; estimate
    # every planned run from the grid's design.
    estimate_runs = []
    for model in study.MODELS:
      for b in study.BATCH_SIZES[model]:
        n = len(study.LARS_LEARNING_RATES) + len(study.SGD_SCALE_FACTORS)
        if b >= study.SEEDS_FROM_BATCH_SIZE:
          n += len(study.OPTIMIZERS) * (len(study.SEEDS) - 1)
        if b == study.ABLATION_BATCH_SIZE:
          n += len(study.OPTIMIZERS) * len(study.SEEDS)
        estimate_runs += [Run(model, "lars", b, 1.0)] * n
    seconds = sum(time_model.seconds(run) for run in estimate_runs)
    speeds = ", ".join(f"{eps:.0f} at batch {b}"
                       for b, eps in time_model.throughput.items())
    lines += [
        f"Measured training speed (examples/s, quarter-epoch validation "
        f"included): {speeds}; per run about {time_model.setup_s:.0f} s of "
        "set-up, compilation and final evaluation.",
        f"Estimated full study ({len(estimate_runs)} runs without edge "
        f"extensions: {counts['grid']} grid, {counts['seed']} seed, "
        f"{counts['ablation']} ablation): about {seconds / 3600:.1f} h on "
        f"{rows[0]['device']}, each edge extension adding its runs "
        "(2 per affected batch).", ""]
  text = "\n".join(lines)
  with open(os.path.join(os.path.dirname(os.path.abspath(path)),
                         "large_batch_pilot.md"), "w") as f:
    f.write(text)
  return text
