"""Each term and edge rule of the trust ratio, with inputs where it bites.

Every test compares the library with the NumPy reference (tests/reference.py)
on inputs chosen so that the term or rule it checks changes the result far
beyond the comparison's tolerance; each test asserts that margin from the
reference itself (with the term left out, or the rule not applied), so a
library that dropped the term or broke the rule fails it:

* eps, at eps / denominator >= 1e-3 (the ratios are compared to 1e-5);
* a layer adapted but not decayed, with beta * ||w|| as large as ||g||;
* LARC clipping with lambda below gamma_t, between gamma_t and 1, and above 1;
* the 1 at a zero norm, exempt from ``ratio_bounds``;
* a gradient whose squares overflow float32: a zero step, even with bounds;
* a layer outside ``trust_ratio_mask`` untouched by LARC clipping at gamma > 1;
* ``layer_axes`` equal to the leaf's ndim: one lambda per element;
* denormal norms: lambda = 1;
* lambda = eta / beta for a zero gradient with decay, under "formula".
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lars_optax
from tests import reference

RATIO_RTOL = 1e-5  # float32 norms against float64 ones
# LAMB: optax.scale_by_adam's float32 arithmetic moves Adam's direction by up
# to ~1e-5 (1 - 0.999 is 1.3e-5 off in float32), as in test_lamb.py.
ADAM_RTOL = 2e-5
TINY = float(np.finfo(np.float32).tiny)  # float32's smallest normal number


def random_tree(seed, scales, shapes):
  rng = np.random.default_rng(seed)
  return {k: (rng.standard_normal(shapes[k]) * s).astype(np.float32)
          for k, s in scales.items()}


def fixed_gradients(scales, shapes, seed=1000):
  """A gradient function (step, params) -> dict, new random values each step."""
  def grads_fn(step, params):
    del params
    return random_tree(seed + step, scales, shapes)
  return grads_fn


def run(tx, params, grads_fn, num_steps):
  state = tx.init(params)
  update = jax.jit(tx.update)
  history, ratios = [], []
  for t in range(num_steps):
    grads = {k: jnp.asarray(v) for k, v in grads_fn(t, params).items()}
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
    ratios.append(lars_optax.trust_ratios(state))
  return history, ratios


def assert_matches(history, ratios, ref_history, ref_ratios, start,
                   rtol=RATIO_RTOL):
  """Ratios to ``rtol``; params to float32 precision plus ``rtol`` of the
  distance they moved from ``start``."""
  for t, (params, ref_params) in enumerate(zip(history, ref_history)):
    for k, expected in ref_params.items():
      moved = np.max(np.abs(expected - np.asarray(start[k], np.float64)))
      atol = 1e-7 * np.max(np.abs(expected)) + rtol * moved
      np.testing.assert_allclose(np.asarray(params[k], np.float64), expected,
                                 rtol=1e-6, atol=atol, err_msg=f"{k}, step {t}")
    for k, expected in ref_ratios[t].items():
      np.testing.assert_allclose(np.asarray(ratios[t][k], np.float64), expected,
                                 rtol=rtol, err_msg=f"{k}, step {t}")


def params_before(params, ref_history, t):
  return params if t == 0 else ref_history[t - 1]


# --- terms of the formula ----------------------------------------------------

EPS_SHAPES = {"conv": (3, 3, 2, 4), "fc": (8, 5), "bias": (5,)}


@pytest.mark.parametrize("formula", ["paper", "combined"])
def test_eps_where_it_is_a_real_part_of_the_denominator(formula):
  shapes = EPS_SHAPES
  params = random_tree(0, {"conv": 1.0, "fc": 0.5, "bias": 0.1}, shapes)
  grads_fn = fixed_gradients({"conv": 3e-3, "fc": 5e-2, "bias": 1e-3}, shapes)
  kw = dict(weight_decay=1e-3, momentum=0.9, trust_coefficient=0.01,
            eps=1e-2, formula=formula)
  history, ratios = run(lars_optax.lars(learning_rate=1.0, **kw), params,
                        grads_fn, 4)
  ref_history, ref_ratios = reference.lars_steps(params, grads_fn, 1.0, 4, **kw)
  assert_matches(history, ratios, ref_history, ref_ratios, params)
  # Without eps every layer's lambda would be off by far more than 1e-5.
  for t in range(4):
    before = params_before(params, ref_history, t)
    grads = grads_fn(t, None)
    for k in shapes:
      ratio_kw = dict(weight_decay=1e-3, trust_coefficient=0.01,
                      formula=formula)
      with_eps = reference.trust_ratio(before[k], grads[k], eps=1e-2, **ratio_kw)
      without = reference.trust_ratio(before[k], grads[k], eps=0.0, **ratio_kw)
      assert without / with_eps - 1 > 1e-3, (k, t)


@pytest.mark.parametrize("formula", ["paper", "combined"])
def test_adapted_but_not_decayed_layer_has_no_decay_in_its_ratio(formula):
  """beta * ||w|| of the undecayed layer "scale" is about its ||g||: adding it
  to the denominator would halve lambda."""
  shapes = {"kernel": (6, 4), "scale": (8,), "bias": (8,)}
  params = random_tree(1, {"kernel": 1.0, "scale": 3.0, "bias": 0.5}, shapes)
  grads_fn = fixed_gradients({"kernel": 0.3, "scale": 0.3, "bias": 0.3}, shapes)
  decay = {"kernel": True, "scale": False, "bias": False}
  adapt = {"kernel": True, "scale": True, "bias": False}
  kw = dict(weight_decay=0.1, momentum=0.9, trust_coefficient=0.01,
            formula=formula, weight_decay_mask=decay, trust_ratio_mask=adapt)
  history, ratios = run(lars_optax.lars(learning_rate=0.5, **kw), params,
                        grads_fn, 4)
  ref_history, ref_ratios = reference.lars_steps(params, grads_fn, 0.5, 4, **kw)
  assert_matches(history, ratios, ref_history, ref_ratios, params)
  for t in range(4):
    w, g = params_before(params, ref_history, t)["scale"], grads_fn(t, None)["scale"]
    beta_w, g_norm = 0.1 * np.linalg.norm(w), np.linalg.norm(g)
    assert 0.5 < beta_w / g_norm < 2, t
    if_decayed = reference.trust_ratio(w, g, weight_decay=0.1, eps=0.0,
                                       trust_coefficient=0.01, formula=formula)
    assert ref_ratios[t]["scale"] / if_decayed > 1.2, t


def larc_layers():
  """Layers whose lambda (trust coefficient 0.05) is about 5, 0.7 and 0.025."""
  shapes = {"big": (6, 4), "mid": (6, 4), "small": (6, 4), "bias": (4,)}
  params = random_tree(2, {"big": 1.0, "mid": 1.0, "small": 1.0, "bias": 1.0},
                       shapes)
  grads_fn = fixed_gradients(
      {"big": 1e-2, "mid": 7e-2, "small": 2.0, "bias": 0.1}, shapes)
  return params, grads_fn


def test_trust_clip_with_lambda_below_between_and_above():
  """LARC: the layer's rate min(lambda, gamma_t), with lambda < gamma_t,
  gamma_t < lambda < 1 and lambda > 1 at every step, gamma_t varying."""
  params, grads_fn = larc_layers()
  schedule = lars_optax.warmup_polynomial_decay_schedule(
      0.4, 2, 10, init_value=0.1)
  kw = dict(weight_decay=1e-3, momentum=0.9, trust_coefficient=0.05,
            trust_clip=True, trust_ratio_mask={"big": True, "mid": True,
                                               "small": True, "bias": False})
  history, ratios = run(lars_optax.lars(learning_rate=schedule, **kw), params,
                        grads_fn, 6)
  ref_history, ref_ratios = reference.lars_steps(
      params, grads_fn, reference.warmup_poly(0.4, 2, 10, init=0.1), 6, **kw)
  assert_matches(history, ratios, ref_history, ref_ratios, params)
  for t in range(6):
    gamma = float(schedule(t))
    before, grads = params_before(params, ref_history, t), grads_fn(t, None)
    lam = {k: reference.trust_ratio(before[k], grads[k], weight_decay=1e-3,
                                    trust_coefficient=0.05, eps=0.0,
                                    formula="paper")
           for k in ("big", "mid", "small")}
    assert lam["small"] < gamma / 1.5 < 1.2 * gamma < lam["mid"] < 0.95, (t, lam)
    assert lam["big"] > 2, (t, lam)


def test_trust_clip_leaves_a_layer_outside_the_trust_ratio_mask_alone():
  """gamma_t above 1: a layer that is not adapted keeps the rate gamma_t
  (min(1, gamma_t) would be 1), as timm's Lars, which clips only adapted
  layers."""
  params, grads_fn = larc_layers()
  schedule = lars_optax.warmup_polynomial_decay_schedule(3.0, 0, 6,
                                                         end_value=0.5)
  adapt = {"big": True, "mid": True, "small": True, "bias": False}
  kw = dict(weight_decay=1e-3, momentum=0.9, trust_coefficient=0.05,
            trust_clip=True, trust_ratio_mask=adapt)
  history, ratios = run(lars_optax.lars(learning_rate=schedule, **kw), params,
                        grads_fn, 4)
  ref_history, ref_ratios = reference.lars_steps(
      params, grads_fn, reference.warmup_poly(3.0, 0, 6, end=0.5), 4, **kw)
  assert_matches(history, ratios, ref_history, ref_ratios, params)
  assert float(schedule(3)) > 1
  for t in range(4):
    assert float(ratios[t]["bias"]) == 1.0
  # The first step by hand: w - gamma_0 (g + beta w), no momentum yet.
  w, g = params["bias"], grads_fn(0, None)["bias"].astype(np.float64)
  np.testing.assert_allclose(history[0]["bias"], w - 3.0 * (g + 1e-3 * w),
                             rtol=1e-6)


# --- the rules at zero, infinite and denormal norms -------------------------

ZERO_SHAPES = {"kernel": (6, 4), "zero_w": (4,), "frozen": (3, 2),
               "frozen_decayed": (3, 2)}


def zero_norm_layers():
  """A zero-initialised layer, a frozen one (zero gradient, not decayed), a
  frozen decayed one and a plain kernel."""
  params = random_tree(3, {"kernel": 1.0, "zero_w": 0.0, "frozen": 1.0,
                           "frozen_decayed": 1.0}, ZERO_SHAPES)
  grads_fn = fixed_gradients({"kernel": 1.0, "zero_w": 0.3, "frozen": 0.0,
                              "frozen_decayed": 0.0}, ZERO_SHAPES)
  decay = {"kernel": True, "zero_w": True, "frozen": False,
           "frozen_decayed": True}
  return params, grads_fn, decay


@pytest.mark.parametrize("formula", ["paper", "combined"])
def test_lars_one_at_a_zero_norm_is_not_bounded(formula):
  params, grads_fn, decay = zero_norm_layers()
  bounds = (2.0, 5.0)
  kw = dict(weight_decay=1e-3, momentum=0.9, trust_coefficient=0.01,
            formula=formula, weight_decay_mask=decay, ratio_bounds=bounds)
  history, ratios = run(lars_optax.lars(learning_rate=1e-2, **kw), params,
                        grads_fn, 3)
  ref_history, ref_ratios = reference.lars_steps(params, grads_fn, 1e-2, 3, **kw)
  assert_matches(history, ratios, ref_history, ref_ratios, params)
  # The 1 of a zero norm lies outside the bounds; computed ratios are bounded:
  # the kernel's (0.01 ||w|| / ||g||, about 0.01) up to 2, the frozen decayed
  # layer's eta / beta = 10 down to 5.
  assert float(ratios[0]["zero_w"]) == 1.0
  assert all(float(r["frozen"]) == 1.0 for r in ratios)
  assert float(ratios[0]["kernel"]) == pytest.approx(2.0)
  assert float(ratios[0]["frozen_decayed"]) == pytest.approx(5.0)


def test_lamb_one_at_a_zero_norm_is_not_bounded():
  params, grads_fn, decay = zero_norm_layers()
  kw = dict(weight_decay=1e-2, weight_decay_mask=decay, ratio_bounds=(2.0, 5.0))
  history, ratios = run(lars_optax.lamb(learning_rate=1e-3, **kw), params,
                        grads_fn, 3)
  ref_history, ref_ratios = reference.lamb_steps(params, grads_fn, 1e-3, 3, **kw)
  assert_matches(history, ratios, ref_history, ref_ratios, params, ADAM_RTOL)
  assert float(ratios[0]["zero_w"]) == 1.0
  assert all(float(r["frozen"]) == 1.0 for r in ratios)
  assert float(ratios[0]["frozen_decayed"]) == pytest.approx(5.0)  # 1 / beta


@pytest.mark.parametrize("formula", ["paper", "combined"])
def test_overflowing_gradient_norm_gives_a_zero_step_even_with_bounds(formula):
  """float32 gradients near 1e30: their squares overflow, so ||g|| = inf. The
  ratio is 0 (not the lower bound 0.5), the layer does not move, and the
  other layer is adapted as usual."""
  shapes = {"w": (8, 8), "other": (3, 2)}
  params = random_tree(4, {"w": 1.0, "other": 1.0}, shapes)
  grads = random_tree(5, {"w": 1e30, "other": 1.0}, shapes)
  kw = dict(weight_decay=1e-4, trust_coefficient=0.01, eps=0.0, formula=formula,
            ratio_bounds=(0.5, 2.0))
  tx = lars_optax.scale_by_lars(**kw)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  for k in shapes:
    expected_ratio = reference.trust_ratio(params[k], grads[k],
                                           norm=reference.float32_norm, **kw)
    expected = expected_ratio * (grads[k].astype(np.float64)
                                 + 1e-4 * params[k])
    assert float(state.trust_ratio[k]) == pytest.approx(expected_ratio,
                                                        rel=RATIO_RTOL)
    np.testing.assert_allclose(updates[k], expected, rtol=1e-6)
  assert float(state.trust_ratio["w"]) == 0.0
  assert float(state.trust_ratio["other"]) == pytest.approx(0.5)  # bounded
  assert np.all(np.asarray(updates["w"]) == 0)


def flushes_denormals():
  """Whether the default device flushes denormal float32 results to zero
  (XLA on CPU does; then squares of values near 1e-20 are 0)."""
  return float(jax.jit(lambda x: x * x)(np.float32(1e-20))) == 0.0


@pytest.mark.parametrize("formula", ["paper", "combined"])
def test_values_whose_squares_are_denormal(formula):
  """Values near 1e-20: squares near 1e-40, below float32's smallest normal.
  Where the device flushes them (XLA:CPU), the norm is 0 and lambda 1; where
  it keeps them, the norm is about 2e-20 and lambda the formula's. The
  reference takes the norm as float32 arithmetic on this device gives it."""
  shapes = {"tiny_w": (5,), "tiny_g": (5,), "tiny_g_decayed": (5,)}
  params = random_tree(6, {"tiny_w": 1e-20, "tiny_g": 1.0,
                           "tiny_g_decayed": 1.0}, shapes)
  grads = random_tree(7, {"tiny_w": 1.0, "tiny_g": 1e-20,
                          "tiny_g_decayed": 1e-20}, shapes)
  decay = {"tiny_w": True, "tiny_g": False, "tiny_g_decayed": True}
  kw = dict(weight_decay=1e-2, trust_coefficient=1e-3, eps=0.0, formula=formula)
  tx = lars_optax.scale_by_lars(weight_decay_mask=decay, **kw)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  flush = flushes_denormals()
  for k in shapes:
    beta = 1e-2 if decay[k] else 0.0
    expected_ratio = reference.trust_ratio(
        params[k], grads[k], norm=lambda x: reference.float32_norm(x, flush),
        **dict(kw, weight_decay=beta))
    assert float(state.trust_ratio[k]) == pytest.approx(expected_ratio,
                                                        rel=RATIO_RTOL), k
    expected = expected_ratio * (grads[k].astype(np.float64) + beta * params[k])
    np.testing.assert_allclose(updates[k], expected, rtol=1e-6, atol=1e-45)
  if flush:
    assert float(state.trust_ratio["tiny_w"]) == 1.0
    assert float(state.trust_ratio["tiny_g"]) == 1.0
  # Decayed, ||g|| next to beta ||w|| is nothing either way: eta / beta.
  assert float(state.trust_ratio["tiny_g_decayed"]) == pytest.approx(0.1)


@pytest.mark.parametrize("formula", ["paper", "combined"])
def test_a_denormal_norm_gives_one(formula):
  """Two norms that are denormal whatever the device does with denormals
  (where it flushes them, they are 0, which gives 1 too):

  * weight_norm_bounds (0, 1e-40) makes phi(||w||) = 1e-40, denormal; the
    formula would give about 1e-43;
  * a zero gradient with beta ||w|| = 1e-30 * 3e-10 in the denominator,
    denormal; the formula would give eta / beta = 1e27.
  """
  shapes = {"bounded": (4, 3), "tiny_decay": (6,)}
  params = random_tree(8, {"bounded": 1.0, "tiny_decay": 1e-10}, shapes)
  grads = random_tree(9, {"bounded": 1.0, "tiny_decay": 0.0}, shapes)
  cases = {"bounded": dict(weight_decay=0.0, weight_norm_bounds=(0.0, 1e-40)),
           "tiny_decay": dict(weight_decay=1e-30)}
  for k, case in cases.items():
    kw = dict(trust_coefficient=1e-3, eps=0.0, formula=formula, **case)
    tx = lars_optax.scale_by_lars(**kw)
    leaf = {k: params[k]}
    updates, state = jax.jit(tx.update)({k: grads[k]}, tx.init(leaf), leaf)
    expected_ratio = reference.trust_ratio(params[k], grads[k], tiny=TINY, **kw)
    assert expected_ratio == 1.0
    assert reference.trust_ratio(params[k], grads[k], **kw) != 1.0  # tiny=0
    assert float(state.trust_ratio[k]) == 1.0, k
    expected = grads[k].astype(np.float64) + case["weight_decay"] * params[k]
    # atol: the denormal 1e-40 of beta * w is 0 where the device flushes it.
    np.testing.assert_allclose(updates[k], expected, rtol=1e-6, atol=TINY)


# --- zero gradient with decay, and one lambda per element -------------------


@pytest.mark.parametrize("formula", ["paper", "combined"])
@pytest.mark.parametrize("eta, beta", [(1e-3, 5e-4), (0.02, 1e-2), (1.0, 0.3)])
def test_zero_gradient_with_decay_gives_eta_over_beta(formula, eta, beta):
  """Under zero_gradient_trust_ratio="formula": lambda = eta ||w|| / (beta
  ||w||) = eta / beta, here for a whole leaf and for one slice of a stacked
  leaf, while the other slice keeps its own lambda."""
  rng = np.random.default_rng(10)
  stacked = rng.standard_normal((2, 3, 4)).astype(np.float32)
  grads_stacked = np.stack([np.zeros((3, 4), np.float32),
                            rng.standard_normal((3, 4)).astype(np.float32)])
  params = {"frozen": rng.standard_normal((5, 2)).astype(np.float32),
            "stacked": stacked}
  grads = {"frozen": np.zeros((5, 2), np.float32), "stacked": grads_stacked}
  kw = dict(weight_decay=beta, trust_coefficient=eta, eps=0.0, formula=formula)
  tx = lars_optax.scale_by_lars(layer_axes={"frozen": 0, "stacked": 1}, **kw)
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  expected = {"frozen": reference.trust_ratio(params["frozen"],
                                              grads["frozen"], **kw),
              "stacked": [reference.trust_ratio(stacked[i], grads_stacked[i],
                                                **kw) for i in range(2)]}
  assert expected["frozen"] == pytest.approx(eta / beta, rel=1e-12)
  assert expected["stacked"][1] != pytest.approx(eta / beta, rel=1e-2)
  for k in params:
    np.testing.assert_allclose(state.trust_ratio[k], expected[k], rtol=1e-6,
                               err_msg=k)
  np.testing.assert_allclose(updates["frozen"], eta * params["frozen"],
                             rtol=1e-6)


def per_element(tree):
  """{name: array} -> {"name[i, j]": scalar}, one leaf per element."""
  return {f"{k}{list(i)}": x for k, a in tree.items()
          for i, x in np.ndenumerate(np.asarray(a))}


@pytest.mark.parametrize("optimizer", ["lars", "lamb"])
def test_layer_axes_equal_to_ndim_give_one_ratio_per_element(optimizer):
  """layer_axes == ndim: every element is a layer (norms over no axis), as
  if each were a leaf of its own; a leaf with layer_axes 0 keeps one ratio."""
  shapes = {"w": (3, 4), "v": (5,), "m": (2, 3)}
  params = random_tree(11, {"w": 1.0, "v": 0.1, "m": 1.0}, shapes)
  grads_fn = fixed_gradients({"w": 0.3, "v": 1.0, "m": 0.3}, shapes)
  layer_axes = {"w": 2, "v": 1, "m": 0}
  if optimizer == "lars":
    kw = dict(weight_decay=1e-2, momentum=0.9, trust_coefficient=0.02,
              eps=1e-3)
    tx = lars_optax.lars(learning_rate=0.5, layer_axes=layer_axes, **kw)
    steps, learning_rate, rtol = reference.lars_steps, 0.5, RATIO_RTOL
  else:
    kw = dict(weight_decay=1e-2)
    tx = lars_optax.lamb(learning_rate=1e-2, layer_axes=layer_axes, **kw)
    steps, learning_rate, rtol = reference.lamb_steps, 1e-2, ADAM_RTOL
  history, ratios = run(tx, params, grads_fn, 3)
  split = dict(per_element({k: params[k] for k in ("w", "v")}), m=params["m"])

  def split_grads(step, p):
    del p
    g = grads_fn(step, None)
    return dict(per_element({k: g[k] for k in ("w", "v")}), m=g["m"])

  ref_history, ref_ratios = steps(split, split_grads, learning_rate, 3, **kw)
  for t in range(3):
    assert ratios[t]["w"].shape == (3, 4) and ratios[t]["v"].shape == (5,)
    assert ratios[t]["m"].shape == ()
    joined = dict(per_element({k: history[t][k] for k in ("w", "v")}),
                  m=history[t]["m"])
    joined_ratios = dict(per_element({k: ratios[t][k] for k in ("w", "v")}),
                         m=ratios[t]["m"])
    assert_matches([joined], [joined_ratios], [ref_history[t]], [ref_ratios[t]],
                   split, rtol)
  # The elements' ratios differ: one ratio for the leaf would not match.
  w_ratios = [ref_ratios[0][k] for k in per_element({"w": params["w"]})]
  assert max(w_ratios) > 2 * min(w_ratios)


@pytest.fixture
def x64():
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", False)


def test_trust_clip_keeps_the_ratio_dtype_under_x64(x64):
  """With float64 enabled, a schedule's gamma_t is float64; the clipped ratio
  of float32 and bfloat16 params stays float32 (the state's dtype at init)."""
  del x64
  params = {"w": jnp.ones((3, 2), jnp.float32), "b": jnp.ones(2, jnp.bfloat16)}
  schedule = lars_optax.warmup_polynomial_decay_schedule(0.5, 2, 10,
                                                         init_value=0.1)
  tx = lars_optax.lars(learning_rate=schedule, trust_clip=True,
                       trust_coefficient=0.5, weight_decay=1e-4)
  state = tx.init(params)
  updates, new_state = jax.jit(tx.update)(params, state, params)
  for k in params:
    assert lars_optax.trust_ratios(new_state)[k].dtype == jnp.float32, k
    assert updates[k].dtype == params[k].dtype, k
  assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(
      lambda x: x.dtype, state)


# --- the schedule at the ends of its warm-up ---------------------------------


def test_schedule_with_one_warmup_step_starts_at_its_initial_value():
  schedule = lars_optax.warmup_polynomial_decay_schedule(
      1.0, 1, 5, init_value=0.25, end_value=0.0)
  reference_schedule = reference.warmup_poly(1.0, 1, 5, end=0.0, init=0.25)
  for t in range(7):
    assert float(schedule(t)) == pytest.approx(reference_schedule(t), rel=1e-6)
  assert float(schedule(0)) == 0.25


@pytest.mark.parametrize("init, peak, end, warmup", [
    (0.1, 0.7, 1e-4, 5), (0.05, 2.0, 0.01, 3)])
def test_schedule_is_exactly_the_peak_at_the_end_of_warmup(init, peak, end,
                                                          warmup):
  """At t = warmup_steps the decay (1 - 0)^p gives the peak exactly; the
  warm-up's init + (peak - init) * t / t_w would round away from it."""
  schedule = lars_optax.warmup_polynomial_decay_schedule(
      peak, warmup, warmup + 10, init_value=init, end_value=end)
  assert float(schedule(warmup)) == float(np.float32(peak))
