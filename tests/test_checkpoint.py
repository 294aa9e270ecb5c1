"""Kill-and-resume: a run SIGKILLed right after a checkpoint, then rerun, ends
exactly where an uninterrupted run ends (parameters bit for bit, same metrics);
so does a run whose newest checkpoints were damaged on disk.

The kill test runs `python -m experiments.main` in subprocesses (2 fake CPU
devices each; the killed run kills itself once its checkpoint is written, see
tests/hooked_main.py), the damage tests `train.train_and_evaluate` in this
process (8 fake CPU devices), on the first 1024 Fashion-MNIST training images,
prepared once from ../shared/datasets into the pytest cache (or downloaded
where there is network).
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from experiments import checkpoints
from experiments import train
from experiments.configs import tiny
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # subprocesses (a SIGKILL), real data, runs trained twice

TOTAL_STEPS = 40
KILL_AFTER_CHECKPOINT = 8


@pytest.fixture
def data_dir(fashion_mnist_data_dir):
  return fashion_mnist_data_dir


def main_command(workdir, data_dir, *extra, module="experiments.main"):
  return [
      sys.executable, "-m", module,
      "--config=experiments/configs/tiny.py", f"--workdir={workdir}",
      f"--config.data.data_dir={data_dir}",
      f"--config.num_train_steps={TOTAL_STEPS}",
      "--config.checkpoint_every_steps=4", "--config.eval_every_steps=16",
      *extra,
  ]


def environment(num_devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def run(command, env, timeout=240):
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-4000:]
  return result


def read_outputs(workdir):
  final = json.loads((workdir / "final_metrics.json").read_text())
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  for record in records:  # wall-clock, differ between runs
    record.pop("examples_per_sec", None)
    record.pop("wall_time_s", None)
  return final, records


def finished_checkpoints(workdir):
  folder = workdir / "checkpoints"
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


@pytest.mark.parametrize("loop", ["jit"])
def test_sigkill_after_checkpoint_then_resume_is_exact(loop, data_dir, tmp_path):
  env = environment(2)
  extra = (f"--config.loop={loop}",)
  reference_dir = tmp_path / "uninterrupted"
  run(main_command(reference_dir, data_dir, *extra), env)

  killed_dir = tmp_path / "killed"
  killed = subprocess.run(
      main_command(killed_dir, data_dir, *extra, module="tests.hooked_main"),
      cwd=REPO, env=dict(env, TEST_KILL_AFTER_CHECKPOINT=str(KILL_AFTER_CHECKPOINT)),
      capture_output=True, text=True, timeout=240)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
  at_kill = finished_checkpoints(killed_dir)
  assert at_kill == [4, KILL_AFTER_CHECKPOINT], at_kill

  result = run(main_command(killed_dir, data_dir, *extra), env)
  final, records = read_outputs(killed_dir)
  reference_final, reference_records = read_outputs(reference_dir)

  assert final["resumed_from_step"] == KILL_AFTER_CHECKPOINT, result.stderr[-2000:]
  assert final["params_sha256"] == reference_final["params_sha256"]
  for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
              "params_checksum", "step"):
    assert final[key] == reference_final[key], key
  assert records == reference_records  # every step once, same values
  steps = [r["step"] for r in records if r["kind"] == "train"]
  assert steps == list(range(1, TOTAL_STEPS + 1))

  # Rerunning a finished run only evaluates again: nothing trains.
  run(main_command(killed_dir, data_dir, *extra), env)
  again, again_records = read_outputs(killed_dir)
  assert again["params_sha256"] == reference_final["params_sha256"]
  assert again["resumed_from_step"] == TOTAL_STEPS
  assert again_records == reference_records


# ----------------------------------------------------------------------------
# Damaged checkpoints: the run resumes from the newest one that restores and
# moves the newer ones aside; with none restorable it stops and says where.

FAULT_STEPS = 12  # checkpoints at steps 4, 8 and 12


def fault_config(data_dir):
  config = tiny.get_config()
  config.data.data_dir = data_dir
  config.num_train_steps = FAULT_STEPS
  config.checkpoint_every_steps = 4
  config.eval_every_steps = 6
  return config


@pytest.fixture(scope="module")
def uninterrupted(fashion_mnist_data_dir, tmp_path_factory):
  """A finished run (in this process) whose copies the tests damage."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  final = train.train_and_evaluate(fault_config(fashion_mnist_data_dir), str(workdir))
  assert finished_checkpoints(workdir) == [4, 8, 12]
  return workdir, final


