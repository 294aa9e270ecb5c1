"""Tests of the training job (experiments/train.py) and its steps and metrics
on 8 fake CPU devices with tfds mock data.

One step per loop, a stopped and resumed run against an uninterrupted one (bit
for bit), every bad input, and the NaN stop. The loops' equivalence with one
device is in test_loops.py.
"""
import json
import os
import signal

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import interruption
from experiments import loops
from experiments import train
from experiments.data import pipeline
from experiments.data import preparation
from tests.mock_tfds import mock_data
from tests.test_loops import tiny_config

NUM_EXAMPLES = 64


@pytest.fixture
def mock_mnist():
  with mock_data(num_examples=NUM_EXAMPLES):
    yield


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["jit", "pmap"])
def test_one_step_each_loop(loop, tmp_path, mock_mnist):
  config = tiny_config(loop=loop, num_train_steps=1, tensorboard=True, plot=True)
  final = train.train_and_evaluate(config, str(tmp_path))
  assert final["step"] == 1 and final["num_devices"] == 8
  assert np.isfinite(final["train_loss"]) and np.isfinite(final["test_loss"])
  assert 0.0 <= final["test_accuracy"] <= 1.0
  records = read_jsonl(tmp_path / "metrics.jsonl")
  train_records = [r for r in records if r["kind"] == "train"]
  assert [r["step"] for r in train_records] == [1]
  for key in ("loss", "accuracy", "learning_rate", "grad_norm", "param_norm"):
    assert np.isfinite(train_records[0][key])
  ratios = [k for k in train_records[0] if k.startswith("trust_ratio/")]
  assert "trust_ratio/head/kernel" in ratios, ratios
  assert [r["step"] for r in records if r["kind"] == "eval"] == [1]
  assert (tmp_path / "checkpoints" / "1").is_dir()
  assert (tmp_path / "training_curves.png").stat().st_size > 1000
  assert any(name.startswith("events.out.tfevents")
             for name in os.listdir(tmp_path / "tensorboard"))
  assert json.loads((tmp_path / "final_metrics.json").read_text())["step"] == 1


def test_a_stopped_and_resumed_run_ends_bit_for_bit_as_an_uninterrupted_one(
    tmp_path, mock_mnist, monkeypatch):
  """In this process, on mock data: a stop requested at step 2 (as SIGTERM
  requests it; tests/test_interruption.py sends the real signal) saves a
  checkpoint; the rerun resumes there and ends with the parameters and the
  metric lines of the run that was never stopped."""
  config = tiny_config(num_train_steps=4, checkpoint_every_steps=0)
  alone = train.train_and_evaluate(config, str(tmp_path / "alone"))

  after = interruption.StopSignals.after

  def after_with_request(self, step):
    if step == 2:
      self.requested = signal.SIGTERM
    return after(self, step)

  monkeypatch.setattr(interruption.StopSignals, "after", after_with_request)
  with pytest.raises(interruption.Interrupted, match="after step 2 of 4;"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  monkeypatch.setattr(interruption.StopSignals, "after", after)
  assert os.listdir(tmp_path / "run" / "checkpoints") == ["2"]
  resumed = train.train_and_evaluate(config, str(tmp_path / "run"))

  assert resumed["resumed_from_step"] == 2 and alone["resumed_from_step"] == 0
  assert resumed["params_sha256"] == alone["params_sha256"]
  for key in ("step", "train_loss", "train_accuracy", "test_loss",
              "test_accuracy", "params_checksum"):
    assert resumed[key] == alone[key], key

  def records(workdir):  # examples_per_sec and wall time differ between runs
    return [{k: v for k, v in r.items() if k not in ("examples_per_sec",
                                                      "wall_time_s")}
            for r in read_jsonl(workdir / "metrics.jsonl")]

  assert records(tmp_path / "run") == records(tmp_path / "alone")
  assert [r["step"] for r in records(tmp_path / "alone")
          if r["kind"] == "train"] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------
# Bad input: a clear error before anything is compiled.


@pytest.fixture
def no_compile(monkeypatch):
  """Fails the test if train_and_evaluate gets as far as building a loop."""
  def fail(*args, **kwargs):
    raise AssertionError("a loop was built before the bad input was reported")
  monkeypatch.setattr(loops, "create_loop", fail)


@pytest.mark.parametrize("field,value,message", [
    ("data.name", "mnist_v9", "Unknown dataset name 'mnist_v9'"),
    ("model", "resnet5", "Unknown model 'resnet5'"),
    ("optimizer", "adam", "Unknown optimizer 'adam'"),
    ("loop", "shard_map", "Unknown loop 'shard_map'"),
    ("batch_norm", "sync", "Unknown batch_norm mode 'sync'"),
    ("lr_scaling", "cubic", "Unknown lr_scaling rule 'cubic'"),
    ("global_batch_size", 12, "not divisible by the number of devices (8)"),
    ("eval_batch_size", 20, "eval_batch_size=20 is not divisible"),
])
def test_bad_config_fails_before_compiling(field, value, message, tmp_path,
                                           mock_mnist, no_compile):
  config = tiny_config(**{field: value})
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    train.train_and_evaluate(config, str(tmp_path))


def test_shard_params_needs_jit(tmp_path, mock_mnist, no_compile):
  with pytest.raises(ValueError, match="shard_params=True needs"):
    train.train_and_evaluate(tiny_config(loop="pmap", shard_params=True),
                             str(tmp_path))


def test_batch_larger_than_dataset(tmp_path, mock_mnist, no_compile):
  config = tiny_config(global_batch_size=2 * NUM_EXAMPLES)
  with pytest.raises(ValueError, match=f"larger than the {NUM_EXAMPLES} training"):
    train.train_and_evaluate(config, str(tmp_path))


def test_missing_data_fails_fast(tmp_path, no_compile, monkeypatch):
  # No network here; make sure a machine with one does not download either.
  monkeypatch.setattr(preparation, "_host_reachable", lambda *a, **k: False)

  def download(*args, **kwargs):  # tfds's 200 s retry loop without network
    raise AssertionError("tfds was asked to download the dataset")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download)
  config = tiny_config()
  config.data.data_dir = str(tmp_path / "empty")
  config.data.manual_dir = str(tmp_path / "no_files_here")
  with pytest.raises(preparation.DataNotFoundError, match="train-images"):
    train.train_and_evaluate(config, str(tmp_path / "work"))


# ----------------------------------------------------------------------------
# A NaN loss stops the run and keeps the last good checkpoint.


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, mock_mnist,
                                                       monkeypatch):
  bad_step = 3  # 1-based: the third update sees a NaN image
  real_iterator = pipeline.train_iterator

  def poisoned(*args, start_step=0, **kwargs):
    for step, batch in enumerate(real_iterator(*args, start_step=start_step,
                                               **kwargs), start=start_step + 1):
      if step == bad_step:
        batch = dict(batch, image=np.full_like(batch["image"], np.nan))
      yield batch

  monkeypatch.setattr(pipeline, "train_iterator", poisoned)
  config = tiny_config(num_train_steps=5, checkpoint_every_steps=1)
  with pytest.raises(FloatingPointError, match=f"at step {bad_step}:") as error:
    train.train_and_evaluate(config, str(tmp_path))
  assert f"last good checkpoint (step {bad_step - 1})" in str(error.value)
  saved = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
  assert saved and max(saved) == bad_step - 1
  steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
  assert max(steps) == bad_step - 1
