"""The norm and the numerics contract of the trust ratio.

Contract: never NaN or Inf from finite inputs; zero or denormal norms give
lambda = 1; a norm whose squares overflow float32 gives that layer a finite
(here zero) update.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import lars_optax
from lars_optax import _numerics


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_accumulates_in_float32(dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(100_000) * 3.0, dtype)
  exact = np.linalg.norm(np.asarray(x, np.float64))
  n = jax.jit(_numerics.layer_norm)(x)
  assert n.dtype == jnp.float32
  # 1e-5 is far below bfloat16's resolution (about 4e-3).
  np.testing.assert_allclose(float(n), exact, rtol=1e-5)


def test_complex_norm_is_that_of_the_modulus():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((3, 40)) + 1j * rng.standard_normal((3, 40))
  n = _numerics.layer_norm(jnp.asarray(x, jnp.complex64), 1)
  assert n.dtype == jnp.float32
  np.testing.assert_allclose(n, np.linalg.norm(np.abs(x), axis=1), rtol=1e-6)


def test_layer_axes_give_one_norm_per_layer():
  x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  np.testing.assert_allclose(_numerics.layer_norm(jnp.asarray(x), 2),
                             np.linalg.norm(x, axis=2), rtol=1e-6)


def test_no_branch_in_the_step():
  """The update is straight-line code: no cond or while (a host sync on GPU)."""
  params = {"w": jnp.ones((4, 4)), "b": jnp.zeros(4)}
  tx = lars_optax.lars(0.1, weight_decay=1e-4, trust_clip=True)
  jaxpr = str(jax.make_jaxpr(tx.update)(params, tx.init(params), params))
  assert " cond[" not in jaxpr and " while[" not in jaxpr


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_overflowing_norm_gives_finite_zero_update(dtype):
  big = 1e30 if dtype != jnp.float16 else 6e4
  params = {"w": jnp.asarray(np.linspace(0.1, 1.0, 64).reshape(8, 8), dtype),
            "other": jnp.ones((3,), dtype)}
  grads = {"w": jnp.asarray(np.linspace(-1.0, 1.0, 64).reshape(8, 8) * big,
                            dtype),
           "other": jnp.ones((3,), dtype)}
  tx = lars_optax.lars(1.0, weight_decay=1e-4, momentum=0.0)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  assert updates["w"].dtype == dtype
  u = np.asarray(updates["w"], np.float32)
  lam = float(lars_optax.trust_ratios(state)["w"])
  if dtype == jnp.float16:  # 6e4 squares fine in float32: a real update
    assert np.all(np.isfinite(u)) and np.any(u != 0) and lam > 0
  else:  # squares of 1e30 overflow float32: lambda = 0, a zero update
    assert lam == 0.0 and np.all(u == 0)
  # The other layer is untouched by the overflow.
  assert float(lars_optax.trust_ratios(state)["other"]) > 0


def test_overflowing_weight_norm_gives_zero_update():
  params = {"w": jnp.full((4,), 1e30, jnp.bfloat16)}
  grads = {"w": jnp.ones((4,), jnp.bfloat16)}
  tx = lars_optax.scale_by_lars(weight_decay=1e-4)
  updates, state = tx.update(grads, tx.init(params), params)
  assert float(state.trust_ratio["w"]) == 0.0
  np.testing.assert_array_equal(np.asarray(updates["w"], np.float32), 0.0)


@pytest.mark.parametrize("formula", ["paper", "combined"])
@pytest.mark.parametrize("w_value, g_value, expected", [
    (0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1e-45, 1e-45, 1.0), (1e-40, 1.0, 1.0),
    (1.0, 1e-40, None), (1e-40, 0.0, 1.0), (1.0, 0.0, None),
])
def test_zero_and_denormal_norms(formula, w_value, g_value, expected):
  """lambda = 1 for zero/denormal norms, finite and non-negative always."""
  params = {"w": jnp.full((5,), w_value, jnp.float32)}
  grads = {"w": jnp.full((5,), g_value, jnp.float32)}
  for weight_decay in (0.0, 1e-4):
    for eps in (0.0, 1e-8):
      tx = lars_optax.lars(0.1, weight_decay=weight_decay, eps=eps,
                           formula=formula)
      updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
      assert bool(jnp.all(jnp.isfinite(updates["w"])))
      lam = float(lars_optax.trust_ratios(state)["w"])
      assert np.isfinite(lam) and lam >= 0
      if expected is not None:
        assert lam == expected
      elif weight_decay == 0 and eps == 0:  # ||w|| normal, ||g|| zero/denormal
        assert lam == 1.0


_any_finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
# g + beta * w stays finite for these (it can overflow at float32's maximum).
_finite_sum = st.floats(-2.0**126, 2.0**126, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(w=st.lists(_any_finite, min_size=4, max_size=4),
       g=st.lists(_finite_sum, min_size=4, max_size=4),
       formula=st.sampled_from(["paper", "combined"]),
       clip=st.booleans())
def test_never_nan_or_inf_from_finite_inputs(w, g, formula, clip):
  update = _jitted_update(formula, clip)
  u, state = update({"w": jnp.asarray(g, jnp.float32)},
                    {"w": jnp.asarray(w, jnp.float32)})
  lam = float(state.trust_ratio["w"])
  assert np.isfinite(lam) and lam >= 0
  assert bool(jnp.all(jnp.isfinite(u["w"])))


_CACHE = {}


def _jitted_update(formula, clip):
  if (formula, clip) not in _CACHE:
    tx = lars_optax.scale_by_lars(weight_decay=1e-4, formula=formula,
                                  trust_clip=clip, learning_rate=0.1)
    _CACHE[formula, clip] = jax.jit(lambda g, w: tx.update(g, tx.init(w), w))
  return _CACHE[formula, clip]
