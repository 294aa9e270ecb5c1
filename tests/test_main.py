"""The command line as a user meets it: quiet runs, one-line errors.

Each case runs `python -m experiments.main` in a subprocess, as a user would.
"""
import json
import os
import re
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from experiments import cli
from experiments import train
from experiments.configs import default
from experiments.configs import tiny
from experiments.workdir import changed_fields

from tests.conftest import REPO, SHARED_DATASETS

# What a log line of absl (orbax, tfds, ...), TensorFlow's C++ or Python's
# warnings module looks like.
LOG_LINE = re.compile(r"^([IWEF]\d{4} |WARNING|INFO|I0000|W0000|.*Warning: )")


def main(*args, workdir, devices=1, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  return subprocess.run(
      [sys.executable, "-m", "experiments.main",
       "--config=experiments/configs/tiny.py", f"--workdir={workdir}", *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
  assert result.returncode == 2, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


@pytest.mark.slow
def test_a_run_shows_one_line_of_preparation_progress_and_a_summary(tmp_path):
  """A first run: the dataset is prepared (one line), trained, summarised."""
  if not (SHARED_DATASETS / "fashion_mnist").is_dir():
    pytest.skip(f"Fashion-MNIST files not found in {SHARED_DATASETS}")
  workdir = tmp_path / "run"
  result = main(f"--config.data.data_dir={tmp_path / 'tfds'}",
                f"--config.data.manual_dir={SHARED_DATASETS}",
                "--config.num_train_steps=3", "--config.plot=True",
                "--config.tensorboard=True", "--config.progress_bar=True",
                workdir=workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = (result.stdout + result.stderr).replace("\r", "\n").splitlines()
  noise = [line for line in lines if LOG_LINE.match(line)]
  assert not noise, noise
  progress = [line for line in result.stderr.replace("\r", "\n").splitlines()
              if line.strip() and not line.startswith("train:")]
  assert len(progress) == 1 and progress[0].startswith("Preparing fashion_mnist")
  assert any(line.startswith("train:") and "3/3" in line for line in lines)
  summary = result.stdout.strip().splitlines()
  assert "test accuracy" in summary[0] and "3 steps" in summary[0]
  for name in ("metrics.jsonl", "tensorboard", "training_curves.png", "checkpoints"):
    assert any(line.endswith(str(workdir / name)) for line in summary[1:]), summary


@pytest.mark.slow
def test_unknown_config_key_suggests_the_nearest(tmp_path):
  result = main("--config.lerning_rate=1", workdir=tmp_path)
  assert_one_line_error(result, "unknown config key 'lerning_rate'",
                        "did you mean", "learning_rate")


@pytest.mark.slow
def test_unknown_config_key_without_a_close_one(tmp_path):
  result = main("--config.gradient_checkpointing=4", workdir=tmp_path)
  assert_one_line_error(result, "unknown config key 'gradient_checkpointing'",
                        "experiments/configs/tiny.py")
  assert "Traceback" not in result.stderr


# ml_collections loads config files with importlib's deprecated load_module().
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_config_keys_are_checked_against_the_config(capsys):
  """The check itself, in this process: a dotted key walks the config."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values)
  argv = ["main", "--config=experiments/configs/tiny.py", "--config.seed=1",
          "--config.data.manual_dir", "/x", "--noconfig.plot"]
  cli.check_config_overrides(argv, flag_values["config"])  # all known
  for key, suggestion in (("data.manul_dir", "did you mean 'data.manual_dir'"),
                          ("lars.trust_coeficient", "'lars.trust_coefficient'"),
                          ("seed.value", "error"),  # seed is not a ConfigDict
                          ("gradient_checkpointing", None)):
    with pytest.raises(SystemExit) as stop:
      cli.check_config_overrides(argv + [f"--config.{key}=1"],
                                 flag_values["config"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: unknown config key '{key}'")
    assert (suggestion in line) if suggestion else "did you mean" not in line


@pytest.mark.slow
def test_bad_value_names_the_field(tmp_path):
  result = main("--config.global_batch_size=many", workdir=tmp_path)
  assert_one_line_error(result, "global_batch_size", "many")


@pytest.mark.slow
def test_unknown_choice_lists_the_valid_ones(tmp_path):
  result = main("--config.optimizer=adam", workdir=tmp_path)
  assert_one_line_error(result, "optimizer", "'adam'", "lamb, lars, lars_global, optax_lars, sgd")


@pytest.mark.slow
def test_batch_not_divisible_by_devices(tmp_path):
  result = main("--config.global_batch_size=100", workdir=tmp_path, devices=8)
  assert_one_line_error(result, "global_batch_size=100", "8")


@pytest.mark.slow
def test_batch_larger_than_the_dataset(tmp_path, fashion_mnist_data_dir):
  result = main(f"--config.data.data_dir={fashion_mnist_data_dir}",
                "--config.global_batch_size=4096", workdir=tmp_path)
  assert_one_line_error(result, "global_batch_size=4096", "1024")


@pytest.mark.slow
def test_missing_data_names_the_files_and_where(tmp_path):
  result = main(f"--config.data.data_dir={tmp_path / 'empty'}",
                f"--config.data.manual_dir={tmp_path / 'nowhere'}",
                workdir=tmp_path / "run")
  assert_one_line_error(result, "fashion_mnist", str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_missing_config_file(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.main", "--config=configs/nope.py",
       f"--workdir={tmp_path}"], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=120)
  assert_one_line_error(result, "configs/nope.py", "No such file")


@pytest.mark.slow
def test_resuming_with_a_result_changing_config_stops(tmp_path):
  """A workdir with checkpoints and a different seed: stop, naming the field."""
  (tmp_path / "checkpoints" / "4").mkdir(parents=True)
  saved = json.loads(tiny.get_config().to_json())
  saved["seed"] = 7
  saved["log_every_steps"] = 1000  # bookkeeping: may differ
  (tmp_path / "config.json").write_text(json.dumps(saved))
  result = main(workdir=tmp_path)
  assert_one_line_error(result, "seed (7 -> 0)", "--allow_config_change")
  assert "log_every_steps" not in result.stderr


def test_changed_fields_ignore_bookkeeping():
  saved = json.loads(tiny.get_config().to_json())
  config = tiny.get_config()
  config.plot = True
  config.checkpoint_every_steps = 1
  assert changed_fields(config, saved) == {}
  config.seed = 3
  config.data.train_split = "train[:512]"
  assert changed_fields(config, saved) == {
      "data.train_split": ("train[:1024]", "train[:512]"), "seed": (0, 3)}


def test_a_config_saved_before_a_field_existed_resumes_with_its_old_value():
  saved = json.loads(tiny.get_config().to_json())
  del saved["grad_accum_steps"]  # as in a run saved before accumulation
  config = tiny.get_config()
  assert changed_fields(config, saved) == {}
  config.grad_accum_steps = 2
  assert changed_fields(config, saved) == {"grad_accum_steps": (1, 2)}
  # A data field whose default moved to the recipe ("test" -> None) is the same.
  saved["data"]["eval_split"], config.data.eval_split = "test[:512]", None
  saved["data"]["cache"] = True
  config.grad_accum_steps = 1
  assert changed_fields(config, saved) == {
      "data.eval_split": ("test[:512]", "test")}


def test_a_new_field_needs_only_its_default_and_its_consumer(monkeypatch):
  """Adding a result-affecting field: its default in configs/default.py, and
  the code that reads it; resuming, validation and the data config follow."""
  saved = json.loads(tiny.get_config().to_json())  # a run from before the field
  get_config = default.get_config

  def with_new_field():
    config = get_config()
    config.label_smoothing = 0.0
    return config

  monkeypatch.setattr(default, "get_config", with_new_field)
  config = tiny.get_config()
  assert config.label_smoothing == 0.0  # variants inherit it
  assert changed_fields(config, saved) == {}
  train.validate_config(config, num_devices=1, num_local_devices=1,
                        process_count=1)
  config.label_smoothing = 0.1
  assert changed_fields(config, saved) == {"label_smoothing": (0.0, 0.1)}


# Every value the library rejects, as the command line reports it.
LIBRARY_ERRORS = [
    (("--config.weight_decay=-0.1",), "`weight_decay` must be non-negative"),
    (("--config.momentum=1.0",), "`momentum` must be in [0, 1)"),
    (("--config.lars.trust_coefficient=0",), "`trust_coefficient` must be positive"),
    (("--config.lars.eps=-1",), "`eps` must be non-negative"),
    (("--config.lars.formula=both",), "`formula` must be one of"),
    (("--config.base_learning_rate=-1", "--config.lr_scaling=none"),
     "`learning_rate` must be non-negative"),
    (("--config.end_learning_rate=-1",), "`end_value` must be finite and non-negative"),
    (("--config.power=0",), "`power` must be positive"),
    (("--config.optimizer=lamb", "--config.weight_decay=-1"),
     "`weight_decay` must be non-negative"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,message", LIBRARY_ERRORS,
                         ids=[a[0].split("=")[0][9:] for a, _ in LIBRARY_ERRORS])
def test_a_value_the_library_rejects_is_one_line(args, message, tmp_path):
  result = main(*args, workdir=tmp_path / "run")
  assert_one_line_error(result, "rejects the config", message)
  assert not (tmp_path / "run" / "config.json").exists()  # stopped before writing
