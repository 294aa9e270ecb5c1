"""The studies' plots: shared axes, grid lines and failure marks, one function a figure."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping

from experiments.study import design
from experiments.study.plan import Plan, accuracy_or_chance, row_key

PLOTS = ("large_batch_test_accuracy.png", "large_batch_steps_to_target.png",
         "large_batch_learning_rates.png", "large_batch_study2_learning_rates.png",
         "large_batch_study3_arms.png")
POINT = 0.01  # one percentage point of accuracy
COLORS = {"lars": "tab:blue", "sgd": "tab:orange", "lamb": "tab:purple"}
NESTEROV_COLOR = "tab:green"
BASELINE_NAMES = {"sgd": "SGD (Nesterov)", "lars": "LARS", "lamb": "LAMB"}
RATIO_NAMES = {"lars": "LARS (per-layer ratio)", "lars_global": "one ratio for the network",
               "sgd_clip": f"Nesterov, clipped at norm {design.RATIO_CLIP_NORM:g}",
               "sgd": "Nesterov"}
FAILURE_MARKERS = {  # status -> how the learning-rate plots mark its runs
    "collapsed": dict(marker="x", color="black", markersize=7, linestyle="none",
                      label="collapsed to chance"),
    "diverged": dict(marker="v", color="red", markersize=7, linestyle="none",
                     label="diverged (NaN), drawn at 10 %"),
}


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


def _per_model(path: str, panel) -> None:
  """A figure with one panel per model, side by side: ``panel(ax, model)``."""
  n = len(design.MODELS)
  fig, axes = _pyplot().subplots(1, n, figsize=(5.5 * n, 4), squeeze=False)
  for ax, model in zip(axes[0], design.MODELS):
    panel(ax, model)
  _save(fig, path)


def _accuracy_series(cells, budget_cells, baseline_cells) -> list:
  """(label, cells, optimizer, line style) of each line of the accuracy plot."""
  lars, sgd = dict(color=COLORS["lars"]), dict(color=COLORS["sgd"])
  hollow = dict(linestyle="none", marker="D", fillstyle="none")
  return [("LARS, 20 epochs", cells, "lars", lars), ("SGD, 20 epochs", cells, "sgd", sgd),
          ("LARS, 80 epochs", budget_cells, "lars", dict(lars, linestyle="--", marker="s")),
          ("SGD, 80 epochs", budget_cells, "sgd", dict(sgd, linestyle="--", marker="s")),
          ("SGD Nesterov, tuned (Q2, 20 epochs)", baseline_cells, "sgd",
           dict(color=NESTEROV_COLOR, linestyle="none", marker="D")),
          ("LARS, tuned alike (Q2, 20 epochs)", baseline_cells, "lars", dict(lars, **hollow)),
          ("LAMB, tuned alike (Q2, 20 epochs)", baseline_cells, "lamb",
           dict(color=COLORS["lamb"], **hollow))]


def _accuracy_panel(ax, model: str, series, r: Mapping[str, float],
                    r80: Mapping[str, float]) -> None:
  """Test accuracy (mean over seeds, bars ± 1 SE) against batch size, one
  line per series; R, R - 1 point and R80 as horizontal lines."""
  for label, cells, optimizer, style in series:
    points = sorted((b, 100 * c.mean, 100 * c.standard_error)
                    for (m, b, o), c in cells.items() if (m, o) == (model, optimizer) and c.n)
    if points:
      xs, ys, errors = zip(*points)
      ax.errorbar(xs, ys, yerr=errors, capsize=3, label=label, **{"marker": "o", **style})
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
        ax.plot(top, [0.97 - 0.03 * i] * len(top), marker="^", linestyle="none",
                color=COLORS[optimizer], markerfacecolor=fill,
                transform=ax.get_xaxis_transform())
        missed = True
    if missed:
      ax.plot([], [], marker="^", linestyle="none", color="gray", markerfacecolor=fill,
              label=f"not reached, {label}")
    start = [steps for (m, b, _), steps in table.items()
             if (m, b) == (model, ref) and steps is not None]
    if start:
      ax.plot(batches, [min(start) * ref / b for b in batches], color="gray",
              linestyle=linestyle, linewidth=0.8, label=f"perfect scaling, {label}")
  _batch_axis(ax, batches)
  ax.set_yscale("log")
  ax.set(xlabel="global batch size", ylabel="steps to target (validation)",
         title=f"model {model}")
  _grid_and_legend(ax, fontsize=7)


def _grid_lines(ax, by_key, lines) -> None:
  """Validation accuracy against learning rate, a line per ``lines`` entry
  ((label, colour, selected learning rate or None, the grid's runs)), a star
  at the selection, collapsed and diverged runs marked apart."""
  failed: dict[str, list] = {status: [] for status in FAILURE_MARKERS}
  for label, color, chosen, runs in lines:
    points = sorted(
        (run.learning_rate, 100 * max(accuracy_or_chance(row, "val_accuracy"), 0.0),
         row["status"]) for run in runs if (row := by_key.get(run.key())) is not None)
    if not points:
      continue
    xs, ys, _ = zip(*points)
    ax.plot(xs, ys, marker="o", color=color, label=label)
    if chosen in xs:
      ax.plot([chosen], [ys[xs.index(chosen)]], marker="*", markersize=14, color=color)
    for x, y, status in points:
      failed.get(status, []).append((x, y))
  for status, style in FAILURE_MARKERS.items():
    if failed[status]:
      ax.plot(*zip(*failed[status]), **style)
  ax.set_xscale("log", base=2)


def _plot_learning_rates(rows, plan: Plan, path: str) -> None:
  """Study 1: validation accuracy against learning rate, one line per batch."""
  plt, models, optimizers = _pyplot(), list(design.MODELS), design.OPTIMIZERS
  by_key = {row_key(r): r for r in rows}
  fig, axes = plt.subplots(len(models), len(optimizers), squeeze=False,
                           figsize=(6 * len(optimizers), 3.8 * len(models)))
  cmap = plt.get_cmap("viridis")
  for i, model in enumerate(models):
    batches = sorted(design.BATCH_SIZES[model])
    for j, optimizer in enumerate(optimizers):
      _grid_lines(axes[i][j], by_key, [
          (str(b), cmap(k / max(len(batches) - 1, 1)),
           plan.selected.get((model, b), {}).get(optimizer),
           plan.grid_runs(model, b, optimizer)) for k, b in enumerate(batches)])
      axes[i][j].set(
          xlabel="peak learning rate" + (" (gamma)" if optimizer == "lars" else ""),
          ylabel="validation accuracy (%)", title=f"model {model}, {optimizer} (star: selected)")
      _grid_and_legend(axes[i][j], title="batch", fontsize=7)
  _save(fig, path)


def _plot_study2_learning_rates(rows, budget: Plan, baseline: Plan, path: str) -> None:
  """Study 2's grids: validation accuracy against learning rate, a panel per
  (model, batch) and optimizer, a line per grid (Q1's; Q2's per warm-up)."""
  by_key = {row_key(r): r for r in rows}
  points = sorted({*((m, b) for m, batch_sizes in design.BUDGET_POINTS.items()
                     for b in batch_sizes), *design.BASELINE_POINTS})
  grids = [("80 epochs (Q1)", budget, None, "tab:red")] + [
      (f"20 epochs, warm-up {w:.0%} (Q2)", baseline, w, color)
      for w, color in zip(design.BASELINE_WARMUP_FRACTIONS, ("tab:cyan", "tab:blue"))]
  optimizers = design.BASELINE_OPTIMIZERS
  fig, axes = _pyplot().subplots(len(points), len(optimizers), squeeze=False,
                                 figsize=(4.5 * len(optimizers), 2.8 * len(points)))
  for (model, b), panels in zip(points, axes):
    for optimizer, ax in zip(optimizers, panels):
      _grid_lines(ax, by_key, [
          (label, color, plan.selected.get((model, b), {}).get(optimizer)
           if plan.warmups.get((model, b), {}).get(optimizer, warmup) == warmup else None,
           plan.grid_runs(model, b, optimizer, warmup))
          for label, plan, warmup, color in grids])
      name = ("SGD (Q1 heavy ball, Q2 Nesterov)" if optimizer == "sgd"
              else BASELINE_NAMES[optimizer])
      ax.set(xlabel="peak learning rate", ylabel="validation accuracy (%)")
      ax.set_title(f"{model}/{b}, {name} (star: selected)", fontsize=9)
      _grid_and_legend(ax, fontsize=6)
  _save(fig, path)


def _plot_ratio_arms(cells, path: str) -> None:
  """Study 3: test accuracy (mean ± 1 SE) of each arm, one marker per budget."""
  fig, ax = _pyplot().subplots(figsize=(7, 4))
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


def write_all(out_dir: str, rows, current, plans, cells, r, r80, steps) -> None:
  """Every plot into ``out_dir``: ``plans`` and ``cells`` of study 1, Q1 and
  Q2 (and study 3's arms' cells), ``steps``: (label, steps table, line style)."""
  paths = [os.path.join(out_dir, p) for p in PLOTS]
  plan, budget, baseline = plans
  series = _accuracy_series(*cells[:3])
  _per_model(paths[0], lambda ax, model: _accuracy_panel(ax, model, series, r, r80))
  _per_model(paths[1], lambda ax, model: _steps_panel(ax, model, steps))
  _plot_learning_rates(rows, plan, paths[2])
  _plot_study2_learning_rates(current, budget, baseline, paths[3])
  _plot_ratio_arms(cells[3], paths[4])
