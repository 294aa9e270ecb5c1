"""The loops (experiments/loops.py) on synthetic batches, no dataset needed:
jit with shardings and pmap reach the parameters of one device on the same
global batches, and FSDP-style sharding really shards.

On the 8 fake CPU devices of the test suite, and on one GPU (the device
check, experiments/benchmarks/gpu_evidence.sh), where the loops run on one device.
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


def _run_steps(config, info, batches, *, mesh=None):
  schedule = optimizers.create_learning_rate_schedule(config, steps_per_epoch=4)
  loop = loops.create_loop(config, info, schedule, mesh=mesh)
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


@pytest.mark.slow
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
  # One device; per-device BN there is BN over groups of one device's shard.
  one_device = tiny_config(
      global_batch_size=32, warmup_epochs=0.5, num_train_steps=num_steps,
      batch_norm_group_size=32 // jax.device_count() if batch_norm == "per_device"
      else 0)
  reference, reference_losses = _run_steps(
      one_device, info, batches, mesh=loops.make_mesh(jax.devices()[:1]))
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


@pytest.mark.skipif(jax.device_count() < 2, reason="needs several devices")
def test_jit_loop_matches_one_device():
  """The quick subset's check against one device (the test above adds pmap,
  sharded params and per-device BatchNorm): two steps of the jit loop with the
  batch split over every device and global BatchNorm."""
  num_steps = 2
  info = DatasetInfo("mnist", 256, 64, 10, (12, 12, 1))
  batches = _batches(num_steps, 32)
  config = tiny_config(global_batch_size=32, warmup_epochs=0.5,
                       num_train_steps=num_steps)
  reference, reference_losses = _run_steps(
      config, info, batches, mesh=loops.make_mesh(jax.devices()[:1]))
  state, losses = _run_steps(config, info, batches)
  np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
  _assert_trees_close(state["params"], reference["params"])
  _assert_trees_close(state["batch_stats"], reference["batch_stats"])
  assert int(state["step"]) == num_steps
  assert len(set(reference_losses)) == num_steps  # it trained


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


def _batches(num_steps, batch_size, image_side=12, seed=0):
  rng = np.random.default_rng(seed)
  return [{"image": rng.normal(size=(batch_size, image_side, image_side, 1)
                               ).astype(np.float32),
           "label": rng.integers(0, 10, size=(batch_size,)).astype(np.int32)}
          for _ in range(num_steps)]


@pytest.mark.parametrize("loop", ["jit", "pmap"])
def test_accumulation_equals_the_whole_batch_without_batch_norm(loop):
  """k micro-batches of b make the update of one batch of k*b."""
  info = DatasetInfo("mnist", 256, 64, 10, (12, 12, 1))
  batches = _batches(3, 64)
  common = dict(loop=loop, global_batch_size=64, warmup_epochs=0.5,
                num_train_steps=3, model="cnn",
                model_kwargs={"use_batch_norm": False})
  whole, whole_losses = _run_steps(tiny_config(**common), info, batches)
  accumulated, losses = _run_steps(tiny_config(grad_accum_steps=4, **common),
                                   info, batches)
  np.testing.assert_allclose(losses, whole_losses, rtol=1e-5)
  _assert_trees_close(accumulated["params"], whole["params"], rtol=1e-4)
  assert len(set(whole_losses)) == 3  # it trained


@pytest.mark.parametrize("loop", ["jit", "pmap"])
def test_accumulation_with_batch_norm_is_ghost_batch_norm_of_the_micro_batch(loop):
  """Per-device BN with k micro-batches = BN over groups of one micro-batch."""
  info = DatasetInfo("mnist", 256, 64, 10, (12, 12, 1))
  batches = _batches(3, 64)
  micro_batch = 64 // jax.device_count() // 4
  common = dict(global_batch_size=64, warmup_epochs=0.5, num_train_steps=3)
  reference, reference_losses = _run_steps(
      tiny_config(batch_norm_group_size=micro_batch, **common), info, batches,
      mesh=loops.make_mesh(jax.devices()[:1]))
  accumulated, losses = _run_steps(
      tiny_config(loop=loop, batch_norm="per_device", grad_accum_steps=4,
                  **common), info, batches)
  np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
  _assert_trees_close(accumulated["params"], reference["params"], rtol=1e-4)
  _assert_trees_close(accumulated["batch_stats"], reference["batch_stats"],
                      rtol=1e-4)


def _train_step_temp_bytes(accum_steps, global_batch_size):
  info = DatasetInfo("mnist", 4096, 64, 10, (28, 28, 1))
  config = tiny_config(model="cnn", global_batch_size=global_batch_size,
                       grad_accum_steps=accum_steps)
  loop = loops.create_loop(
      config, info, optimizers.create_learning_rate_schedule(config, 4),
      mesh=loops.make_mesh(jax.devices()[:1]))
  state = loop.abstract_canonical_state()
  batch = _batches(1, global_batch_size, image_side=28)[0]
  compiled = loop.compiled_train_step.lower(state, loop.device_batch(batch)).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_accumulation_holds_one_micro_batch_of_activations():
  one = _train_step_temp_bytes(1, 256)
  four = _train_step_temp_bytes(4, 1024)  # 4 micro-batches of 256
  whole = _train_step_temp_bytes(1, 1024)
  assert four < 1.5 * one < whole


@pytest.mark.parametrize("loop", ["jit", "pmap"])
def test_bfloat16_compute_trains_like_float32(loop):
  """model_dtype="bfloat16": bf16 activations, float32 params and LARS state."""
  info = DatasetInfo("mnist", 256, 64, 10, (12, 12, 1))
  batches = _batches(1, 32) * 4  # one batch, learned step by step
  common = dict(loop=loop, global_batch_size=32, warmup_epochs=0.5,
                num_train_steps=4)
  f32, f32_losses = _run_steps(tiny_config(**common), info, batches)
  bf16, bf16_losses = _run_steps(tiny_config(model_dtype="bfloat16", **common),
                                 info, batches)
  assert np.all(np.isfinite(bf16_losses))
  # bf16 keeps 8 bits of mantissa: the losses agree to about 1 %.
  np.testing.assert_allclose(bf16_losses, f32_losses, rtol=3e-2)
  assert bf16_losses[-1] < bf16_losses[0] and f32_losses[-1] < f32_losses[0]
  for tree in ("params", "opt_state"):
    assert {x.dtype for x in jax.tree.leaves(bf16[tree])
            if np.issubdtype(x.dtype, np.floating)} == {np.dtype("float32")}
  _assert_trees_close(bf16["params"], f32["params"], rtol=5e-2, atol=5e-3)


def test_lamb_trains_alike_in_both_loops():
  info = DatasetInfo("mnist", 256, 64, 10, (12, 12, 1))
  batches = _batches(1, 32) * 3
  common = dict(optimizer="lamb", base_learning_rate=0.01, global_batch_size=32,
                warmup_epochs=0.0, num_train_steps=3)
  jit, jit_losses = _run_steps(tiny_config(**common), info, batches)
  pmap, pmap_losses = _run_steps(tiny_config(loop="pmap", **common), info, batches)
  assert jit_losses[-1] < jit_losses[0]
  np.testing.assert_allclose(pmap_losses, jit_losses, rtol=1e-5)
  # Adam's normalisation turns float32 rounding of tiny gradients (zero-init
  # biases) into differences of ~1e-5 in absolute value.
  _assert_trees_close(pmap["params"], jit["params"], atol=5e-5)


@pytest.mark.parametrize("exclude", [True, False])
def test_the_logged_trust_ratios_are_those_of_the_librarys_mask(exclude):
  config = tiny_config(log_trust_ratios=True, exclude_bias_and_norm=exclude)
  info = DatasetInfo("mnist", 256, 64, 10, (12, 12, 1))
  schedule = optimizers.create_learning_rate_schedule(config, steps_per_epoch=4)
  loop = loops.create_loop(config, info, schedule)
  shapes = {name: x.shape for name, x in
            steps.flat_named(loop.abstract_state["params"]).items()}
  # The rule written out: kernels always; biases (1-D) only without exclusion.
  expected = {name for name, shape in shapes.items()
              if len(shape) > 1 or not exclude}
  assert loop.trust_ratio_names == expected
  assert any(len(s) == 1 for s in shapes.values())  # the rule matters here
