"""Test set-up: 8 fake CPU devices, set before JAX starts (never mid-suite)."""
import fcntl
import os
import pathlib
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

# Scripts that tests run in subprocesses, not test modules: `--doctest-modules`
# would import them, and hooked_main.py defines experiments.main's flags.
collect_ignore = ["hooked_main.py", "mutants_report.py"]

REPO = pathlib.Path(__file__).resolve().parents[1]
# The original MNIST / Fashion-MNIST files beside the repository (CI has them).
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


@pytest.fixture(scope="session", autouse=True)
def checkpoints_saved_from_one_replica():
  """In-process tests save each replicated array from one replica (orbax's way
  on GPUs). Orbax's default elsewhere splits it among the 8 fake CPU devices,
  which share one memory, at the cost of one compiled slice per array and
  device: a third of a cold run of test_train.py and the recipe smoke tests
  (69 s -> 46 s). The runs the tests start as subprocesses keep the default.
  """
  try:
    import jax  # pylint: disable=g-import-not-at-top
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    from orbax.checkpoint._src.metadata import array_metadata_store  # pylint: disable=g-import-not-at-top
  except ImportError:  # `make test-floors` has no orbax
    return
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(
          use_replica_parallel=False,
          array_metadata_store=array_metadata_store.Store()),
      override=True)


@pytest.fixture(scope="session")
def fashion_mnist_data_dir(request, tmp_path_factory):
  """A tfds data_dir with fashion_mnist prepared once for the whole suite.

  Built from ../shared/datasets (or downloaded where there is network) into
  the pytest cache, so later sessions reuse it; under a file lock, since the
  test workers of ``pytest -n`` share that cache.
  """
  from experiments.data import preparation  # pylint: disable=g-import-not-at-top
  from experiments.data.datasets import DataConfig  # pylint: disable=g-import-not-at-top
  try:
    path = request.config.cache.mkdir("lars_optax_tfds")
  except AttributeError:  # cache provider disabled
    path = tmp_path_factory.mktemp("tfds")
  manual_dir = SHARED_DATASETS if SHARED_DATASETS.is_dir() else None
  with open(pathlib.Path(path) / ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    preparation.prepare(DataConfig.from_config(
        {"name": "fashion_mnist", "data_dir": str(path),
         "manual_dir": str(manual_dir) if manual_dir else None}))
  return str(path)
