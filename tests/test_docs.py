"""The docs' pages: their Python blocks run, and what they claim holds.

Every ```python block of docs/*.md runs, page by page, in order, in one
namespace per page (as a reader would paste them). Then:
- getting_started.md: the Flax NNX and Linen examples train and find the trust
  ratios; the LAMB block trains the NNX model as far as optax.lamb; the
  inject_hyperparams block changes the learning rate of the update.
- migration.md: each peer's block gives the peer's update (optax in the block
  itself; timm, apex, MLPerf and SimCLR against the NumPy transcriptions of
  tests/reference.py), and without the argument the page names it does not.
- api.md documents exactly the names of lars_optax.__all__.
- the results, speed and notebooks pages show every committed plot, benchmark
  JSON and notebook, and the Speed page's tables hold the JSON's numbers.
"""
import dataclasses
import importlib.util
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lars_optax
from tests import reference

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))


@dataclasses.dataclass
class Block:
  heading: str  # the nearest heading above the block
  source: str
  before: dict  # a copy of the page's namespace before the block ran
  namespace: dict  # and after it


def _code_fences(text: str) -> list[tuple[str, str, str]]:
  """(nearest heading, info string, body) of every fenced block."""
  out, heading, lines = [], "", text.splitlines()
  i = 0
  while i < len(lines):
    line = lines[i]
    fence = re.match(r"^(`{3,})(.*)$", line)
    if fence:
      marker, info = fence.group(1), fence.group(2).strip()
      body = []
      i += 1
      while i < len(lines) and lines[i].strip() != marker:
        body.append(lines[i])
        i += 1
      out.append((heading, info, "\n".join(body) + "\n"))
    elif line.startswith("#"):
      heading = line.lstrip("#").strip()
    i += 1
  return out


def page_python_blocks(name: str) -> list[tuple[str, str]]:
  """(nearest heading, source) of each ```python block of the page."""
  text = (DOCS / name).read_text()
  return [(h, body) for h, info, body in _code_fences(text) if info == "python"]


def run_page(name: str) -> list[Block]:
  namespace: dict = {}
  out = []
  for index, (heading, source) in enumerate(page_python_blocks(name)):
    before = dict(namespace)
    exec(compile(source, f"docs/{name} (block {index + 1}, {heading})", "exec"), namespace)
    out.append(Block(heading, source, before, dict(namespace)))
  return out


_RUNS: dict[str, list[Block]] = {}


def executed(name: str) -> list[Block]:
  """The page's blocks, run once per test session."""
  if name not in _RUNS:
    _RUNS[name] = run_page(name)
  return _RUNS[name]


def block(name: str, heading: str, index: int = 0) -> Block:
  blocks = [b for b in executed(name) if b.heading == heading]
  assert len(blocks) > index, (name, heading, [b.heading for b in executed(name)])
  return blocks[index]


@pytest.mark.parametrize("name", [p for p in PAGES if page_python_blocks(p)])
def test_every_python_block_of_the_page_runs(name):
  assert executed(name)


def test_the_pages_with_python_blocks():
  assert {"getting_started.md", "migration.md"} <= {p for p in PAGES if page_python_blocks(p)}


# --- getting_started.md ------------------------------------------------------

GETTING_STARTED = "getting_started.md"
MORE_STEPS = 5


def check_ratios(ratios) -> None:
  """Kernels get an adapted ratio; the masked biases keep 1."""
  values = {name: float(ratio) for name, ratio in
            zip(lars_optax.parameter_names(ratios), jax.tree.leaves(ratios))}
  kernels = {n: v for n, v in values.items() if n.endswith("kernel")}
  biases = {n: v for n, v in values.items() if n.endswith("bias")}
  assert len(kernels) == len(biases) == 2, values
  assert all(0.0 < v < 1.0 for v in kernels.values()), values
  assert all(v == 1.0 for v in biases.values()), values


