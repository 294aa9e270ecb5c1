"""The wheel built from the repository holds the library and nothing else.

experiments/ is the training side: it runs from a checkout of the repository
(`python -m experiments.main` from its root), as Flax's examples do, so neither
it nor tests/ may land in site-packages.
"""
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # a wheel build

# What a build can see in a checkout: the library next to the training side.
SOURCES = ("pyproject.toml", "README.md", "lars_optax", "experiments", "tests",
           "notebooks")


def build_wheel(tmp_path: pathlib.Path) -> pathlib.Path:
  """Builds the wheel from a copy of the checkout, into tmp_path / "dist".

  A copy, so the build's own build/ and *.egg-info stay out of the checkout
  and no stale build/lib there can reach the wheel.
  """
  source = tmp_path / "source"
  source.mkdir()
  caches = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
  for name in SOURCES:
    if (REPO / name).is_dir():
      shutil.copytree(REPO / name, source / name, ignore=caches)
    else:
      shutil.copy(REPO / name, source / name)
  dist = tmp_path / "dist"
  result = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps",
       "--disable-pip-version-check", "-q", "-w", str(dist), str(source)],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  (wheel,) = dist.glob("lars_optax-*.whl")
  return wheel


def test_wheel_holds_the_library_only(tmp_path):
  with zipfile.ZipFile(build_wheel(tmp_path)) as wheel:
    names = wheel.namelist()
    (dist_info,) = {n.split("/")[0] for n in names if ".dist-info/" in n}
    top_level = wheel.read(f"{dist_info}/top_level.txt").decode().split()

  assert top_level == ["lars_optax"]
  assert {n.split("/")[0] for n in names} == {"lars_optax", dist_info}
  assert not [n for n in names if n.startswith(("experiments/", "tests/", "notebooks/"))]
  library = {p.relative_to(REPO).as_posix()
             for p in (REPO / "lars_optax").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
  assert "lars_optax/py.typed" in library and "lars_optax/__init__.py" in library
  assert {n for n in names if n.startswith("lars_optax/")} == library
