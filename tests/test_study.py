"""The large-batch study: planner, claim test, holdout, grouped BN, one run."""
import ast
import collections
import csv
import dataclasses
import itertools
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import threading

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import loops
from experiments import models
from experiments import optimizers
from experiments import train
from experiments.study import design as study
from experiments.study import plan as lb
from experiments.study import report as summary
from experiments.study import run as driver
from experiments.data import pipeline
from experiments.data import preparation
from experiments.data.datasets import DataConfig
from experiments.workdir import Workdir

from tests.conftest import REPO
from tests.test_main import assert_one_line_error

RULE = study.EXCLUDE_BIAS_AND_NORM


def make_row(run: lb.Run, val: float, test: float | None = None,
             curve=()) -> dict:
  """A CSV row as read back from the file (every value a string)."""
  row = {c: "" for c in lb.COLUMNS}
  row.update(
      model="cnn", batch_norm=study.MODELS[run.model]["batch_norm"],
      optimizer=run.optimizer, formula="paper" if run.optimizer == "lars" else "",
      batch_size=str(run.batch_size), learning_rate=f"{run.learning_rate:.8g}",
      epochs=f"{run.epochs:g}", seed=str(run.seed), phase=run.phase,
      bias_and_norm="excluded" if run.exclude_bias_and_norm else "adapted",
      warmup_fraction=f"{run.warmup_fraction:g}",
      reference_learning_rate=("" if math.isnan(run.reference_learning_rate)
                               else f"{run.reference_learning_rate:.8g}"),
      val_accuracy=f"{val:.4f}",
      test_accuracy=f"{val if test is None else test:.4f}",
      last_batch_loss="0.3", status="ok",
      steps=str(study.num_steps(run.batch_size)),
      wall_time_s="100", examples_per_sec="8000", resumed_from_step="0",
      val_curve=str([list(p) for p in curve]).replace(" ", ""),
      study=str(run.study), momentum_kind=run.momentum_kind)
  return row


def complete_grid(rows, model, batch_size, best):
  """Adds seed-0 rows for (model, batch)'s planned grid; val peaks at ``best``.

  ``best``: optimizer -> index in that optimizer's grid (as planned now).
  """
  plan = lb.plan_study(rows)
  done = {lb.row_key(r) for r in rows}
  grids = plan.grids[(model, batch_size)]
  for run in plan.runs:
    if (run.model, run.batch_size, run.phase) != (model, batch_size, "grid"):
      continue
    if run.key() in done:
      continue
    index = grids[run.optimizer].index(run.learning_rate)
    rows.append(make_row(run, 0.9 - 0.01 * abs(index - best[run.optimizer])))
  return rows


def todo(rows):
  done = {lb.row_key(r) for r in rows}
  return [run for run in lb.planned_runs(rows)
          if run.key() not in done and run.study == 1]


# ----------------------------------------------------------------------------
# The planner.


def test_grid_order_covers_every_batch_with_the_reference_first():
  for model, batches in study.BATCH_SIZES.items():
    assert sorted(study.GRID_ORDER[model]) == sorted(batches)
    assert study.GRID_ORDER[model][0] == study.REFERENCE_BATCH_SIZE
  assert len(study.LARS_LEARNING_RATES) == len(study.SGD_SCALE_FACTORS) >= 4
  assert len(study.SGD_LEARNING_RATES) == len(study.LARS_LEARNING_RATES)


