"""Tests of experiments/models.py: shapes, parameter counts, BatchNorm modes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

import lars_optax
from experiments import models
from experiments.models import MODELS, BatchNorm, create_model

def _images(name, batch, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(batch, *MODELS[name])), jnp.float32)


def _count(state):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(state))


@nnx.jit
def _forward(model, x):
  return model(x)


def _close(a, b, atol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=atol)


# --- Models -----------------------------------------------------------------


def _abstract_forward(model, shape):
  """Output shape/dtype of model on a batch of `shape`, with no real arrays."""
  graphdef, state = nnx.split(model)
  return jax.eval_shape(
      lambda state, x: nnx.merge(graphdef, state, copy=True)(x),
      state, jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_shape_train_and_eval(name):
  model = nnx.eval_shape(lambda: create_model(name, num_classes=7, rngs=nnx.Rngs(0)))
  for mode in ("train", "eval"):
    getattr(model, mode)()
    out = _abstract_forward(model, (2, *MODELS[name]))
    assert out.shape == (2, 7) and out.dtype == jnp.float32, mode


@pytest.mark.parametrize("name, expected", [
    ("resnet50", 25_557_032),   # torchvision / Keras ResNet-50: 25,557,032
    ("alexnet_bn", 62_387_912),  # AlexNet (no groups) + BN scale/bias
    ("cnn", 43_514),
])
def test_parameter_counts_without_allocating(name, expected):
  model = nnx.eval_shape(
      lambda: create_model(name, num_classes=1000 if name != "cnn" else 10,
                           rngs=nnx.Rngs(0)))
  params = nnx.state(model, nnx.Param)
  assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(params))
  assert _count(params) == expected


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError, match="resnet50.*") as info:
    create_model("vgg16", num_classes=10, rngs=nnx.Rngs(0))
  for name in MODELS:
    assert name in str(info.value)


@pytest.mark.slow
def test_init_he_convs_zero_bias_and_zero_init_option():
  model = create_model("resnet50_tiny", num_classes=10, rngs=nnx.Rngs(0))
  assert np.all(np.asarray(model.blocks[0].bn3.scale[...]) == 1.0)  # default: plain
  assert np.all(np.asarray(model.head.bias[...]) == 0.0)
  kernel = np.asarray(model.blocks[3].conv2.kernel[...])  # He, fan_out = 9 * 32
  assert kernel.shape == (3, 3, 32, 32)
  assert abs(kernel.std() / np.sqrt(2.0 / (9 * kernel.shape[-1])) - 1) < 0.1
  zero = create_model("resnet50_tiny", num_classes=10, rngs=nnx.Rngs(0),
                      zero_init_last_batch_norm=True)
  for block in zero.blocks:  # the third BN is the last of a bottleneck block
    assert np.all(np.asarray(block.bn3.scale[...]) == 0.0)
    assert np.all(np.asarray(block.bn2.scale[...]) == 1.0)


def test_bfloat16_compute_keeps_float32_params_and_stats():
  model = create_model("cnn_tiny", num_classes=10, rngs=nnx.Rngs(0),
                       dtype=jnp.bfloat16)
  logits = _forward(model, _images("cnn_tiny", 4))
  assert logits.dtype == jnp.float32
  for leaf in jax.tree.leaves(nnx.state(model, nnx.Param, nnx.BatchStat)):
    assert leaf.dtype == jnp.float32


# --- BatchNorm ----------------------------------------------------------------


def _bn_reference(x, eps=1e-5):
  """NumPy BN of x over all axes but the last, in float64."""
  x = np.asarray(x, np.float64)
  axes = tuple(range(x.ndim - 1))
  mean, var = x.mean(axes), x.var(axes)
  return (x - mean) / np.sqrt(var + eps), mean, var


def test_batch_norm_matches_numpy_and_updates_running_stats():
  x = jax.random.normal(jax.random.key(0), (6, 3, 3, 5)) * 3 + 2
  bn = BatchNorm(5, momentum=0.9)
  y = bn(x)
  expected, mean, var = _bn_reference(x)
  _close(y, expected, atol=1e-4)
  _close(bn.mean[...], 0.1 * mean, atol=1e-5)
  _close(bn.var[...], 0.9 + 0.1 * var, atol=1e-4)
  # Eval mode: running averages are used and left unchanged.
  bn.eval()
  before = (np.asarray(bn.mean[...]), np.asarray(bn.var[...]))
  y_eval = bn(x)
  _close(y_eval, (np.asarray(x) - before[0]) / np.sqrt(before[1] + 1e-5), atol=1e-4)
  _close(bn.mean[...], before[0], atol=0)
  _close(bn.var[...], before[1], atol=0)


def test_grouped_batch_norm_equals_separate_calls_on_slices():
  k = 4
  x = jax.random.normal(jax.random.key(1), (8, 2, 2, 3)) * jnp.arange(1.0, 9.0)[:, None, None, None]
  grouped = BatchNorm(3, groups=k)
  y = grouped(x)
  separate = [BatchNorm(3) for _ in range(k)]
  ys = [bn(part) for bn, part in zip(separate, jnp.split(x, k))]
  _close(y, jnp.concatenate(ys), atol=1e-5)
  _close(grouped.mean[...], np.mean([bn.mean[...] for bn in separate], axis=0))
  _close(grouped.var[...], np.mean([bn.var[...] for bn in separate], axis=0))
  # Per-group normalisation differs from global BN when the groups differ.
  assert not np.allclose(np.asarray(y), np.asarray(BatchNorm(3)(x)), atol=1e-3)


def test_grouped_batch_norm_rejects_indivisible_batch():
  with pytest.raises(ValueError, match="divisible by 4"):
    BatchNorm(3, groups=4)(jnp.ones((6, 3)))


def _pmap_bn(axis_name, x, state):
  """Runs BatchNorm(axis_name) on each device's shard; returns y, new stats."""
  graphdef = nnx.graphdef(BatchNorm(x.shape[-1], axis_name=axis_name))

  def apply(x, state):
    bn = nnx.merge(graphdef, state, copy=True)
    return bn(x), nnx.state(bn)

  return jax.pmap(apply, axis_name="batch", in_axes=(0, None))(x, state)


