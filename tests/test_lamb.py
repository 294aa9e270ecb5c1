"""lamb against optax.lamb, timm's Lamb, Algorithm 2 of the LAMB paper, and optax.

Also the peers' switches (ratio_bounds, weight_norm_bounds,
zero_gradient_trust_ratio) for lars and lamb alike, against the NumPy
references in tests/reference.py.
"""

import importlib
import importlib.util
import pathlib
import sys
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import lars_optax
from tests import reference

# Leaves whose norms differ by orders of magnitude, as in test_lars.py.
SHAPES = {"conv": (3, 3, 2, 4), "fc": (8, 5), "bias": (5,), "bn_scale": (4,)}
PARAM_SCALES = {"conv": 1e2, "fc": 1.0, "bias": 1e-2, "bn_scale": 1.0}
GRAD_SCALES = {"conv": 1e-3, "fc": 1.0, "bias": 1e2, "bn_scale": 1e-1}
NO_DECAY = {"conv": True, "fc": True, "bias": False, "bn_scale": False}


def make_params(seed=0):
  rng = np.random.default_rng(seed)
  return {k: (rng.standard_normal(s) * PARAM_SCALES[k]).astype(np.float32)
          for k, s in SHAPES.items()}


def grads_fn(step, params):
  del params
  rng = np.random.default_rng(1000 + step)
  return {k: (rng.standard_normal(s) * GRAD_SCALES[k]).astype(np.float32)
          for k, s in SHAPES.items()}


def with_frozen_layer(grads_fn_):
  """Adds a layer ``frozen`` whose gradient is always zero."""
  def fn(step, params):
    return dict(grads_fn_(step, params), frozen=np.zeros((3, 2), np.float32))
  return fn