def test_empty_plan_starts_with_model_a_batch_128():
  runs = lb.planned_runs([])
  n = len(study.LARS_LEARNING_RATES)
  first = runs[:2 * n]
  assert {(r.model, r.batch_size, r.phase) for r in first} == {("A", 128, "grid")}
  # Middle of the grid first, alternating optimizers.
  assert [r.optimizer for r in first[:4]] == ["lars", "sgd", "lars", "sgd"]
  assert first[0].learning_rate == study.LARS_LEARNING_RATES[n // 2]
  # SGD grids above 128 wait for batch 128's best SGD learning rate.
  assert not [r for r in runs if r.optimizer == "sgd" and r.batch_size != 128]
  assert {r.phase for r in runs} == {"grid"}
  lars_a = [r.batch_size for r in runs if r.model == "A" and r.optimizer == "lars"]
  assert list(dict.fromkeys(lars_a)) == list(study.GRID_ORDER["A"])
  # Model A's grids all come before model B's.
  models_in_order = [r.model for r in runs]
  assert models_in_order.index("B") > max(
      i for i, m in enumerate(models_in_order) if m == "A")


def test_finished_runs_are_skipped_and_sgd_grids_scale_from_batch_128():
  rows = complete_grid([], "A", 128, {"lars": 2, "sgd": 2})
  plan = lb.plan_study(rows)
  assert plan.selected[("A", 128)] == {"lars": 12.5, "sgd": 0.1}
  remaining = todo(rows)
  # Only the extra seeds are left at batch 128 (they come after the grids).
  assert all(r.phase == "seed" for r in remaining
             if (r.model, r.batch_size) == ("A", 128))
  assert (remaining[0].model, remaining[0].batch_size) == ("A", 4096)
  scaled = 0.1 * 4096 / 128
  assert plan.grids[("A", 4096)]["sgd"] == pytest.approx(
      [scaled * f for f in study.SGD_SCALE_FACTORS])
  sgd_4096 = [r for r in remaining if (r.batch_size, r.optimizer) == (4096, "sgd")]
  assert all(r.reference_learning_rate == pytest.approx(scaled) for r in sgd_4096)
  # Model B's SGD grids scale from model B's own batch 128.
  assert not [r for r in remaining
              if r.model == "B" and r.optimizer == "sgd" and r.batch_size != 128]


def test_an_edge_optimum_extends_both_optimizers_on_that_side():
  n = len(study.LARS_LEARNING_RATES)
  rows = complete_grid([], "A", 128, {"lars": n - 1, "sgd": 2})  # LARS at top
  plan = lb.plan_study(rows)
  assert ("A", 128) not in plan.selected
  assert plan.extensions[("A", 128)] == (0, 1)
  grids = plan.grids[("A", 128)]
  assert grids["lars"][-1] == study.LARS_LEARNING_RATES[-1] * 2
  assert grids["sgd"][-1] == study.SGD_LEARNING_RATES[-1] * 2
  assert len(grids["lars"]) == len(grids["sgd"]) == n + 1
  assert [(r.optimizer, r.learning_rate) for r in todo(rows)[:2]] == [
      ("lars", 100.0), ("sgd", 0.8)]
  # The new values are worse: the optimum is now inside, the grid complete.
  rows = complete_grid(rows, "A", 128, {"lars": n - 1, "sgd": 2})
  plan = lb.plan_study(rows)
  assert plan.selected[("A", 128)] == {"lars": 50.0, "sgd": 0.1}
  # An SGD optimum at the bottom edge of a larger batch: both get a value below.
  rows = complete_grid(rows, "A", 4096, {"lars": 2, "sgd": 0})
  plan = lb.plan_study(rows)
  assert plan.extensions[("A", 4096)] == (1, 0)
  grids = plan.grids[("A", 4096)]
  assert grids["lars"][0] == study.LARS_LEARNING_RATES[0] / 2
  assert grids["sgd"][0] == pytest.approx(0.1 * 32 / 16 / 2)
  assert len(grids["lars"]) == len(grids["sgd"])


def test_extensions_stop_at_the_cap():
  rows = []
  for _ in range(study.MAX_EDGE_EXTENSIONS + 1):
    rows = complete_grid(rows, "A", 128, {"lars": 0, "sgd": 0})
  plan = lb.plan_study(rows)
  assert plan.extensions[("A", 128)] == (study.MAX_EDGE_EXTENSIONS, 0)
  assert plan.selected[("A", 128)]["lars"] == (
      study.LARS_LEARNING_RATES[0] / 2**study.MAX_EDGE_EXTENSIONS)


def complete_model(rows, model, best=None):
  best = best or {"lars": 2, "sgd": 3}
  for batch_size in study.GRID_ORDER[model]:
    rows = complete_grid(rows, model, batch_size, best)
  return rows


def test_seeds_only_at_the_selected_configurations():
  rows = complete_model([], "A")
  plan = lb.plan_study(rows)
  seeds = [r for r in plan.runs if r.phase == "seed"]
  assert {(r.model, r.batch_size) for r in seeds} == {
      ("A", b) for b in study.BATCH_SIZES["A"] if b >= study.SEEDS_FROM_BATCH_SIZE}
  for r in seeds:
    assert r.seed in (1, 2)
    assert r.learning_rate == plan.selected[(r.model, r.batch_size)][r.optimizer]
  assert len(seeds) == len(study.BATCH_SIZES["A"]) * 2 * 2
  ablation = [r for r in plan.runs if r.phase == "ablation"]
  assert {(r.model, r.batch_size, r.warmup_fraction) for r in ablation} == {
      ("A", study.ABLATION_BATCH_SIZE, study.ABLATION_WARMUP_FRACTION)}
  assert sorted(r.seed for r in ablation) == [0, 0, 1, 1, 2, 2]
  # Phases in order: every grid run (model B's too) before the seeds.
  phases = [r.phase for r in plan.runs]
  assert phases == sorted(phases, key=["grid", "seed", "ablation"].index)
  assert plan.undefined["seed"] == 4 * 2 * 2  # model B's, not selected yet
  # In grid order: the reference, then the large batches, the middle ones last.
  assert [r.batch_size for r in seeds][::4] == list(study.GRID_ORDER["A"])


# ----------------------------------------------------------------------------
# The claim test and steps to target, on a hand-made CSV.

# Test accuracies of the selected configurations, model A, seeds 0, 1, 2.
HAND = {
    128: {"lars": [0.90] * 3, "sgd": [0.91] * 3},  # R = 0.91
    512: {"lars": [0.905] * 3, "sgd": [0.89] * 3},  # G 0.5 / 2: diff 1.5 >= 1
    1024: {"lars": [0.91] * 3, "sgd": [0.92, 0.89, 0.86]},  # diff 2 < 2 SE 3.46
    2048: {"lars": [0.905] * 3, "sgd": [0.90, 0.89, 0.88]},  # holds
    4096: {"lars": [0.905, 0.90, 0.895], "sgd": [0.88, 0.87, 0.86]},  # holds
    8192: {"lars": [0.89] * 3, "sgd": [0.80] * 3},  # G_LARS 2 > 1
}


def hand_rows():
  best = {"lars": 2, "sgd": 2}
  rows = complete_model([], "A", best)
  plan = lb.plan_study(rows)
  by_key = {lb.row_key(r): r for r in rows}
  for run in plan.runs:
    if run.model != "A" or run.phase == "ablation":
      continue
    accuracies = HAND[run.batch_size][run.optimizer]
    if run.key() not in by_key:
      rows.append(make_row(run, 0.9, accuracies[run.seed]))
  for (model, b), chosen in plan.selected.items():
    for optimizer, lr in chosen.items():
      row = by_key[lb.Run(model, optimizer, b, lr).key()]
      row["test_accuracy"] = f"{HAND[b][optimizer][0]:.4f}"
  return rows


def test_claim_test_matches_a_hand_computation():
  rows = hand_rows()
  plan = lb.plan_study(rows)
  cells = summary.selected_cells(rows, plan)
  r, verdicts = summary.claim_test(cells, "A")
  assert r == pytest.approx(0.91)
  by_batch = {v.batch_size: v for v in verdicts}
  assert sorted(by_batch) == [512, 1024, 2048, 4096, 8192]
  assert [b for b, v in sorted(by_batch.items()) if v.holds] == [512, 2048, 4096]
  v = by_batch[4096]  # by hand
  se_lars = np.std([0.905, 0.90, 0.895], ddof=1) / np.sqrt(3)
  se_sgd = np.std([0.88, 0.87, 0.86], ddof=1) / np.sqrt(3)
  assert v.gap == pytest.approx(0.01)
  assert v.baseline_gap == pytest.approx(0.04)
  assert v.standard_error == pytest.approx(np.hypot(se_lars, se_sgd))
  assert v.needed == pytest.approx(2 * np.hypot(se_lars, se_sgd))  # > 1 point
  v = by_batch[1024]  # the difference (2 points) is below 2 SE (3.46 points)
  assert v.difference == pytest.approx(0.02) and not v.holds
  assert v.needed == pytest.approx(2 * 0.03 / np.sqrt(3))
  assert by_batch[512].needed == pytest.approx(0.01) and by_batch[512].holds
  assert by_batch[8192].gap == pytest.approx(0.02) and not by_batch[8192].holds


def test_summary_on_a_partial_csv(tmp_path):
  rows = hand_rows()
  # Steps to target (R - 1.5 points = 0.895) from the validation curves.
  plan = lb.plan_study(rows)
  lars_4096 = plan.grids[("A", 4096)]["lars"]
  by_key = {lb.row_key(r): r for r in rows}
  by_key[lb.Run("A", "lars", 4096, lars_4096[0]).key()]["val_curve"] = (
      "[[10,0.85],[20,0.9]]")
  by_key[lb.Run("A", "lars", 4096, lars_4096[1]).key()]["val_curve"] = (
      "[[5,0.8],[15,0.896],[25,0.85]]")
  assert summary.steps_to_target(rows, plan, 0.895, "A", 4096, "lars") == (
      15, lars_4096[1])
  assert summary.steps_to_target(rows, plan, 0.895, "A", 4096, "sgd") == (None, None)
  path = tmp_path / "large_batch.csv"
  for row in rows:
    lb.append_row(str(path), row)
  # A study-2 row at a selected configuration stays out of the first study's
  # tables (its test accuracy would change model A's 4096 cell).
  study2 = dict(by_key[lb.Run("A", "lars", 4096, lars_4096[2]).key()],
                study="2", test_accuracy="0.5000", last_batch_loss="9")
  lb.append_row(str(path), study2)
  text = summary.summarize(str(path))
  assert "last-minibatch loss LARS / SGD" in text and "9.000" not in text
  assert "Largest batch where the claim holds: 4096" in text
  assert "Provisional" not in text.split("### Model B")[0]
  assert "R is not known yet" in text.split("### Model B")[1]
  assert f"| 4096 | 15 ({lars_4096[1]:g}) | not reached |" in text
  assert "Missing:" in text and "B/128 grid" in text
  # Study 2: model A's grids are defined (centred on study 1's selections),
  # their seeds wait for them; model B's wait for study 1.
  study_2 = text.split("## Study 2: progress")[1]
  assert "| budget_seed | 0 of 12 finished (12 not yet defined) |" in study_2
  assert "| baseline_seed | 0 of 12 finished (12 not yet defined) |" in study_2
  # Study 1: model A's 6 x 2 grids of 5 finished (hand_rows); model B's 4
  # LARS grids and its batch-128 SGD grid defined, its 3 other SGD grids not.
  assert "| grid | 60 of 100 finished (15 not yet defined) |" in text
  for name in summary.PLOTS:
    assert (tmp_path / name).stat().st_size > 1000
  assert (tmp_path / summary.SUMMARY).read_text() == text


def test_summary_of_the_committed_csv_is_the_committed_one(tmp_path):
  """The committed summary and plots are what the committed CSV gives, byte
  for byte.

  A snapshot: it says that the files are today's code's reading of the CSV,
  not that the reading is right. The rules are checked on rows whose answers
  were worked out by hand (the hand-computation tests in this file), and the
  committed numbers by the independent transcription in the next test.
  Matplotlib writes the same PNG bytes for the same figure (generated twice
  here: identical), but another matplotlib version draws differently: the
  PNGs are compared where the version that wrote them (their "Software"
  chunk) is the one installed.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  results = pathlib.Path(lb.RESULTS)
  (tmp_path / results.name).write_bytes(results.read_bytes())
  text = summary.summarize(str(tmp_path / results.name))
  assert (results.parent / summary.SUMMARY).read_text() == text
  for name in summary.PLOTS:
    committed = (results.parent / name).read_bytes()
    written = re.search(rb"Matplotlib version([0-9.]+)", committed)
    assert written is not None, name
    if written[1].decode() == matplotlib.__version__:
      assert (tmp_path / name).read_bytes() == committed, name


def test_model_a_claim_table_is_that_of_the_committed_csv_by_hand():
  """Study 1's claim test for model A (no BatchNorm), recomputed from the
  committed CSV without the report's code: the seed-0 grid run of best
  validation accuracy selects the learning rate; its seeds give the mean test
  accuracy, its standard error and n; R is the better mean at batch 128; the
  claim holds where G_LARS <= 1 point and G_SGD - G_LARS >= max(1 point,
  2 SE). Rows superseded by a rerun are left out."""
  with open(lb.RESULTS) as f:
    rows = [r for r in csv.DictReader(f)
            if r["study"] == "1" and r["batch_norm"] == "none"
            and r["phase"] in ("grid", "seed") and not r["superseded"]]
  assert rows

  def accuracy(row, key):
    return float(row[key]) if row[key] else float("nan")

  cells = {}
  for (optimizer, batch), group in itertools.groupby(
      sorted(rows, key=lambda r: (r["optimizer"], int(r["batch_size"]))),
      key=lambda r: (r["optimizer"], int(r["batch_size"]))):
    group = list(group)
    grid = [r for r in group if r["seed"] == "0"]
    lr = float(max(grid, key=lambda r: accuracy(r, "val_accuracy"))["learning_rate"])
    test = [accuracy(r, "test_accuracy") for r in group
            if float(r["learning_rate"]) == lr]
    cells[optimizer, batch] = (lr, 100 * np.mean(test),
                               100 * np.std(test, ddof=1) / np.sqrt(len(test)),
                               len(test))
  text = (pathlib.Path(lb.RESULTS).parent / summary.SUMMARY).read_text()
  table = text.split("### Model A")[1].split("###")[0]
  r = max(cells["lars", 128][1], cells["sgd", 128][1])
  holds = []
  for batch in sorted(b for _, b in cells):
    lars, sgd = cells["lars", batch], cells["sgd", batch]
    line = "| {} | {:.2f} ± {:.2f} (lr {:g}, n={}) | {:.2f} ± {:.2f} (lr {:g}, n={}) |".format(
        batch, lars[1], lars[2], lars[0], lars[3], sgd[1], sgd[2], sgd[0], sgd[3])
    assert line in table, line
    if batch == 128:
      continue
    g_lars, g_sgd = r - lars[1], r - sgd[1]
    needed = max(1.0, 2 * np.hypot(lars[2], sgd[2]))
    holds_here = g_lars <= 1.0 and g_sgd - g_lars >= needed
    verdict = "| {:.2f} | {:.2f} | {:.2f} | {:.2f} | {} |".format(
        g_lars, g_sgd, g_sgd - g_lars, needed, "yes" if holds_here else "no")
    assert verdict in table.split(f"\n| {batch} |")[1].split("\n")[0], verdict
    if holds_here:
      holds.append(batch)
  assert f"R = {r:.2f}" in table
  assert holds, "the claim holds at 2048 in the committed results"
  assert f"Largest batch where the claim holds: {max(holds)}" in table


def test_plan_imports_neither_driver_nor_report():
  """No import circle: the driver and the report import the plan."""
  folder = pathlib.Path(lb.__file__).parent

  def imports(name):  # modules, and module.name for `from module import name`
    tree = ast.parse((folder / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        found |= {alias.name for alias in node.names}
      elif isinstance(node, ast.ImportFrom):
        found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found

  study_modules = {f"experiments.study.{name}" for name in ("run", "report", "plots")}
  assert not study_modules & imports("plan")
  assert "experiments.study.run" not in imports("report") | imports("plots")
  assert "experiments.study.plan" in imports("report") & imports("run")


def test_a_run_and_its_row_have_one_identity():
  """A row written for a run reads back as that run: the same key, tag and
  config, every field; the columns the run gives are those of a hand-made row."""
  runs = [
      lb.Run("A", "lars", 128, 12.5),
      lb.Run("B", "sgd", 4096, 0.8, 2, "seed", reference_learning_rate=3.2),
      lb.Run("A", "lars", 4096, 25.0, 1, "ablation", 0.25, exclude_bias_and_norm=True),
      lb.Run("A", "sgd", 8192, 0.05, 0, "baseline", 0.3, study=2, nesterov=True),
      lb.Run("B", "lamb", 4096, 0.0125, 1, "baseline_seed", 0.3, study=2),
      lb.Run("A", "lars", 8192, 12.5, 0, "budget", epochs=80.0, study=2),
      lb.Run("A", "sgd_clip", 8192, 0.025, 2, "ratio_seed", 0.3, 80.0, study=3,
             nesterov=True)]
  for run in runs:
    row = make_row(run, 0.9)
    parsed = lb.Run.from_row(row)
    assert repr(parsed) == repr(run)
    assert lb.row_key(row) == run.key() == parsed.key() and parsed.tag == run.tag
    assert parsed.config().to_json() == run.config().to_json()
    assert {k: str(v) for k, v in run.row().items()} == {k: row[k] for k in run.row()}
  assert len({run.key() for run in runs}) == len({run.tag for run in runs}) == len(runs)
  # What tells runs apart: momentum, warm-up, epochs, study, the bias rule.
  base = runs[0]
  for change in (dict(nesterov=True), dict(warmup_fraction=0.3), dict(epochs=80.0),
                 dict(study=2), dict(exclude_bias_and_norm=True), dict(seed=1)):
    assert dataclasses.replace(base, **change).key() != base.key()
  assert dataclasses.replace(base, phase="seed").key() == base.key()


def test_append_row_cuts_a_line_left_by_a_kill(tmp_path):
  path = str(tmp_path / "x.csv")
  run = lb.Run("A", "lars", 128, 12.5)
  lb.append_row(path, make_row(run, 0.9))
  with open(path, "a") as f:
    f.write("cnn,none,lars,paper,128,6.25")  # killed mid-line
  assert len(lb.read_rows(path)) == 1
  lb.append_row(path, make_row(lb.Run("A", "lars", 128, 6.25), 0.8))
  rows = lb.read_rows(path)
  assert [r["learning_rate"] for r in rows] == ["12.5", "6.25"]
  assert rows[0]["val_accuracy"] == "0.9000"


# ----------------------------------------------------------------------------
# Configs, data, models.


def test_run_config_follows_the_design():
  for batch, steps, warmup in ((128, 8594, 860), (4096, 269, 27), (8192, 134, 20)):
    config = study.run_config("A", "sgd", batch, 0.1)
    schedule = optimizers.create_learning_rate_schedule(config, steps_per_epoch=1)
    assert (schedule.total_steps, schedule.warmup_steps) == (steps, warmup)
    assert schedule.peak_learning_rate == 0.1
  config = study.run_config("B", "lars", 4096, 12.5, 2,
                            warmup_fraction=study.ABLATION_WARMUP_FRACTION)
  assert optimizers.create_learning_rate_schedule(config, 1).warmup_steps == 68
  assert config.batch_norm_group_size == 128 and config.seed == 2
  assert config.model_kwargs.to_dict() == {"use_batch_norm": True,
                                           "init_scheme": "fan_in"}
  assert config.lars.formula == "paper" and config.lars.trust_coefficient == 0.001
  assert (config.momentum, config.weight_decay, config.power) == (0.9, 5e-4, 2.0)
  assert not config.lars.trust_clip
  one = study.get_config("A,sgd,1024,0.4,1")
  assert (one.optimizer, one.global_batch_size, one.base_learning_rate,
          one.seed, one.batch_norm_group_size) == ("sgd", 1024, 0.4, 1, 0)
  # Validation every quarter epoch (of examples): 79 + the final one.
  assert len(train.eval_steps_by_epochs(0.25, 55_000, 8192, 134)) == 79


def test_validation_holdout_is_fixed_disjoint_and_5000_of_60000():
  train_idx, val_idx = pipeline.holdout_indices(60_000, 5_000, 0)
  assert len(train_idx) == 55_000 and len(val_idx) == 5_000
  assert not np.intersect1d(train_idx, val_idx).size
  np.testing.assert_array_equal(np.union1d(train_idx, val_idx), np.arange(60_000))
  again = pipeline.holdout_indices(60_000, 5_000, 0)
  np.testing.assert_array_equal(again[1], val_idx)
  assert not np.array_equal(pipeline.holdout_indices(60_000, 5_000, 1)[1],
                            val_idx)


@pytest.mark.slow
def test_holdout_on_fashion_mnist(fashion_mnist_data_dir):
  fields = {"name": "fashion_mnist", "data_dir": fashion_mnist_data_dir,
            "validation_holdout": 5_000, "prefetch": 0}
  info = preparation.prepare(DataConfig.from_config(fields))
  assert (info.num_train, info.num_validation, info.num_test) == (55_000, 5_000,
                                                                  10_000)
  # A small split: one training epoch and the validation set partition it.
  small = DataConfig.from_config(
      dict(fields, train_split="train[:1000]", validation_holdout=200))
  info = preparation.prepare(small)
  small_all = dataclasses.replace(small, validation_holdout=0)
  everything = preparation.prepare(small_all)

  def examples(batch):
    n = int(batch.get("mask", np.ones(len(batch["label"]))).sum())
    return collections.Counter(
        (batch["image"][i].tobytes(), int(batch["label"][i])) for i in range(n))

  kept = examples(next(pipeline.train_iterator(
      small, info, global_batch_size=800, seed=3)))
  held = examples(next(pipeline.eval_iterator(
      small, info, batch_size=200, subset="validation")))
  full = examples(next(pipeline.train_iterator(
      small_all, everything, global_batch_size=1000, seed=0)))
  assert sum(kept.values()) == 800 and sum(held.values()) == 200
  assert kept + held == full
  with pytest.raises(ValueError, match="validation_holdout"):
    next(pipeline.eval_iterator(small_all, everything, batch_size=200,
                                subset="validation"))


@pytest.mark.slow
def test_batch_norm_groups_of_128_normalise_each_group():
  info = preparation.DatasetInfo("fashion_mnist", 55_000, 10_000, 10,
                                 (28, 28, 1), 5_000)
  for batch, groups in ((128, 1), (256, 2), (1024, 8)):
    config = study.run_config("B", "lars", batch, 12.5)
    schedule = optimizers.create_learning_rate_schedule(config, 1)
    model = loops.create_loop(config, info, schedule).make_model()
    assert model.stages[0].bn.groups == model.fc.bn.groups == groups
  config = study.run_config("A", "lars", 256, 12.5)
  model = loops.create_loop(config, info, schedule).make_model()
  assert model.stages[0].bn is None and model.fc.bn is None
  assert model.stages[0].conv.bias is not None
  # Grouped BN == each group of 128 normalised by its own statistics.
  x = np.random.default_rng(0).normal(size=(256, 3, 3, 4)).astype(np.float32)
  x[128:] = 3 * x[128:] + 2  # groups with different statistics
  bn = models.BatchNorm(4, groups=2)
  got = np.asarray(bn(jnp.asarray(x)))
  want = np.concatenate([
      (g - g.mean((0, 1, 2))) / np.sqrt(g.var((0, 1, 2)) + 1e-5)
      for g in (x[:128], x[128:])])
  np.testing.assert_allclose(got, want, atol=2e-5)
  assert not np.allclose(np.asarray(models.BatchNorm(4)(jnp.asarray(x))), want,
                         atol=1e-2)


def test_fan_in_initialisation_of_the_classifier():
  model = models.create_model("cnn", num_classes=10, rngs=nnx.Rngs(0),
                              use_batch_norm=False, init_scheme="fan_in")
  std = float(jnp.std(model.head.kernel[...]))
  assert 0.07 < std < 0.11  # 1 / sqrt(128) = 0.088, not 0.01
  default = models.create_model("cnn", num_classes=10, rngs=nnx.Rngs(0))
  assert float(jnp.std(default.head.kernel[...])) < 0.012


# ----------------------------------------------------------------------------
# One tiny run, end to end.


@pytest.fixture
def small_runs(monkeypatch):
  """Runs of the study on small splits: ``small_runs(**overrides)`` makes
  every ``Run.config()`` the study's config with ``overrides`` (dotted keys)."""

  def use(**overrides):
    config_of = lb.Run.config

    def config(run):
      config = config_of(run)
      config.update_from_flattened_dict({
          "data.train_split": "train[:2560]", "data.validation_holdout": 512,
          "data.eval_split": "test[:1000]", **overrides})
      return config
    monkeypatch.setattr(lb.Run, "config", config)
  return use


@pytest.mark.slow
def test_one_tiny_run_writes_one_csv_row(tmp_path, fashion_mnist_data_dir,
                                         small_runs, monkeypatch):
  results = str(tmp_path / "results" / "large_batch.csv")
  small_runs(**{"data.train_split": "train[:1536]", "num_train_steps": 8,
                "checkpoint_every_steps": 4})
  run = lb.Run("B", "sgd", 128, 0.1)
  monkeypatch.setattr(lb, "planned_runs", lambda rows: [run])
  workdir = str(tmp_path / "runs")
  assert driver.run_all(results, workdir, data_dir=fashion_mnist_data_dir) == 1
  rows = lb.read_rows(results)
  assert len(rows) == 1
  row = rows[0]
  assert set(lb.COLUMNS) <= set(row)
  assert (row["model"], row["batch_norm"], row["optimizer"], row["status"]) == (
      "cnn", "groups_of_128", "sgd", "ok")
  assert row["steps"] == "8" and row["seed"] == "0"
  assert 0.0 < float(row["val_accuracy"]) <= 1.0
  assert 0.0 < float(row["test_accuracy"]) <= 1.0
  # Validation at every quarter epoch (8 steps an epoch) and at the end.
  assert [s for s, _ in eval(row["val_curve"])] == [2, 4, 6, 8]  # pylint: disable=eval-used
  assert repr(lb.Run.from_row(row)) == repr(run)  # the row records the run
  # Finished: a second call skips it.
  assert driver.run_all(results, workdir, data_dir=fashion_mnist_data_dir) == 0


def same_row_twice(run, tmp_path, data_dir):
  rows = [driver.run_one(run, workdir=str(tmp_path / name), data_dir=data_dir)
          for name in ("first", "second")]
  for row in rows:  # times differ; everything the run computed must not
    del row["wall_time_s"], row["examples_per_sec"]
  assert rows[0] == rows[1] and rows[0]["code_version"]
  return rows[0]


@pytest.mark.slow
def test_a_model_b_run_gives_the_same_row_twice(tmp_path, fashion_mnist_data_dir,
                                                small_runs):
  """Model B (BatchNorm over groups of 128) is deterministic: the record of
  study 1's B rows, which older code made, is reproducible today."""
  small_runs(num_train_steps=6)
  row = same_row_twice(lb.Run("B", "lars", 256, 12.5), tmp_path, fashion_mnist_data_dir)
  assert row["batch_norm"] == "groups_of_128"


@pytest.mark.slow
def test_a_model_a_run_gives_the_same_row_twice(tmp_path, fashion_mnist_data_dir,
                                                small_runs):
  """Model A (no BatchNorm), SGD at a batch that SGD grids scale to."""
  small_runs(num_train_steps=6)
  run = lb.Run("A", "sgd", 512, 0.4, reference_learning_rate=0.4)
  row = same_row_twice(run, tmp_path, fashion_mnist_data_dir)
  assert (row["batch_norm"], row["reference_learning_rate"]) == ("none", "0.4")


@pytest.mark.slow
def test_study_3_rows_record_the_trust_ratios(tmp_path, fashion_mnist_data_dir, small_runs):
  small_runs(num_train_steps=4, log_every_steps=2)
  logged = {}
  for arm in ("lars", "lars_global"):
    run = lb.Run("A", arm, 256, 12.5, study=3)
    row = driver.run_one(run, workdir=str(tmp_path), data_dir=fashion_mnist_data_dir)
    logged[arm] = json.loads(row["trust_ratios"])
    assert [step for step, _ in logged[arm]] == [2, 4]
  # Per layer: one ratio per weight leaf, not all equal; global: one value.
  layers = logged["lars"][-1][1]
  assert len(layers) > 4 and len(set(layers.values())) > 1
  assert set(logged["lars_global"][-1][1]) == set(layers)
  assert len(set(logged["lars_global"][-1][1].values())) == 1


def test_drivers_share_the_study_run_by_run(tmp_path, monkeypatch):
  """A run another driver holds is left to it, one it finished meanwhile is
  not trained again, and a driver with nothing free waits."""
  results, workdir = str(tmp_path / "large_batch.csv"), str(tmp_path / "runs")
  first, second = lb.Run("A", "sgd", 128, 0.1), lb.Run("A", "sgd", 128, 0.2)
  trained = []
  monkeypatch.setattr(driver, "run_one", lambda run, **_: (
      trained.append(run.tag), make_row(run, 0.9))[1])
  monkeypatch.setattr(lb, "planned_runs", lambda rows: [first, second])
  with Workdir(os.path.join(workdir, first.tag)).lock():
    assert driver.run_all(results, workdir, max_runs=1) == 1
  assert trained == [second.tag]

  def finished_by_another_driver(rows):
    if not any(lb.row_key(r) == first.key() for r in lb.read_rows(results)):
      lb.append_row(results, make_row(first, 0.9))
    return [first]
  monkeypatch.setattr(lb, "planned_runs", finished_by_another_driver)
  assert driver.run_all(results, workdir) == 0
  assert trained == [second.tag]

  third = lb.Run("A", "sgd", 128, 0.4)
  plans = []
  lock = Workdir(os.path.join(workdir, third.tag)).lock()
  lock.__enter__()  # pylint: disable=unnecessary-dunder-call
  threading.Timer(0.3, lock.__exit__, (None, None, None)).start()
  monkeypatch.setattr(lb, "planned_runs", lambda rows: plans.append(1) or [third])
  monkeypatch.setattr(driver, "WAIT_S", 0.05)
  assert driver.run_all(results, workdir) == 1
  assert trained == [second.tag, third.tag] and len(plans) > 2
  assert len(lb.read_rows(results)) == 3


@pytest.mark.slow
def test_missing_data_is_one_line_and_writes_no_row(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  results = tmp_path / "large_batch.csv"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.study.run",
       f"--data_dir={tmp_path / 'empty'}", f"--manual_dir={tmp_path / 'nowhere'}",
       f"--results={results}", f"--workdir={tmp_path / 'runs'}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert_one_line_error(result, "fashion_mnist", str(tmp_path / "nowhere"))
  assert "defined runs to go" in result.stdout
  assert lb.read_rows(str(results)) == []


def test_a_grid_where_no_run_learns_is_extended_downwards():
  rows = complete_grid([], "A", 128, {"lars": 2, "sgd": 2})
  rows = complete_grid(rows, "A", 4096, {"lars": 2, "sgd": 2})
  for row in rows:  # every SGD run at 4096 diverged; the best (noise) mid-grid
    if row["batch_size"] == "4096" and row["optimizer"] == "sgd":
      row["val_accuracy"] = "0.1028" if row["learning_rate"] == "0.8" else "0.0932"
  plan = lb.plan_study(rows)
  assert ("A", 4096) not in plan.selected
  grids = plan.grids[("A", 4096)]
  assert len(grids["sgd"]) == len(grids["lars"]) == len(study.SGD_SCALE_FACTORS) + 1
  scaled = 0.1 * 4096 / 128
  assert min(grids["sgd"]) == pytest.approx(
      scaled * study.SGD_SCALE_FACTORS[0] / study.EDGE_FACTOR)


# ----------------------------------------------------------------------------
# Study 2: the budget (Q1) and the tuned baseline (Q2).


def _committed_rows():
  """Study 1 as study 2 was planned from it."""
  return [r for r in lb.as_first_run(lb.read_rows(lb.RESULTS, superseded=True))
          if r["study"] == "1"]


def test_budget_grids_are_centred_on_the_first_selection():
  rows = _committed_rows()
  first_plan = lb.plan_study(rows)
  first = first_plan.selected
  plan = lb.plan_budget(rows, first_plan)
  for (model, batch_size), values in plan.grids.items():
    factors = (study.BUDGET_REFERENCE_FACTORS
               if batch_size == study.REFERENCE_BATCH_SIZE
               else study.BUDGET_FACTORS)
    for optimizer, lrs in values.items():
      assert lrs == [first[(model, batch_size)][optimizer] * f for f in factors]
  assert all(r.study == 2 and r.epochs == study.BUDGET_EPOCHS for r in plan.runs)
  assert not lb.plan_budget([], lb.plan_study([])).runs  # waits for study 1


def test_baseline_gives_each_optimizer_the_same_search():
  rows = _committed_rows()
  first_plan = lb.plan_study(rows)
  first = first_plan.selected
  plan = lb.plan_baseline(rows, first_plan)
  trials = collections.Counter(
      (r.model, r.batch_size, r.optimizer, r.warmup_fraction) for r in plan.runs)
  assert set(trials.values()) == {len(study.BASELINE_FACTORS)}
  assert len(trials) == (len(study.BASELINE_POINTS)
                         * len(study.BASELINE_OPTIMIZERS)
                         * len(study.BASELINE_WARMUP_FRACTIONS))
  for run in plan.runs:
    assert run.nesterov == (run.optimizer == "sgd") and run.epochs == study.EPOCHS
  lars = first[("A", 4096)]["lars"]
  lamb = sorted(r.learning_rate for r in plan.runs
                if (r.model, r.batch_size, r.optimizer, r.warmup_fraction)
                == ("A", 4096, "lamb", 0.1))
  assert lamb == [lars * study.LARS_TRUST_COEFFICIENT * f
                  for f in study.BASELINE_FACTORS]


def test_baseline_selects_the_best_trial_over_both_warmups():
  rows = _committed_rows()
  best_warmup = {"lars": 0.1, "sgd": 0.3, "lamb": 0.3}
  for _ in range(10):  # finish the A/4096 grids, peaking in their middle
    plan = lb.plan_baseline(rows, lb.plan_study(rows))
    todo = [r for r in plan.runs if (r.model, r.batch_size) == ("A", 4096)
            and r.phase == "baseline"
            and r.key() not in {lb.row_key(x) for x in rows}]
    if not todo:
      break
    for run in todo:
      lrs = plan.grids[("A", 4096, run.warmup_fraction)][run.optimizer]
      middle = len(lrs) // 2
      bonus = 0.01 if run.warmup_fraction == best_warmup[run.optimizer] else 0
      rows.append(make_row(
          run, 0.8 + bonus - 0.01 * abs(lrs.index(run.learning_rate) - middle)))
  plan = lb.plan_baseline(rows, lb.plan_study(rows))
  assert plan.warmups[("A", 4096)] == best_warmup
  seeds = [r for r in plan.runs if r.phase == "baseline_seed"]
  assert {(r.optimizer, r.warmup_fraction, r.seed) for r in seeds} == {
      (o, w, s) for o, w in best_warmup.items() for s in (1, 2)}
  assert all(r.learning_rate == plan.selected[("A", 4096)][r.optimizer]
             for r in seeds)


def finish_grids(rows, plan_fn, points, val_fn):
  """Adds the seed-0 rows of ``plan_fn(rows)``'s grids at ``points`` ((model,
  batch)) until every one selects; ``val_fn(run, plan)``: validation accuracy."""
  for _ in range(2 * study.MAX_EDGE_EXTENSIONS + 2):
    plan = plan_fn(rows)
    done = {lb.row_key(r) for r in rows}
    todo = [r for r in plan.runs if r.seed == 0 and r.key() not in done
            and (r.model, r.batch_size) in points]
    if not todo:
      return plan
    rows.extend(make_row(run, val_fn(run, plan)) for run in todo)
  raise AssertionError("the grids did not select")


def add_seeds(rows, plan, accuracies):
  """Test accuracies of the selected runs: seed s of (model, batch, optimizer)
  gets ``accuracies[batch][optimizer][s]``; seeds 1 and 2 are new rows."""
  by_key = {lb.row_key(r): r for r in rows}
  for run in plan.runs:
    if run.phase.endswith("_seed") and run.batch_size in accuracies:
      test = accuracies[run.batch_size][run.optimizer]
      rows.append(make_row(run, 0.9, test[run.seed]))
      seed_0 = by_key[dataclasses.replace(run, seed=0).key()]
      seed_0["test_accuracy"] = f"{test[0]:.4f}"
  return rows


def peak_in_the_middle(run, plan):
  lrs = plan.grids[(run.model, run.batch_size)][run.optimizer]
  return 0.9 - 0.01 * abs(lrs.index(run.learning_rate) - len(lrs) // 2)


# Model A at 80 epochs, test accuracy of seeds 0, 1, 2: R80 = 0.92.
HAND_80 = {
    128: {"lars": [0.915] * 3, "sgd": [0.92] * 3},
    # G80_LARS 1 point: starvation explains LARS's loss; SGD's gap is 1 point
    # larger, but 2 SE (of SGD's spread over its seeds) is 2.38 points.
    4096: {"lars": [0.915, 0.91, 0.905], "sgd": [0.92, 0.90, 0.88]},
    # G80_LARS 2 points; G80_SGD 6, 4 more than LARS's, against 2 SE = 1.15.
    8192: {"lars": [0.90] * 3, "sgd": [0.87, 0.86, 0.85]},
}


def budget_rows():
  """Study 1 of model A (hand_rows) and study 2's Q1 of model A, finished."""
  rows = hand_rows()
  budget = finish_grids(rows, lambda r: lb.plan_budget(r, lb.plan_study(r)),
                        {("A", b) for b in HAND_80}, peak_in_the_middle)
  return add_seeds(rows, budget, HAND_80), budget


def test_budget_decision_rules_match_a_hand_computation():
  rows, budget = budget_rows()
  budget = lb.plan_budget(rows, lb.plan_study(rows))
  assert ("B", 8192) not in budget.selected  # model B's first study is missing
  cells = summary.selected_cells(rows, budget)
  assert cells[("A", 4096, "sgd")].test == HAND_80[4096]["sgd"]
  r80, verdicts = summary.claim_test(cells, "A")
  assert r80 == pytest.approx(0.92)
  v4096, v8192 = verdicts
  se = np.hypot(*(np.std(HAND_80[4096][o], ddof=1) / np.sqrt(3)
                  for o in ("lars", "sgd")))
  assert (v4096.batch_size, v4096.gap, v4096.baseline_gap) == (
      4096, pytest.approx(0.01), pytest.approx(0.02))
  assert v4096.standard_error == pytest.approx(se)
  assert v4096.needed == pytest.approx(2 * se) and 2 * se > 0.02
  assert v4096.within_point and not v4096.separated and not v4096.holds
  assert v8192.gap == pytest.approx(0.02) and v8192.difference == pytest.approx(0.04)
  assert v8192.needed == pytest.approx(2 * 0.01 / np.sqrt(3))
  assert not v8192.within_point and v8192.separated


# Model A, Q2's best trials, test accuracy of seeds 0, 1, 2 (R = 0.91).
HAND_Q2 = {
    4096: {"sgd": [0.88, 0.87, 0.86], "lars": [0.905, 0.90, 0.895],
           "lamb": [0.90, 0.89, 0.88]},
    8192: {"sgd": [0.89] * 3, "lars": [0.89] * 3, "lamb": [0.91, 0.905, 0.90]},
}
BEST_WARMUP = {"lars": 0.3, "sgd": 0.1, "lamb": 0.3}


def baseline_val(run, plan):
  """Peaks in the middle of each grid, 1 point higher at BEST_WARMUP; the
  lowest LARS value at 30 % warm-up is best of all, but failed."""
  lrs = plan.grids[(run.model, run.batch_size, run.warmup_fraction)][run.optimizer]
  bonus = 0.01 if run.warmup_fraction == BEST_WARMUP[run.optimizer] else 0.0
  return 0.85 + bonus - 0.01 * abs(lrs.index(run.learning_rate) - len(lrs) // 2)


def with_baseline(rows):
  """Adds Q2's grids of model A and their seeds (HAND_Q2) to ``rows``; the
  two best trials of all (LARS at 4096, 30 % warm-up) failed."""

  def plan_fn(r):
    return lb.plan_baseline(r, lb.plan_study(r))

  lars_4096 = plan_fn(rows).grids[("A", 4096, 0.3)]["lars"]
  failed = {lars_4096[1]: "collapsed", lars_4096[3]: "diverged"}
  finish_grids(rows, plan_fn, {("A", 4096), ("A", 8192)}, baseline_val)
  for row in rows:
    if (row["study"], row["batch_size"], row["optimizer"], row["warmup_fraction"]
        ) == ("2", "4096", "lars", "0.3") and float(row["learning_rate"]) in failed:
      row.update(status=failed[float(row["learning_rate"])], val_accuracy="0.99")
  plan = plan_fn(rows)
  assert plan.selected[("A", 4096)]["lars"] == lars_4096[2]  # the middle
  return add_seeds(rows, plan, HAND_Q2), plan


def test_baseline_selection_and_verdict_match_a_hand_computation():
  rows, plan = with_baseline(hand_rows())
  assert plan.warmups[("A", 4096)] == plan.warmups[("A", 8192)] == BEST_WARMUP
  cells = summary.selected_cells(rows, plan)
  assert cells[("A", 4096, "lars")].warmup_fraction == 0.3
  assert cells[("A", 8192, "lamb")].test == HAND_Q2[8192]["lamb"]
  r, lars = summary.claim_test(cells, "A", r=0.91, optimizer="lars")
  assert r == 0.91 and [(v.batch_size, v.holds) for v in lars] == [
      (4096, True), (8192, False)]
  se = np.hypot(*(np.std(HAND_Q2[4096][o], ddof=1) / np.sqrt(3)
                  for o in ("lars", "sgd")))
  assert (lars[0].gap, lars[0].baseline_gap, lars[0].standard_error) == (
      pytest.approx(0.01), pytest.approx(0.04), pytest.approx(se))
  assert lars[1].difference == pytest.approx(0.0)  # a tie with Nesterov
  _, lamb = summary.claim_test(cells, "A", r=0.91, optimizer="lamb")
  assert [(v.batch_size, v.holds) for v in lamb] == [(4096, False), (8192, True)]
  assert lamb[0].gap == pytest.approx(0.02) and lamb[1].gap == pytest.approx(0.005)
  assert lamb[1].difference == pytest.approx(0.015)
  assert lamb[1].needed == 0.01  # 1 point > 2 SE = 0.58 points


def test_summary_of_study_2(tmp_path):
  rows, budget = budget_rows()
  rows, baseline = with_baseline(rows)
  by_key = {lb.row_key(r): r for r in rows}
  lars_4096 = budget.grids[("A", 4096)]["lars"]
  for lr, curve in ((lars_4096[0], "[[100,0.85],[200,0.91]]"),
                    (lars_4096[4], "[[50,0.8],[150,0.906],[250,0.9]]")):
    run = lb.Run("A", "lars", 4096, lr, phase="budget", epochs=80, study=2)
    by_key[run.key()]["val_curve"] = curve  # target R80 - 1.5 = 90.5 %
  path = tmp_path / "large_batch.csv"
  for row in rows:
    lb.append_row(str(path), row)
  text = summary.summarize(str(path))
  q1 = text.split("## Study 2, Q1")[1].split("## Study 2, Q2")[0]
  q2 = text.split("## Study 2, Q2")[1]
  lr = {(b, o): f"{lr:g}" for b in HAND_80
        for o, lr in budget.selected[("A", b)].items()}
  assert (f"| 128 | 91.50 ± 0.00 (lr {lr[128, 'lars']}, n=3) | 92.00 ± 0.00 "
          f"(lr {lr[128, 'sgd']}, n=3) | R80 = 92.00 |  |  |  | reference |  |") in q1
  assert (f"| 4096 | 91.00 ± 0.29 (lr {lr[4096, 'lars']}, n=3) | 90.00 ± 1.15 "
          f"(lr {lr[4096, 'sgd']}, n=3) | 1.00 | 2.00 | 1.00 | 2.38 | yes | no |") in q1
  assert (f"| 8192 | 90.00 ± 0.00 (lr {lr[8192, 'lars']}, n=3) | 86.00 ± 0.58 "
          f"(lr {lr[8192, 'sgd']}, n=3) | 2.00 | 6.00 | 4.00 | 1.15 | no | yes |") in q1
  assert f"| 4096 | {150} ({lars_4096[4]:g}) | not reached |" in q1
  assert "| 8192 | pending | pending |  |  |  |  | pending | pending |" in q1  # B
  chosen = baseline.selected[("A", 4096)]
  assert "R = 91.00 %." in q2
  assert (f"| 4096 | SGD (Nesterov) | 87.00 ± 0.58 (lr {chosen['sgd']:g}, "
          "warm-up 10%, n=3) | 4.00 | baseline |  |  |") in q2
  assert (f"| 4096 | LARS | 90.00 ± 0.29 (lr {chosen['lars']:g}, warm-up 30%, "
          "n=3) | 1.00 | 3.00 | 1.29 | yes |") in q2
  assert (f"| 4096 | LAMB | 89.00 ± 0.58 (lr {chosen['lamb']:g}, warm-up 30%, "
          "n=3) | 2.00 | 2.00 | 1.63 | no |") in q2
  assert "| 8192 | LAMB | 90.50 ± 0.29" in q2 and "| 0.50 | 1.50 | 1.00 | yes |" in q2
  assert "| 4096 | LARS | pending | – |  |  | pending |" in q2.split("### Model B")[1]
  progress = text.split("## Study 2: progress")[1].split("## Study 2, Q1")[0]
  assert "| budget_seed | 12 of 12 finished (0 not yet defined) |" in progress
  assert "| baseline_seed | 12 of 12 finished (0 not yet defined) |" in progress
  for name in summary.PLOTS:
    assert (tmp_path / name).stat().st_size > 1000


def test_edge_lines_name_q2_grids_by_warmup_and_study_3_by_epochs():
  plan = lb.Plan(
      runs=[], selected={("A", 4096): {"lars": 50.0, "sgd": 0.2}},
      grids={("A", 4096, 0.1): {"lars": [12.5, 25.0, 50.0], "sgd": [0.1, 0.2]},
             ("A", 4096, 0.3): {"lars": [12.5, 25.0, 50.0, 100.0],
                                "sgd": [0.1, 0.2, 0.4]}},
      extensions={("A", 4096, 0.1): (0, 0), ("A", 4096, 0.3): (0, 1)},
      undefined={}, warmups={("A", 4096): {"lars": 0.3, "sgd": 0.1}})
  assert summary._edge_lines(plan, "Q2 (baseline)") == [
      "Q2 (baseline): grids extended at an edge: A/4096 warm-up 30%.",
      "Q2 (baseline): selected learning rate still at the grid's edge "
      "(extension cap reached): A/4096 warm-up 10% sgd."]
  ratio = lb.Plan(
      selected={("A", 8192, 20.0): {"lars": 3.125, "sgd": 0.1}},
      grids={("A", 8192, 20.0): {"lars": [3.125, 6.25, 12.5], "sgd": [0.05, 0.1, 0.2]}},
      extensions={("A", 8192, 20.0): (1, 0)})
  assert summary._ratio_lines([], ratio, {})[-3:] == [
      "Study 3: grids extended at an edge: A/8192 20 epochs.",
      "Study 3: selected learning rate still at the grid's edge "
      "(extension cap reached): A/8192 20 epochs lars.", ""]


# Study 3: the per-layer ratio against one ratio and a bounded step.


def test_ratio_arms_get_the_same_search_centred_on_q2():
  rows = lb.read_rows(lb.RESULTS, superseded=True)
  baseline = lb.plan_baseline(rows, lb.plan_study(lb.as_first_run(rows)))
  point = study.RATIO_POINT
  plan = lb.plan_ratio([r for r in rows if r["study"] != "3"], baseline)
  q2_rates, q2_warmups = baseline.selected[point], baseline.warmups[point]
  source = {"lars": "lars", "lars_global": "lars", "sgd_clip": "sgd", "sgd": "sgd"}
  epochs = study.RATIO_EPOCHS[0]
  values = plan.grids[point + (epochs,)]
  assert set(values) == set(study.RATIO_ARMS)
  for arm, lrs in values.items():
    assert lrs == [q2_rates[source[arm]] * f for f in study.RATIO_FACTORS]
  for run in plan.runs:
    assert (run.study, run.model, run.batch_size, run.epochs) == (3, *point, epochs)
    assert run.warmup_fraction == q2_warmups[source[run.optimizer]]
    assert run.nesterov == run.optimizer.startswith("sgd")
  assert len(plan.runs) == len(study.RATIO_ARMS) * len(study.RATIO_FACTORS)
  config = plan.runs[0].config()
  assert config.log_trust_ratios
  clip = next(r for r in plan.runs if r.optimizer == "sgd_clip").config()
  assert (clip.optimizer, clip.clip_gradient_norm) == ("sgd", study.RATIO_CLIP_NORM)


def test_collapsed_runs_are_labelled_by_the_cell_rule():
  def row(val, loss="0.3", status="ok"):
    return dict(study="3", batch_norm="none", batch_size="8192", epochs="20",
                val_accuracy=val, train_loss=loss, status=status)
  rows = lb.relabel_collapsed([row("0.90"), row("0.44"), row("0.46"),
                               row("0.80", loss="2.2"), row("nan", status="diverged")])
  assert [r["status"] for r in rows] == [
      "ok", "collapsed", "ok", "collapsed", "diverged"]


def test_ratio_decision_matches_a_hand_computation():
  def cell(*test):
    return summary.Cell(1.0, list(test), [0.0] * len(test))
  cells = {(20.0, "lars"): cell(0.90, 0.91, 0.92),          # mean 0.91, SE 0.00577
           (20.0, "lars_global"): cell(0.88, 0.89, 0.90),   # lead 2.0 points
           (20.0, "sgd_clip"): cell(0.905, 0.90, 0.895),    # lead 1.0 point
           (20.0, "sgd"): cell(0.80, 0.85, 0.90)}
  verdicts = summary.ratio_verdicts(cells, 20.0)
  se = np.sqrt(2 * np.var([0.90, 0.91, 0.92], ddof=1) / 3)  # equal SEs
  assert np.isclose(verdicts["lars_global"].difference, 0.02)
  assert np.isclose(verdicts["lars_global"].needed, max(0.01, 2 * se))
  assert verdicts["lars_global"].separated  # 2.0 >= 1.63
  assert not verdicts["sgd_clip"].separated  # 1.0 < max(1, 2 SE) = 1.29
  assert np.isclose(verdicts["sgd"].difference, 0.06)
