"""The wheel built from the repository holds the library and nothing else.

experiments/ is the training side: it runs from a checkout of the repository
(`python -m experiments.main` from its root), as Flax's examples do, so neither
it nor tests/ may land in site-packages. The release artefacts (sdist and
wheel) pass `twine check --strict` and carry the LICENSE and the version of
lars_optax.__version__.
"""
import email.parser
import pathlib
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

import lars_optax
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # a wheel build

# What a build can see in a checkout: the library next to the training side.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "lars_optax",
           "experiments", "tests", "notebooks")


def copy_checkout(tmp_path: pathlib.Path) -> pathlib.Path:
  """A copy of the checkout's sources, so a build's own build/ and *.egg-info
  stay out of the checkout and no stale build/lib there can reach the wheel."""
  source = tmp_path / "source"
  source.mkdir()
  caches = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
  for name in SOURCES:
    if (REPO / name).is_dir():
      shutil.copytree(REPO / name, source / name, ignore=caches)
    else:
      shutil.copy(REPO / name, source / name)
  return source


def build_wheel(tmp_path: pathlib.Path) -> pathlib.Path:
  """Builds the wheel from a copy of the checkout, into tmp_path / "dist"."""
  source = copy_checkout(tmp_path)
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


def test_sdist_and_wheel_pass_twine_check_with_license_and_version(tmp_path):
  source, dist = copy_checkout(tmp_path), tmp_path / "dist"
  # `python -m build` makes the sdist, then the wheel from the unpacked sdist
  # (so a file the sdist forgets fails the wheel's build).
  result = subprocess.run(
      [sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  (sdist,) = dist.glob("lars_optax-*.tar.gz")
  (wheel,) = dist.glob("lars_optax-*.whl")

  result = subprocess.run(
      [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.count("PASSED") == 2, result.stdout

  license_text = (REPO / "LICENSE").read_text()
  assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
  version = lars_optax.__version__
  with tarfile.open(sdist) as tar:
    root = f"lars_optax-{version}"
    assert tar.extractfile(f"{root}/LICENSE").read().decode() == license_text
    sdist_metadata = tar.extractfile(f"{root}/PKG-INFO").read().decode()
  with zipfile.ZipFile(wheel) as archive:
    dist_info = f"lars_optax-{version}.dist-info"
    assert archive.read(f"{dist_info}/licenses/LICENSE").decode() == license_text
    wheel_metadata = archive.read(f"{dist_info}/METADATA").decode()

  for text in (sdist_metadata, wheel_metadata):
    metadata = email.parser.Parser().parsestr(text)
    assert metadata["Name"] == "lars-optax"
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert any(url.startswith("Repository, https://github.com/")
               for url in metadata.get_all("Project-URL"))
