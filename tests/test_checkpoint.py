"""Kill-and-resume: a run SIGKILLed right after a checkpoint, then rerun, ends
exactly where an uninterrupted run ends (parameters bit for bit, same metrics).

Runs `python -m experiments.main` in subprocesses (2 fake CPU devices each) on
the first 1024 Fashion-MNIST training images, prepared once from
../shared/datasets into the pytest cache (or downloaded where there is network).
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TOTAL_STEPS = 40
KILL_AFTER_CHECKPOINT = 8


@pytest.fixture
def data_dir(fashion_mnist_data_dir):
  return fashion_mnist_data_dir


def main_command(workdir, data_dir, *extra):
  return [
      sys.executable, "-m", "experiments.main",
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
  for record in records:
    record.pop("examples_per_sec", None)  # wall-clock, differs between runs
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
  log = open(tmp_path / "killed.log", "w")
  process = subprocess.Popen(main_command(killed_dir, data_dir, *extra), cwd=REPO,
                             env=env, stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 240
  while KILL_AFTER_CHECKPOINT not in finished_checkpoints(killed_dir):
    assert process.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
    assert time.time() < deadline, "no checkpoint appeared"
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  assert process.wait() == -signal.SIGKILL
  log.close()
  at_kill = finished_checkpoints(killed_dir)
  assert TOTAL_STEPS not in at_kill, "the run finished before the kill"

  result = run(main_command(killed_dir, data_dir, *extra), env)
  final, records = read_outputs(killed_dir)
  reference_final, reference_records = read_outputs(reference_dir)

  assert final["resumed_from_step"] >= KILL_AFTER_CHECKPOINT
  assert final["resumed_from_step"] == max(at_kill), result.stderr[-2000:]
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
