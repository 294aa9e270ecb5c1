"""Runs the README's "Use with Flax" code blocks as they are written there.

The section has three ```python blocks: the shared set-up (data and
optimizer), the Flax NNX example and the Flax Linen example. Each example runs
after the set-up in a fresh namespace; the test then takes a few more steps
with the example's own train_step and checks what the README claims. The
LAMB block of the "Use" section trains the NNX example's model too.
"""
import pathlib
import re

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import lars_optax

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Use with Flax"
MORE_STEPS = 5


def flax_blocks() -> list[str]:
  text = README.read_text()
  start = text.index(f"\n{SECTION}\n")
  end = text.find("\n## ", start + 1)
  section = text[start:end if end != -1 else len(text)]
  return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


def lamb_block() -> str:
  """The "Use" section's ```python block that builds lars_optax.lamb."""
  text = README.read_text()
  section = text[text.index("\n## Use\n"):text.index(f"\n{SECTION}\n")]
  blocks = re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)
  (block,) = [b for b in blocks if "lars_optax.lamb(" in b]
  return block


def run_example(name: str) -> dict:
  setup, nnx_example, linen_example = flax_blocks()
  example = {"nnx": nnx_example, "linen": linen_example}[name]
  namespace: dict = {}
  exec(compile(setup, f"README.md ({SECTION}, set-up)", "exec"), namespace)
  exec(compile(example, f"README.md ({SECTION}, {name})", "exec"), namespace)
  return namespace


def check_ratios(ratios) -> None:
  """Kernels get an adapted ratio; the masked biases keep 1."""
  values = {name: float(ratio) for name, ratio in
            zip(lars_optax.parameter_names(ratios), jax.tree.leaves(ratios))}
  kernels = {n: v for n, v in values.items() if n.endswith("kernel")}
  biases = {n: v for n, v in values.items() if n.endswith("bias")}
  assert len(kernels) == len(biases) == 2, values
  assert all(0.0 < v < 1.0 for v in kernels.values()), values
  assert all(v == 1.0 for v in biases.values()), values


def test_section_follows_use_and_has_both_apis():
  text = README.read_text()
  assert text.index("\n## Use\n") < text.index(f"\n{SECTION}\n")
  headings = re.findall(r"^## .*$", text, flags=re.M)
  assert headings[headings.index("## Use") + 1] == SECTION
  setup, nnx_example, linen_example = flax_blocks()
  assert "lars_optax.lars(" in setup
  assert "nnx.Optimizer(model, tx, wrt=nnx.Param)" in nnx_example
  assert "lars_optax.trust_ratios(optimizer.opt_state)" in nnx_example
  assert "train_state.TrainState.create(" in linen_example
  assert "lars_optax.trust_ratios(state.opt_state)" in linen_example


def test_nnx_example():
  ns = run_example("nnx")
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
  ns = run_example("linen")
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


@pytest.mark.parametrize("name", ["nnx", "linen"])
def test_examples_are_about_ten_lines(name):
  _, nnx_example, linen_example = flax_blocks()
  example = {"nnx": nnx_example, "linen": linen_example}[name]
  code = [line for line in example.splitlines() if line.strip()]
  assert len(code) <= 12, example


LAMB_STEPS = 300


def test_lamb_example_trains_the_nnx_model_as_far_as_optax_lamb():
  """The README's LAMB optimizer in the NNX example; then optax.lamb with
  the same schedule and decay mask (it cannot leave biases unadapted)."""
  setup, nnx_example, _ = flax_blocks()
  # optax.lamb has no trust ratios to show: leave out the line that reads them.
  without_ratios = "\n".join(line for line in nnx_example.splitlines()
                              if "trust_ratios" not in line)
  final = {}
  for name in ("lars_optax", "optax"):
    ns: dict = {}
    exec(compile(setup, f"README.md ({SECTION}, set-up)", "exec"), ns)
    exec(compile(lamb_block(), "README.md (Use, LAMB)", "exec"), ns)
    if name == "optax":
      ns["tx"] = optax.lamb(ns["schedule"], weight_decay=0.01,
                            mask=lars_optax.exclude_bias_and_norm)
    exec(compile(nnx_example if name == "lars_optax" else without_ratios,
                 f"README.md ({SECTION}, nnx)", "exec"), ns)
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
