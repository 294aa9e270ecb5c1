"""Sharded params on 8 fake CPU devices (set in conftest.py).

* jax.jit with NamedSharding: norms are those of the logical arrays already;
* pmap and shard_map with params sharded over the mapped axis: `axis_name`
  makes the norms global (psum of squared norms).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import lars_optax

N = 8
pytestmark = pytest.mark.skipif(jax.device_count() < N,
                                reason="needs 8 (fake) devices")
# Test-side APIs newer than the library's jax floor: skip there, run elsewhere.
needs_axis_type = pytest.mark.skipif(
    not hasattr(jax.sharding, "AxisType"),
    reason="the test builds its mesh with jax.sharding.AxisType (jax >= 0.5.3)")
needs_shard_map = pytest.mark.skipif(
    not hasattr(jax, "shard_map") or not hasattr(jax.sharding, "AxisType"),
    reason="the test uses jax.shard_map (jax >= 0.6.1)")
SHAPES = {"kernel": (16, 6), "conv": (8, 3, 3), "bias": (24,)}
SCALES = {"kernel": 10.0, "conv": 1e-2, "bias": 1.0}
KW = dict(weight_decay=1e-3, trust_coefficient=0.01, momentum=0.9)
STEPS = 3


def make(seed, scale=None):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.standard_normal(s).astype(np.float32)
                         * (scale or SCALES)[k]) for k, s in SHAPES.items()}


PARAMS = make(0)
GRADS = [make(10 + t, {k: 1.0 for k in SHAPES}) for t in range(STEPS)]


def run(tx, params, grads_seq):
  """Initialises and runs several steps; returns params, lambdas, updates."""
  state = tx.init(params)
  for grads in grads_seq:
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, lars_optax.trust_ratios(state), updates


# Sharded and unsharded programs sum the squares in different orders, so the
# float32 norms may differ in the last bits; updates are ~1e-2.
TOL = dict(rtol=2e-6, atol=1e-8)


def unsharded():
  return jax.jit(lambda p, g: run(lars_optax.lars(0.1, **KW), p, g))(PARAMS, GRADS)


def mesh():
  return jax.make_mesh((N,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))


@needs_axis_type
def test_jit_with_named_sharding_matches_unsharded():
  sharding = NamedSharding(mesh(), P("x"))
  params = jax.device_put(PARAMS, sharding)
  grads = jax.device_put(GRADS, sharding)
  assert len(params["kernel"].sharding.device_set) == N
  got = jax.jit(lambda p, g: run(lars_optax.lars(0.1, **KW), p, g))(params, grads)
  want = unsharded()
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, **TOL)


def _shards(tree):
  """Splits the leading axis of every leaf into (N, -1, ...) device shards."""
  return jax.tree.map(lambda x: x.reshape((N, x.shape[0] // N) + x.shape[1:]), tree)


def _unshard(tree):
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def test_pmap_with_axis_name_matches_one_device():
  tx = lars_optax.lars(0.1, axis_name="x", **KW)
  params, ratios, updates = jax.pmap(
      lambda p, g: run(tx, p, g), axis_name="x")(_shards(PARAMS), _shards(GRADS))
  want_params, want_ratios, want_updates = unsharded()
  for k in SHAPES:
    for d in range(N):  # every device holds the global lambda
      np.testing.assert_allclose(ratios[k][d], want_ratios[k], rtol=2e-6)
  for a, b in zip(jax.tree.leaves(_unshard(params)), jax.tree.leaves(want_params)):
    np.testing.assert_allclose(a, b, **TOL)
  for a, b in zip(jax.tree.leaves(_unshard(updates)), jax.tree.leaves(want_updates)):
    np.testing.assert_allclose(a, b, **TOL)


def test_pmap_without_axis_name_gives_per_shard_lambda():
  tx = lars_optax.lars(0.1, **KW)
  _, ratios, _ = jax.pmap(lambda p, g: run(tx, p, g))(_shards(PARAMS), _shards(GRADS))
  _, want, _ = unsharded()
  assert not np.allclose(ratios["kernel"][0], want["kernel"], rtol=1e-3)


@needs_shard_map
def test_shard_map_with_axis_name_matches_one_device():
  m = mesh()
  tx = lars_optax.lars(0.1, axis_name="x", **KW)
  f = jax.shard_map(lambda p, g: run(tx, p, g), mesh=m,
                    in_specs=(P("x"), P("x")), out_specs=(P("x"), P(), P("x")))
  sharding = NamedSharding(m, P("x"))
  params, ratios, updates = jax.jit(f)(jax.device_put(PARAMS, sharding),
                                       jax.device_put(GRADS, sharding))
  want_params, want_ratios, want_updates = unsharded()
  for got, want in ((params, want_params), (ratios, want_ratios),
                    (updates, want_updates)):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, **TOL)


@needs_shard_map
def test_shard_map_overflow_on_one_shard_is_global():
  """A norm overflowing on one shard zeroes lambda on every shard alike."""
  m = mesh()
  params = {"w": jnp.linspace(0.1, 1.0, 64, dtype=jnp.float32).reshape(16, 4)}
  grads = {"w": jnp.ones((16, 4), jnp.bfloat16).at[:2].set(1e30)}  # shard 0
  tx = lars_optax.scale_by_lars(axis_name="x")
  f = jax.shard_map(lambda g, p: tx.update(g, tx.init(p), p), mesh=m,
                    in_specs=(P("x"), P("x")), out_specs=(P("x"), P()))
  sharding = NamedSharding(m, P("x"))
  updates, state = jax.jit(f)(jax.device_put(grads, sharding),
                              jax.device_put(params, sharding))
  assert float(state.trust_ratio["w"]) == 0.0
  np.testing.assert_array_equal(np.asarray(updates["w"], np.float32), 0.0)
