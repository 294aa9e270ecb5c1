"""A lost host: one process of a two-process run dies (SIGKILL) mid-run.

The survivor stops within seconds of its failed collective, with one line
that names the lost process, the step and the last checkpoint (no traceback,
no C++ fatal dump), and rerunning both processes ends as an uninterrupted run.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import pytest

from experiments import interruption

from tests.conftest import REPO
from tests.test_multiprocess import environment
from tests.test_multiprocess import reserved_port

STEPS = 16
CHECKPOINT_EVERY = 4
# Process 1 SIGKILLs itself at this step (tests/hooked_main.py), between two
# checkpoints: process 0 is then at a collective, never inside a save.
KILL_AT_STEP = 10
# The bound, from the failed collective (here: from the kill).
SURVIVOR_EXITS_WITHIN_S = 30


GLOO_ERROR = ("UNKNOWN: Gloo all-reduce failed: [external/gloo/gloo/transport/"
              "tcp/pair.cc:538] Read error [127.0.0.1]:23983: Connection reset "
              "by peer")


@pytest.mark.parametrize("index", [0, 1])
def test_a_failed_collective_names_the_other_process_and_the_last_checkpoint(
    index, tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: index)
  for name in ("4", "8", "12.orbax-checkpoint-tmp"):  # 12: a save under way
    (tmp_path / name).mkdir()
  lost = interruption.lost_process(RuntimeError(GLOO_ERROR), step=13,
                                   checkpoints_dir=str(tmp_path))
  assert isinstance(lost, interruption.ProcessLost)
  assert str(lost) == (
      f"process {1 - index} of 2 was lost at step 13 (Gloo all-reduce failed: "
      "Read error [127.0.0.1]:23983: Connection reset by peer); the last "
      f"checkpoint is step 8 in {tmp_path}. Run all 2 processes again to "
      "resume.")

  empty = tmp_path / "none"
  lost = interruption.lost_process(RuntimeError(GLOO_ERROR), step=3,
                                   checkpoints_dir=str(empty))
  assert f"; there is no checkpoint in {empty} yet." in str(lost)


def test_other_errors_and_one_process_runs_are_no_lost_process(monkeypatch):
  # Another error in a two-process run keeps its traceback.
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  for error in (FloatingPointError("Non-finite loss (nan) at step 3"),
                RuntimeError("RESOURCE_EXHAUSTED: Out of memory"), KeyError()):
    assert interruption.lost_process(error, step=3, checkpoints_dir="x") is None
  # One process has no one to lose.
  monkeypatch.setattr(jax, "process_count", lambda: 1)
  assert interruption.lost_process(RuntimeError(GLOO_ERROR), step=3,
                                   checkpoints_dir="x") is None


def _command(workdir, data_dir, module, process_id, port):
  return [sys.executable, "-m", module,
          "--config=experiments/configs/tiny.py", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}",
          f"--config.num_train_steps={STEPS}",
          f"--config.checkpoint_every_steps={CHECKPOINT_EVERY}",
          f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
          f"--process_id={process_id}"]


def _run_two(workdir, data_dir, logs, kill_at_step=None, timeout=300):
  """Runs two processes of one CPU device each on ``workdir`` to their end.

  ``kill_at_step``: process 1 SIGKILLs itself at that step. Returns the exit
  codes, the stderrs and the times (time.monotonic) at which each ended.
  """
  processes, files = [], []
  with reserved_port() as port:
    for i in range(2):
      env, module = environment(1), "experiments.main"
      if kill_at_step is not None and i == 1:
        env["TEST_SIGNAL_AT_STEP"] = f"{kill_at_step}:SIGKILL"
        module = "tests.hooked_main"
      err = open(logs / f"{workdir.name}.{i}.err", "w+")  # pylint: disable=consider-using-with
      files.append(err)
      processes.append(subprocess.Popen(
          _command(workdir, data_dir, module, i, port), cwd=REPO, env=env,
          stdout=subprocess.DEVNULL, stderr=err, text=True))
    ended = [None, None]
    deadline = time.monotonic() + timeout
    try:
      while None in ended and time.monotonic() < deadline:
        for i, process in enumerate(processes):
          if ended[i] is None and process.poll() is not None:
            ended[i] = time.monotonic()
        time.sleep(0.05)
    finally:
      for process in processes:
        if process.poll() is None:
          process.kill()
          process.wait()
  errors = []
  for err in files:
    err.seek(0)
    errors.append(err.read())
    err.close()
  return [p.returncode for p in processes], errors, ended


def _finished_checkpoints(workdir):
  return sorted(int(name) for name in os.listdir(workdir / "checkpoints")
                if name.isdigit())


def _final(workdir):
  return json.loads((workdir / "final_metrics.json").read_text())


@pytest.mark.slow  # three two-process runs
def test_the_survivor_of_a_killed_process_stops_in_one_line_and_a_rerun_resumes(
    tmp_path, fashion_mnist_data_dir):
  data_dir = fashion_mnist_data_dir
  codes, errors, _ = _run_two(tmp_path / "alone", data_dir, tmp_path)
  assert codes == [0, 0], errors[0][-3000:] + errors[1][-3000:]

  run = tmp_path / "run"
  codes, errors, ended = _run_two(run, data_dir, tmp_path,
                                  kill_at_step=KILL_AT_STEP)
  assert codes[1] == -signal.SIGKILL, errors[1][-3000:]
  assert codes[0] == interruption.ProcessLost.exit_status, errors[0][-3000:]
  assert ended[0] - ended[1] < SURVIVOR_EXITS_WITHIN_S, ended
  # One line: no Python traceback, no C++ fatal dump.
  lines = errors[0].strip().splitlines()
  assert len(lines) == 1, errors[0][-3000:]
  match = re.fullmatch(
      r"error: process 1 of 2 was lost at step (\d+) \((.*)\); the last "
      r"checkpoint is step (\d+) in (\S+)\. Run all 2 processes again to "
      r"resume\.", lines[0])
  assert match, lines[0]
  step, reason, checkpoint, folder = match.groups()
  # Process 1 died with step KILL_AT_STEP under way; process 0 finds out at
  # that step's or the next one's collective.
  assert KILL_AT_STEP <= int(step) <= KILL_AT_STEP + 1, lines[0]
  assert "Gloo" in reason, lines[0]
  assert folder == str(run / "checkpoints")
  # The newest finished checkpoint (a save under way is never finished).
  assert int(checkpoint) == _finished_checkpoints(run)[-1]
  assert int(checkpoint) in (KILL_AT_STEP // CHECKPOINT_EVERY * CHECKPOINT_EVERY,
                             KILL_AT_STEP // CHECKPOINT_EVERY * CHECKPOINT_EVERY
                             - CHECKPOINT_EVERY)

  codes, errors, _ = _run_two(run, data_dir, tmp_path)
  assert codes == [0, 0], errors[0][-3000:] + errors[1][-3000:]
  assert _final(run)["resumed_from_step"] == int(checkpoint)
  assert _final(run)["params_sha256"] == _final(tmp_path / "alone")["params_sha256"]