def flax_blocks() -> tuple[str, str, str]:
  """The "Use with Flax" section's set-up, NNX and Linen blocks."""
  setup, nnx_example, linen_example = [
      source for heading, source in page_python_blocks(GETTING_STARTED)
      if heading == "Use with Flax"]
  return setup, nnx_example, linen_example


def run_flax_example(name: str) -> dict:
  """The set-up and one example in a fresh namespace."""
  setup, nnx_example, linen_example = flax_blocks()
  namespace: dict = {}
  exec(compile(setup, "getting_started.md (Flax set-up)", "exec"), namespace)
  example = {"nnx": nnx_example, "linen": linen_example}[name]
  exec(compile(example, f"getting_started.md ({name})", "exec"), namespace)
  return namespace


def test_flax_section_has_both_apis():
  setup, nnx_example, linen_example = flax_blocks()
  assert "lars_optax.lars(" in setup
  assert "nnx.Optimizer(model, tx, wrt=nnx.Param)" in nnx_example
  assert "lars_optax.trust_ratios(optimizer.opt_state)" in nnx_example
  assert "train_state.TrainState.create(" in linen_example
  assert "lars_optax.trust_ratios(state.opt_state)" in linen_example


@pytest.mark.parametrize("name", ["nnx", "linen"])
def test_flax_examples_are_about_ten_lines(name):
  _, nnx_example, linen_example = flax_blocks()
  example = {"nnx": nnx_example, "linen": linen_example}[name]
  assert len([line for line in example.splitlines() if line.strip()]) <= 12, example


def test_nnx_example():
  ns = run_flax_example("nnx")
  model, optimizer, x, y = ns["model"], ns["optimizer"], ns["x"], ns["y"]
  losses = [float(ns["loss"])]
  losses += [float(ns["train_step"](model, optimizer, x, y)) for _ in range(MORE_STEPS)]
  assert all(np.diff(losses) < 0), losses
  assert losses[-1] < 0.8 * losses[0], losses
  assert int(optimizer.step[...]) == 1 + MORE_STEPS

  params = nnx.state(model, nnx.Param)
  for ratios in (ns["ratios"], lars_optax.trust_ratios(optimizer.opt_state)):
    assert isinstance(ratios, nnx.State)
    assert (jax.tree.structure(nnx.as_pure(ratios))
            == jax.tree.structure(nnx.as_pure(params)))
    assert lars_optax.parameter_names(ratios) == lars_optax.parameter_names(params)
    check_ratios(ratios)
  assert lars_optax.parameter_names(params) == [
      "layers/0/bias", "layers/0/kernel", "layers/2/bias", "layers/2/kernel"]


def test_linen_example():
  ns = run_flax_example("linen")
  state, x, y = ns["state"], ns["x"], ns["y"]
  losses = [float(ns["loss"])]
  for _ in range(MORE_STEPS):
    state, loss = ns["train_step"](state, x, y)
    losses.append(float(loss))
  assert all(np.diff(losses) < 0), losses
  assert losses[-1] < 0.8 * losses[0], losses
  assert int(state.step) == 1 + MORE_STEPS

  for ratios in (ns["ratios"], lars_optax.trust_ratios(state.opt_state)):
    assert jax.tree.structure(ratios) == jax.tree.structure(state.params)
    check_ratios(ratios)
  assert sorted(state.params) == ["layers_0", "layers_2"]
  by_name = lars_optax.trust_ratios_by_name(state.opt_state)
  assert sorted(by_name) == ["layers_0/bias", "layers_0/kernel",
                             "layers_2/bias", "layers_2/kernel"]


LAMB_STEPS = 300


