"""Sphinx configuration: MyST pages, autodoc of lars_optax, myst-nb notebooks.

`make docs` builds it with warnings as errors. No network at build time: no
intersphinx, no remote images; MathJax renders the math in the browser.
"""
import os
import pathlib
import shutil
import sys
import tomllib

DOCS = pathlib.Path(__file__).resolve().parent
REPO = DOCS.parent
# The library from this checkout; the notebooks' kernels import experiments/
# from it too (they inherit this environment).
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(DOCS / "_ext"))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])

import lars_optax  # noqa: E402  (after the path is set)

project = "lars_optax"
author = "lars_optax authors"
copyright = "the lars_optax authors"  # noqa: A001  (Sphinx's name)
release = getattr(lars_optax, "__version__", "")

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",  # MyST markdown pages and notebooks (brings myst_parser)
    "benchmark_tables",  # _ext/: the Speed page's tables from the JSON
]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "README.md"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# The API: Google-style docstrings; "Attributes:" as fields, so a NamedTuple's
# attributes are not described twice.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
# Signatures without annotations: optax's aliases (ScalarOrSchedule) would be
# spelled out as long unions; the Args say what each takes.
autodoc_typehints = "none"
autodoc_preserve_defaults = True
autodoc_member_order = "bysource"
autosummary_generate = False  # api.md documents each name itself

# The notebooks: copied from notebooks/ into _notebooks/ (git-ignored) at
# each build, keeping their times so that Sphinx rebuilds only changed ones.
# 02 is stored with its outputs and shown as it is; 01 and 03 run at build
# time on their small settings (LARS_OPTAX_NOTEBOOK_SMALL=1, set by `make
# docs`), and a cell that raises fails the build.
_NOTEBOOK_COPIES = DOCS / "_notebooks"
_NOTEBOOK_COPIES.mkdir(exist_ok=True)
for _source in sorted((REPO / "notebooks").glob("*.ipynb")):
  _copy = _NOTEBOOK_COPIES / _source.name
  if not _copy.exists() or _copy.read_bytes() != _source.read_bytes():
    shutil.copy2(_source, _copy)
for _copy in _NOTEBOOK_COPIES.glob("*.ipynb"):
  if not (REPO / "notebooks" / _copy.name).exists():
    _copy.unlink()

nb_execution_mode = "force"
nb_execution_excludepatterns = ["*02_large_batch_study*"]
nb_execution_timeout = 600  # seconds per cell
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_in_temp = True  # nothing written next to the notebooks
nb_merge_streams = True

QUICKSTART = "_notebooks/01_quickstart"
_DATA_DIR = os.environ.get("LARS_OPTAX_DATA_DIR")


def _notebook_environment(app, docname, source):
  """The environment of the kernel that runs the notebook Sphinx reads next.

  The quickstart runs as after `pip install lars-optax`: without the checkout
  on its path, and with a tfds data_dir of its own under the build folder, so
  that it prepares its data as a new user's runtime does.
  """
  del source
  path = [p for p in os.environ["PYTHONPATH"].split(os.pathsep)
          if p and os.path.realpath(p) != str(REPO)]
  data_dir = _DATA_DIR
  if docname == QUICKSTART:
    data_dir = str(pathlib.Path(app.outdir).parent / "tfds_quickstart")
  else:
    path = [str(REPO)] + path
  os.environ["PYTHONPATH"] = os.pathsep.join(path)
  if data_dir:
    os.environ["LARS_OPTAX_DATA_DIR"] = data_dir
  else:
    os.environ.pop("LARS_OPTAX_DATA_DIR", None)


def setup(app):
  app.connect("source-read", _notebook_environment)


html_theme = "sphinx_book_theme"
html_title = "lars_optax"
html_theme_options = {
    "repository_url": tomllib.loads((REPO / "pyproject.toml").read_text())[
        "project"]["urls"]["Repository"],
    "use_repository_button": True,
    "path_to_docs": "docs",
    "show_toc_level": 2,
}
html_static_path: list[str] = []
