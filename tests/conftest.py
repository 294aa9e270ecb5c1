"""Test set-up: 8 fake CPU devices, set before JAX starts (never mid-suite)."""
import contextlib
import fcntl
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the tests and the runs they start
# (which compile the same small programs again and again).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"lars_optax_tests_jax_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# The original MNIST / Fashion-MNIST files beside the repository (CI has them).
REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session", autouse=True)
def temporary_files_under_basetemp(tmp_path_factory):
  """Temporary files of this process and its subprocesses go under pytest's
  basetemp, which pytest prunes: tfds leaves an empty ``mkdtemp`` folder each
  time it opens a builder of an unprepared dataset, and tests open many."""
  path = str(tmp_path_factory.mktemp("tempfile"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tempfile, "tempdir", path)
    patch.setenv("TMPDIR", path)
    yield


# A user's first run: Fashion-MNIST prepared in a fresh data_dir (one line of
# progress), 3 steps trained, a summary printed.
FIRST_RUN_FLAGS = ("--config=experiments/configs/tiny.py", "--config.num_train_steps=3",
                   "--config.plot=True", "--config.tensorboard=True",
                   "--config.progress_bar=True")


@contextlib.contextmanager
def _locked(path):
  with open(path, "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield


def _run_first_run(root, data_dir):
  """Runs `experiments.main` as a user's first run; keeps its result in root."""
  workdir = root / "first_run"
  manual_dir = [f"--config.data.manual_dir={SHARED_DATASETS}"] * SHARED_DATASETS.is_dir()
  result = subprocess.run(
      [sys.executable, "-m", "experiments.main", *FIRST_RUN_FLAGS, *manual_dir,
       f"--config.data.data_dir={data_dir}", f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"))
  (root / "first_run.json").write_text(json.dumps(dict(
      returncode=result.returncode, stdout=result.stdout, stderr=result.stderr,
      workdir=str(workdir))))


def _session_root(tmp_path_factory):
  """The folder that all pytest-xdist workers of this session share."""
  root = tmp_path_factory.getbasetemp()
  return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session")
def fashion_mnist_data_dir(request, tmp_path_factory):
  """A tfds data_dir with fashion_mnist prepared once for the whole suite.

  Built from ../shared/datasets (or downloaded where there is network) into
  the pytest cache, so later sessions reuse it; under a file lock, since the
  test workers of ``pytest -n`` share that cache. Where it is not prepared
  yet, the user's first run that ``first_run`` keeps prepares it, so that a
  fresh clone prepares Fashion-MNIST once.
  """
  from experiments.data import preparation  # pylint: disable=g-import-not-at-top
  from experiments.data.datasets import DataConfig  # pylint: disable=g-import-not-at-top
  root = _session_root(tmp_path_factory)
  try:
    path = request.config.cache.mkdir("lars_optax_tfds")
  except AttributeError:  # cache provider disabled
    path = root / "tfds"
  manual_dir = SHARED_DATASETS if SHARED_DATASETS.is_dir() else None
  config = DataConfig.from_config(
      {"name": "fashion_mnist", "data_dir": str(path),
       "manual_dir": str(manual_dir) if manual_dir else None})
  with _locked(root / "first_run.lock"):
    if not preparation.builder(config).is_prepared():
      _run_first_run(root, data_dir=path)
    preparation.prepare(config)
  return str(path)


@pytest.fixture(scope="session")
def first_run(fashion_mnist_data_dir, tmp_path_factory):
  """The result of a user's first run (once per session, for all workers):
  the one that prepared the suite's data, or else one in a fresh data_dir."""
  del fashion_mnist_data_dir  # prepared first, maybe by the first run
  root = _session_root(tmp_path_factory)
  with _locked(root / "first_run.lock"):
    if not (root / "first_run.json").exists():
      _run_first_run(root, data_dir=root / "first_run_tfds")
    return json.loads((root / "first_run.json").read_text())