def run(tx, params, num_steps, grads=grads_fn):
  state = tx.init(params)
  update = jax.jit(tx.update)
  history, ratios = [], []
  for t in range(num_steps):
    g = {k: jnp.asarray(v) for k, v in grads(t, params).items()}
    updates, state = update(g, state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
    ratios.append(lars_optax.trust_ratios(state))
  return history, ratios, state


# optax.scale_by_adam's float32 arithmetic (1 - 0.999 is 1.3e-5 off in
# float32, e.g. in the bias correction 1 - b2**t) scales Adam's direction by up
# to ~1e-5. lambda = ||w|| / ||u|| undoes most of that in an adapted step, but
# not in the ratio itself, nor where the step is not adapted or is bounded.
ADAM_RTOL = 2e-5


def assert_params_close(actual, expected, start):
  """Each leaf to float32 precision: 1e-7 of its largest value, plus
  ``ADAM_RTOL`` of the distance it has moved from ``start``."""
  for k in expected:
    expected_k = np.asarray(expected[k], np.float64)
    moved = np.max(np.abs(expected_k - np.asarray(start[k], np.float64)))
    atol = 1e-7 * np.max(np.abs(expected_k)) + ADAM_RTOL * moved
    np.testing.assert_allclose(np.asarray(actual[k], np.float64), expected_k,
                               rtol=1e-6, atol=atol, err_msg=k)


def assert_ratios_close(actual, expected, rtol=ADAM_RTOL):
  for k in expected:
    np.testing.assert_allclose(np.asarray(actual[k], np.float64), expected[k],
                               rtol=rtol, err_msg=k)


# --- the peers and the paper ------------------------------------------------


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("mask", [None, NO_DECAY])
def test_equals_optax_lamb_step_for_step(weight_decay, mask):
  params = dict(make_params(), zero_bias=np.zeros((3,), np.float32))  # lambda = 1
  mask = mask and dict(mask, zero_bias=False)
  schedule = optax.linear_schedule(1e-2, 1e-3, 8)
  kw = dict(b1=0.8, b2=0.99, eps=1e-6, weight_decay=weight_decay)
  ours = lars_optax.lamb(schedule, weight_decay_mask=mask, **kw)
  theirs = optax.lamb(schedule, mask=mask, **kw)
  p1 = p2 = jax.tree.map(jnp.asarray, params)
  s1, s2 = ours.init(p1), theirs.init(p2)
  for t in range(8):
    g = dict(grads_fn(t, None), zero_bias=np.full((3,), 0.1 * t, np.float32))
    u1, s1 = ours.update(g, s1, p1)
    u2, s2 = theirs.update(g, s2, p2)
    p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    chex.assert_trees_all_close(p1, p2, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(u1, u2, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_matches_algorithm_2(weight_decay):
  params = make_params()
  schedule = lars_optax.warmup_polynomial_decay_schedule(
      1e-2, 2, 8, init_value=0.0, end_value=1e-4)
  kw = dict(b1=0.9, b2=0.999, eps=1e-6, weight_decay=weight_decay)
  history, ratios, _ = run(lars_optax.lamb(schedule, **kw), params, 6)
  ref_history, ref_ratios = reference.lamb_steps(
      params, grads_fn, reference.warmup_poly(1e-2, 2, 8, end=1e-4), 6, **kw)
  for t in range(6):
    assert_params_close(history[t], ref_history[t], params)
    assert_ratios_close(ratios[t], ref_ratios[t])


def test_matches_algorithm_2_with_masks_and_eps_root():
  params = make_params()
  trust_mask = {"conv": True, "fc": False, "bias": True, "bn_scale": False}
  kw = dict(b1=0.5, b2=0.9, eps=1e-3, weight_decay=0.1,
            weight_decay_mask=NO_DECAY, trust_ratio_mask=trust_mask)
  history, ratios, _ = run(lars_optax.lamb(0.02, **kw), params, 4)
  ref_history, ref_ratios = reference.lamb_steps(params, grads_fn, 0.02, 4, **kw)
  for t in range(4):
    assert_params_close(history[t], ref_history[t], params)
    assert_ratios_close(ratios[t], ref_ratios[t])
  assert float(ratios[-1]["fc"]) == 1.0 and float(ratios[-1]["bn_scale"]) == 1.0
  # eps_root moves the step (it sits inside the square root).
  shifted, _, _ = run(lars_optax.lamb(0.02, eps_root=1e-2, **kw), params, 1)
  assert not np.allclose(shifted[0]["conv"], history[0]["conv"])


def timm_options(weight_decay=0.01, max_grad_norm=1.0, trust_clip=False,
                 always_adapt=False, no_weight_decay=()):
  """The lamb() chain that reproduces timm's Lamb with these options."""
  decayed = {k: k not in no_weight_decay for k in SHAPES}
  adapted = None if always_adapt else {
      k: weight_decay != 0 and decayed[k] for k in SHAPES}
  return optax.chain(
      optax.clip_by_global_norm(max_grad_norm),  # before the moments
      lars_optax.lamb(1e-2, b1=0.9, b2=0.999, eps=1e-6,
                      weight_decay=weight_decay, weight_decay_mask=decayed,
                      trust_ratio_mask=adapted,
                      ratio_bounds=(0.0, 1.0) if trust_clip else None))


TIMM_CONFIGS = {
    # timm's defaults, every leaf in one param group.
    "defaults": dict(),
    # timm's usual param groups: biases and norms get no decay, hence (with
    # always_adapt=False) no trust ratio either.
    "groups": dict(no_weight_decay=("bias", "bn_scale")),
    "groups_trust_clip": dict(no_weight_decay=("bias", "bn_scale"),
                              trust_clip=True),
    "groups_always_adapt": dict(no_weight_decay=("bias", "bn_scale"),
                                always_adapt=True),
    "no_weight_decay": dict(weight_decay=0.0),
}


@pytest.mark.parametrize("config", TIMM_CONFIGS)
def test_equals_timm_lamb_transcription(config):
  kw = TIMM_CONFIGS[config]
  params = make_params()
  global_norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2)
                            for g in grads_fn(0, None).values()))
  assert global_norm > 10  # timm's clip at 1.0 is active
  history, ratios, _ = run(timm_options(**kw), params, 6)
  timm = reference.timm_lamb_steps(params, grads_fn, 1e-2, 6, **kw)
  for t in range(6):
    assert_params_close(history[t], timm[t], params)
  if kw.get("trust_clip"):
    assert max(float(r) for r in ratios[-1].values()) <= 1.0
  if config == "groups":
    assert float(ratios[-1]["bias"]) == 1.0 and float(ratios[-1]["conv"]) != 1.0


def load_timm_lamb():
  """timm's own Lamb class, or a skip where torch or timm is not installed.

  timm's package imports torchvision at start-up; its optimizer modules need
  only torch, so they are loaded from timm's folder without that start-up.
  """
  torch = pytest.importorskip("torch")
  spec = importlib.util.find_spec("timm")
  if spec is None or not spec.submodule_search_locations:
    pytest.skip("timm is not installed")
  folder = pathlib.Path(next(iter(spec.submodule_search_locations))) / "optim"
  name = "_timm_optim_for_tests"
  if name not in sys.modules:
    package = types.ModuleType(name)
    package.__path__ = [str(folder)]
    sys.modules[name] = package
  return torch, importlib.import_module(f"{name}.lamb").Lamb


