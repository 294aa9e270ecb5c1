"""The README: the two set-up commands first, its example, its links.

The README is the front page: the two commands that set up a fresh machine,
what the package is, one example, the comparison with optax and links into
docs/. Its middle part (between the docs-index markers) is also the docs'
front page, docs/index.md, which includes it; tests/test_docs.py checks the
pages themselves.
"""
import pathlib
import re

import jax
import numpy as np

import lars_optax

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
START, END = "<!-- docs-index-start -->", "<!-- docs-index-end -->"


def python_blocks(text: str) -> list[str]:
  return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def example() -> str:
  text = README.read_text()
  section = text[text.index("\n## Example\n"):]
  return python_blocks(section)[0]


def test_starts_with_the_two_set_up_commands():
  lines = README.read_text().splitlines()
  assert lines[0] == "# lars_optax" and lines[1] == ""
  fence_end = lines.index("```", 3)
  assert lines[2] == "```" and fence_end == 5, lines[:8]
  assert lines[3].startswith("make train ") and lines[4].startswith("make test ")


def test_at_most_200_lines():
  assert len(README.read_text().splitlines()) <= 200


def test_one_example():
  assert len(python_blocks(README.read_text())) == 1


def test_example_trains_and_shows_the_trust_ratios(capsys):
  source = example()
  # The loss before training: the block up to its training loop.
  before: dict = {}
  exec(compile(source[:source.index("\nfor step in")], "README.md (set-up)", "exec"), before)
  first = float(before["loss_fn"](before["params"]))
  assert abs(first - 4.35) < 0.01  # the comment's "4.35 at the first step"

  namespace: dict = {}
  exec(compile(source, "README.md (Example)", "exec"), namespace)
  printed = capsys.readouterr().out.splitlines()
  loss = float(namespace["loss"])
  assert printed[0] == f"loss {loss:.4f}"
  assert 0.002 < loss < 0.01, loss  # "about 0.005"
  ratios = lars_optax.trust_ratios(namespace["opt_state"])
  assert jax.tree.structure(ratios) == jax.tree.structure(namespace["params"])
  for name, ratio in zip(lars_optax.parameter_names(ratios), jax.tree.leaves(ratios)):
    if name.endswith("bias"):  # masked: no trust ratio
      assert float(ratio) == 1.0, name
    else:
      assert float(ratio) != 1.0 and np.isfinite(float(ratio)), name


def test_links_into_the_repository_resolve():
  targets = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
  local = [t.split("#")[0] for t in targets if not re.match(r"\w+://", t)]
  assert "docs/getting_started.md" in local and "docs/migration.md" in local
  for target in local:
    assert (REPO / target).exists(), target


def test_docs_front_page_includes_the_readme_between_the_markers():
  text = README.read_text()
  assert text.count(START) == text.count(END) == 1
  assert text.index(START) < text.index("\n## Example\n") < text.index(END)
  index = (REPO / "docs" / "index.md").read_text()
  assert "```{include} ../README.md" in index
  assert f":start-after: {START}" in index and f":end-before: {END}" in index
