"""What a run logs: metrics.jsonl, TensorBoard events, the progress bar.

``metrics.jsonl`` holds one JSON record a line, ``{"step", "kind", ...values}``
with kind ``"train"``, ``"eval"`` or ``"validation"``; ``read_records`` reads
it back for everyone who needs it. TensorBoard gets the same values as
``<kind>/<key>`` scalars through tensorboardX's ``SummaryWriter``. Both are
written by process 0 only. Train records carry ``wall_time_s``, the run's time
so far, summed over resumed pieces.

A resumed run drops what the killed run logged after its checkpoint from
metrics.jsonl, and opens its TensorBoard writer with ``purge_step`` at the
checkpoint's step (docs/training.md, "A training job").
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from experiments.workdir import Workdir


def params_checksum(params) -> tuple[float, str]:
  """Sum of all parameters (float64) and sha256 of their bytes: fingerprints.

  ``params``: a tree of host arrays (``loops.to_host``).
  """
  leaves = jax.tree.leaves(params)
  digest = hashlib.sha256()
  for x in leaves:
    digest.update(np.ascontiguousarray(x).tobytes())
  return float(sum(np.sum(x, dtype=np.float64) for x in leaves)), digest.hexdigest()


def read_records(path: str) -> list[dict[str, Any]]:
  """The records of a metrics.jsonl, in order (a line cut by a kill is skipped)."""
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


class MetricsWriter:
  """metrics.jsonl (append-safe across resumes) and TensorBoard, on process 0."""

  def __init__(self, run: Workdir, *, start_step: int, tensorboard: bool,
               enabled: bool, redo_eval_at_start: bool = False):
    self.enabled = enabled
    self.resumed_wall_time_s = 0.0  # the wall time of the pieces before
    self.path = run.metrics
    self._file = None
    self._tb = None
    if not enabled:
      return

    def keep(record) -> bool:  # what a killed run logged up to its checkpoint
      step = record.get("step", 0)
      return step < start_step or (step == start_step and not (
          redo_eval_at_start and record.get("kind") in ("eval", "validation")))

    kept = [record for record in read_records(self.path) if keep(record)]
    self.resumed_wall_time_s = max(
        (record.get("wall_time_s", 0.0) for record in kept), default=0.0)
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(record) + "\n" for record in kept)
    os.replace(tmp, self.path)
    self._file = open(self.path, "a")
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      # A new event file; TensorBoard drops the earlier files' events at steps
      # >= purge_step. Its name ends in the start step, so that two files
      # opened in the same second load in the order they were written.
      self._tb = SummaryWriter(run.tensorboard,
                               purge_step=start_step,
                               filename_suffix=f".{start_step:010d}")
      for record in kept:
        if record["step"] == start_step:
          self._write_scalars(record)

  def _write_scalars(self, record: Mapping[str, Any]) -> None:
    for key, value in record.items():
      if key not in ("step", "kind"):
        self._tb.add_scalar(f"{record['kind']}/{key}", float(value),
                            global_step=int(record["step"]))

  def write(self, step: int, kind: str, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "kind": kind}
    record.update({k: float(v) for k, v in values.items()})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      self._write_scalars(record)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


class TrainLog:
  """Each training step's metrics: a stop on non-finite values, the speed,
  metrics.jsonl every ``log_every`` steps, and the progress bar.

  ``record(step, device_metrics)`` fetches the metrics to the host, which
  waits for that step; the training loop records step s while step s + 1
  runs. The speed counts the steps after the first recorded one (which
  includes compiling). ``last`` holds the values of the last recorded step.
  """

  def __init__(self, fetch: Callable, writer: MetricsWriter, progress, *,
               log_every: int, total_steps: int, global_batch_size: int,
               checkpoints_dir: str, last_saved_step: Callable[[], int | None],
               wall_time_s: Callable[[], float]):
    self._fetch = fetch
    self._wall_time_s = wall_time_s
    self._writer = writer
    self._progress = progress
    self._log_every = log_every
    self._total_steps = total_steps
    self._global_batch_size = global_batch_size
    self._checkpoints_dir = checkpoints_dir
    self._last_saved_step = last_saved_step
    self.last: dict[str, float] = {}
    self._first_done: float | None = None  # when the first recorded step was done
    self._last_done: float | None = None
    self._steps_timed = 0

  def record(self, step: int, device_metrics) -> None:
    values = self._fetch(device_metrics)
    for key in ("loss", "grad_norm", "param_norm"):
      if not math.isfinite(values[key]):
        raise FloatingPointError(
            f"Non-finite {key} ({values[key]}) at step {step}: training stopped."
            f" The last good checkpoint (step {self._last_saved_step()}) is kept "
            f"in {self._checkpoints_dir}; the bad state was not saved. Lower the "
            f"learning rate or check the data.")
    now = time.time()
    if self._last_done is None:
      self._first_done = now
    else:
      self._steps_timed += 1
    self._last_done = now
    if self._steps_timed:
      values["examples_per_sec"] = (
          self._steps_timed * self._global_batch_size
          / max(now - self._first_done, 1e-9))
    values["wall_time_s"] = self._wall_time_s()
    self.last = values
    if step % self._log_every == 0 or step == self._total_steps:
      self._writer.write(step, "train", values)
    self._progress.update(1)
    postfix = {"loss": f"{values['loss']:.4f}"}
    if "examples_per_sec" in values:
      postfix["ex/s"] = f"{values['examples_per_sec']:.0f}"
    self._progress.set_postfix(postfix, refresh=False)

  def examples_per_sec(self) -> float:
    """Over the timed steps of the run (NaN with fewer than two steps)."""
    if not self._steps_timed or self._last_done == self._first_done:
      return float("nan")
    return (self._steps_timed * self._global_batch_size
            / (self._last_done - self._first_done))