def test_axis_name_batch_norm_under_pmap_equals_global_batch_norm():
  devices = jax.local_device_count()
  assert devices == 8, "conftest sets 8 fake CPU devices"
  x = jax.random.normal(jax.random.key(2), (devices * 3, 2, 2, 4)) * 2 + 1
  single = BatchNorm(4)
  y = single(x)
  y_pmap, state = _pmap_bn("batch", x.reshape(devices, 3, 2, 2, 4),
                           nnx.state(BatchNorm(4)))
  _close(y_pmap.reshape(x.shape), y, atol=1e-5)
  for leaf, ref in [(state["mean"], single.mean), (state["var"], single.var)]:
    for device_value in np.asarray(leaf[...]):  # identical on every device
      _close(device_value, ref[...], atol=1e-6)


def test_per_device_batch_norm_under_pmap_equals_groups_on_one_device():
  devices = jax.local_device_count()
  x = jax.random.normal(jax.random.key(3), (devices * 2, 3, 4)) * jnp.arange(
      1.0, devices * 2 + 1)[:, None, None]
  grouped = BatchNorm(4, groups=devices)
  y = grouped(x)
  y_pmap, state = _pmap_bn(None, x.reshape(devices, 2, 3, 4), nnx.state(BatchNorm(4)))
  _close(y_pmap.reshape(x.shape), y, atol=1e-5)
  # The running averages agree after a mean over devices (what a pmap loop
  # with per-device BN does with lax.pmean on the batch stats).
  _close(np.mean(state["mean"][...], axis=0), grouped.mean[...], atol=1e-6)
  _close(np.mean(state["var"][...], axis=0), grouped.var[...], atol=1e-5)


def test_model_under_pmap_with_axis_name_equals_single_device():
  devices = jax.local_device_count()
  x = _images("cnn_tiny", devices * 2, seed=4)
  reference = create_model("cnn_tiny", num_classes=5, rngs=nnx.Rngs(0))
  logits = _forward(reference, x)
  model = create_model("cnn_tiny", num_classes=5, rngs=nnx.Rngs(0),
                       batch_norm_axis_name="batch")
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)

  def apply(params, batch_stats, x):
    m = nnx.merge(graphdef, params, batch_stats, copy=True)
    return m(x), nnx.state(m, nnx.BatchStat)

  logits_pmap, stats = jax.pmap(apply, axis_name="batch", in_axes=(None, None, 0))(
      params, batch_stats, x.reshape(devices, 2, *x.shape[1:]))
  _close(logits_pmap.reshape(logits.shape), logits, atol=1e-4)
  expected = nnx.state(reference, nnx.BatchStat)
  jax.tree.map(lambda a, b: _close(a[0], b, atol=1e-5), stats, expected)


