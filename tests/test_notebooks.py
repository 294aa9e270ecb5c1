"""Executes notebooks/*.ipynb on their small settings (LARS_OPTAX_NOTEBOOK_SMALL=1).

The kernel is the "python3" kernel spec of this interpreter's ipykernel, so the
notebooks run with this environment's packages; it starts in a temporary
folder, so nothing is written into the repository. Fashion-MNIST is prepared
once per session from ../shared/datasets (relative to the repository's parent)
into a temporary tfds data_dir, or read from LARS_OPTAX_DATA_DIR when set.
"""
import os
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO, SHARED_DATASETS

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NAMES = [p.name for p in NOTEBOOKS]
# The study's notebook shows its results on GitHub and Colab without running.
WITH_OUTPUTS = {"02_large_batch_study.ipynb"}


def test_notebooks_are_stored_with_outputs_only_where_they_show_results():
  assert NAMES == ["01_quickstart.ipynb", "02_large_batch_study.ipynb",
                   "03_trust_ratio_diagnostics.ipynb"]
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if path.name in WITH_OUTPUTS:  # every cell run, in order
      assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
      assert any(c.outputs for c in code), path.name
    else:
      assert all(c.outputs == [] and c.execution_count is None for c in code)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    assert "%pip install" in sources[0], path.name  # the Colab set-up cell
    assert "LARS_OPTAX_NOTEBOOK_SMALL" in sources[1], path.name  # parameters


@pytest.fixture
def data_dir(fashion_mnist_data_dir):
  return os.environ.get("LARS_OPTAX_DATA_DIR") or fashion_mnist_data_dir


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_small_settings(name, data_dir, tmp_path, monkeypatch):
  if not (SHARED_DATASETS / "fashion_mnist").is_dir():
    pytest.skip(f"Fashion-MNIST files not found in {SHARED_DATASETS}")
  monkeypatch.setenv("LARS_OPTAX_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("LARS_OPTAX_SHARED_DATASETS", str(SHARED_DATASETS))
  monkeypatch.setenv("LARS_OPTAX_DATA_DIR", data_dir)
  monkeypatch.setenv("MPLBACKEND", "Agg")
  # One device, as in Colab: drop the 8 fake devices of tests/conftest.py.
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  monkeypatch.setenv("XLA_FLAGS", " ".join(flags))
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
  # Which interpreter ran it, and on how many devices.
  nb.cells.append(nbformat.v4.new_code_cell(
      "import sys, jax\nprint(sys.prefix, jax.device_count())"))
  client = NotebookClient(nb, kernel_name="python3", timeout=300,
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
  assert printed.split() == [sys.prefix, "1"], printed
  assert not list(REPO.glob("notebooks/*.png")) and not (REPO / "notebooks" / "runs").exists()
