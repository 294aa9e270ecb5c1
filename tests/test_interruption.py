"""Stopping a run at a signal and resuming it; a workdir in use stops a second run."""
import json
import os
import signal
import subprocess
import sys

import pytest

from experiments import interruption
from experiments.workdir import Workdir

from tests.conftest import REPO

STEPS = 12
# The runs signal themselves at this step (tests/hooked_main.py): the tests
# never race a run with a signal from outside.
SIGNAL_AT_STEP = 5


def _command(workdir, data_dir, module="experiments.main"):
  return [sys.executable, "-m", module,
          "--config=experiments/configs/tiny.py", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}",
          "--config.model=cnn", f"--config.num_train_steps={STEPS}",
          "--config.log_every_steps=1",
          "--config.checkpoint_every_steps=0"]


def _start(workdir, data_dir, signal_at_step=None):
  """A run of one process; ``signal_at_step=(step, name)`` makes it send
  itself that signal at that step."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  module = "experiments.main"
  if signal_at_step is not None:
    env["TEST_SIGNAL_AT_STEP"] = "{}:{}".format(*signal_at_step)
    module = "tests.hooked_main"
  return subprocess.Popen(_command(workdir, data_dir, module), cwd=REPO,
                          env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _sha256(workdir):
  return json.loads((workdir / "final_metrics.json").read_text())["params_sha256"]


def test_the_first_signal_is_recorded_and_the_handlers_restored():
  before = signal.getsignal(signal.SIGTERM)
  with interruption.StopSignals() as stop:
    assert stop.requested is None
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested == signal.SIGTERM
    os.kill(os.getpid(), signal.SIGTERM)  # a repeated SIGTERM changes nothing
    assert stop.requested == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_sigint_quits_at_once():
  result = subprocess.run(
      [sys.executable, "-c",
       "import os, signal, time; from experiments import interruption\n"
       "with interruption.StopSignals():\n"
       "  os.kill(os.getpid(), signal.SIGINT)\n"
       "  os.kill(os.getpid(), signal.SIGINT)\n"
       "  time.sleep(60)"], cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 128 + signal.SIGINT
  assert result.stderr.strip().splitlines() == [
      "error: interrupted twice; quitting without a checkpoint."]


@pytest.mark.slow
def test_a_run_on_a_workdir_in_use_stops_at_once(tmp_path, fashion_mnist_data_dir):
  with Workdir(str(tmp_path / "run")).lock():
    second = _start(tmp_path / "run", fashion_mnist_data_dir)
    _, err = second.communicate(timeout=300)
  assert second.returncode == 2, err
  assert err.strip().splitlines() == [err.strip()] and "is in use" in err, err
  assert f"pid {os.getpid()}" in err
  assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_rerun_ends_as_an_uninterrupted_run(
    tmp_path, fashion_mnist_data_dir):
  signal_number = signal.SIGTERM
  alone = _start(tmp_path / "alone", fashion_mnist_data_dir)
  _, err = alone.communicate(timeout=600)
  assert alone.returncode == 0, err[-3000:]

  stopped = _start(tmp_path / "run", fashion_mnist_data_dir,
                   signal_at_step=(SIGNAL_AT_STEP, signal_number.name))
  _, err = stopped.communicate(timeout=300)
  assert stopped.returncode == 128 + signal_number, err[-3000:]
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "stopped by SIGTERM" in lines[0], err[-3000:]
  # The step under way when the signal came is finished, then it stops.
  assert f"after step {SIGNAL_AT_STEP} of {STEPS};" in lines[0], err[-3000:]
  saved = [p for p in os.listdir(tmp_path / "run" / "checkpoints") if p.isdigit()]
  assert saved == [str(SIGNAL_AT_STEP)]

  resumed = _start(tmp_path / "run", fashion_mnist_data_dir)
  _, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err[-3000:]
  assert _sha256(tmp_path / "run") == _sha256(tmp_path / "alone")


# JAX's preemption sync stops both processes one notice round trip after the
# signal, a step or two: far from the end.
MULTI_STEPS = 40


def _run_two(workdir, data_dir, signal_at_step=None, timeout=600):
  """Runs two processes of one CPU device each, sharing ``workdir``, to
  their end; ``signal_at_step=(step, name)``: process 1 (not the coordinator)
  sends itself that signal at that step. Returns (exit codes, stderrs)."""
  from tests.test_multiprocess import environment, reserved_port
  with reserved_port() as port:
    processes = []
    for i in range(2):
      env, module = environment(1), "experiments.main"
      if signal_at_step is not None and i == 1:
        env["TEST_SIGNAL_AT_STEP"] = "{}:{}".format(*signal_at_step)
        module = "tests.hooked_main"
      processes.append(subprocess.Popen(
          [*_command(workdir, data_dir, module),
           f"--config.num_train_steps={MULTI_STEPS}",
           f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
           f"--process_id={i}"],
          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
          text=True))
    errors = []
    for process in processes:
      try:
        errors.append(process.communicate(timeout=timeout)[1])
      finally:
        if process.poll() is None:
          process.kill()
  return [p.returncode for p in processes], errors


@pytest.mark.slow
def test_two_processes_stop_at_one_step_when_one_gets_sigterm(
    tmp_path, fashion_mnist_data_dir):
  codes, errors = _run_two(tmp_path / "alone", fashion_mnist_data_dir)
  assert codes == [0, 0], errors[0][-3000:] + errors[1][-3000:]

  codes, errors = _run_two(tmp_path / "run", fashion_mnist_data_dir,
                           signal_at_step=(SIGNAL_AT_STEP, "SIGTERM"))
  assert codes == [128 + signal.SIGTERM] * 2, errors[0][-3000:] + errors[1][-3000:]
  stopped_at = []
  for err in errors:  # JAX's runtime may log the SIGTERM before our line
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and "stopped by" in last, err[-3000:]
    stopped_at.append(int(last.split("after step ")[1].split()[0]))
  assert stopped_at[0] == stopped_at[1]
  assert SIGNAL_AT_STEP <= stopped_at[0] < MULTI_STEPS
  assert str(stopped_at[0]) in os.listdir(tmp_path / "run" / "checkpoints")

  codes, errors = _run_two(tmp_path / "run", fashion_mnist_data_dir)
  assert codes == [0, 0], errors[0][-3000:] + errors[1][-3000:]
  assert _sha256(tmp_path / "run") == _sha256(tmp_path / "alone")
