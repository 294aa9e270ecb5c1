"""Installs what notebooks 02 and 03 need into a runtime, never replacing its jax.

A runtime such as Colab comes with a jax built for its accelerator, and
`pip install` of a package whose requirements exceed it replaces that jax with
whatever PyPI offers (a CPU build), without a word.
``install_training_requirements`` installs the checkout's ``[train]`` extras
only where one is missing, with the installed jax distributions pinned; where
the requirements need another jax it stops and says what to do. Notebook 01
needs none of this: it installs the library alone.
"""
from __future__ import annotations

import importlib.metadata
import pathlib
import re
import subprocess
import sys
import tempfile
import tomllib

# jax and the distributions built with it for an accelerator (CUDA/ROCm
# plugins, libtpu), by their normalised names.
_JAX_DISTRIBUTION = re.compile(
    r"jax|jaxlib|jax-(cuda|rocm)\d+-(plugin|pjrt)|libtpu(-nightly)?")


def training_requirements(repo: str | pathlib.Path) -> list[str]:
  """The checkout's dependencies and ``[train]`` extras, as in its pyproject.toml."""
  with open(pathlib.Path(repo) / "pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
  return list(project["dependencies"]) + list(project["optional-dependencies"]["train"])


def unsatisfied(requirements: list[str]) -> list[str]:
  """The requirements (PEP 508 strings) that the installed distributions do not meet."""
  try:
    from packaging.requirements import Requirement  # pylint: disable=g-import-not-at-top
  except ImportError:  # a bare runtime: assume nothing is met
    return list(requirements)
  missing = []
  for text in requirements:
    requirement = Requirement(text)
    if requirement.marker is not None and not requirement.marker.evaluate():
      continue
    try:
      version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
      missing.append(text)
      continue
    if not requirement.specifier.contains(version, prereleases=True):
      missing.append(text)
  return missing


def runtime_jax_pins() -> list[str]:
  """``name==version`` of every installed jax distribution (jax, jaxlib, plugins)."""
  pins = set()
  for distribution in importlib.metadata.distributions():
    name = distribution.metadata["Name"]
    if name and _JAX_DISTRIBUTION.fullmatch(re.sub(r"[-_.]+", "-", name).lower()):
      pins.add(f"{name}=={distribution.version}")
  return sorted(pins)


def install_command(repo: str | pathlib.Path, constraints: pathlib.Path | None) -> list[str]:
  """pip's command for the checkout's ``[train]`` extras, within ``constraints``."""
  command = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{repo}[train]"]
  return command + (["-c", str(constraints)] if constraints else [])


def install_training_requirements(repo: str | pathlib.Path) -> None:
  """Installs the missing ``[train]`` requirements, keeping the runtime's jax.

  Raises:
    RuntimeError: pip could not install them beside the installed jax; the
      message says what to do.
  """
  missing = unsatisfied(training_requirements(repo))
  if not missing:
    print("The training requirements are installed.")
    return
  pins = runtime_jax_pins()
  constraints = None
  if pins:
    constraints = pathlib.Path(tempfile.mkdtemp()) / "runtime_jax.txt"
    constraints.write_text("\n".join(pins) + "\n")
    print(f"Installing {', '.join(missing)}, keeping this runtime's {', '.join(pins)}.")
  else:
    print(f"No jax installed: installing {', '.join(missing)} (jax from PyPI; for a "
          "GPU, install jax with its CUDA plugin first, e.g. pip install 'jax[cuda12]').")
  if subprocess.run(install_command(repo, constraints), check=False).returncode == 0:
    return
  if not pins:
    raise RuntimeError(f"pip could not install the training requirements from {repo}.")
  raise RuntimeError(
      f"The training requirements ({', '.join(missing)}) cannot be installed beside "
      f"this runtime's {', '.join(pins)}, which this notebook does not replace. "
      "Use a runtime whose jax meets them, or replace its jax knowingly with "
      f"`pip install -e '{repo}[train]'` (that installs jax from PyPI: a CPU build "
      "unless you add its CUDA plugin, e.g. 'jax[cuda12]').")
