"""The studies' report: selected cells, the claim test, steps to target, the summary.

``summarize(path)`` (``python -m experiments.study.run --summarize``) reads
only the CSV, complete or not, plans as the driver does, and writes
large_batch_summary.md and the plots (plots.py) beside it. The claim test,
the decision rules and steps to target are defined in docs/study_design.md.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from experiments.study import design
from experiments.study import plots as study_plots
from experiments.study.plan import (Plan, Run, accuracy_or_chance, as_first_run, as_float,
                                    plan_baseline, plan_budget, plan_ratio, plan_study,
                                    read_rows, row_key, rule_name)

SUMMARY, PLOTS = "large_batch_summary.md", study_plots.PLOTS
POINT = study_plots.POINT  # one percentage point of accuracy
TARGET_BELOW_R = 1.5 * POINT


@dataclasses.dataclass
class Cell:
  """The selected configuration of (model, batch, optimizer), over its seeds."""

  learning_rate: float
  test: list[float]
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
    if self.n < 2:
      return 0.0 if self.n else math.nan
    return math.sqrt(sum((x - self.mean) ** 2 for x in self.test) / (self.n - 1) / self.n)


def selected_cells(rows: Sequence[Mapping[str, str]], plan: Plan, *,
                   warmup_fraction: float | None = None,
                   point: Callable[[Run], tuple] = lambda run: (run.model, run.batch_size)
                   ) -> dict[tuple, Cell]:
  """(*point, optimizer) -> the finished seeds of ``plan``'s runs at the
  point's selected learning rate and warm-up (``warmup_fraction``, else the
  plan's selected one, else the design's)."""
  by_key = {row_key(r): r for r in rows}
  cells: dict[tuple, Cell] = {}
  for run in plan.runs:
    warmup = warmup_fraction
    if warmup is None:
      warmup = plan.warmups.get(point(run), {}).get(run.optimizer, design.WARMUP_FRACTION)
    if (run.learning_rate != plan.selected.get(point(run), {}).get(run.optimizer)
        or run.warmup_fraction != warmup):
      continue
    cell = cells.setdefault((*point(run), run.optimizer),
                            Cell(run.learning_rate, [], [], warmup_fraction=warmup))
    if (row := by_key.get(run.key())) is not None:
      cell.test.append(accuracy_or_chance(row, "test_accuracy"))
      cell.last_batch_loss.append(as_float(row["last_batch_loss"]))
      cell.reference_learning_rate = as_float(row["reference_learning_rate"])
  return cells


def ratio_cells(rows, plan: Plan) -> dict[tuple[float, str], Cell]:
  """Study 3: (epochs, arm) -> the finished seeds at the arm's selection."""
  cells = selected_cells(rows, plan, point=lambda run: (run.model, run.batch_size, run.epochs))
  return {(epochs, arm): cell for (_, _, epochs, arm), cell in cells.items()}


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
    """G_baseline - G >= max(1 point, 2 SE) (Q1: SGD's loss is not only starvation)."""
    return self.difference >= self.needed - 1e-12

  @property
  def holds(self) -> bool:
    return self.within_point and self.separated


def reference_accuracy(cells: Mapping[tuple, Cell], model: str) -> float:
  """R: the higher of the two optimizers' mean test accuracy at batch 128
  (NaN until both have a finished run there)."""
  at_reference = [cells.get((model, design.REFERENCE_BATCH_SIZE, o)) for o in design.OPTIMIZERS]
  if not all(c is not None and c.n for c in at_reference):
    return math.nan
  return max(c.mean for c in at_reference if c is not None)


def claim_test(cells: Mapping[tuple, Cell], model: str, *, r: float | None = None,
               optimizer: str = "lars", baseline: str = "sgd") -> tuple[float, list[Verdict]]:
  """R and the claim at each batch of ``model`` where ``optimizer`` and
  ``baseline`` both have a finished run; ``r`` defaults to R of ``cells``."""
  r = reference_accuracy(cells, model) if r is None else r
  verdicts = []
  for b in sorted({b for m, b, _ in cells if m == model} - {design.REFERENCE_BATCH_SIZE}):
    tested, base = cells.get((model, b, optimizer)), cells.get((model, b, baseline))
    if math.isnan(r) or tested is None or base is None or not tested.n or not base.n:
      continue
    gap, baseline_gap = r - tested.mean, r - base.mean
    se = math.sqrt(tested.standard_error**2 + base.standard_error**2)
    verdicts.append(Verdict(b, gap, baseline_gap, baseline_gap - gap, se,
                            max(POINT, 2 * se), (tested.n, base.n)))
  return r, verdicts


