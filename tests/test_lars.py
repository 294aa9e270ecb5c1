"""lars / scale_by_lars against the NumPy reference, optax.lars, and optax."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import lars_optax
from tests import reference

# Leaves whose norms differ by orders of magnitude, as in the paper's AlexNet
# (||w||/||g|| 5.76 for conv1, 1345 for fc6).
SHAPES = {"conv": (3, 3, 2, 4), "fc": (8, 5), "bias": (5,), "bn_scale": (4,)}
PARAM_SCALES = {"conv": 1e2, "fc": 1.0, "bias": 1e-2, "bn_scale": 1.0}
GRAD_SCALES = {"conv": 1e-3, "fc": 1.0, "bias": 1e2, "bn_scale": 1e-1}


def make_params(seed=0):
  rng = np.random.default_rng(seed)
  return {k: (rng.standard_normal(s) * PARAM_SCALES[k]).astype(np.float32)
          for k, s in SHAPES.items()}


def grads_fn(step, params):
  del params
  rng = np.random.default_rng(1000 + step)
  return {k: (rng.standard_normal(s) * GRAD_SCALES[k]).astype(np.float32)
          for k, s in SHAPES.items()}


def run(tx, params, num_steps):
  state = tx.init(params)
  update = jax.jit(tx.update)
  history, ratios = [], []
  for t in range(num_steps):
    grads = {k: jnp.asarray(v) for k, v in grads_fn(t, params).items()}
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
    ratios.append(lars_optax.trust_ratios(state))
  return history, ratios, state


def assert_close_trees(actual, expected, rtol, atol=0.0):
  for k in expected:
    np.testing.assert_allclose(np.asarray(actual[k], np.float64), expected[k],
                               rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("formula", ["paper", "combined"])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_matches_numpy_reference(formula, nesterov, weight_decay):
  params = make_params()
  schedule_kw = dict(peak=2.0, warmup_steps=2, total_steps=8, end=1e-2)
  schedule = lars_optax.warmup_polynomial_decay_schedule(
      2.0, 2, 8, init_value=0.0, end_value=1e-2)
  kw = dict(weight_decay=weight_decay, momentum=0.9, trust_coefficient=0.001,
            nesterov=nesterov, formula=formula)
  history, ratios, _ = run(lars_optax.lars(schedule, **kw), params, 6)
  ref_history, ref_ratios = reference.lars_steps(
      params, grads_fn, reference.warmup_poly(**schedule_kw), 6, **kw)
  for t in range(6):
    assert_close_trees(history[t], ref_history[t], rtol=1e-6, atol=1e-7)
    assert_close_trees(ratios[t], ref_ratios[t], rtol=1e-5)


def test_matches_reference_with_masks_eps_and_clip():
  params = make_params()
  wd_mask = {"conv": True, "fc": True, "bias": False, "bn_scale": False}
  tr_mask = {"conv": True, "fc": False, "bias": True, "bn_scale": False}
  kw = dict(weight_decay=1e-2, momentum=0.5, trust_coefficient=0.02, eps=1e-3,
            formula="paper", trust_clip=True)
  history, ratios, _ = run(
      lars_optax.lars(0.5, weight_decay_mask=wd_mask, trust_ratio_mask=tr_mask,
                      **kw), params, 4)
  ref_history, ref_ratios = reference.lars_steps(
      params, grads_fn, 0.5, 4, weight_decay_mask=wd_mask,
      trust_ratio_mask=tr_mask, **kw)
  for t in range(4):
    assert_close_trees(history[t], ref_history[t], rtol=1e-6, atol=1e-7)
    assert_close_trees(ratios[t], ref_ratios[t], rtol=1e-5)
  assert float(ratios[-1]["fc"]) == 1.0 and float(ratios[-1]["bn_scale"]) == 1.0
  assert all(float(r) <= 1.0 for r in ratios[-1].values())  # clipped


@pytest.mark.parametrize("nesterov", [False, True])
def test_trust_clip_is_larc_with_a_schedule(nesterov):
  """The layer's learning rate is min(lambda, gamma_t), gamma_t far from 1."""
  params = make_params()
  kw = dict(weight_decay=1e-2, momentum=0.9, trust_coefficient=0.02,
            eps=1e-3, nesterov=nesterov, trust_clip=True)
  schedule = lars_optax.warmup_polynomial_decay_schedule(0.1, 2, 8)
  history, ratios, _ = run(lars_optax.lars(schedule, **kw), params, 6)
  ref_history, ref_ratios = reference.lars_steps(
      params, grads_fn, reference.warmup_poly(0.1, 2, 8), 6, **kw)
  for t in range(6):
    assert_close_trees(history[t], ref_history[t], rtol=1e-6, atol=1e-7)
    assert_close_trees(ratios[t], ref_ratios[t], rtol=1e-5)
  # Some layers are capped by gamma_t (ratio 1), others keep lambda < gamma_t.
  final = [float(r) for r in ratios[-1].values()]
  assert 1.0 in final and min(final) < 0.5


