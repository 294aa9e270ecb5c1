r"""The studies' driver: runs or resumes every planned run, then writes the report.

  python -m experiments.study.run --manual_dir=../shared/datasets   # run / resume
  python -m experiments.study.run --summarize                       # tables + plots

Each run appends one row to experiments/results/large_batch.csv; the plan is
recomputed from the CSV after every run, so the driver can be killed and
restarted at will (a half-finished run resumes from its checkpoint). Drivers
started more than once share the work: each trains the first unfinished run
that no other driver holds (docs/study_design.md).
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import platform
import subprocess
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging

from experiments import cli
from experiments.study import plan
from experiments.study import report
from experiments.user_errors import UserError
from experiments.workdir import Workdir
from experiments.workdir import WorkdirInUse

_WORKDIR = flags.DEFINE_string("workdir", "runs/large_batch", "Parent of the runs' workdirs.")
_RESULTS = flags.DEFINE_string("results", plan.RESULTS, "The CSV of finished runs.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "tfds manual_dir root.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir.")
_MAX_RUNS = flags.DEFINE_integer("max_runs", 0, "Stop after this many new runs (0: all).")
_SUMMARIZE = flags.DEFINE_bool("summarize", False, "Only write the summary and the plots.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the libraries' INFO and WARNING logs.")
WAIT_S = 30.0  # how long a driver waits while other drivers hold every unfinished run


def _processor() -> str:
  """The CPU's model name: XLA:CPU's last bits depend on the vendor."""
  with contextlib.suppress(OSError):
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  return platform.processor() or platform.machine()


def device_name() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return (f"{jax.devices()[0].device_kind} x{jax.device_count()} "
          f"({_processor()}, {os.cpu_count()} cores)")


@functools.cache
def code_version() -> str:
  """The checkout's commit when the driver started, with "+dirty" when the
  code (anything tracked outside experiments/results/) had uncommitted changes."""
  def git(*args):
    return subprocess.run(("git", *args), cwd=os.path.dirname(__file__),
                          capture_output=True, text=True, check=True).stdout.strip()
  dirty = git("status", "--porcelain", "--untracked-files=no", "--", ":/",
              ":/!experiments/results")
  return git("rev-parse", "--short=12", "HEAD") + ("+dirty" if dirty else "")


def _from_metrics(run_dir: str) -> tuple[list[tuple[int, float]], float, list[list]]:
  """The run's validation curve, its last logged minibatch loss, and its
  logged trust ratios as [[step, {layer: ratio}], ...]."""
  from experiments import metrics  # pylint: disable=g-import-not-at-top
  curve, loss, ratios = {}, math.nan, []
  for record in metrics.read_records(Workdir(run_dir).metrics):
    if record.get("kind") == "validation":
      curve[int(record["step"])] = float(record["accuracy"])
    elif record.get("kind") == "train" and "loss" in record:
      loss = float(record["loss"])
      layers = {k.removeprefix("trust_ratio/"): float(f"{v:.4g}")
                for k, v in record.items() if k.startswith("trust_ratio/")}
      if layers:
        ratios.append([int(record["step"]), layers])
  return sorted(curve.items()), loss, ratios


def run_one(run: plan.Run, *, workdir: str, manual_dir: str | None = None,
            data_dir: str | None = None) -> dict[str, Any]:
  """Trains one run (resuming its checkpoint if any) and returns its CSV row."""
  from experiments import optimizers  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  config = run.config()
  config.data.manual_dir, config.data.data_dir = manual_dir, data_dir
  run_dir = os.path.join(workdir, run.tag)
  start, status = time.time(), "ok"  # plan.relabel_collapsed labels collapsed runs
  try:
    final = train.train_and_evaluate(config, run_dir)
  except FloatingPointError as e:  # diverged: a result too
    logging.warning("%s diverged: %s", run.tag, e)
    final, status = {}, "diverged"
  curve, last_logged_loss, trust_ratios = _from_metrics(run_dir)
  schedule = optimizers.create_learning_rate_schedule(config, steps_per_epoch=1)
  metric = {k: f"{final.get(k, math.nan):.4f}" for k in (
      "val_accuracy", "test_accuracy", "val_loss", "test_loss")}
  return {
      **run.row(), **metric, "status": status,
      "formula": config.lars.formula if run.optimizer == "lars" else "",
      "warmup_steps": schedule.warmup_steps, "steps": schedule.total_steps,
      "train_loss": f"{final.get('train_split_loss', math.nan):.4f}",
      "wall_time_s": f"{final.get('wall_time_s', time.time() - start):.1f}",
      "device": device_name(),
      "examples_per_sec": f"{final.get('examples_per_sec', math.nan):.0f}",
      "resumed_from_step": final.get("resumed_from_step", ""),
      "val_curve": json.dumps([[s, round(a, 4)] for s, a in curve], separators=(",", ":")),
      "last_batch_loss": f"{final.get('train_loss', last_logged_loss):.4f}",
      "code_version": code_version(),
      "trust_ratios": json.dumps(trust_ratios, separators=(",", ":")) if trust_ratios else "",
  }


def run_all(results: str, workdir: str, *, max_runs: int = 0, **run_kwargs) -> int:
  """Runs the plan's unfinished runs in order (each driver the first that no
  other driver holds, ``Workdir.lock``); returns how many it ran."""
  code_version()  # of the code as loaded now
  new_runs = 0
  while not (max_runs and new_runs >= max_runs):
    rows = plan.read_rows(results, superseded=True)
    done = {plan.row_key(r) for r in rows if not r["superseded"]}
    todo = [run for run in plan.planned_runs(rows) if run.key() not in done]
    if not todo:
      break
    for run in todo:
      try:
        with Workdir(os.path.join(workdir, run.tag)).lock():
          if run.key() in {plan.row_key(r) for r in plan.read_rows(results)}:
            break  # another driver finished it meanwhile: plan again
          print(f"{len(todo)} defined runs to go; now {run.phase} {run.tag}", flush=True)
          row = run_one(run, workdir=workdir, **run_kwargs)
          plan.append_row(results, row)
        print(f"{run.phase} {run.tag}: val {row['val_accuracy']} test "
              f"{row['test_accuracy']} ({row['status']}, {row['wall_time_s']} s)", flush=True)
        new_runs += 1
        break
      except WorkdirInUse:
        continue  # another driver trains it
    else:
      time.sleep(WAIT_S)
  return new_runs


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _VERBOSE.value:
    cli.quiet_libraries()
  if not _SUMMARIZE.value:
    try:
      run_all(_RESULTS.value, _WORKDIR.value, max_runs=_MAX_RUNS.value,
              manual_dir=_MANUAL_DIR.value, data_dir=_DATA_DIR.value)
    except UserError as error:
      cli.fail(str(error))
  print(report.summarize(_RESULTS.value))


if __name__ == "__main__":
  app.run(main)