def test_lamb_block_trains_the_nnx_model_as_far_as_optax_lamb():
  """The page's LAMB optimizer in the NNX example; then optax.lamb with the
  same schedule and decay mask (it cannot leave biases unadapted)."""
  (lamb_block,) = [source for heading, source in page_python_blocks(GETTING_STARTED)
                   if "lars_optax.lamb(" in source]
  setup, nnx_example, _ = flax_blocks()
  # optax.lamb has no trust ratios to show: leave out the line that reads them.
  without_ratios = "\n".join(line for line in nnx_example.splitlines()
                              if "trust_ratios" not in line)
  final = {}
  for name in ("lars_optax", "optax"):
    ns: dict = {}
    exec(compile(setup, "getting_started.md (Flax set-up)", "exec"), ns)
    exec(compile(lamb_block, "getting_started.md (LAMB)", "exec"), ns)
    if name == "optax":
      ns["tx"] = optax.lamb(ns["schedule"], weight_decay=0.01,
                            mask=lars_optax.exclude_bias_and_norm)
    exec(compile(nnx_example if name == "lars_optax" else without_ratios,
                 "getting_started.md (nnx)", "exec"), ns)
    model, optimizer, x, y = ns["model"], ns["optimizer"], ns["x"], ns["y"]
    losses = [float(ns["loss"])]
    losses += [float(ns["train_step"](model, optimizer, x, y))
               for _ in range(LAMB_STEPS)]
    assert losses[-1] < 0.05 * losses[0], (name, losses[::50])
    final[name] = losses[-1]
    if name == "lars_optax":
      values = {n: float(r) for n, r in zip(
          lars_optax.parameter_names(ns["ratios"]), jax.tree.leaves(ns["ratios"]))}
      assert all((v == 1.0) == n.endswith("bias") for n, v in values.items()), values
  assert final["lars_optax"] < 1.1 * final["optax"], final


INJECT = "Logging and changing hyperparameters"


def test_inject_hyperparams_block_prints_what_the_page_says(capsys):
  fences = [(h, info, body) for h, info, body in _code_fences(
      (DOCS / GETTING_STARTED).read_text()) if h == INJECT]
  (logging_block, printed), = [
      (body, fences[i + 1][2]) for i, (_, info, body) in enumerate(fences)
      if info == "python" and "print(" in body]
  assert "static_args" in logging_block
  exec(compile(logging_block, "getting_started.md (inject_hyperparams)", "exec"), {})
  assert capsys.readouterr().out == printed


def test_inject_hyperparams_block_changes_the_learning_rate():
  b = block(GETTING_STARTED, INJECT, 1)
  assert "static_args" in b.source
  ns = b.namespace
  params, grads, updates = ns["params"], ns["grads"], ns["updates"]
  plain = lars_optax.lars(0.05, weight_decay=1e-4,
                          weight_decay_mask=lars_optax.exclude_bias_and_norm,
                          trust_ratio_mask=lars_optax.exclude_bias_and_norm)
  expected, _ = plain.update(grads, plain.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, expected)
  at_first_rate = lars_optax.lars(0.1, weight_decay=1e-4).update(
      grads, plain.init(params), params)[0]
  assert not np.allclose(updates["dense"]["kernel"], at_first_rate["dense"]["kernel"])
  ratios = lars_optax.trust_ratios(ns["opt_state"])
  assert float(ratios["dense"]["bias"]) == 1.0
  assert 0.0 < float(ratios["dense"]["kernel"]) < 1.0


# --- migration.md ------------------------------------------------------------

MIGRATION = "migration.md"
STEPS = 5
ZERO_STEP = 2  # the step at which the dense kernel's gradient is zero
# Scales at which each peer's argument matters: the conv kernel's gradient is
# tiny beside its weight decay (the two denominators differ), the dense
# kernel's lambda exceeds the learning rate (LARC's clip acts) and its LAMB
# ratio exceeds 1 (LAMBC's clip acts); the biases' gradients make the global
# norm exceed timm's clip at 1.
PARAM_SCALES = {"conv/kernel": 3.0, "conv/bias": 0.1, "batch_normalization/scale": 1.0,
                "batch_normalization/bias": 0.1, "dense/kernel": 10.0, "dense/bias": 0.1}