@pytest.mark.parametrize("config", TIMM_CONFIGS)
def test_equals_timm_lamb_itself(config):
  torch, timm_lamb = load_timm_lamb()
  kw = TIMM_CONFIGS[config]
  no_weight_decay = kw.get("no_weight_decay", ())
  params = make_params()
  tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
             for k, v in params.items()}
  groups = [{"params": [tensors[k] for k in SHAPES if k not in no_weight_decay]}]
  if no_weight_decay:
    groups.append({"params": [tensors[k] for k in no_weight_decay],
                   "weight_decay": 0.0})
  options = {k: v for k, v in kw.items() if k != "no_weight_decay"}
  optimizer = timm_lamb(groups, lr=1e-2, **options)
  history, _, _ = run(timm_options(**kw), params, 6)
  transcription = reference.timm_lamb_steps(params, grads_fn, 1e-2, 6, **kw)
  for t in range(6):
    for k, g in grads_fn(t, None).items():
      tensors[k].grad = torch.tensor(g, dtype=torch.float64)
    optimizer.step()
    timm = {k: v.detach().numpy() for k, v in tensors.items()}
    for k in timm:
      np.testing.assert_allclose(timm[k], transcription[t][k], rtol=1e-12,
                                 atol=1e-14, err_msg=k)
    assert_params_close(history[t], timm, params)


# --- the peers' switches, for lars and lamb ---------------------------------

RATIO_BOUNDS = (2e-3, 0.5)


def test_lars_ratio_bounds_match_reference():
  params = make_params()
  kw = dict(weight_decay=1e-3, momentum=0.9, trust_coefficient=0.01,
            ratio_bounds=RATIO_BOUNDS)
  history, ratios, _ = run(lars_optax.lars(0.5, **kw), params, 4)
  ref_history, ref_ratios = reference.lars_steps(params, grads_fn, 0.5, 4, **kw)
  for t in range(4):
    assert_params_close(history[t], ref_history[t], params)
    assert_ratios_close(ratios[t], ref_ratios[t])
  final = sorted(float(r) for r in ratios[-1].values())
  assert final[0] == pytest.approx(RATIO_BOUNDS[0])  # both bounds bind
  assert final[-1] == pytest.approx(RATIO_BOUNDS[1])
  unbounded, _, _ = run(lars_optax.lars(0.5, **dict(kw, ratio_bounds=None)),
                        params, 1)
  assert not np.allclose(unbounded[0]["conv"], history[0]["conv"])


def test_lamb_ratio_bounds_match_reference():
  params = make_params()
  kw = dict(weight_decay=1e-2, ratio_bounds=(0.5, 20.0))
  history, ratios, _ = run(lars_optax.lamb(1e-2, **kw), params, 4)
  ref_history, ref_ratios = reference.lamb_steps(params, grads_fn, 1e-2, 4, **kw)
  for t in range(4):
    assert_params_close(history[t], ref_history[t], params)
    assert_ratios_close(ratios[t], ref_ratios[t])
  final = sorted(float(r) for r in ratios[-1].values())
  assert final[0] == pytest.approx(0.5) and final[-1] == pytest.approx(20.0)


@pytest.mark.parametrize("optimizer", ["lars", "lamb"])
def test_weight_norm_bounds_match_reference(optimizer):
  """The LAMB paper's phi: ||w|| clipped in the numerator; a zero-initialised
  layer gets a ratio from the lower bound."""
  params = dict(make_params(), zero=np.zeros((4,), np.float32))
  grads = lambda t, p: dict(grads_fn(t, p), zero=np.full((4,), 0.3, np.float32))  # noqa: E731
  bounds = (0.5, 20.0)
  if optimizer == "lars":
    kw = dict(weight_decay=1e-3, momentum=0.9, trust_coefficient=0.01,
              weight_norm_bounds=bounds)
    history, ratios, _ = run(lars_optax.lars(0.5, **kw), params, 4, grads)
    ref_history, ref_ratios = reference.lars_steps(params, grads, 0.5, 4, **kw)
  else:
    kw = dict(weight_decay=1e-2, weight_norm_bounds=bounds)
    history, ratios, _ = run(lars_optax.lamb(1e-2, **kw), params, 4, grads)
    ref_history, ref_ratios = reference.lamb_steps(params, grads, 1e-2, 4, **kw)
  for t in range(4):
    assert_params_close(history[t], ref_history[t], params)
    assert_ratios_close(ratios[t], ref_ratios[t])
  assert float(ratios[0]["zero"]) != 1.0  # phi(0) = 0.5