@pytest.mark.parametrize("trust_clip", [False, True])
def test_equals_timm_lars_at_a_constant_learning_rate(trust_clip):
  params = make_params()
  kw = dict(weight_decay=1e-2, momentum=0.9, trust_coefficient=0.02, eps=1e-3,
            trust_clip=trust_clip)
  history, _, _ = run(lars_optax.lars(0.1, **kw), params, 5)
  timm = reference.timm_lars_steps(params, grads_fn, 0.1, 5, **kw)
  for t in range(5):
    assert_close_trees(history[t], timm[t], rtol=1e-6, atol=1e-7)


def test_trust_clip_needs_the_learning_rate():
  with pytest.raises(ValueError, match="learning_rate"):
    lars_optax.scale_by_lars(trust_clip=True)


def test_paper_and_combined_formulas_differ():
  params = make_params()
  _, paper, _ = run(lars_optax.lars(0.1, weight_decay=1.0), params, 1)
  _, combined, _ = run(
      lars_optax.lars(0.1, weight_decay=1.0, formula="combined"), params, 1)
  assert not np.allclose(paper[0]["fc"], combined[0]["fc"])


@pytest.mark.parametrize("nesterov", [False, True])
def test_combined_equals_optax_lars_step_for_step(nesterov):
  params = make_params()
  params["zero_bias"] = np.zeros((3,), np.float32)  # the lambda = 1 rule

  def mask(p):
    return jax.tree.map(lambda x: x.ndim > 1, p)

  schedule = optax.linear_schedule(1.0, 0.1, 5)
  kw = dict(weight_decay=1e-3, trust_coefficient=0.01, eps=1e-4,
            nesterov=nesterov, momentum=0.8, weight_decay_mask=mask,
            trust_ratio_mask={"conv": True, "fc": True, "bias": False,
                              "bn_scale": True, "zero_bias": True})
  ours = lars_optax.lars(schedule, formula="combined", **kw)
  theirs = optax.lars(schedule, **kw)
  p1 = p2 = jax.tree.map(jnp.asarray, params)
  s1, s2 = ours.init(p1), theirs.init(p2)
  for t in range(5):
    g = dict(grads_fn(t, None), zero_bias=np.full((3,), 0.1 * t, np.float32))
    u1, s1 = ours.update(g, s1, p1)
    u2, s2 = theirs.update(g, s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    chex.assert_trees_all_close(p1, p2, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(u1, u2, rtol=1e-5, atol=1e-9)


def test_scale_by_lars_update_and_state():
  w = {"a": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
  g = {"a": jnp.array([0.0, 1.0]), "b": jnp.array([1.0, 1.0])}
  tx = lars_optax.scale_by_lars(weight_decay=0.5, trust_coefficient=0.1)
  updates, state = tx.update(g, tx.init(w), w)
  lam = 0.1 * 5.0 / (1.0 + 0.5 * 5.0)
  np.testing.assert_allclose(updates["a"], lam * (g["a"] + 0.5 * w["a"]), rtol=1e-6)
  np.testing.assert_allclose(updates["b"], g["b"])  # ||w|| = 0: lambda = 1
  assert state.trust_ratio["a"].dtype == jnp.float32
  np.testing.assert_allclose(state.trust_ratio["a"], lam, rtol=1e-6)
  assert float(state.trust_ratio["b"]) == 1.0


def test_layer_axes_equal_separate_layers():
  rng = np.random.default_rng(0)
  # 3 layers stacked on axis 0, with very different scales per layer.
  scales = np.array([1e-2, 1.0, 1e2], np.float32)[:, None, None]
  w = jnp.asarray(rng.standard_normal((3, 4, 5)).astype(np.float32) * scales)
  g = jnp.asarray(rng.standard_normal((3, 4, 5)).astype(np.float32) / scales)
  bias = jnp.asarray(rng.standard_normal((3, 5)).astype(np.float32))
  gbias = jnp.asarray(rng.standard_normal((3, 5)).astype(np.float32))
  kw = dict(weight_decay=1e-2, trust_coefficient=1e-2)
  stacked = lars_optax.scale_by_lars(layer_axes={"w": 1, "b": 1}, **kw)
  updates, state = stacked.update({"w": g, "b": gbias},
                                  stacked.init({"w": w, "b": bias}),
                                  {"w": w, "b": bias})
  assert state.trust_ratio["w"].shape == (3,)
  single = lars_optax.scale_by_lars(**kw)
  for layer in range(3):
    layer_params = {"w": w[layer], "b": bias[layer]}
    u, s = single.update({"w": g[layer], "b": gbias[layer]},
                         single.init(layer_params), layer_params)
    np.testing.assert_allclose(state.trust_ratio["w"][layer], s.trust_ratio["w"],
                               rtol=1e-6)
    np.testing.assert_allclose(state.trust_ratio["b"][layer], s.trust_ratio["b"],
                               rtol=1e-6)
    np.testing.assert_allclose(updates["w"][layer], u["w"], rtol=1e-6)
  # Callable and int forms; the default is one lambda per leaf.
  by_callable = lars_optax.scale_by_lars(
      layer_axes=lambda p: jax.tree.map(lambda _: 1, p), **kw)
  _, s_callable = by_callable.update({"w": g}, by_callable.init({"w": w}),
                                     {"w": w})
  np.testing.assert_allclose(s_callable.trust_ratio["w"], state.trust_ratio["w"])
  _, s_default = single.update({"w": g}, single.init({"w": w}), {"w": w})
  assert s_default.trust_ratio["w"].shape == ()


def test_layer_axes_two_leading_axes_in_lars():
  w = jnp.ones((2, 3, 4))
  tx = lars_optax.lars(0.1, layer_axes=2)
  state = tx.init({"w": w})
  _, state = tx.update({"w": jnp.ones((2, 3, 4))}, state, {"w": w})
  assert lars_optax.trust_ratios(state)["w"].shape == (2, 3)


# --- interoperability battery ---------------------------------------------


def test_jit_does_not_recompile():
  traces = []
  tx = lars_optax.lars(lars_optax.warmup_polynomial_decay_schedule(1.0, 2, 10),
                       weight_decay=1e-4)

  @jax.jit
  def step(params, state, grads):
    traces.append(1)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = jax.tree.map(jnp.asarray, make_params())
  state = tx.init(params)
  for t in range(4):
    params, state = step(params, state, grads_fn(t, None))
  assert len(traces) == 1


def test_inject_hyperparams():
  params = jax.tree.map(jnp.asarray, make_params())
  tx = optax.inject_hyperparams(lars_optax.lars, static_args=("weight_decay_mask",))(
      learning_rate=0.1, weight_decay=1e-3, momentum=0.9,
      weight_decay_mask=lars_optax.exclude_bias_and_norm)
  state = tx.init(params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.05)
  g = grads_fn(0, None)
  updates, state = jax.jit(tx.update)(g, state, params)
  expected, _ = lars_optax.lars(
      0.05, weight_decay=1e-3, weight_decay_mask=lars_optax.exclude_bias_and_norm
  ).update(g, lars_optax.lars(0.05).init(params), params)
  chex.assert_trees_all_close(updates, expected, rtol=1e-6)
  assert set(lars_optax.trust_ratios(state)) == set(params)


def test_multi_steps_averages_gradients():
  params = jax.tree.map(jnp.asarray, make_params())
  tx = optax.MultiSteps(lars_optax.lars(0.1, weight_decay=1e-3), every_k_schedule=2)
  state = tx.init(params)
  g0, g1 = grads_fn(0, None), grads_fn(1, None)
  u0, state = tx.update(g0, state, params)
  chex.assert_trees_all_close(u0, jax.tree.map(jnp.zeros_like, params))
  u1, state = tx.update(g1, state, params)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g0, g1)
  plain = lars_optax.lars(0.1, weight_decay=1e-3)
  expected, _ = plain.update(mean, plain.init(params), params)
  chex.assert_trees_all_close(u1, expected, rtol=1e-5, atol=1e-10)


def test_apply_if_finite_skips_nan_steps():
  params = {"w": jnp.ones((3, 2))}
  tx = optax.apply_if_finite(lars_optax.lars(0.1), max_consecutive_errors=5)
  state = tx.init(params)
  bad = {"w": jnp.full((3, 2), jnp.nan)}
  updates, state = tx.update(bad, state, params)
  chex.assert_trees_all_equal(updates, {"w": jnp.zeros((3, 2))})
  assert int(state.notfinite_count) == 1
  updates, state = tx.update({"w": jnp.ones((3, 2))}, state, params)
  assert bool(jnp.all(updates["w"] != 0))


def test_composes_with_masked_and_chain():
  params = jax.tree.map(jnp.asarray, make_params())
  mask = {"conv": True, "fc": True, "bias": False, "bn_scale": False}
  tx = optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.masked(lars_optax.lars(0.1), mask),
  )
  state = tx.init(params)
  g = grads_fn(0, None)
  updates, state = tx.update(g, state, params)
  # Leaves outside the mask pass through (clipped) unchanged.
  clipped, _ = optax.clip_by_global_norm(1.0).update(g, None)
  np.testing.assert_allclose(updates["bias"], clipped["bias"], rtol=1e-6)
  ratios = lars_optax.trust_ratios(state)  # masked leaves hold MaskedNode
  assert len(jax.tree.leaves(ratios)) == 2
  assert float(ratios["conv"]) != 1.0 and float(ratios["fc"]) != 1.0


def test_constant_schedule_equals_float():
  params = make_params()
  h1, r1, _ = run(lars_optax.lars(0.3, weight_decay=1e-3), params, 3)
  h2, r2, _ = run(lars_optax.lars(optax.constant_schedule(0.3), weight_decay=1e-3),
                  params, 3)
  chex.assert_trees_all_close(h1, h2, rtol=1e-7)
  chex.assert_trees_all_close(r1, r2, rtol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtype_preservation(dtype):
  params = jax.tree.map(lambda x: jnp.asarray(x, dtype), make_params())
  grads = jax.tree.map(lambda x: jnp.asarray(x, dtype), grads_fn(0, None))
  tx = lars_optax.lars(0.1, weight_decay=1e-4)
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(grads, state, params)
  assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
  assert all(r.dtype == jnp.float32
             for r in jax.tree.leaves(lars_optax.trust_ratios(state)))
  new = optax.apply_updates(params, updates)
  assert all(p.dtype == dtype for p in jax.tree.leaves(new))


@pytest.fixture
def x64():
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("formula", ["paper", "combined"])
def test_float64_matches_numpy_to_float64_precision(x64, formula):
  del x64
  params = {k: np.asarray(v, np.float64) for k, v in make_params().items()}
  schedule_kw = dict(peak=2.0, warmup_steps=2, total_steps=8, end=1e-2)
  kw = dict(weight_decay=5e-4, momentum=0.9, trust_coefficient=0.001,
            formula=formula, trust_clip=True)
  tx = lars_optax.lars(lars_optax.warmup_polynomial_decay_schedule(
      2.0, 2, 8, end_value=1e-2), **kw)
  state = tx.init(params)
  update = jax.jit(tx.update)
  ref_history, ref_ratios = reference.lars_steps(
      params, grads_fn, reference.warmup_poly(**schedule_kw), 6, **kw)
  for t in range(6):
    grads = {k: np.asarray(v, np.float64) for k, v in grads_fn(t, None).items()}
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    assert all(p.dtype == jnp.float64 for p in jax.tree.leaves(params))
    assert_close_trees(params, ref_history[t], rtol=1e-13, atol=1e-15)
    assert_close_trees(lars_optax.trust_ratios(state), ref_ratios[t],
                       rtol=1e-12)


def _as_pairs(tree):
  """Complex leaves as real arrays with a trailing (real, imag) axis."""
  return jax.tree.map(lambda x: jnp.stack([x.real, x.imag], -1), tree)


def test_complex_params_equal_their_real_pairs():
  """|x| norms, so a complex leaf is the real leaf of its (re, im) pairs."""
  rng = np.random.default_rng(0)
  def complex_tree(scale):
    return {k: jnp.asarray((rng.standard_normal(s) + 1j * rng.standard_normal(s))
                           * scale, jnp.complex64) for k, s in SHAPES.items()}
  params, grads = complex_tree(1.0), [complex_tree(0.1) for _ in range(3)]
  tx = lars_optax.lars(0.5, weight_decay=1e-2, trust_coefficient=0.02)
  pairs = _as_pairs(params)
  state, pair_state = tx.init(params), tx.init(pairs)
  for g in grads:
    updates, state = tx.update(g, state, params)
    pair_updates, pair_state = tx.update(_as_pairs(g), pair_state, pairs)
    params = optax.apply_updates(params, updates)
    pairs = optax.apply_updates(pairs, pair_updates)
    assert all(u.dtype == jnp.complex64 for u in jax.tree.leaves(updates))
    chex.assert_trees_all_close(_as_pairs(params), pairs, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(lars_optax.trust_ratios(state),
                                lars_optax.trust_ratios(pair_state), rtol=1e-6)
  assert any(float(jnp.abs(u.imag).max()) > 0 for u in jax.tree.leaves(updates))


def test_converges_on_complex_quadratic():
  target = jnp.asarray([1 + 2j, -3j, 0.5 - 1j], jnp.complex64)

  def loss(p):
    return jnp.sum(jnp.abs(p["z"] - target) ** 2)

  params = {"z": jnp.asarray([4 - 4j, 2 + 2j, -3 + 1j], jnp.complex64)}
  tx = lars_optax.lars(
      lars_optax.warmup_polynomial_decay_schedule(50.0, 10, 300),
      trust_coefficient=0.01)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    # JAX's gradient of a real function of z is conj(df/dz*): descend along
    # its conjugate, as optax's own complex tests do.
    grads = jax.tree.map(jnp.conj, jax.grad(loss)(params))
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  start = float(loss(params))
  for _ in range(300):
    params, state = step(params, state)
  assert float(loss(params)) < 1e-3 * start


@pytest.mark.parametrize("dtype, mu_dtype", [
    (jnp.float32, None), (jnp.bfloat16, None), (jnp.bfloat16, jnp.float32),
    (jnp.float16, None), (jnp.complex64, None),
])
def test_state_dtypes_and_shapes_stable_across_steps(dtype, mu_dtype):
  params = jax.tree.map(lambda x: jnp.asarray(x, dtype), make_params())
  tx = lars_optax.lars(lars_optax.warmup_polynomial_decay_schedule(0.1, 2, 10),
                       weight_decay=1e-4, trust_clip=True, mu_dtype=mu_dtype,
                       layer_axes={"conv": 1, "fc": 0, "bias": 0, "bn_scale": 0})
  state = tx.init(params)
  update = jax.jit(tx.update)
  for t in range(2):
    grads = jax.tree.map(lambda x: jnp.asarray(x, dtype), grads_fn(t, None))
    _, new_state = update(grads, state, params)
    chex.assert_trees_all_equal_dtypes(state, new_state)
    chex.assert_trees_all_equal_shapes(state, new_state)
    state = new_state


def test_float64_state_dtypes_stable(x64):
  del x64
  params = {"w": jnp.ones((3, 2), jnp.float64), "z": jnp.ones(2, jnp.complex128)}
  tx = lars_optax.lars(0.1, weight_decay=1e-4)
  state = tx.init(params)
  assert lars_optax.trust_ratios(state)["w"].dtype == jnp.float64
  assert lars_optax.trust_ratios(state)["z"].dtype == jnp.float64
  _, new_state = jax.jit(tx.update)(params, state, params)
  chex.assert_trees_all_equal_dtypes(state, new_state)


def test_mu_dtype():
  params = {"w": jnp.ones((4, 4), jnp.bfloat16)}
  tx = lars_optax.lars(0.1, mu_dtype=jnp.float32)
  state = tx.init(params)
  _, state = tx.update({"w": jnp.ones((4, 4), jnp.bfloat16)}, state, params)
  assert state[-1].trace["w"].dtype == jnp.float32


def _minimise(loss, params, tx, steps):
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state)
  return params


def test_converges_on_quadratic():
  target = {"a": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([[0.5, 4.0]])}

  def loss(p):
    return sum(jnp.sum((p[k] - target[k]) ** 2) for k in p)

  params = {"a": jnp.array([5.0, 5.0, 5.0]), "b": jnp.array([[-3.0, -1.0]])}
  tx = lars_optax.lars(
      lars_optax.warmup_polynomial_decay_schedule(50.0, 10, 300),
      trust_coefficient=0.01)
  final = _minimise(loss, params, tx, 300)
  assert float(loss(final)) < 1e-3 * float(loss(params))


def test_converges_on_rosenbrock():
  def loss(p):
    x, y = p["x"], p["y"]
    return jnp.sum((1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2)

  params = {"x": jnp.array([-1.2, -0.5]), "y": jnp.array([1.0, 2.0])}
  tx = lars_optax.lars(
      lars_optax.warmup_polynomial_decay_schedule(2.0, 50, 2000),
      trust_coefficient=0.01, momentum=0.9)
  final = _minimise(loss, params, tx, 2000)
  assert float(loss(final)) < 1e-2 * float(loss(params))


# --- properties ------------------------------------------------------------

_finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@functools.lru_cache(maxsize=None)
def _scale_by_lars_jit(formula):
  tx = lars_optax.scale_by_lars(trust_coefficient=0.01, formula=formula)
  return jax.jit(lambda g, w: tx.update(g, tx.init(w), w))


@settings(max_examples=25, deadline=None)
@given(w=st.lists(_finite, min_size=6, max_size=6),
       g=st.lists(_finite, min_size=6, max_size=6),
       c=st.floats(1e-3, 1e3), formula=st.sampled_from(["paper", "combined"]))
def test_gradient_scale_invariance_without_weight_decay(w, g, c, formula):
  w = {"w": jnp.asarray(w, jnp.float32).reshape(2, 3)}
  g = jnp.asarray(g, jnp.float32).reshape(2, 3)
  update = _scale_by_lars_jit(formula)
  u1, _ = update({"w": g}, w)
  u2, _ = update({"w": g * c}, w)
  if float(jnp.linalg.norm(g)) == 0 or float(jnp.linalg.norm(w["w"])) == 0:
    return  # lambda = 1: the update scales with g by design
  np.testing.assert_allclose(u2["w"], u1["w"], rtol=2e-5, atol=1e-30)


# --- bad input -------------------------------------------------------------


@pytest.mark.parametrize("kwargs, name", [
    (dict(learning_rate=-0.1), "learning_rate"),
    (dict(learning_rate=lambda t: -1.0 + 0 * t), "learning_rate"),
    (dict(momentum=1.0), "momentum"),
    (dict(momentum=-0.1), "momentum"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(eps=-1.0), "eps"),
    (dict(trust_coefficient=0.0), "trust_coefficient"),
    (dict(trust_coefficient=-1.0), "trust_coefficient"),
    (dict(formula="lamb"), "formula"),
    (dict(trust_clip="yes"), "trust_clip"),
])
def test_bad_hyperparameters_raise_at_build_time(kwargs, name):
  kwargs = dict({"learning_rate": 0.1}, **kwargs)
  with pytest.raises(ValueError, match=name):
    lars_optax.lars(kwargs.pop("learning_rate"), **kwargs)


def test_bad_layer_axes():
  params = {"w": jnp.ones((2, 3))}
  with pytest.raises(ValueError, match="layer_axes.*'w'.*ndim=2"):
    lars_optax.lars(0.1, layer_axes=3).init(params)
  with pytest.raises(ValueError, match="layer_axes"):
    lars_optax.lars(0.1, layer_axes={"v": 1}).init(params)


def test_update_without_params_raises():
  tx = lars_optax.scale_by_lars()
  params = {"w": jnp.ones(3)}
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


def test_mismatched_mask_names_the_difference():
  params = {"conv": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  bad = {"conv": {"kernel": True, "bais": False}}
  tx = lars_optax.lars(0.1, weight_decay_mask=bad)
  with pytest.raises(ValueError, match=r"weight_decay_mask(.|\n)*conv/bias(.|\n)*conv/bais"):
    tx.init(params)
    tx.update(params, tx.init(params), params)
  tx = lars_optax.lars(0.1, trust_ratio_mask=lambda p: {"other": True})
  with pytest.raises(ValueError, match=r"trust_ratio_mask(.|\n)*'other'"):
    tx.update(params, tx.init(params), params)