def ratio_verdicts(cells: Mapping[tuple[float, str], Cell], epochs: float) -> dict[str, Verdict]:
  """Study 3: LARS against each other arm at ``epochs``: its lead and what it needs."""
  model, b = design.RATIO_POINT
  by_arm = {(model, b, arm): c for (e, arm), c in cells.items() if e == epochs}
  return {arm: v for arm in design.RATIO_ARMS[1:]
          for v in claim_test(by_arm, model, r=0.0, baseline=arm)[1]}


def _first_reaching(row: Mapping[str, str] | None, target: float) -> int | None:
  """The first logged step of ``row``'s validation curve at ``target`` or above."""
  curve = json.loads(row["val_curve"] or "[]") if row is not None else []
  return next((int(s) for s, a in curve if a >= target - 1e-12), None)


def steps_to_target(rows: Sequence[Mapping[str, str]], plan: Plan, target: float,
                    model: str, batch_size: int, optimizer: str
                    ) -> tuple[int | None, float | None]:
  """Fewest steps of any seed-0 grid run to validation accuracy >= target,
  and that run's learning rate (the lowest on a tie); (None, None) if none."""
  by_key = {row_key(r): r for r in rows}
  reached = [(steps, run.learning_rate)
             for run in plan.grid_runs(model, batch_size, optimizer)
             if (steps := _first_reaching(by_key.get(run.key()), target)) is not None]
  return min(reached) if reached else (None, None)


# The summary's text: every table goes through _table, every verdict through _gap_columns.


def _pct(x: float) -> str:
  return "–" if math.isnan(x) else f"{100 * x:.2f}"