@pytest.mark.parametrize("formula", ["paper", "combined"])
@pytest.mark.parametrize("zero_gradient", ["formula", "one"])
def test_lars_zero_gradient_trust_ratio(formula, zero_gradient):
  params = dict(make_params(), frozen=np.ones((3, 2), np.float32))
  grads = with_frozen_layer(grads_fn)
  kw = dict(weight_decay=1e-2, momentum=0.9, trust_coefficient=0.02,
            formula=formula)
  history, ratios, _ = run(
      lars_optax.lars(0.5, zero_gradient_trust_ratio=zero_gradient, **kw),
      params, 3, grads)
  ref_history, ref_ratios = reference.lars_steps(
      params, grads, 0.5, 3, zero_gradient=zero_gradient, **kw)
  for t in range(3):
    assert_params_close(history[t], ref_history[t], params)
    assert_ratios_close(ratios[t], ref_ratios[t])
  # The formula gives eta / beta (= 2 here); timm and MLPerf use 1.
  expected = 2.0 if zero_gradient == "formula" else 1.0
  assert float(ratios[0]["frozen"]) == pytest.approx(expected, rel=1e-6)
  assert float(ratios[0]["conv"]) != 1.0  # other layers are adapted as before


@pytest.mark.parametrize("zero_gradient", ["formula", "one"])
def test_lamb_zero_gradient_trust_ratio(zero_gradient):
  params = dict(make_params(), frozen=np.ones((3, 2), np.float32))
  grads = with_frozen_layer(grads_fn)
  kw = dict(weight_decay=1e-2)
  history, ratios, _ = run(
      lars_optax.lamb(1e-2, zero_gradient_trust_ratio=zero_gradient, **kw),
      params, 3, grads)
  ref_history, ref_ratios = reference.lamb_steps(
      params, grads, 1e-2, 3, zero_gradient=zero_gradient, **kw)
  for t in range(3):
    assert_params_close(history[t], ref_history[t], params)
    assert_ratios_close(ratios[t], ref_ratios[t])
  # The formula gives 1 / beta, so w <- (1 - lr) w; with "one", (1 - lr beta) w.
  expected = 100.0 if zero_gradient == "formula" else 1.0
  assert float(ratios[0]["frozen"]) == pytest.approx(expected, rel=1e-6)
  shrink = 1 - 1e-2 * expected * 1e-2
  np.testing.assert_allclose(history[0]["frozen"], shrink, rtol=1e-6)


def test_zero_gradient_switch_needs_weight_decay_to_matter():
  params = dict(make_params(), frozen=np.ones((3, 2), np.float32))
  grads = with_frozen_layer(grads_fn)
  for tx in (lars_optax.lars, lars_optax.lamb):
    a, _, _ = run(tx(0.1), params, 2, grads)
    b, _, _ = run(tx(0.1, zero_gradient_trust_ratio="one"), params, 2, grads)
    chex.assert_trees_all_equal(a, b)


@pytest.mark.parametrize("optimizer", ["lars", "lamb"])
@pytest.mark.parametrize("kwargs, name", [
    (dict(ratio_bounds=(1.0, 0.5)), "ratio_bounds"),
    (dict(ratio_bounds=(-1.0, 1.0)), "ratio_bounds"),
    (dict(ratio_bounds=(0.0, float("nan"))), "ratio_bounds"),
    (dict(ratio_bounds=(0.0, 1.0, 2.0)), "ratio_bounds"),
    (dict(ratio_bounds=1.0), "ratio_bounds"),
    (dict(ratio_bounds="ab"), "ratio_bounds"),
    (dict(weight_norm_bounds=(2.0, 1.0)), "weight_norm_bounds"),
    (dict(weight_norm_bounds=(-0.1, 1.0)), "weight_norm_bounds"),
    (dict(weight_norm_bounds=(None, 1.0)), "weight_norm_bounds"),
    (dict(zero_gradient_trust_ratio="1"), "zero_gradient_trust_ratio"),
    (dict(zero_gradient_trust_ratio=1.0), "zero_gradient_trust_ratio"),
])
def test_bad_switches_raise_at_build_time(optimizer, kwargs, name):
  with pytest.raises(ValueError, match=name):
    getattr(lars_optax, optimizer)(0.1, **kwargs)


def test_unbounded_side_and_equal_bounds():
  params = make_params()
  fixed, ratios, _ = run(lars_optax.lamb(1e-2, ratio_bounds=(0.3, 0.3)), params, 1)
  assert all(float(r) == pytest.approx(0.3) for r in ratios[0].values())
  _, ratios, _ = run(lars_optax.lamb(1e-2, ratio_bounds=(2.0, float("inf"))),
                     params, 1)
  assert min(float(r) for r in ratios[0].values()) == pytest.approx(2.0)