def checkpoint_file(step_dir, kind):
  """A file orbax wrote for the step, one that restoring the step reads.

  "array": the largest data file of the saved item's OCDBT database
  (``<item>/d/``), which holds the arrays' bytes (small arrays inline in its
  b-tree nodes); "metadata": the item's JSON tree metadata (``_METADATA``).
  """
  if kind == "array":
    return max(step_dir.glob("*/d/*"), key=lambda p: p.stat().st_size)
  (path,) = step_dir.glob("*/_METADATA")
  json.loads(path.read_text())  # a JSON file, as orbax wrote it
  return path


def damage_file(path, how):
  """Truncates ``path`` to half its size, or overwrites every byte; returns its bytes."""
  data = path.read_bytes()
  if how == "truncate":
    data = data[:len(data) // 2]
  else:
    data = bytes(b ^ 0x5A for b in data)
  path.write_bytes(data)
  return data


@pytest.mark.parametrize("damage", [
    {12: ("array", "truncate")},
    {12: ("metadata", "truncate")},
    {12: ("array", "corrupt"), 8: ("metadata", "truncate")},
], ids=["array", "metadata", "two_newest"])
def test_damaged_checkpoints_are_moved_aside_and_the_run_ends_the_same(
    damage, uninterrupted, data_dir, tmp_path, capsys):
  reference_dir, reference_final = uninterrupted
  workdir = tmp_path / "run"
  shutil.copytree(reference_dir, workdir)
  damaged = {}
  for step, (kind, how) in damage.items():
    step_dir = workdir / "checkpoints" / str(step)
    path = checkpoint_file(step_dir, kind)
    damaged[step] = (path.relative_to(step_dir), damage_file(path, how))
  capsys.readouterr()

  final = train.train_and_evaluate(fault_config(data_dir), str(workdir))

  good_step = max({4, 8, 12} - set(damage))
  assert final["resumed_from_step"] == good_step
  assert final["params_sha256"] == reference_final["params_sha256"]
  for key in ("train_loss", "test_loss", "test_accuracy", "params_checksum"):
    assert final[key] == reference_final[key], key
  assert read_outputs(workdir)[1] == read_outputs(reference_dir)[1]
  # Moved aside as they were, never deleted; the run saved new ones.
  stderr = capsys.readouterr().err
  for step, (relative, data) in damaged.items():
    assert (workdir / "checkpoints_corrupt" / str(step) / relative).read_bytes() == data
    assert (f"warning: the checkpoint of step {step} in "
            f"{workdir / 'checkpoints'} cannot be restored") in stderr
  assert finished_checkpoints(workdir) == [4, 8, 12]


def test_no_restorable_checkpoint_stops_and_moves_nothing(uninterrupted, data_dir,
                                                          tmp_path):
  reference_dir, _ = uninterrupted
  workdir = tmp_path / "run"
  shutil.copytree(reference_dir, workdir)
  for step in (4, 8, 12):
    damage_file(checkpoint_file(workdir / "checkpoints" / str(step), "metadata"),
                "truncate")
  with pytest.raises(checkpoints.CheckpointError) as error:
    train.train_and_evaluate(
        fault_config(data_dir), str(workdir))
  message = str(error.value)
  assert f"None of the checkpoints in {workdir / 'checkpoints'} can be restored" in message
  for step in (4, 8, 12):
    assert f"step {step}: " in message
  assert finished_checkpoints(workdir) == [4, 8, 12]
  assert not (workdir / "checkpoints_corrupt").exists()