GRAD_SCALES = {"conv/kernel": 1e-5, "conv/bias": 1.0, "batch_normalization/scale": 0.1,
               "batch_normalization/bias": 1.0, "dense/kernel": 0.1, "dense/bias": 1.0}
# The names TensorFlow's skip lists match: neither decayed nor adapted.
SKIPPED = {n: not ("batch_normalization" in n or "bias" in n) for n in PARAM_SCALES}
NO_DECAY = tuple(n for n in PARAM_SCALES if n.endswith("bias") or n.endswith("scale"))


def migration_setup() -> dict:
  """The namespace after the page's first block, the set-up of the others."""
  return executed(MIGRATION)[0].namespace


def nested(leaves: dict) -> dict:
  """{"conv/kernel": x, ...} as {"conv": {"kernel": x}, ...}."""
  out: dict = {}
  for name, value in leaves.items():
    layer, leaf = name.split("/")
    out.setdefault(layer, {})[leaf] = value
  return out


def flat(tree) -> dict:
  """A tree of params as {"conv/kernel": x, ...}."""
  return dict(zip(lars_optax.parameter_names(tree), jax.tree.leaves(tree)))


def migration_params() -> dict:
  """Parameters shaped and named like the page's, at the scales above."""
  page = flat(migration_setup()["params"])
  assert sorted(page) == sorted(PARAM_SCALES)
  rng = np.random.default_rng(0)
  return {n: (rng.standard_normal(np.shape(page[n])) * PARAM_SCALES[n]).astype(np.float32)
          for n in PARAM_SCALES}


def gradients(zero_gradient: bool):
  """grads_fn(step, params) for tests/reference.py, flat names."""
  shapes = {n: np.shape(v) for n, v in migration_params().items()}

  def grads_fn(step, params):
    del params
    rng = np.random.default_rng(1000 + step)
    grads = {n: (rng.standard_normal(s) * GRAD_SCALES[n]).astype(np.float32)
             for n, s in shapes.items()}
    if zero_gradient and step == ZERO_STEP:
      grads["dense/kernel"] = np.zeros_like(grads["dense/kernel"])
    return grads

  return grads_fn


def our_updates(tx, params, grads_fn) -> list[dict]:
  tree = jax.tree.map(jnp.asarray, nested(params))
  state, update, out = tx.init(tree), jax.jit(tx.update), []
  for step in range(STEPS):
    updates, state = update(nested(grads_fn(step, None)), state, tree)
    tree = optax.apply_updates(tree, updates)
    out.append({n: np.asarray(u, np.float64) for n, u in flat(updates).items()})
  return out


def reference_updates(history: list[dict], params: dict) -> list[dict]:
  before = [params] + history[:-1]
  return [{n: np.asarray(after[n], np.float64) - np.asarray(b[n], np.float64)
           for n in params} for b, after in zip(before, history)]


def largest_difference(ours: list[dict], theirs: list[dict]) -> float:
  """The largest difference of a leaf's update, relative to its size."""
  worst = 0.0
  for a, b in zip(ours, theirs):
    for n in b:
      scale = max(np.max(np.abs(b[n])), 1e-30)
      worst = max(worst, float(np.max(np.abs(a[n] - b[n]))) / scale)
  return worst


@dataclasses.dataclass
class Peer:
  heading: str
  index: int
  argument: str  # the argument the page names, as written in the block
  zero_gradient: bool  # a zero gradient at ZERO_STEP (where the peer's rule is known)
  reference: object  # (namespace, params, grads_fn) -> reference history