@pytest.mark.parametrize("kwargs, name", [
    (dict(learning_rate=-1e-3), "learning_rate"),
    (dict(learning_rate=lambda t: -1.0 + 0 * t), "learning_rate"),
    (dict(b1=1.0), "b1"),
    (dict(b1=-0.1), "b1"),
    (dict(b2=1.0), "b2"),
    (dict(eps=-1e-6), "eps"),
    (dict(eps_root=-1.0), "eps_root"),
    (dict(weight_decay=-1e-2), "weight_decay"),
])
def test_bad_lamb_hyperparameters_raise_at_build_time(kwargs, name):
  kwargs = dict({"learning_rate": 1e-3}, **kwargs)
  with pytest.raises(ValueError, match=name):
    lars_optax.lamb(kwargs.pop("learning_rate"), **kwargs)


def test_no_branch_in_the_step():
  """Straight-line code with every switch on: no cond or while."""
  params = {"w": jnp.ones((4, 4)), "b": jnp.zeros(4)}
  tx = lars_optax.lamb(0.1, weight_decay=1e-2, ratio_bounds=(0.1, 10.0),
                       weight_norm_bounds=(0.01, 100.0),
                       zero_gradient_trust_ratio="one")
  jaxpr = str(jax.make_jaxpr(tx.update)(params, tx.init(params), params))
  assert " cond[" not in jaxpr and " while[" not in jaxpr


def test_overflowing_norm_gives_a_zero_step_even_with_bounds():
  """bfloat16 gradients near 1e30: Adam's direction is finite, but the
  weights' squares overflow float32: that layer does not move."""
  params = {"w": jnp.full((4,), 1e30, jnp.bfloat16), "v": jnp.ones(3, jnp.bfloat16)}
  grads = {"w": jnp.ones((4,), jnp.bfloat16), "v": jnp.ones(3, jnp.bfloat16)}
  tx = lars_optax.lamb(0.1, weight_decay=1e-2, ratio_bounds=(0.1, 10.0))
  updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
  assert float(lars_optax.trust_ratios(state)["w"]) == 0.0
  np.testing.assert_array_equal(np.asarray(updates["w"], np.float32), 0.0)
  assert np.all(np.isfinite(np.asarray(updates["v"], np.float32)))


# --- interoperability battery -----------------------------------------------


def test_jit_does_not_recompile():
  traces = []
  tx = lars_optax.lamb(lars_optax.warmup_polynomial_decay_schedule(1e-2, 2, 10),
                       weight_decay=1e-2, ratio_bounds=(0.0, 10.0))

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
  tx = optax.inject_hyperparams(lars_optax.lamb, static_args=("weight_decay_mask",))(
      learning_rate=1e-2, weight_decay=1e-2, b1=0.9, ratio_bounds=(0.0, 5.0),
      weight_decay_mask=lars_optax.exclude_bias_and_norm)
  state = tx.init(params)
  state.hyperparams["learning_rate"] = jnp.asarray(5e-3)
  g = grads_fn(0, None)
  updates, state = jax.jit(tx.update)(g, state, params)
  plain = lars_optax.lamb(5e-3, weight_decay=1e-2, ratio_bounds=(0.0, 5.0),
                          weight_decay_mask=lars_optax.exclude_bias_and_norm)
  expected, _ = plain.update(g, plain.init(params), params)
  # inject_hyperparams makes b1, b2 float32 arrays: 1 - b2 is then computed in
  # float32 (ADAM_RTOL above), in the chain of floats in float64.
  assert_params_close(optax.apply_updates(params, updates),
                      optax.apply_updates(params, expected), params)
  assert set(lars_optax.trust_ratios(state)) == set(params)


def test_multi_steps_averages_gradients():
  params = jax.tree.map(jnp.asarray, make_params())
  tx = optax.MultiSteps(lars_optax.lamb(1e-2, weight_decay=1e-2), every_k_schedule=2)
  state = tx.init(params)
  g0, g1 = grads_fn(0, None), grads_fn(1, None)
  u0, state = tx.update(g0, state, params)
  chex.assert_trees_all_close(u0, jax.tree.map(jnp.zeros_like, params))
  u1, state = tx.update(g1, state, params)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g0, g1)
  plain = lars_optax.lamb(1e-2, weight_decay=1e-2)
  expected, plain_state = plain.update(mean, plain.init(params), params)
  chex.assert_trees_all_close(u1, expected, rtol=1e-5, atol=1e-10)
  chex.assert_trees_all_close(lars_optax.trust_ratios(state),
                              lars_optax.trust_ratios(plain_state), rtol=1e-5)


