"""What a run logs: metrics.jsonl, TensorBoard events, the progress bar.

``metrics.jsonl`` holds one JSON record a line, ``{"step", "kind", ...values}``
with kind ``"train"``, ``"eval"`` or ``"validation"``; TensorBoard gets the same
values as ``<kind>/<key>`` scalars. Both are written by process 0 only.

A resumed run first drops what the killed run logged after its checkpoint (in
both files), so that a run killed and resumed logs every step exactly once,
as an uninterrupted run does.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping

import jax
import numpy as np


def params_checksum(params) -> tuple[float, str]:
  """Sum of all parameters (float64) and sha256 of their bytes: fingerprints.

  ``params``: a tree of host arrays (``loops.to_host``).
  """
  leaves = jax.tree.leaves(params)
  digest = hashlib.sha256()
  for x in leaves:
    digest.update(np.ascontiguousarray(x).tobytes())
  return float(sum(np.sum(x, dtype=np.float64) for x in leaves)), digest.hexdigest()


def _truncate_event_files(directory: str, keep: Callable[[int, str], bool]) -> None:
  """Rewrites TensorBoard event files, keeping the summaries keep(step, tag) accepts."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.isdir(directory):
    return
  for name in tf.io.gfile.listdir(directory):
    path = os.path.join(directory, name)
    if "tfevents" not in name or name.endswith(".tmp"):
      continue
    records = []
    try:
      for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        event = event_pb2.Event.FromString(raw)
        tags = [v.tag for v in event.summary.value]
        if not tags or all(keep(event.step, tag) for tag in tags):
          records.append(raw)
    except tf.errors.DataLossError:
      pass  # a record cut by a kill
    with tf.io.TFRecordWriter(path + ".tmp") as writer:
      for raw in records:
        writer.write(raw)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


class MetricsWriter:
  """metrics.jsonl (append-safe across resumes) and TensorBoard, on process 0."""

  def __init__(self, workdir: str, *, start_step: int, tensorboard: bool,
               enabled: bool, redo_eval_at_start: bool = False):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = None
    self._tb = None
    if not enabled:
      return

    def keep(step: int, kind: str) -> bool:  # what a killed run logged before the checkpoint
      return step < start_step or (step == start_step and not (
          redo_eval_at_start and kind in ("eval", "validation")))

    kept = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        for line in f:
          try:
            record = json.loads(line)
          except json.JSONDecodeError:
            continue  # a line cut by a kill
          if keep(record.get("step", 0), record.get("kind")):
            kept.append(line if line.endswith("\n") else line + "\n")
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)
    self._file = open(self.path, "a")
    if tensorboard:
      # tf.summary.write with the "scalars" plugin metadata: what
      # tf.summary.scalar writes, without needing the tensorboard package.
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
      self._tf = tf
      self._scalar_metadata = summary_pb2.SummaryMetadata()
      self._scalar_metadata.plugin_data.plugin_name = "scalars"
      tb_dir = os.path.join(workdir, "tensorboard")
      _truncate_event_files(tb_dir, lambda step, tag: keep(step, tag.split("/")[0]))
      self._tb = tf.summary.create_file_writer(tb_dir)

  def write(self, step: int, kind: str, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "kind": kind}
    record.update({k: float(v) for k, v in values.items()})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      with self._tb.as_default(step=int(step)):
        for key, value in values.items():
          self._tf.summary.write(
              f"{kind}/{key}", self._tf.constant(float(value), self._tf.float32),
              metadata=self._scalar_metadata)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.flush()
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
               checkpoints_dir: str, last_saved_step: Callable[[], int | None]):
    self._fetch = fetch
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
