"""metrics.py: metrics.jsonl and TensorBoard events across a kill and a resume.

TensorBoard's own reader (EventAccumulator) reads the events back: it applies
the purge that a resumed writer asks for, as the TensorBoard app does.
"""
import sys
import types

import pytest

from experiments import metrics
from experiments.workdir import Workdir


def tensorboard_scalars(directory) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} as TensorBoard shows them."""
  # TensorBoard's reader without TensorFlow (the "notf" build marker): the
  # event files need only protobuf to read, and TensorFlow takes seconds to load.
  sys.modules.setdefault("tensorboard.compat.notf",
                         types.ModuleType("tensorboard.compat.notf"))
  accumulator = pytest.importorskip(
      "tensorboard.backend.event_processing.event_accumulator")
  events = accumulator.EventAccumulator(str(directory))
  events.Reload()
  return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
          for tag in events.Tags()["scalars"]}


def writer(workdir, start_step, **kwargs):
  return metrics.MetricsWriter(Workdir(str(workdir)), start_step=start_step,
                               tensorboard=True, enabled=True, **kwargs)


def test_read_records_skips_a_line_cut_by_a_kill(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "kind": "train", "loss": 2.5}\n'
                  '{"step": 2, "kind": "train", "loss": NaN}\n'
                  '{"step": 3, "kind": "tr')
  records = metrics.read_records(str(path))
  assert [r["step"] for r in records] == [1, 2]
  assert records[0] == {"step": 1, "kind": "train", "loss": 2.5}
  assert metrics.read_records(str(tmp_path / "missing.jsonl")) == []


def test_a_resumed_run_shows_each_step_once(tmp_path):
  # The first run logs steps 1-10 (an evaluation at 5) and is killed after the
  # checkpoint of step 5, in the middle of a metrics.jsonl line.
  first = writer(tmp_path, 0)
  for step in range(1, 11):
    first.write(step, "train", {"loss": float(step)})
    if step == 5:
      first.write(step, "eval", {"accuracy": 0.5})
  first.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 11, "kind": "tr')
  # The resumed run starts from step 5 and logs steps 6-12 (other values).
  resumed = writer(tmp_path, 5)
  for step in range(6, 13):
    resumed.write(step, "train", {"loss": 100.0 + step})
  resumed.write(12, "eval", {"accuracy": 0.75})
  resumed.close()

  want_loss = [(s, float(s)) for s in range(1, 6)] + [
      (s, 100.0 + s) for s in range(6, 13)]
  scalars = tensorboard_scalars(tmp_path / "tensorboard")
  assert scalars["train/loss"] == want_loss
  assert scalars["eval/accuracy"] == [(5, 0.5), (12, 0.75)]
  records = metrics.read_records(str(tmp_path / "metrics.jsonl"))
  assert [(r["step"], r["loss"]) for r in records if r["kind"] == "train"] == (
      want_loss)
  assert [(r["step"], r["accuracy"]) for r in records if r["kind"] == "eval"] == [
      (5, 0.5), (12, 0.75)]


def test_a_finished_run_started_again_evaluates_once_more(tmp_path):
  first = writer(tmp_path, 0)
  for step in range(1, 5):
    first.write(step, "train", {"loss": float(step)})
  first.write(4, "eval", {"accuracy": 0.5})
  first.close()
  again = writer(tmp_path, 4, redo_eval_at_start=True)
  again.write(4, "eval", {"accuracy": 0.625})
  again.close()

  scalars = tensorboard_scalars(tmp_path / "tensorboard")
  assert scalars["train/loss"] == [(s, float(s)) for s in range(1, 5)]
  assert scalars["eval/accuracy"] == [(4, 0.625)]
  records = metrics.read_records(str(tmp_path / "metrics.jsonl"))
  assert [(r["step"], r["kind"]) for r in records] == [
      (1, "train"), (2, "train"), (3, "train"), (4, "train"), (4, "eval")]


def test_a_run_resumed_with_its_evaluation_redone(tmp_path):
  """Resumed from step 4, whose evaluation is redone: what the killed run
  logged past the checkpoint, and its evaluation at 4, are gone."""
  first = writer(tmp_path, 0)
  for step in range(1, 9):
    first.write(step, "train", {"loss": float(step)})
  first.write(4, "eval", {"accuracy": 0.5})
  first.write(8, "eval", {"accuracy": 0.625})
  first.close()
  resumed = writer(tmp_path, 4, redo_eval_at_start=True)
  resumed.write(4, "eval", {"accuracy": 0.5625})
  resumed.write(5, "train", {"loss": 5.5})
  resumed.close()

  want_loss = [(s, float(s)) for s in range(1, 5)] + [(5, 5.5)]
  scalars = tensorboard_scalars(tmp_path / "tensorboard")
  assert scalars == {"train/loss": want_loss, "eval/accuracy": [(4, 0.5625)]}
  records = metrics.read_records(str(tmp_path / "metrics.jsonl"))
  assert [(r["step"], r["kind"]) for r in records] == [
      (1, "train"), (2, "train"), (3, "train"), (4, "train"), (4, "eval"),
      (5, "train")]