def test_train_and_eval_modes():
  model = create_model("resnet50_tiny", num_classes=3, rngs=nnx.Rngs(0))
  bns = [m for _, m in nnx.iter_modules(model) if isinstance(m, BatchNorm)]
  assert bns and not any(bn.use_running_average for bn in bns)
  x = _images("resnet50_tiny", 4, seed=5)
  # Train mode: batch statistics, so an example's output depends on the batch.
  full = _forward(model, x)
  assert not np.allclose(np.asarray(full[:2]), np.asarray(_forward(model, x[:2])), atol=1e-4)
  model.eval()
  assert all(bn.use_running_average for bn in bns)
  stats = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))
  evaluated = _forward(model, x)
  _close(evaluated[:2], _forward(model, x[:2]), atol=1e-5)  # per-example
  assert not np.allclose(np.asarray(evaluated), np.asarray(full), atol=1e-3)
  jax.tree.map(lambda a, b: _close(a, b, atol=0), nnx.state(model, nnx.BatchStat), stats)
  model.train()
  assert not any(bn.use_running_average for bn in bns)
  # nnx.view gives a switched copy sharing the arrays.
  view = nnx.view(model, use_running_average=True)
  _close(_forward(view, x), evaluated, atol=1e-5)
  assert not bns[0].use_running_average


# --- The functional pattern for jit / pmap training steps -------------------


def _make_step(graphdef, tx):
  def step(params, batch_stats, opt_state, images, labels):
    def loss_fn(params):
      # copy=True: fresh Variables at this trace level, so BN may update them.
      model = nnx.merge(graphdef, params, batch_stats, copy=True)
      logits = model(images)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, nnx.state(model, nnx.BatchStat)

    (loss, new_batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_batch_stats, opt_state, loss

  return step


def test_functional_jitted_train_step_returns_updated_batch_stats():
  model = create_model("cnn_tiny", num_classes=10, rngs=nnx.Rngs(0))
  model.train()  # the mode is static and travels in the graphdef
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(params)
  step = jax.jit(_make_step(graphdef, tx))
  images = _images("cnn_tiny", 16, seed=6)
  labels = jnp.arange(16) % 10
  new_params, new_stats, opt_state, loss = step(params, batch_stats, opt_state, images, labels)
  assert np.isfinite(float(loss))
  # Same structure in and out; stats moved, as the stateful call moves them.
  assert jax.tree.structure(new_stats) == jax.tree.structure(batch_stats)
  stateful = create_model("cnn_tiny", num_classes=10, rngs=nnx.Rngs(0))
  _forward(stateful, images)
  jax.tree.map(lambda a, b: _close(a, b, atol=1e-5), new_stats,
               nnx.state(stateful, nnx.BatchStat))
  assert not np.allclose(np.asarray(new_stats["fc"]["bn"]["mean"][...]), 0.0)
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), new_params, params)
  assert all(jax.tree.leaves(changed))
  # A second step from the new state reuses the compiled step and lowers the loss.
  for _ in range(3):
    new_params, new_stats, opt_state, loss2 = step(
        new_params, new_stats, opt_state, images, labels)
  assert float(loss2) < float(loss)
  assert step._cache_size() == 1
  # Back to a stateful module, in eval mode, for evaluation.
  trained = nnx.merge(graphdef, new_params, new_stats)
  trained.eval()
  assert _forward(trained, images).shape == (16, 10)


@pytest.mark.slow
def test_jit_with_sharded_batch_equals_single_device():
  """Global BN under jit with the batch sharded over 8 devices (GSPMD)."""
  model = create_model("cnn_tiny", num_classes=10, rngs=nnx.Rngs(0))
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  tx = optax.sgd(0.1)
  opt_state = tx.init(params)
  images = _images("cnn_tiny", 16, seed=7)
  labels = jnp.arange(16) % 10
  step = _make_step(graphdef, tx)
  expected = jax.jit(step)(params, batch_stats, opt_state, images, labels)
  mesh = jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  shard = functools.partial(jax.device_put, device=NamedSharding(mesh, P("data")))
  replicated = NamedSharding(mesh, P())
  params, batch_stats, opt_state = jax.device_put(
      (params, batch_stats, opt_state), replicated)
  sharded = jax.jit(step)(params, batch_stats, opt_state, shard(images), shard(labels))
  jax.tree.map(lambda a, b: _close(a, b, atol=1e-5), sharded, expected)


def test_registry_is_consistent():
  assert set(MODELS) == set(models._REGISTRY)
  for name, shape in MODELS.items():
    assert len(shape) == 3, name


def test_names_drop_the_value_attribute_of_nnx_variables():
  """Flax NNX params hold arrays in Variables (key path ``...['bias'].value``):
  names and mask_by_name see 'layer/bias', as for plain dicts."""
  class Layer(nnx.Module):

    def __init__(self):
      self.kernel = nnx.Param(jnp.ones((3, 2)))
      self.bias = nnx.Param(jnp.zeros(2))

  _, params = nnx.split(Layer(), nnx.Param)
  assert lars_optax.parameter_names(params) == ["bias", "kernel"]
  mask = lars_optax.mask_by_name(r"(^|/)bias$")(params)
  assert jax.tree.leaves(mask) == [False, True]
  state = lars_optax.lars(0.1).init(params)
  assert sorted(lars_optax.trust_ratios_by_name(state)) == ["bias", "kernel"]