@pytest.mark.parametrize("wrap", [
    lambda tx: optax.chain(optax.clip_by_global_norm(1.0), tx),
    lambda tx: optax.apply_if_finite(tx, 3),
    lambda tx: optax.MultiSteps(tx, every_k_schedule=1),
    lambda tx: optax.masked(tx, {k: True for k in SHAPES}),
    lambda tx: optax.multi_transform({"a": tx, "b": optax.sgd(0.1)},
                                     {k: "a" for k in SHAPES}),
], ids=["chain", "apply_if_finite", "MultiSteps", "masked", "multi_transform"])
def test_trust_ratios_found_in_wrappers(wrap):
  params = jax.tree.map(jnp.asarray, make_params())
  g = jax.tree.map(lambda x: x * 1e-3, grads_fn(0, None))  # under the clip
  plain = lars_optax.lamb(1e-2, weight_decay=1e-2)
  _, plain_state = plain.update(g, plain.init(params), params)
  tx = wrap(lars_optax.lamb(1e-2, weight_decay=1e-2))
  _, state = tx.update(g, tx.init(params), params)
  chex.assert_trees_all_close(lars_optax.trust_ratios(state),
                              lars_optax.trust_ratios(plain_state), rtol=1e-6)
  by_name = lars_optax.trust_ratios_by_name(state)
  assert set(by_name) == set(SHAPES)


def test_found_under_inject_hyperparams_and_masked_leaves():
  params = jax.tree.map(jnp.asarray, make_params())
  tx = optax.inject_hyperparams(lars_optax.lamb)(learning_rate=1e-2)
  _, state = tx.update(grads_fn(0, None), tx.init(params), params)
  assert float(lars_optax.trust_ratios(state)["conv"]) != 1.0
  tx = optax.masked(lars_optax.lamb(1e-2), NO_DECAY)
  _, state = tx.update(grads_fn(0, None), tx.init(params), params)
  assert len(jax.tree.leaves(lars_optax.trust_ratios(state))) == 2


