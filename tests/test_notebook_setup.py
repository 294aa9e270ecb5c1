"""Notebooks 02/03 install the training side beside the runtime's jax, never over it."""
import importlib.metadata
import subprocess

import pytest

from experiments import notebook_setup
from tests.conftest import REPO

JAX = importlib.metadata.version("jax")
JAXLIB = importlib.metadata.version("jaxlib")


def test_this_environment_meets_the_training_requirements():
  # What `make venv` installs: the notebooks' set-up then installs nothing.
  requirements = notebook_setup.training_requirements(REPO)
  assert any(r.startswith("jax") for r in requirements)  # the library's own
  assert any(r.startswith("flax") for r in requirements)  # and the [train] extras
  assert notebook_setup.unsatisfied(requirements) == []


def test_unsatisfied_compares_installed_versions_with_the_specifiers():
  requirements = [f"jax=={JAX}", f"JAX>={JAX}", f"jax>{JAX}", f"jaxlib<{JAXLIB}",
                  "no-such-distribution-for-this-test>=1",
                  'no-such-distribution-for-this-test; python_version < "3"']
  assert notebook_setup.unsatisfied(requirements) == [
      f"jax>{JAX}", f"jaxlib<{JAXLIB}", "no-such-distribution-for-this-test>=1"]


def test_runtime_jax_pins_hold_the_installed_jax_and_its_plugins():
  pins = notebook_setup.runtime_jax_pins()
  assert f"jax=={JAX}" in pins and f"jaxlib=={JAXLIB}" in pins
  # Besides jax and jaxlib, only accelerator builds (none on a CPU machine).
  assert all(pin.startswith(("jax==", "jaxlib==", "libtpu")) or "cuda" in pin or "rocm" in pin
             for pin in pins), pins
  assert not [pin for pin in pins if pin.startswith(("flax", "optax", "chex"))]


def test_nothing_is_installed_where_the_requirements_are_met(monkeypatch, capsys):
  def no_pip(*args, **kwargs):
    raise AssertionError(f"pip was run: {args}")
  monkeypatch.setattr(subprocess, "run", no_pip)
  notebook_setup.install_training_requirements(REPO)
  assert "installed" in capsys.readouterr().out


@pytest.mark.slow  # pip resolves against the package index (a dry run)
def test_requirements_that_need_another_jax_stop_with_what_to_do(tmp_path, monkeypatch):
  # A checkout whose [train] extras exclude the installed jax: pip must refuse
  # rather than replace it. --dry-run: nothing is installed whatever happens.
  (tmp_path / "pyproject.toml").write_text(f"""
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"
[project]
name = "needs-another-jax"
version = "0.1"
dependencies = []
[project.optional-dependencies]
train = ["jax!={JAX}"]
[tool.setuptools]
py-modules = []
""")
  command = notebook_setup.install_command
  monkeypatch.setattr(notebook_setup, "install_command",
                      lambda repo, constraints: command(repo, constraints) + ["--dry-run"])
  with pytest.raises(RuntimeError, match=rf"beside this runtime's .*jax=={JAX}.*does not replace"):
    notebook_setup.install_training_requirements(tmp_path)
  assert importlib.metadata.version("jax") == JAX
