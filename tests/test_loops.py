"""The loops (experiments/loops.py) on synthetic batches, no dataset needed:
jit with shardings and pmap reach the parameters of one device on the same
global batches, and FSDP-style sharding really shards.

On the 8 fake CPU devices of the test suite, and on one GPU (the device
check, experiments/gpu_evidence.sh), where the loops run on one device.
"""
import jax
import numpy as np
import pytest

from experiments import loops
from experiments import optimizers
from experiments import steps
from experiments.configs import tiny
from experiments.data.preparation import DatasetInfo


def tiny_config(**overrides):
  config = tiny.get_config()
  config.data.name = "mnist"
  config.data.train_split = "train"
  config.data.eval_split = "test"
  config.global_batch_size = 16
  config.eval_batch_size = 32
  config.num_train_steps = 2
  config.checkpoint_every_steps = 0
  config.data.prefetch = 0
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def _run_steps(config, info, batches, *, devices=None, batch_norm_groups=None):
  schedule = optimizers.create_learning_rate_schedule(config, steps_per_epoch=4)
  loop = loops.create_loop(config, info, schedule, devices=devices,
                           batch_norm_groups=batch_norm_groups)
  state = loop.to_loop(loop.init_canonical_state())
  losses = []
  for batch in batches:
    state, step_metrics = loop.train_step(state, batch)
    losses.append(loop.fetch(step_metrics)["loss"])
  canonical = loops.to_host(loop.to_canonical(state))
  return canonical, losses


def _assert_trees_close(actual, expected, rtol=2e-4, atol=2e-6):
  flat_a = steps.flat_named(actual)
  flat_e = steps.flat_named(expected)
  assert flat_a.keys() == flat_e.keys()
  for name in flat_e:
    np.testing.assert_allclose(flat_a[name], flat_e[name], rtol=rtol,
                               atol=atol, err_msg=name)


@pytest.mark.parametrize("batch_norm", ["global", "per_device"])
def test_loops_match_one_device(batch_norm):
  num_steps = 3
  # 12x12 images: the same code paths as 28x28, less to compute.
  info = DatasetInfo("mnist", 256, 64, 10, (12, 12, 1))
  rng = np.random.default_rng(0)
  batches = [{"image": rng.normal(size=(32, 12, 12, 1)).astype(np.float32),
              "label": rng.integers(0, 10, size=(32,)).astype(np.int32)}
             for _ in range(num_steps)]
  config = tiny_config(batch_norm=batch_norm, global_batch_size=32,
                       warmup_epochs=0.5, num_train_steps=num_steps)
  groups = jax.device_count() if batch_norm == "per_device" else 1
  reference, reference_losses = _run_steps(
      config, info, batches, devices=jax.devices()[:1], batch_norm_groups=groups)
  runs = {
      "jit": _run_steps(config, info, batches),
      "pmap": _run_steps(tiny_config(batch_norm=batch_norm, loop="pmap",
                                     global_batch_size=32, warmup_epochs=0.5,
                                     num_train_steps=num_steps), info, batches),
  }
  if batch_norm == "global":  # FSDP-style sharded params and optimizer state
    runs["jit_shard_params"] = _run_steps(
        tiny_config(batch_norm=batch_norm, shard_params=True,
                    global_batch_size=32, warmup_epochs=0.5,
                    num_train_steps=num_steps), info, batches)
  for name, (state, losses) in runs.items():
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5, err_msg=name)
    _assert_trees_close(state["params"], reference["params"])
    _assert_trees_close(state["batch_stats"], reference["batch_stats"])
    assert int(state["step"]) == num_steps
  # The steps did train (this is not a comparison of untouched initial values).
  assert len(set(reference_losses)) == num_steps


@pytest.mark.skipif(jax.device_count() != 8, reason="shapes of 8 shards")
def test_shard_params_really_shards():
  info = DatasetInfo("mnist", 256, 64, 10, (28, 28, 1))
  config = tiny_config(shard_params=True, global_batch_size=32)
  loop = loops.create_loop(config, info,
                           optimizers.create_learning_rate_schedule(config, 4))
  state = loop.init_canonical_state()
  kernel = state["params"]["head"]["kernel"]
  assert kernel.shape == (16, 10)
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("data", None)
  assert kernel.addressable_shards[0].data.shape == (2, 10)
  momentum = jax.tree.leaves(state["opt_state"])
  assert any(not x.is_fully_replicated for x in momentum)
