"""Norms: float32 accumulation, overflow rescue, zero and denormal inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import lars_optax
from lars_optax import _numerics


def norms(*arrays, layer_axes=0):
  return _numerics.layer_norms([lambda a=a: a for a in arrays],
                               [layer_axes] * len(arrays))


def test_float32_accumulation_for_bfloat16():
  rng = np.random.default_rng(0)
  x = rng.standard_normal(100_000).astype(np.float32) * 3.0
  x_bf16 = jnp.asarray(x, jnp.bfloat16)
  exact = np.linalg.norm(np.asarray(x_bf16, np.float64))
  (n,) = jax.jit(norms)(x_bf16)
  assert n.dtype == jnp.float32
  # 1e-5 is far below bfloat16's resolution (about 4e-3).
  np.testing.assert_allclose(float(n), exact, rtol=1e-5)


@pytest.mark.parametrize("scale", [1e30, 1e-25, 1e-38])
def test_rescue_of_overflow_and_underflow(scale):
  x = np.linspace(-1.0, 1.0, 1001) * scale
  for dtype in (jnp.float32, jnp.bfloat16):
    xj = jnp.asarray(x, dtype)
    exact = np.linalg.norm(np.asarray(xj, np.float64))
    (n,) = jax.jit(norms)(xj)
    assert np.isfinite(float(n))
    if exact > 1e-36:  # clear of float32 denormals
      np.testing.assert_allclose(float(n), exact, rtol=1e-5)


def test_rescue_only_touches_flagged_layers():
  big = jnp.asarray(np.full((4, 8), 1e30), jnp.bfloat16).at[1].set(1.0)
  big = big.at[2].set(0.0)
  n_big, n_small = jax.jit(lambda a, b: norms(a, b, layer_axes=1))(
      big, jnp.ones((4, 8)))
  np.testing.assert_allclose(n_big, [np.sqrt(8) * float(big[0, 0]), np.sqrt(8),
                                     0.0, np.sqrt(8) * float(big[0, 0])], rtol=1e-6)
  np.testing.assert_allclose(n_small, np.sqrt(8) * np.ones(4), rtol=1e-6)


def test_gradient_of_norm_at_zero_is_finite():
  grad = jax.grad(lambda x: norms(x)[0])(jnp.zeros(3))
  assert bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_huge_gradients_give_finite_nonzero_update(dtype):
  big = 1e30 if dtype != jnp.float16 else 6e4
  params = {"w": jnp.asarray(np.linspace(0.1, 1.0, 64).reshape(8, 8), dtype)}
  grads = {"w": jnp.asarray(np.linspace(-1.0, 1.0, 64).reshape(8, 8) * big, dtype)}
  tx = lars_optax.lars(1.0, weight_decay=1e-4, momentum=0.0)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  u = np.asarray(updates["w"], np.float32)
  assert u.dtype == np.float32 and updates["w"].dtype == dtype
  assert np.all(np.isfinite(u)) and np.any(u != 0)
  lam = float(lars_optax.trust_ratios(state)["w"])
  assert np.isfinite(lam) and lam > 0


@pytest.mark.parametrize("formula", ["paper", "combined"])
@pytest.mark.parametrize("w_value, g_value", [
    (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1e-45, 1e-45), (1e-40, 1.0),
    (1.0, 1e-40), (1e-40, 0.0),
])
def test_zero_and_denormal_inputs_never_nan(formula, w_value, g_value):
  params = {"w": jnp.full((5,), w_value, jnp.float32)}
  grads = {"w": jnp.full((5,), g_value, jnp.float32)}
  for eps in (0.0, 1e-8):
    tx = lars_optax.lars(0.1, weight_decay=1e-4, eps=eps, formula=formula)
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    assert bool(jnp.all(jnp.isfinite(updates["w"])))
    lam = lars_optax.trust_ratios(state)["w"]
    assert bool(jnp.isfinite(lam)) and float(lam) >= 0


_any_finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=40, deadline=None)
@given(w=st.lists(_any_finite, min_size=4, max_size=4),
       g=st.lists(_any_finite, min_size=4, max_size=4),
       formula=st.sampled_from(["paper", "combined"]))
def test_trust_ratio_finite_and_nonnegative(w, g, formula):
  update = _jitted_update(formula)
  _, state = update({"w": jnp.asarray(g, jnp.float32)},
                    {"w": jnp.asarray(w, jnp.float32)})
  lam = float(state.trust_ratio["w"])
  assert np.isfinite(lam) and lam >= 0


_CACHE = {}


def _jitted_update(formula):
  if formula not in _CACHE:
    tx = lars_optax.scale_by_lars(weight_decay=1e-4, formula=formula)
    _CACHE[formula] = jax.jit(lambda g, w: tx.update(g, None, w))
  return _CACHE[formula]
