"""workdir.py: a run's folder, its lock and its saved config."""
import json
import os
import signal
import subprocess
import sys

import pytest

from experiments.configs import tiny
from experiments.user_errors import ConfigError
from experiments.workdir import Workdir
from experiments.workdir import WorkdirInUse

from tests.conftest import REPO


def test_the_layout_is_named_in_one_place(tmp_path):
  run = Workdir(str(tmp_path))
  assert [os.path.relpath(p, tmp_path) for p in (
      run.config, run.metrics, run.final_metrics, run.tensorboard, run.plot,
      run.checkpoints, run.corrupt_checkpoints)] == [
          "config.json", "metrics.jsonl", "final_metrics.json", "tensorboard",
          "training_curves.png", "checkpoints", "checkpoints_corrupt"]
  assert run.outputs() == [] and not run.has_checkpoints()
  (tmp_path / "checkpoints" / "12").mkdir(parents=True)
  (tmp_path / "metrics.jsonl").write_text("")
  assert run.has_checkpoints()
  assert run.outputs() == [("metrics", run.metrics), ("checkpoints", run.checkpoints)]


def test_a_workdir_takes_one_run_at_a_time(tmp_path):
  run = Workdir(str(tmp_path))
  with run.lock():
    with pytest.raises(WorkdirInUse, match=f"pid {os.getpid()}"):
      with Workdir(str(tmp_path)).lock():
        pass
  with run.lock():  # free again
    pass


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
  killed = subprocess.run(
      [sys.executable, "-c",
       "import os, signal; from experiments.workdir import Workdir\n"
       f"with Workdir({str(tmp_path)!r}).lock():\n"
       "  os.kill(os.getpid(), signal.SIGKILL)"], cwd=REPO)
  assert killed.returncode == -signal.SIGKILL
  assert "pid" in (tmp_path / ".lock").read_text()
  with Workdir(str(tmp_path)).lock():
    pass


def test_resuming_checks_the_saved_config(tmp_path):
  run = Workdir(str(tmp_path))
  config = tiny.get_config()
  run.save_config(config)
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == config.seed
  config.seed = 7
  run.check_config(config, allow_changes=False)  # no checkpoints: a new run
  (tmp_path / "checkpoints" / "3").mkdir(parents=True)
  with pytest.raises(ConfigError, match=r"seed \(0 -> 7\)"):
    run.check_config(config, allow_changes=False)
  run.check_config(config, allow_changes=True)