PEERS = {
    "timm Lars": Peer(
        "timm's Lars", 0, 'zero_gradient_trust_ratio="one"', True,
        lambda ns, p, g: reference.timm_lars_steps(
            p, g, 0.1, STEPS, weight_decay=1e-4, momentum=0.9,
            trust_coefficient=0.001, eps=1e-8, trust_clip=False)),
    # apex's LARC around SGD computes what timm's Lars(trust_clip=True) does,
    # except where a gradient is zero (apex then adds no decay).
    "apex LARC": Peer(
        "apex's LARC", 0, "trust_clip=True", False,
        lambda ns, p, g: reference.timm_lars_steps(
            p, g, 0.1, STEPS, weight_decay=1e-4, momentum=0.9,
            trust_coefficient=0.02, eps=1e-8, trust_clip=True)),
    "MLPerf": Peer(
        "TF / MLPerf", 0, 'zero_gradient_trust_ratio="one"', True,
        lambda ns, p, g: reference.lars_steps(
            p, g, lambda t: float(ns["schedule"](t)), STEPS, weight_decay=1e-4,
            momentum=0.9, trust_coefficient=0.001, eps=1e-7, formula="paper",
            weight_decay_mask=SKIPPED, trust_ratio_mask=SKIPPED,
            zero_gradient="one")[0]),
    "SimCLR": Peer(
        "SimCLR", 0, 'formula="combined"', True,
        lambda ns, p, g: reference.lars_steps(
            p, g, lambda t: float(ns["schedule"](t)), STEPS, weight_decay=1e-6,
            momentum=0.9, trust_coefficient=0.001, eps=0.0, formula="combined",
            weight_decay_mask=SKIPPED, trust_ratio_mask=SKIPPED)[0]),
    "timm Lamb": Peer(
        "timm's Lamb and LAMBC", 0, "", True,
        lambda ns, p, g: reference.timm_lamb_steps(
            p, g, 1e-3, STEPS, weight_decay=0.01, max_grad_norm=1.0,
            no_weight_decay=NO_DECAY)),
    "timm LAMBC": Peer(
        "timm's Lamb and LAMBC", 1, "ratio_bounds=(0.0, 1.0)", True,
        lambda ns, p, g: reference.timm_lamb_steps(
            p, g, 1e-3, STEPS, weight_decay=0.01, max_grad_norm=1.0,
            trust_clip=True, no_weight_decay=NO_DECAY)),
}


def without(source: str, argument: str) -> str:
  """The block with `argument` (and its comma) taken out of the call."""
  changed = re.sub(r",\s*" + re.escape(argument), "", source, count=1)
  assert changed != source, (argument, source)
  return changed


@pytest.mark.parametrize("name", PEERS)
def test_peer_block_gives_the_peers_update(name):
  peer = PEERS[name]
  b = block(MIGRATION, peer.heading, peer.index)
  params, grads_fn = migration_params(), gradients(peer.zero_gradient)
  theirs = reference_updates(peer.reference(b.namespace, params, grads_fn), params)
  ours = our_updates(b.namespace["tx"], params, grads_fn)
  assert largest_difference(ours, theirs) < 1e-4, name
  if peer.argument:  # without it, the update is another one
    namespace = dict(b.before)
    exec(compile(without(b.source, peer.argument), f"{name} without {peer.argument}",
                 "exec"), namespace)
    assert largest_difference(our_updates(namespace["tx"], params, grads_fn),
                              theirs) > 1e-2, name


@pytest.mark.parametrize("heading", ["optax.lars"])
def test_optax_block_fails_without_its_argument(heading):
  """The block asserts equal updates; without formula="combined" it cannot."""
  b = block(MIGRATION, heading)
  assert "assert_same_updates(" in b.source
  namespace = dict(b.before)
  with pytest.raises(AssertionError):
    exec(compile(without(b.source, 'formula="combined"'), heading, "exec"), namespace)


def test_optax_blocks_compare_with_optax():
  assert "optax.lars(" in block(MIGRATION, "optax.lars").source
  assert "optax.lamb(" in block(MIGRATION, "optax.lamb").source


def test_migration_table_names_every_peer_section():
  text = (DOCS / MIGRATION).read_text()
  headings = re.findall(r"^## (.*)$", text, flags=re.M)
  for peer in PEERS.values():
    assert peer.heading in headings