def test_constant_schedule_equals_float():
  params = make_params()
  h1, r1, _ = run(lars_optax.lamb(3e-3, weight_decay=1e-2), params, 3)
  h2, r2, _ = run(lars_optax.lamb(optax.constant_schedule(3e-3), weight_decay=1e-2),
                  params, 3)
  chex.assert_trees_all_close(h1, h2, rtol=1e-7)
  chex.assert_trees_all_close(r1, r2, rtol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtype_preservation(dtype):
  params = jax.tree.map(lambda x: jnp.asarray(x, dtype), make_params())
  grads = jax.tree.map(lambda x: jnp.asarray(x, dtype), grads_fn(0, None))
  tx = lars_optax.lamb(1e-2, weight_decay=1e-2)
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(grads, state, params)
  assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
  assert all(r.dtype == jnp.float32
             for r in jax.tree.leaves(lars_optax.trust_ratios(state)))
  new = optax.apply_updates(params, updates)
  assert all(p.dtype == dtype for p in jax.tree.leaves(new))


def test_bfloat16_norms_are_accumulated_in_float32():
  """A bfloat16 layer's ratio is ||w|| / ||r + beta w|| of its values to
  float32 precision (summing 4096 squares in bfloat16 is ~1e-2 off)."""
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.standard_normal(4096) * 3.0, jnp.bfloat16)
  g = jnp.asarray(rng.standard_normal(4096), jnp.bfloat16)
  tx = lars_optax.lamb(1e-2, weight_decay=1e-2)
  _, state = tx.update({"w": g}, tx.init({"w": w}), {"w": w})
  adam = optax.scale_by_adam(eps=1e-6)
  direction, _ = adam.update({"w": g}, adam.init({"w": w}))
  assert direction["w"].dtype == jnp.bfloat16
  w64 = np.asarray(w, np.float64)
  u = np.asarray(direction["w"], np.float64) + 1e-2 * w64
  expected = np.linalg.norm(w64) / np.linalg.norm(u)
  assert float(lars_optax.trust_ratios(state)["w"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("dtype, mu_dtype", [
    (jnp.float32, None), (jnp.bfloat16, None), (jnp.bfloat16, jnp.float32),
])
def test_state_dtypes_and_shapes_stable_across_steps(dtype, mu_dtype):
  params = jax.tree.map(lambda x: jnp.asarray(x, dtype), make_params())
  tx = lars_optax.lamb(lars_optax.warmup_polynomial_decay_schedule(1e-2, 2, 10),
                       weight_decay=1e-2, mu_dtype=mu_dtype,
                       layer_axes={"conv": 1, "fc": 0, "bias": 0, "bn_scale": 0})
  state = tx.init(params)
  update = jax.jit(tx.update)
  for t in range(2):
    grads = jax.tree.map(lambda x: jnp.asarray(x, dtype), grads_fn(t, None))
    _, new_state = update(grads, state, params)
    chex.assert_trees_all_equal_dtypes(state, new_state)
    chex.assert_trees_all_equal_shapes(state, new_state)
    state = new_state


def test_mu_dtype():
  params = {"w": jnp.ones((4, 4), jnp.bfloat16)}
  tx = lars_optax.lamb(1e-2, mu_dtype=jnp.float32)
  state = tx.init(params)
  _, state = tx.update({"w": jnp.ones((4, 4), jnp.bfloat16)}, state, params)
  assert state[0].mu["w"].dtype == jnp.float32


def test_layer_axes_equal_separate_layers():
  rng = np.random.default_rng(0)
  scales = np.array([1e-2, 1.0, 1e2], np.float32)[:, None, None]
  w = jnp.asarray(rng.standard_normal((3, 4, 5)).astype(np.float32) * scales)
  g = jnp.asarray(rng.standard_normal((3, 4, 5)).astype(np.float32) / scales)
  kw = dict(weight_decay=1e-2, ratio_bounds=(0.0, 50.0))
  stacked = lars_optax.lamb(1e-2, layer_axes=1, **kw)
  updates, state = stacked.update({"w": g}, stacked.init({"w": w}), {"w": w})
  assert lars_optax.trust_ratios(state)["w"].shape == (3,)
  single = lars_optax.lamb(1e-2, **kw)
  for layer in range(3):
    u, s = single.update({"w": g[layer]}, single.init({"w": w[layer]}),
                         {"w": w[layer]})
    np.testing.assert_allclose(lars_optax.trust_ratios(state)["w"][layer],
                               lars_optax.trust_ratios(s)["w"], rtol=1e-6)
    np.testing.assert_allclose(updates["w"][layer], u["w"], rtol=1e-6)


def test_masks_by_name_patterns():
  params = {"encoder": {"dense": {"kernel": jnp.full((4, 3), 2.0),
                                  "bias": jnp.ones(3)},
                        "layer_norm": {"scale": jnp.ones(3)}},
            "head": {"kernel": jnp.full((3, 2), 0.5)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
  skip = lars_optax.mask_by_name(r"bias$", r"layer_norm/")
  tx = lars_optax.lamb(1e-2, weight_decay=0.1, weight_decay_mask=skip,
                       trust_ratio_mask=skip)
  updates, state = tx.update(grads, tx.init(params), params)
  by_name = lars_optax.trust_ratios_by_name(state)
  assert by_name["encoder/dense/bias"] == 1.0
  assert by_name["encoder/layer_norm/scale"] == 1.0
  assert float(by_name["encoder/dense/kernel"]) != 1.0
  # Skipped leaves take Adam's first step: -lr * sign(g), no decay.
  np.testing.assert_allclose(updates["encoder"]["dense"]["bias"], -1e-2, rtol=1e-4)
  with pytest.raises(ValueError, match="match no parameter"):
    bad = lars_optax.lamb(1e-2, trust_ratio_mask=lars_optax.mask_by_name(r"bais$"))
    bad.update(grads, bad.init(params), params)


@pytest.fixture
def x64():
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", False)


def test_float64_matches_algorithm_2_to_float64_precision(x64):
  del x64
  params = {k: np.asarray(v, np.float64) for k, v in make_params().items()}
  kw = dict(weight_decay=1e-2, ratio_bounds=(0.1, 30.0))
  tx = lars_optax.lamb(1e-2, **kw)
  state = tx.init(params)
  update = jax.jit(tx.update)
  ref_history, ref_ratios = reference.lamb_steps(params, grads_fn, 1e-2, 5, **kw)
  for t in range(5):
    grads = {k: np.asarray(v, np.float64) for k, v in grads_fn(t, None).items()}
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    assert all(p.dtype == jnp.float64 for p in jax.tree.leaves(params))
    for k in params:
      np.testing.assert_allclose(params[k], ref_history[t][k], rtol=1e-12,
                                 atol=1e-14, err_msg=k)
    assert_ratios_close(lars_optax.trust_ratios(state), ref_ratios[t], rtol=1e-11)


# --- sharded params (8 fake CPU devices, set in conftest.py) ----------------

N = 8
needs_devices = pytest.mark.skipif(jax.device_count() < N,
                                   reason="needs 8 (fake) devices")
needs_shard_map = pytest.mark.skipif(
    not hasattr(jax, "shard_map") or not hasattr(jax.sharding, "AxisType"),
    reason="the test uses jax.shard_map (jax >= 0.6.1)")
SHARDED_SHAPES = {"kernel": (16, 6), "conv": (8, 3, 3), "bias": (24,)}


def _sharded_tree(seed, scale):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.standard_normal(s).astype(np.float32) * scale)
          for k, s in SHARDED_SHAPES.items()}


SHARDED_PARAMS = _sharded_tree(0, 3.0)
SHARDED_GRADS = [_sharded_tree(10 + t, 1.0) for t in range(3)]
SHARDED_KW = dict(weight_decay=1e-2, ratio_bounds=(0.0, 10.0))


def _run_sharded(tx, params, grads_seq):
  state = tx.init(params)
  for grads in grads_seq:
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, lars_optax.trust_ratios(state), updates


def _unsharded():
  tx = lars_optax.lamb(1e-2, **SHARDED_KW)
  return jax.jit(lambda p, g: _run_sharded(tx, p, g))(SHARDED_PARAMS, SHARDED_GRADS)


def _shards(tree):
  return jax.tree.map(lambda x: x.reshape((N, x.shape[0] // N) + x.shape[1:]), tree)


def _unshard(tree):
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


@needs_devices
def test_pmap_with_axis_name_matches_one_device():
  tx = lars_optax.lamb(1e-2, axis_name="x", **SHARDED_KW)
  params, ratios, updates = jax.pmap(
      lambda p, g: _run_sharded(tx, p, g), axis_name="x")(
          _shards(SHARDED_PARAMS), _shards(SHARDED_GRADS))
  want_params, want_ratios, want_updates = _unsharded()
  for k in SHARDED_SHAPES:
    for d in range(N):
      np.testing.assert_allclose(ratios[k][d], want_ratios[k], rtol=2e-6)
  for got, want in ((_unshard(params), want_params),
                    (_unshard(updates), want_updates)):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-8)


@needs_devices
@needs_shard_map
def test_shard_map_with_axis_name_matches_one_device():
  mesh = jax.make_mesh((N,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
  tx = lars_optax.lamb(1e-2, axis_name="x", **SHARDED_KW)
  f = jax.shard_map(lambda p, g: _run_sharded(tx, p, g), mesh=mesh,
                    in_specs=(P("x"), P("x")), out_specs=(P("x"), P(), P("x")))
  sharding = NamedSharding(mesh, P("x"))
  got = jax.jit(f)(jax.device_put(SHARDED_PARAMS, sharding),
                   jax.device_put(SHARDED_GRADS, sharding))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(_unsharded())):
    np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-8)


# --- convergence ------------------------------------------------------------


def _minimise(loss, params, tx, steps):
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, value

  for _ in range(steps):
    params, state, _ = step(params, state)
  return params


def test_converges_on_quadratic():
  target = {"a": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([[0.5, 4.0]])}

  def loss(p):
    return sum(jnp.sum((p[k] - target[k]) ** 2) for k in p)

  params = {"a": jnp.array([5.0, 5.0, 5.0]), "b": jnp.array([[-3.0, -1.0]])}
  tx = lars_optax.lamb(optax.cosine_decay_schedule(0.1, 300))
  final = _minimise(loss, params, tx, 300)
  assert float(loss(final)) < 1e-3 * float(loss(params))


def readme_problem():
  """The README's toy regression, and a two-layer MLP in plain jnp."""
  x = jax.random.normal(jax.random.key(0), (256, 8))
  y = jnp.sin(x).sum(axis=1, keepdims=True)
  k1, k2 = jax.random.split(jax.random.key(1))
  params = {"hidden": {"kernel": jax.random.normal(k1, (8, 32)) / jnp.sqrt(8.0),
                       "bias": jnp.zeros(32)},
            "out": {"kernel": jax.random.normal(k2, (32, 1)) / jnp.sqrt(32.0),
                    "bias": jnp.zeros(1)}}

  def loss(p):
    h = jax.nn.relu(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
    return jnp.mean((h @ p["out"]["kernel"] + p["out"]["bias"] - y) ** 2)

  return loss, params


@pytest.mark.parametrize("masks", [False, True])
def test_trains_the_readme_problem_as_far_as_optax_lamb(masks):
  loss, params = readme_problem()
  kw = dict(weight_decay=1e-4)
  mask = lars_optax.exclude_bias_and_norm if masks else None
  ours = _minimise(loss, params, lars_optax.lamb(
      1e-2, weight_decay_mask=mask, trust_ratio_mask=mask, **kw), 300)
  theirs = _minimise(loss, params, optax.lamb(1e-2, mask=mask, **kw), 300)
  start, ours, theirs = float(loss(params)), float(loss(ours)), float(loss(theirs))
  assert ours < 0.03 * start, (start, ours, theirs)
  # Without masks the updates are equal (tested step for step above), but
  # float32 differences of other jax/optax versions grow in the last 100
  # steps, to a few per cent of the loss: "as far", not "equal".
  assert ours < 1.2 * theirs, (start, ours, theirs)
