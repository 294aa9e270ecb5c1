"""The speed benchmark compares like with like."""

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

import lars_optax
from experiments.benchmarks import benchmark_lars
from experiments.benchmarks import benchmark_train
from tests.conftest import REPO


def test_resnet50_tree_has_the_real_models_size():
  shapes = benchmark_lars.resnet50_shapes()
  assert len(shapes) == 161
  assert sum(int(np.prod(s)) for s in shapes.values()) == 25_557_032


def test_minimal_lars_computes_what_lars_optax_computes():
  """The floor reference is Algorithm 1, so timing it against ours is fair."""
  shapes = {"kernel": (4, 3), "bias": (3,), "conv": (2, 2, 3)}
  params = benchmark_lars.make_tree(shapes, seed=0)
  kw = dict(weight_decay=0.1, momentum=0.9)  # large enough to tell formulas apart
  results = []
  for tx in (benchmark_lars.minimal_lars(0.1, **kw), lars_optax.lars(0.1, **kw)):
    p, state, steps = params, tx.init(params), []
    for seed in (1, 2, 3):
      updates, state = tx.update(benchmark_lars.make_tree(shapes, seed), state, p)
      p = optax.apply_updates(p, updates)
      steps.append(updates)
    results.append(steps)
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_transformer_tree_is_deep():
  shapes = benchmark_lars.transformer_shapes()
  assert len(shapes) >= 1000
  assert all(len(s) <= 2 for s in shapes.values())  # unscanned: no layer axis


def test_kernels_are_counted_and_host_transfers_and_syncs_found():
  shapes = {"kernel": (64, 32), "bias": (32,)}
  params, grads = (benchmark_lars.make_tree(shapes, seed) for seed in (0, 1))
  plain = benchmark_lars.make_step(None).lower(params, (), grads).compile()
  # p - lr * g: one elementwise kernel per leaf, nothing to or from the host.
  assert benchmark_lars.kernels(plain) == {
      "kernels": 2, "host_transfers": 0, "host_synchronizations": 0}
  tx = lars_optax.lars(0.1, weight_decay=1e-4, momentum=0.9)
  ours = benchmark_lars.make_step(tx).lower(params, tx.init(params), grads)
  launched = benchmark_lars.kernels(ours.compile())
  assert launched["host_transfers"] == 0 and launched["kernels"] > 2
  assert launched["host_synchronizations"] == 0

  def with_callback(x):
    jax.debug.callback(lambda v: None, x)
    return 2 * x

  compiled = jax.jit(with_callback).lower(np.ones(3, np.float32)).compile()
  assert benchmark_lars.kernels(compiled)["host_transfers"] == 1

  def with_cond(x):
    return jax.lax.cond(x.sum() > 0, lambda v: 2 * v, lambda v: -v, x)

  compiled = jax.jit(with_cond).lower(np.ones(3, np.float32)).compile()
  assert benchmark_lars.kernels(compiled)["host_synchronizations"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["jit", "pmap"])
def test_training_benchmark_times_both_optimizers_alike(loop):
  point = benchmark_train.measure("cnn_tiny", loop, 16, steps=3, warmup=1,
                                  dtype="float32")
  median = point["median_step_s"]
  assert {name: len(t) for name, t in point["step_times_s"].items()} == {
      "lars": 3, "sgd": 3}
  assert point["examples_per_sec_lars"] == pytest.approx(16 / median["lars"])
  assert point["examples_per_sec_sgd"] == pytest.approx(16 / median["sgd"])
  assert point["lars_over_sgd"] == pytest.approx(median["lars"] / median["sgd"])


@pytest.mark.slow
def test_gpu_evidence_script_runs_its_stages_here(tmp_path):
  """experiments/benchmarks/gpu_evidence.sh, dry run on the CPU: the files it
  names exist, its train stages write their JSON without tfds or grain (the
  GPU machine has neither), and a wrong stage is one line."""
  script = REPO / "experiments" / "benchmarks" / "gpu_evidence.sh"
  for name in re.findall(r"tests/\w+\.py", script.read_text()):
    assert (REPO / name).is_file(), name
  absent = tmp_path / "absent"
  for package in ("tensorflow_datasets", "grain"):
    (absent / package).mkdir(parents=True)
    (absent / package / "__init__.py").write_text(
        f"raise ImportError('{package} is not on the GPU machine')\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", OUT=str(tmp_path),
             POINTS="cnn_tiny:16", PYTHONPATH=str(absent),
             PATH=f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}")
  blocked = subprocess.run([sys.executable, "-c", "import tensorflow_datasets"],
                           cwd=REPO, env=env, capture_output=True, text=True)
  assert "not on the GPU machine" in blocked.stderr, blocked.stderr[-3000:]
  result = subprocess.run(["bash", str(script), "train"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  points = json.loads((tmp_path / "benchmark_train_gpu.json").read_text())["points"]
  assert [(p["model"], p["loop"], p["global_batch_size"]) for p in points] == [
      ("cnn_tiny", "jit", 16)]
  result = subprocess.run(["bash", str(script), "accum"], cwd=REPO,
                          env=dict(env, ACCUM_POINTS="cnn_tiny:64"),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  accum = json.loads((tmp_path / "benchmark_train_accum_gpu.json").read_text())
  assert accum["grad_accum_steps"] == 4
  assert [p["global_batch_size"] for p in accum["points"]] == [64]
  result = subprocess.run(["bash", str(script), "tarin"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 2 and "unknown stage 'tarin'" in result.stderr