# --- api.md ------------------------------------------------------------------


def test_api_reference_documents_exactly_the_public_names():
  text = (DOCS / "api.md").read_text()
  documented = re.findall(r"^\.\. auto(?:function|class):: (\w+)$", text, flags=re.M)
  assert sorted(documented) == sorted(lars_optax.__all__)
  listed = re.findall(r"^   (\w+)$", text, flags=re.M)  # the autosummary tables
  assert sorted(listed) == sorted(lars_optax.__all__)


# --- results, speed and notebooks ---------------------------------------------

RESULTS = REPO / "experiments" / "results"


def test_results_page_includes_the_summary_and_shows_every_plot():
  page = (DOCS / "results.md").read_text()
  assert "{include} ../experiments/results/large_batch_summary.md" in page
  summary = (RESULTS / "large_batch_summary.md").read_text()
  shown = set(re.findall(r"\]\(([\w.]+\.png)\)", summary))
  shown |= {pathlib.Path(p).name for p in re.findall(r"\(([\w./]+\.png)\)", page)}
  assert shown == {p.name for p in RESULTS.glob("*.png")}


def test_speed_page_shows_every_benchmark_json():
  page = (DOCS / "speed.md").read_text()
  shown = set(re.findall(r"benchmark-table\} \.\./experiments/results/(\S+\.json)", page))
  assert shown == {p.name for p in RESULTS.glob("benchmark_*.json")}


def test_notebooks_page_lists_every_notebook():
  page = (DOCS / "notebooks.md").read_text()
  listed = re.findall(r"^_notebooks/(\S+)$", page, flags=re.M)
  assert listed == sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))


def load_benchmark_tables():
  spec = importlib.util.spec_from_file_location(
      "benchmark_tables", DOCS / "_ext" / "benchmark_tables.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_speed_tables_hold_the_json_numbers():
  tables = load_benchmark_tables()
  report = json.loads((RESULTS / "benchmark_lars_cpu.json").read_text())
  header, rows = tables.step_table(report)
  assert header[:4] == ["optimizer", "ResNet-50 step (ms)", "compile (s)", "ops"]
  by_label = {row[0]: row for row in rows}
  resnet = report["trees"]["resnet50"]
  ours = by_label["`lars_optax.lars`"]
  assert ours[1] == f"{resnet['median_step_ms']['lars_optax']:.1f}"
  assert ours[2] == f"{resnet['compile_s']['lars_optax']:.2f}"
  assert ours[3] == f"{resnet['kernels_per_step']['lars_optax']:,}"
  assert by_label["`p - lr * g`"][2] == ""  # no compile time measured
  assert len(rows) == len(resnet["median_step_ms"])

  report = json.loads((RESULTS / "benchmark_train_cpu.json").read_text())
  header, rows = tables.train_table(report)
  first = report["points"][0]
  row = [r for r in rows if r[:2] == [first["model"], first["loop"]]][0]
  column = header.index(f"batch {first['global_batch_size']}: LARS / SGD examples/s")
  assert row[column] == (f"{first['examples_per_sec_lars']:,.0f} / "
                         f"{first['examples_per_sec_sgd']:,.0f}")
  assert row[column + 1] == f"{first['lars_over_sgd']:.2f}"
  assert sum(1 for r in rows for c in r[2::2] if c) == len(report["points"])

  report = json.loads((RESULTS / "benchmark_input_cpu.json").read_text())
  header, rows = tables.input_table(report)
  assert [r[0] for r in rows] == ["1", "2"]
  assert rows[0][1] == f"{report['summary']['1_cores']['ours_images_per_sec']:,.0f}"


def test_experiments_readme_is_short_and_its_links_resolve():
  path = REPO / "experiments" / "README.md"
  text = path.read_text()
  assert len(text.splitlines()) <= 60
  links = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"\w+://", t)]
  assert links
  for link in links:
    assert (path.parent / link.split("#")[0]).exists(), link