def _table(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
          *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def _cell_text(cell: Cell | None, expected_seeds: int, *, warmup: bool = False) -> str:
  if cell is None or not cell.n:
    return "pending" + ("" if cell is None else f" (lr {cell.learning_rate:g})")
  text = _pct(cell.mean) + (f" ± {_pct(cell.standard_error)}" if cell.n > 1 else "")
  text += f" (lr {cell.learning_rate:g}" + (f", warm-up {cell.warmup_fraction:.0%}" * warmup)
  return text + f", n={cell.n}" + (f" of {expected_seeds}" * (cell.n < expected_seeds)) + ")"


def _expected_seeds(batch_size: int) -> int:
  return len(design.SEEDS) if batch_size >= design.SEEDS_FROM_BATCH_SIZE else 1


def _yes(answer: bool) -> str:
  return "yes" if answer else "no"


def _gap_columns(r: float, r_name: str, batch_size: int, verdict: Verdict | None,
                 answers: Sequence[str]) -> list[str]:
  """G, G of the baseline, their difference, what it needs, and the
  ``answers`` (Verdict properties) as yes/no."""
  if batch_size == design.REFERENCE_BATCH_SIZE:
    return [f"{r_name} = {_pct(r)}", "", "", "", "reference"] + [""] * (len(answers) - 1)
  if verdict is None:
    return ["", "", "", ""] + ["pending"] * len(answers)
  provisional = " (provisional)" * (min(verdict.seeds) < _expected_seeds(batch_size))
  return [_pct(verdict.gap), _pct(verdict.baseline_gap), _pct(verdict.difference),
          _pct(verdict.needed), *(_yes(getattr(verdict, a)) + provisional for a in answers)]


def _progress_lines(title: str, rows, runs: Sequence[Run], undefined: Mapping[str, int],
                    phases: Sequence[str], why: str) -> list[str]:
  """Per phase, "n of m finished"; which runs are missing and where."""
  done = {row_key(r) for r in rows}
  planned = collections.Counter(run.phase for run in runs) + collections.Counter(undefined)
  finished = collections.Counter(run.phase for run in runs if run.key() in done)
  remaining = [run for run in runs if run.key() not in done]
  lines = [title, "", *_table(("phase", "runs"), (
      (p, f"{finished[p]} of {planned[p]} finished ({undefined.get(p, 0)} not yet defined)")
      for p in phases)), ""]
  if not remaining:
    return lines + ["Every planned run is finished."]
  pending = dict.fromkeys(f"{run.model}/{run.batch_size} {run.phase}" for run in remaining)
  return lines + [f"Missing: {len(remaining)} defined runs, and "
                  f"{sum(undefined.values())} runs that wait for them ({why}).",
                  "Pending, in run order: " + ", ".join(pending) + "."]


def _edge_lines(plan: Plan, what: str, third: str = " warm-up {:.0%}") -> list[str]:
  """Grids of ``what`` extended at an edge, and selections still at an edge;
  ``third`` names a grid key's third element (Q2's warm-up, study 3's epochs)."""

  def label(key) -> str:
    return f"{key[0]}/{key[1]}" + (third.format(key[2]) if len(key) > 2 else "")

  edges = [label(key) for key, (lo, hi) in plan.extensions.items() if lo or hi]
  at_edge = []
  for point, chosen in plan.selected.items():
    for optimizer, lr in chosen.items():
      key = point if point in plan.grids else (*point, plan.warmups[point][optimizer])
      if lr in (plan.grids[key][optimizer][0], plan.grids[key][optimizer][-1]):
        at_edge.append(f"{label(key)} {optimizer}")
  return ([f"{what}: grids extended at an edge: " + ", ".join(edges) + "."] * bool(edges)
          + [f"{what}: selected learning rate still at the grid's edge (extension cap "
             "reached): " + ", ".join(at_edge) + "."] * bool(at_edge))


def _model_heading(model: str) -> str:
  spec = design.MODELS[model]
  return f"### Model {model} ({spec['model']}, batch norm: {spec['batch_norm']})"


def _pair_table(model: str, batch_sizes, cells, r: float, r_name: str,
                verdicts: Sequence[Verdict], header: Sequence[str],
                answers: Sequence[str], details: bool) -> list[str]:
  """A verdict table of LARS against SGD, a row per batch (``details``:
  SGD's learning rate against the linearly scaled one, last-minibatch losses)."""
  by_batch, rows = {v.batch_size: v for v in verdicts}, []
  for b in sorted(batch_sizes):
    pair = [cells.get((model, b, o)) for o in design.OPTIMIZERS]
    sgd, extra = pair[1], []
    if details:
      scaled = sgd is not None and math.isfinite(sgd.reference_learning_rate)
      extra = [f"{sgd.learning_rate / sgd.reference_learning_rate:.3g}" if scaled else "–",
               " / ".join(f"{sum(c.last_batch_loss) / c.n:.3f}" if c is not None and c.n
                          else "–" for c in pair)]
    rows.append([b, *(_cell_text(c, _expected_seeds(b)) for c in pair), *extra,
                 *_gap_columns(r, r_name, b, by_batch.get(b), answers)])
  return [_model_heading(model), "", *_table(header, rows), ""]


def _outcome(model: str, r: float, verdicts: Sequence[Verdict]) -> str:
  """The largest batch where the claim holds, and whether that is final."""
  if math.isnan(r):
    return "R is not known yet (batch 128's grid is incomplete)."
  holding = [v.batch_size for v in verdicts if v.holds]
  complete = len(verdicts) == len(design.BATCH_SIZES[model]) - 1 and all(
      min(v.seeds) >= _expected_seeds(v.batch_size) for v in verdicts)
  outcome = (f"Largest batch where the claim holds: {max(holding)} (holds at "
             f"{', '.join(map(str, sorted(holding)))})." if holding else
             "The claim holds nowhere.")
  return outcome + " Provisional: some batches or seeds are still missing." * (not complete)


def _steps_lines(rows, plan: Plan, model: str, r: float, batch_sizes: Iterable[int],
                 steps_table: dict) -> list[str]:
  """One model's steps to target (r - 1.5 points); fills ``steps_table``."""
  table = []
  for b in sorted(batch_sizes):
    cols = []
    for optimizer in design.OPTIMIZERS:
      if math.isnan(r) or (model, b) not in plan.selected:
        cols.append("pending")
        continue
      steps, lr = steps_to_target(rows, plan, r - TARGET_BELOW_R, model, b, optimizer)
      steps_table[(model, b, optimizer)] = steps
      cols.append("not reached" if steps is None else f"{steps} ({lr:g})")
    table.append([b, *cols])
  target = "pending" if math.isnan(r) else f"{_pct(r - TARGET_BELOW_R)} %"
  return [f"Model {model}: target {target}.", "",
          *_table(("batch", "LARS steps (lr)", "SGD steps (lr)"), table), ""]


def _study1_lines(rows, plan: Plan, cells, r: Mapping[str, float],
                  steps_table: dict) -> list[str]:
  """Study 1's progress, claim test, steps to target and warm-up ablation."""
  lines = _progress_lines(
      "## Progress", rows, plan.runs, plan.undefined, ("grid", "seed", "ablation"),
      "SGD grids wait for batch 128's grid; seeds and the ablation for the grid "
      "they select from") + _edge_lines(plan, "Study 1")
  lines += ["", "## The claim test", "",
            "R = the higher mean test accuracy of the two optimizers at batch "
            f"{design.REFERENCE_BATCH_SIZE}; G = R - accuracy. The claim holds at "
            "B when G_LARS <= 1 point and G_SGD - G_LARS >= max(1 point, 2 SE), "
            "SE = sqrt(SE_LARS^2 + SE_SGD^2). Last-minibatch loss: the loss of "
            "the last logged training minibatch, mean over seeds (one batch, not "
            "the loss over the training split).", ""]
  header = ("batch", "LARS test", "SGD test", "SGD lr / linearly scaled",
            "last-minibatch loss LARS / SGD", "G_LARS", "G_SGD", "G_SGD - G_LARS",
            "needed", "holds")
  for model in design.MODELS:
    _, verdicts = claim_test(cells, model)
    lines += _pair_table(model, design.BATCH_SIZES[model], cells, r[model], "R", verdicts,
                         header, ("holds",), True) + [_outcome(model, r[model], verdicts), ""]
  lines += ["## Steps to target", "",
            "Fewest steps of any seed-0 run of the grid to reach validation "
            "accuracy R - 1.5 points (validation every quarter epoch; "
            "\"not reached\" within 20 epochs).", ""]
  for model in design.MODELS:
    lines += _steps_lines(rows, plan, model, r[model], design.BATCH_SIZES[model], steps_table)
  ablation = selected_cells(rows, plan, warmup_fraction=design.ABLATION_WARMUP_FRACTION)
  short, long = f"{design.WARMUP_FRACTION:.0%}", f"{design.ABLATION_WARMUP_FRACTION:.0%}"
  return lines + [
      f"## Warm-up ablation at batch {design.ABLATION_BATCH_SIZE}", "",
      f"Test accuracy at the selected learning rate with warm-up {short} vs {long} "
      "of the steps.", "",
      *_table(("model", "optimizer", f"warm-up {short}", f"warm-up {long}"), (
          (model, o, *(_cell_text(c.get((model, design.ABLATION_BATCH_SIZE, o)),
                                  len(design.SEEDS)) for c in (cells, ablation)))
          for model in design.MODELS for o in design.OPTIMIZERS)), ""]


def _budget_lines(rows, budget: Plan, baseline: Plan, cells, steps_table: dict) -> list[str]:
  """Study 2's progress; Q1: the 80-epoch verdicts against R80, steps to target."""
  lines = _progress_lines(
      "## Study 2: progress", rows, baseline.runs + budget.runs,
      collections.Counter(budget.undefined) + collections.Counter(baseline.undefined),
      ("budget", "budget_seed", "baseline", "baseline_seed"),
      "seeds 1 and 2 wait for the grid they select from")
  lines += _edge_lines(budget, "Q1 (budget)") + _edge_lines(baseline, "Q2 (baseline)")
  lines += ["", "## Study 2, Q1: budget (80 epochs)", "",
            "R80 = the higher mean test accuracy of the two optimizers at batch "
            f"{design.REFERENCE_BATCH_SIZE} with 80 epochs; G80 = R80 - accuracy "
            "at 80 epochs. Step starvation explains LARS's loss at B when "
            "G80_LARS <= 1 point; SGD's loss is not only starvation when "
            "G80_SGD - G80_LARS >= max(1 point, 2 SE).", ""]
  header = ("batch", "LARS test", "SGD test", "G80_LARS", "G80_SGD", "G80_SGD - G80_LARS",
            "needed", "starvation explains LARS?", "SGD not only starvation?")
  r80 = {}
  for model, batch_sizes in design.BUDGET_POINTS.items():
    r80[model], verdicts = claim_test(cells, model)
    lines += _pair_table(model, batch_sizes, cells, r80[model], "R80", verdicts, header,
                         ("within_point", "separated"), False)
  lines += ["Steps to target at 80 epochs: fewest steps of any seed-0 run of "
            "the 80-epoch grid to reach validation accuracy R80 - 1.5 points.", ""]
  for model, batch_sizes in design.BUDGET_POINTS.items():
    lines += _steps_lines(rows, budget, model, r80[model], batch_sizes, steps_table)
  return lines


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
    rows = []
    for b in sorted(b for m, b in design.BASELINE_POINTS if m == model):
      for optimizer in ["sgd", *candidates]:
        cell = cells.get((model, b, optimizer))
        cols = (["baseline", "", ""] if optimizer == "sgd" else _gap_columns(
            r[model], "R", b, verdicts.get((b, optimizer)), ("holds",))[2:])
        rows.append([b, study_plots.BASELINE_NAMES[optimizer],
                     _cell_text(cell, _expected_seeds(b), warmup=True),
                     _pct(r[model] - cell.mean if cell is not None and cell.n else math.nan),
                     *cols])
    lines += [_model_heading(model), "", f"R = {_pct(r[model])} %.", "", *_table(
        ("batch", "optimizer", "test, best trial (lr, warm-up, n)", "G",
         "G_Nesterov - G", "needed", "claim holds"), rows), ""]
  return lines


def _b_verdicts(rows) -> dict[str, str]:
  """Every verdict that model B's study-1 rows decide: study 1's claim test
  and Q2's (both against R), with study 2 centred on study 1 as it was run."""
  first = [r for r in rows if r["study"] == "1"]
  r, verdicts = claim_test(selected_cells(first, plan_study(first)), "B")
  out = {f"study 1, B/{v.batch_size}": "holds" if v.holds else "fails" for v in verdicts}
  baseline_cells = selected_cells(rows, plan_baseline(rows, plan_study(as_first_run(rows))))
  for optimizer in ("lars", "lamb"):
    for v in claim_test(baseline_cells, "B", r=r, optimizer=optimizer)[1]:
      out[f"Q2, B/{v.batch_size} {optimizer}"] = "holds" if v.holds else "fails"
  return out | {"R (model B)": _pct(r)}


def _record_lines(all_rows, rows) -> list[str]:
  """Superseded rows against their reruns, the verdicts they change, the
  collapse labels, and the run time."""
  superseded, current = [r for r in all_rows if r["superseded"]], {row_key(r): r for r in rows}
  pairs = [(r, current[row_key(r)]) for r in superseded if row_key(r) in current]
  same = sum((a["val_accuracy"], a["test_accuracy"])
             == (b["val_accuracy"], b["test_accuracy"]) for a, b in pairs)
  largest = max((abs(as_float(a["val_accuracy"]) - as_float(b["val_accuracy"]))
                 for a, b in pairs), default=math.nan)
  lines = ["## The record", ""] + [
      f"- {n} rows superseded ({reason}); {len(pairs)} rerun so far on code that records "
      f"its version: {same} identical in validation and test accuracy, the largest "
      f"validation difference {_pct(largest)} points."
      for reason, n in collections.Counter(r["superseded"] for r in superseded).items()]
  before, after = _b_verdicts(as_first_run(all_rows)), _b_verdicts(rows)
  changed = [f"{k}: {before.get(k, 'pending')} -> {after.get(k, 'pending')}"
             for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
  hours: dict[str, float] = collections.defaultdict(float)
  for row in rows:
    hours[row["study"]] += as_float(row["wall_time_s"]) / 3600
  pieces = sum(r["resumed_from_step"] not in ("", "0") and not r["code_version"] for r in rows)
  return lines + [
      "- Model B's verdicts recomputed on the reruns (study 1, Q2; Q1's R80 comes from "
      "study 2): " + ("; ".join(changed) if changed else "none changes") + ".",
      f"- {sum(r['status'] == 'collapsed' for r in rows)} runs collapsed by the rule (below "
      "half their cell's best validation accuracy, or a training-split loss of at least "
      f"{design.COLLAPSED_LOSS:.2f}).",
      "- Run time: " + ", ".join(f"study {k} {v:.1f} h" for k, v in sorted(hours.items()))
      + f". {pieces} resumed rows from before code_version count only their last piece; "
      "later rows sum their pieces.", ""]


def _speedup_lines(rows, r: Mapping[str, float]) -> list[str]:
  """Steps to R - 1.5 points against the fastest batch-128 run of any
  schedule (Shallue et al.), and what each doubling of the batch saves."""
  lines = ["## Steps to target against the fastest batch-128 run", "",
           "Fewest steps of any seed-0 run (any study, optimizer, schedule) to "
           "reach validation accuracy R - 1.5 points; the speed-up is against "
           f"the fastest such run at batch {design.REFERENCE_BATCH_SIZE}.", ""]
  for model in (m for m in design.MODELS if not math.isnan(r[m])):
    target, table = r[model] - TARGET_BELOW_R, []
    base, previous = None, (0, 0)  # previous: (batch, its fewest steps)
    for b in sorted(design.BATCH_SIZES[model]):
      found = [(steps, i) for i, row in enumerate(rows)
               if (row["seed"], row["batch_norm"], int(row["batch_size"]))
               == ("0", design.MODELS[model]["batch_norm"], b)
               and (steps := _first_reaching(row, target)) is not None]
      if not found:
        table.append([b, "not reached | |"])
        previous = (0, 0)
        continue
      steps, row = min(found)[0], rows[min(found)[1]]
      base = base or steps
      table.append([b, f"{steps} ({row['optimizer']}, study {row['study']}, "
                    f"{float(row['epochs']):g} epochs, warm-up "
                    f"{float(row['warmup_fraction']):.0%}, lr "
                    f"{as_float(row['learning_rate']):g})", f"{base / steps:.1f}x",
                    f"{1 - steps / previous[1]:.0%}" if b == 2 * previous[0] else ""])
      previous = (b, steps)
    lines += [f"Model {model}, target {_pct(target)} %:", "", *_table(
        ("batch", "fewest steps (run)", "speed-up", "saved by doubling the batch"), table), ""]
  return lines


def _trust_ratio_lines(rows, plan: Plan, epochs: float) -> list[str]:
  """Per-layer lambda of LARS's selected seed-0 run against the one ratio of
  the network-wide arm's, at the steps both logged."""
  chosen = plan.selected.get((*design.RATIO_POINT, epochs), {})
  logged = {row["optimizer"]: dict(json.loads(row["trust_ratios"])) for row in rows
            if row["study"] == "3" and row["seed"] == "0" and row["trust_ratios"]
            and f"{float(row['epochs']):g}" == f"{epochs:g}"
            and as_float(row["learning_rate"]) == chosen.get(row["optimizer"])}
  if not {"lars", "lars_global"} <= logged.keys():
    return []
  lars, steps = logged["lars"], sorted(set(logged["lars"]) & set(logged["lars_global"]))
  one = {s: next(iter(logged["lars_global"][s].values())) for s in steps}
  return ["Trust ratios of the selected seed-0 runs, per layer for LARS and "
          "as a multiple of the network-wide arm's one ratio at the same step "
          f"(that ratio: {', '.join(f'{one[s]:.3g} at step {s}' for s in steps)}):", "",
          *_table(["layer", *(f"step {s}" for s in steps)], (
              [layer, *(f"{lars[s][layer]:.3g} ({lars[s][layer] / one[s]:.2g}x)"
                        for s in steps)] for layer in lars[steps[0]])), ""]


def _ratio_lines(rows, plan: Plan, cells) -> list[str]:
  """Study 3's tables, its decision per budget, and the trust ratios."""
  lines = ["## Study 3: the per-layer ratio or a bounded step? "
           f"({'/'.join(map(str, design.RATIO_POINT))})", "",
           "Each arm at its best learning rate (validation, seed 0), then "
           "seeds 1 and 2; the per-layer ratio matters at a budget if and only "
           "if LARS leads both the network-wide ratio and the clipped Nesterov "
           "by at least max(1 point, 2 SE).", ""]
  for epochs in design.RATIO_EPOCHS:
    verdicts, table = ratio_verdicts(cells, epochs), []
    for arm in design.RATIO_ARMS:
      v = verdicts.get(arm)
      table.append([study_plots.RATIO_NAMES[arm],
                    _cell_text(cells.get((epochs, arm)), len(design.SEEDS), warmup=True),
                    *(["", "", ""] if arm == "lars" else ["pending"] * 3 if v is None
                      else [_pct(v.difference), _pct(v.needed), _yes(v.separated)])])
    decisive = [verdicts.get(arm) for arm in ("lars_global", "sgd_clip")]
    decision = f"At {epochs:g} epochs: pending."
    if all(v is not None and min(v.seeds) == len(design.SEEDS) for v in decisive):
      decision = (f"The per-layer ratio matters at {epochs:g} epochs: "
                  f"{_yes(all(v.separated for v in decisive if v is not None))}.")
    lines += [f"### {epochs:g} epochs", "", *_table(
        ("arm", "test (lr, warm-up, n)", "LARS's lead", "needed", "LARS leads?"), table),
        "", decision, "", *_trust_ratio_lines(rows, plan, epochs)]
  return lines + _edge_lines(plan, "Study 3", " {:g} epochs") + [""]


def summarize(path: str, *, plots: bool = True) -> str:
  """Writes large_batch_summary.md (+ the PNGs) next to the CSV; returns its text."""
  all_rows = read_rows(path, superseded=True)
  current = [r for r in all_rows if not r["superseded"]]
  first = [r for r in current if r["study"] == "1"]
  rows = [r for r in first if r["bias_and_norm"] == rule_name(design.EXCLUDE_BIAS_AND_NORM)]
  plan, first_as_run = plan_study(rows), plan_study(as_first_run(all_rows))
  budget, baseline = plan_budget(current, first_as_run), plan_baseline(current, first_as_run)
  ratio = plan_ratio(current, baseline)
  cells, budget_cells = selected_cells(rows, plan), selected_cells(current, budget)
  baseline_cells, arms = selected_cells(current, baseline), ratio_cells(current, ratio)
  r = {model: reference_accuracy(cells, model) for model in design.MODELS}
  steps: dict[tuple[str, int, str], int | None] = {}
  steps80: dict[tuple[str, int, str], int | None] = {}
  lines = ["# Large-batch study: summary", "",
           "Written by `python -m experiments.study.run --summarize` from "
           f"`{os.path.basename(path)}`; design: `experiments/study/design.py`. Biases and "
           f"normalisation parameters: {rule_name(design.EXCLUDE_BIAS_AND_NORM)}.",
           "Accuracies in %; ± is the standard error over seeds; lr is the peak "
           "learning rate selected on validation accuracy (seed 0).", ""]
  if len(first) > len(rows):
    lines += [f"({len(first) - len(rows)} rows with the other bias/normalisation rule are "
              "ignored.)", ""]
  lines += (_record_lines(all_rows, current) + _study1_lines(rows, plan, cells, r, steps)
            + _budget_lines(current, budget, baseline, budget_cells, steps80)
            + _baseline_lines(baseline_cells, r) + _speedup_lines(current, r)
            + _ratio_lines(current, ratio, arms))
  lines += ["## Plots", ""] + [f"![{p}]({p})" for p in PLOTS] + [""] if plots else []
  os.makedirs(out_dir := os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(os.path.join(out_dir, SUMMARY), "w") as f:
    f.write(text := "\n".join(lines))
  if plots:
    study_plots.write_all(out_dir, rows, current,
                          (plan, budget, baseline), (cells, budget_cells, baseline_cells, arms),
                          r, {m: reference_accuracy(budget_cells, m) for m in design.MODELS},
                          [("20 epochs, to R - 1.5", steps, "-"),
                           ("80 epochs, to R80 - 1.5", steps80, "--")])
  return text
