"""Executes notebooks/*.ipynb on their small settings (LARS_OPTAX_NOTEBOOK_SMALL=1).

The kernel is the "python3" kernel spec of this interpreter's ipykernel, so the
notebooks run with this environment's packages; it starts in an empty
temporary folder outside the repository, so nothing is written into it.
Notebook 01, the quickstart, runs there as after `pip install lars-optax`: the
repository is not on its path (the installed library is), and tfds.load
prepares Fashion-MNIST from ../shared/datasets into a tfds data_dir of its own
in the pytest cache, once. Notebooks 02 and 03 import experiments/ from the
checkout and read the suite's array_record Fashion-MNIST, prepared once per
session, or LARS_OPTAX_DATA_DIR when set.
"""
import os
import re
import sys
import tomllib

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO, SHARED_DATASETS

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NAMES = [p.name for p in NOTEBOOKS]
QUICKSTART = "01_quickstart.ipynb"
# The study's notebook shows its results on GitHub and Colab without running.
WITH_OUTPUTS = {"02_large_batch_study.ipynb"}


def repository_url():
  with open(REPO / "pyproject.toml", "rb") as f:
    return tomllib.load(f)["project"]["urls"]["Repository"]


def test_notebooks_are_stored_with_outputs_only_where_they_show_results():
  assert NAMES == [QUICKSTART, "02_large_batch_study.ipynb",
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
    assert "LARS_OPTAX_NOTEBOOK_SMALL" in code[1].source, path.name  # parameters


def test_the_quickstart_installs_the_library_alone_and_the_others_need_a_checkout():
  url = repository_url()
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    setup = next(c for c in nb.cells if c.cell_type == "code").source
    # The repository's address is pyproject.toml's, wherever a notebook names it.
    text = "\n".join(c.source for c in nb.cells)
    repositories = re.findall(
        r"(?:github\.com|colab\.research\.google\.com/github)/([\w.-]+/[\w.-]+)", text)
    assert repositories and set(repositories) == {url.removeprefix("https://github.com/")}
    if path.name == QUICKSTART:
      # Installs the library only where it is missing, from the repository
      # URL, without the [train] extras (which would replace Colab's jax);
      # never clones, never imports the training side.
      assert re.search(r'if importlib\.util\.find_spec\("lars_optax"\) is None:\n'
                       r'    %pip install -q "lars-optax @ git\+\{REPOSITORY\}"', setup)
      assert f'REPOSITORY = "{url}"' in setup
      assert "[train" not in code and "git clone" not in code
      assert not re.search(r"^\s*(import|from) experiments", code, re.MULTILINE)
    else:
      assert "Needs a checkout of the repository" in nb.cells[0].source, path.name
      assert "notebook_setup.install_training_requirements(REPO)" in setup, path.name
      assert "%pip" not in code and "pip install -" not in code, path.name


@pytest.fixture
def data_dir(fashion_mnist_data_dir):
  return os.environ.get("LARS_OPTAX_DATA_DIR") or fashion_mnist_data_dir


@pytest.fixture
def quickstart_data_dir(request, tmp_path_factory):
  """tfds.load's own data_dir (tfrecord files, prepared by the notebook once)."""
  try:
    return str(request.config.cache.mkdir("lars_optax_tfds_quickstart"))
  except AttributeError:  # cache provider disabled
    return str(tmp_path_factory.mktemp("tfds_quickstart"))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_small_settings(name, request, tmp_path, monkeypatch):
  if not (SHARED_DATASETS / "fashion_mnist").is_dir():
    pytest.skip(f"Fashion-MNIST files not found in {SHARED_DATASETS}")
  assert not tmp_path.is_relative_to(REPO) and not list(tmp_path.iterdir())
  quickstart = name == QUICKSTART
  monkeypatch.setenv("LARS_OPTAX_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("LARS_OPTAX_SHARED_DATASETS", str(SHARED_DATASETS))
  monkeypatch.setenv("LARS_OPTAX_DATA_DIR", request.getfixturevalue(
      "quickstart_data_dir" if quickstart else "data_dir"))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  # One device, as in Colab: drop the 8 fake devices of tests/conftest.py.
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  monkeypatch.setenv("XLA_FLAGS", " ".join(flags))
  # The quickstart sees the installed library only; the others the checkout.
  path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
          if p and os.path.realpath(p) != str(REPO)]
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path if quickstart else [str(REPO)] + path))
  nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
  # Which interpreter ran it, on how many devices, with the training side or not.
  nb.cells.append(nbformat.v4.new_code_cell(
      "import sys, jax\nprint(sys.prefix, jax.device_count(), 'experiments' in sys.modules)"))
  client = NotebookClient(nb, kernel_name="python3", timeout=300,
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
  assert printed.split() == [sys.prefix, "1", str(not quickstart)], printed
  if quickstart:  # the library was there: nothing installed
    assert nb.cells[1].outputs == []
  assert not list(REPO.glob("notebooks/*.png")) and not (REPO / "notebooks" / "runs").exists()
