"""lars and lamb as drop-ins for optax.lars and optax.lamb, and under
optax.inject_hyperparams with and without static_args."""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lars_optax
from tests import reference

# Leaves whose norms differ by orders of magnitude, as in test_lars.py.
SHAPES = {"conv": (3, 3, 2, 4), "fc": (8, 5), "bias": (5,), "bn_scale": (4,)}
PARAM_SCALES = {"conv": 1e2, "fc": 1.0, "bias": 1e-2, "bn_scale": 1.0}
GRAD_SCALES = {"conv": 1e-3, "fc": 1.0, "bias": 1e2, "bn_scale": 1e-1}
NO_DECAY = {"conv": True, "fc": True, "bias": False, "bn_scale": False}
ADAPT = {"conv": True, "fc": False, "bias": True, "bn_scale": False}
NUM_STEPS = 4


def make_params():
  rng = np.random.default_rng(0)
  return {k: jnp.asarray(rng.standard_normal(s) * PARAM_SCALES[k], jnp.float32)
          for k, s in SHAPES.items()}


def grads_fn(step, params=None):
  del params
  rng = np.random.default_rng(1000 + step)
  return {k: (rng.standard_normal(s) * GRAD_SCALES[k]).astype(np.float32)
          for k, s in SHAPES.items()}


def weight_decay_schedule(count):
  """beta_t = 1e-2 * 0.5**t: a schedule of the update count t."""
  return 1e-2 * 0.5 ** count


def run(tx, num_steps=NUM_STEPS, jit=True):
  """Params, updates and trust ratios after each of ``num_steps`` steps."""
  params = make_params()
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  out = []
  for t in range(num_steps):
    updates, state = update(grads_fn(t), state, params)
    params = optax.apply_updates(params, updates)
    out.append((params, updates, lars_optax.trust_ratios(state)))
  return out, state


def run_peer(tx, num_steps=NUM_STEPS):
  """As ``run``, for an optax optimizer (no trust ratios in its state)."""
  params = make_params()
  state = tx.init(params)
  out = []
  for t in range(num_steps):
    updates, state = jax.jit(tx.update)(grads_fn(t), state, params)
    params = optax.apply_updates(params, updates)
    out.append((params, updates))
  return out


def assert_leaves_close(actual, expected, rtol):
  """Each leaf within ``rtol`` of its largest value (Adam's float32 rounding
  is relative to the step, not to each element)."""
  for k in expected:
    expected_k = np.asarray(expected[k], np.float64)
    np.testing.assert_allclose(np.asarray(actual[k], np.float64), expected_k,
                               rtol=rtol, atol=rtol * np.max(np.abs(expected_k)),
                               err_msg=k)


def assert_same_steps(ours, theirs, rtol=1e-6, atol=1e-7):
  """Params and updates equal after every step, to float32 rounding."""
  for (p1, u1, *_), (p2, u2, *_) in zip(ours, theirs, strict=True):
    chex.assert_trees_all_close(p1, p2, rtol=rtol, atol=atol)
    chex.assert_trees_all_close(u1, u2, rtol=100 * rtol, atol=1e-9)


# --- the signatures of optax.lars and optax.lamb ------------------------------


@pytest.mark.parametrize("ours, theirs", [
    (lars_optax.lars, optax.lars), (lars_optax.lamb, optax.lamb)])
def test_signature_starts_with_optaxs_and_the_rest_is_keyword_only(ours, theirs):
  ours = list(inspect.signature(ours).parameters.values())
  theirs = list(inspect.signature(theirs).parameters.values())
  assert [p.name for p in ours[:len(theirs)]] == [p.name for p in theirs]
  for mine, peer in zip(ours, theirs):
    assert mine.kind == peer.kind, mine.name
    if "mask" not in mine.name:  # masks: None here, True/None there: all leaves
      assert mine.default == peer.default, mine.name
  assert ours[len(theirs):], "the options only lars_optax has"
  assert all(p.kind == p.KEYWORD_ONLY for p in ours[len(theirs):])


def mask_fn(params):
  return jax.tree.map(lambda x: x.ndim > 1, params)


# Calls written for optax.lars: positional, mixed, keyword, bool masks and a
# weight-decay schedule. formula="combined" is optax's denominator.
LARS_CALLS = [
    ((0.1,), {}),
    ((0.1, 1e-2), {}),
    ((0.1, 1e-2, NO_DECAY, 0.02, 1e-4, ADAPT, 0.8, True), {}),
    ((0.1, 1e-2, mask_fn), dict(trust_ratio_mask=mask_fn, nesterov=True)),
    ((optax.linear_schedule(0.3, 0.1, 3),),
     dict(weight_decay=1e-2, weight_decay_mask=False, trust_ratio_mask=True,
          momentum=0.5, eps=1e-3, trust_coefficient=0.01)),
    ((0.1, 1e-2, True, 0.001, 0.0, False), {}),
    ((0.1, weight_decay_schedule, NO_DECAY), dict(trust_coefficient=0.02)),
]


@pytest.mark.parametrize("args, kwargs", LARS_CALLS)
def test_lars_combined_equals_optax_lars_for_every_call_form(args, kwargs):
  ours, _ = run(lars_optax.lars(*args, formula="combined", **kwargs))
  assert_same_steps(ours, run_peer(optax.lars(*args, **kwargs)))


LAMB_CALLS = [
    ((1e-2,), {}),
    ((1e-2, 0.8, 0.99, 1e-6, 0.0, 1e-2, NO_DECAY), {}),
    ((1e-2,), dict(b1=0.8, weight_decay=1e-2, mask=mask_fn)),
    ((1e-2, 0.9, 0.999), dict(eps_root=1e-8, weight_decay=1e-2, mask=True)),
    ((optax.linear_schedule(1e-2, 1e-3, 3),),
     dict(weight_decay=weight_decay_schedule, mask=False)),
    ((1e-2, 0.9, 0.999, 1e-6, 0.0, weight_decay_schedule, mask_fn), {}),
]


@pytest.mark.parametrize("args, kwargs", LAMB_CALLS)
def test_lamb_equals_optax_lamb_for_every_call_form(args, kwargs):
  ours, _ = run(lars_optax.lamb(*args, **kwargs))
  assert_same_steps(ours, run_peer(optax.lamb(*args, **kwargs)))


def test_lamb_mask_is_the_weight_decay_mask_and_not_both():
  by_optax_name, _ = run(lars_optax.lamb(1e-2, weight_decay=0.1, mask=NO_DECAY))
  by_our_name, _ = run(lars_optax.lamb(1e-2, weight_decay=0.1,
                                       weight_decay_mask=NO_DECAY))
  everywhere, _ = run(lars_optax.lamb(1e-2, weight_decay=0.1))
  assert_same_steps(by_optax_name, by_our_name, rtol=0, atol=0)
  assert not np.allclose(by_optax_name[-1][0]["bias"], everywhere[-1][0]["bias"])
  with pytest.raises(ValueError, match="mask.*weight_decay_mask.*not both"):
    lars_optax.lamb(1e-2, mask=NO_DECAY, weight_decay_mask=NO_DECAY)


@pytest.mark.parametrize("formula", ["paper", "combined"])
def test_lars_weight_decay_schedule_matches_numpy(formula):
  kw = dict(momentum=0.9, trust_coefficient=0.01, nesterov=True,
            weight_decay_mask=NO_DECAY, trust_ratio_mask=ADAPT)
  ours, _ = run(lars_optax.lars(0.5, weight_decay_schedule, formula=formula,
                                **kw))
  expected, ratios = reference.lars_steps(
      make_params(), grads_fn, 0.5, NUM_STEPS, formula=formula,
      weight_decay=weight_decay_schedule, **kw)
  constant, _ = run(lars_optax.lars(0.5, 1e-2, formula=formula, **kw))
  for t in range(NUM_STEPS):
    chex.assert_trees_all_close(ours[t][0], expected[t], rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(ours[t][2], ratios[t], rtol=1e-5)
  assert not np.allclose(ours[-1][0]["fc"], constant[-1][0]["fc"])


def test_lamb_weight_decay_schedule_matches_numpy():
  kw = dict(b1=0.9, b2=0.99, eps=1e-6, weight_decay_mask=NO_DECAY)
  ours, _ = run(lars_optax.lamb(1e-2, weight_decay=weight_decay_schedule, **kw))
  expected, ratios = reference.lamb_steps(
      make_params(), grads_fn, 1e-2, NUM_STEPS,
      weight_decay=weight_decay_schedule, **kw)
  for t in range(NUM_STEPS):
    # optax.scale_by_adam's float32 arithmetic: 2e-5, as in test_lamb.py.
    assert_leaves_close(ours[t][0], expected[t], rtol=2e-5)
    chex.assert_trees_all_close(ours[t][2], ratios[t], rtol=2e-5)


@pytest.mark.parametrize("optimizer", [lars_optax.lars, lars_optax.lamb])
def test_weight_decay_schedule_is_checked_at_step_0(optimizer):
  with pytest.raises(ValueError, match=r"weight_decay.*non-negative \(at step 0\)"):
    optimizer(0.1, weight_decay=lambda count: count - 1.0)


# --- optax.inject_hyperparams -------------------------------------------------

# Each non-numeric argument, given under inject_hyperparams without
# static_args: it works exactly as without the wrapper ...
LARS_WORKS = [
    dict(weight_decay_mask=True), dict(weight_decay_mask=False),
    dict(trust_ratio_mask=False), dict(weight_decay_mask=NO_DECAY),
    dict(trust_ratio_mask=ADAPT), dict(nesterov=True),
    dict(formula="combined"), dict(trust_clip=True),
    dict(ratio_bounds=(1e-3, 5e-3)), dict(ratio_bounds=np.array([1e-3, 5e-3])),
    dict(weight_norm_bounds=(0.5, 2.0)), dict(zero_gradient_trust_ratio="one"),
    dict(mu_dtype="bfloat16"),
    dict(layer_axes={"conv": 1, "fc": 1, "bias": 0, "bn_scale": 0}),
]
LAMB_WORKS = [
    dict(mask=True), dict(mask=False), dict(mask=NO_DECAY),
    dict(weight_decay_mask=NO_DECAY), dict(trust_ratio_mask=ADAPT),
    dict(trust_ratio_mask=False), dict(ratio_bounds=(0.5, 2.0)),
    dict(ratio_bounds=np.array([0.5, 2.0])), dict(weight_norm_bounds=(0.5, 2.0)),
    dict(zero_gradient_trust_ratio="one"), dict(mu_dtype="bfloat16"),
    dict(layer_axes={"conv": 1, "fc": 1, "bias": 0, "bn_scale": 0}),
]
# ... or it fails at init, naming static_args: a mask function would
# otherwise be called with the step count, and an int or dtype class would
# come in as an array.
LARS_FAILS = [
    dict(weight_decay_mask=lars_optax.exclude_bias_and_norm),
    dict(trust_ratio_mask=lars_optax.exclude_bias_and_norm),
    dict(trust_ratio_mask=lars_optax.mask_by_name("bias")),
    dict(mu_dtype=jnp.bfloat16), dict(nesterov=1), dict(layer_axes=1),
]
LAMB_FAILS = [
    dict(mask=lars_optax.exclude_bias_and_norm),
    dict(weight_decay_mask=lars_optax.mask_by_name("bias")),
    dict(trust_ratio_mask=lars_optax.exclude_bias_and_norm),
    dict(mu_dtype=jnp.bfloat16), dict(layer_axes=1),
]
BASE = {lars_optax.lars: dict(learning_rate=0.5, weight_decay=1e-2),
        lars_optax.lamb: dict(learning_rate=1e-2, weight_decay=1e-2)}


@pytest.mark.parametrize("optimizer, kwargs",
                         [(lars_optax.lars, kw) for kw in LARS_WORKS]
                         + [(lars_optax.lamb, kw) for kw in LAMB_WORKS])
def test_static_argument_works_as_without_the_wrapper(optimizer, kwargs):
  kwargs = dict(BASE[optimizer], **kwargs)
  injected, state = run(optax.inject_hyperparams(optimizer)(**kwargs))
  plain, plain_state = run(optimizer(**kwargs))
  chex.assert_trees_all_equal_shapes_and_dtypes(state.inner_state, plain_state)
  for (p1, _, r1), (p2, _, r2) in zip(injected, plain, strict=True):
    assert_leaves_close(p1, p2, rtol=injected_rtol(optimizer, kwargs))
    chex.assert_trees_all_close(r1, r2,
                                rtol=10 * injected_rtol(optimizer, kwargs))
  assert float(state.hyperparams["learning_rate"]) == pytest.approx(
      kwargs["learning_rate"])


def injected_rtol(optimizer, kwargs):
  """inject_hyperparams makes every number a float32 array: Adam's 1 - b2 is
  then rounded in float32 (test_lamb.py's ADAM_RTOL), and a bfloat16
  momentum is updated in float32 arithmetic instead of bfloat16 (whose
  rounding is 2**-8)."""
  if "mu_dtype" in kwargs:
    return 1e-3
  return 1e-6 if optimizer is lars_optax.lars else 2e-5


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("optimizer, kwargs",
                         [(lars_optax.lars, kw) for kw in LARS_FAILS]
                         + [(lars_optax.lamb, kw) for kw in LAMB_FAILS])
def test_static_argument_fails_at_init_naming_static_args(optimizer, kwargs,
                                                          jit):
  (name,) = kwargs
  tx = optax.inject_hyperparams(optimizer)(**BASE[optimizer], **kwargs)
  init = jax.jit(tx.init) if jit else tx.init
  with pytest.raises(ValueError, match=r"static_args=\(") as error:
    init(make_params())
  assert f"'{name}'" in str(error.value)
  # Named in static_args, the same argument works as without the wrapper.
  tx = optax.inject_hyperparams(optimizer, static_args=name)(
      **BASE[optimizer], **kwargs)
  injected, _ = run(tx, num_steps=2, jit=jit)
  plain, _ = run(optimizer(**BASE[optimizer], **kwargs), num_steps=2)
  for (p1, _, r1), (p2, _, r2) in zip(injected, plain, strict=True):
    assert_leaves_close(p1, p2, rtol=injected_rtol(optimizer, kwargs))
    chex.assert_trees_all_close(r1, r2,
                                rtol=10 * injected_rtol(optimizer, kwargs))


def test_axis_name_works_as_without_the_wrapper():
  """Two shards of the params under vmap: norms summed over both."""
  params = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), make_params())
  grads = jax.tree.map(lambda x: jnp.stack([x, -x]), grads_fn(0))

  def sharded_step(tx):
    def step(g, p):
      return tx.update(g, tx.init(p), p)
    updates, state = jax.vmap(step, axis_name="x")(grads, params)
    return updates, lars_optax.trust_ratios(state)

  kw = dict(learning_rate=0.5, weight_decay=1e-2, axis_name="x")
  injected = sharded_step(optax.inject_hyperparams(lars_optax.lars)(**kw))
  plain = sharded_step(lars_optax.lars(**kw))
  local = sharded_step(lars_optax.lars(0.5, 1e-2))
  chex.assert_trees_all_close(injected, plain, rtol=1e-6)
  assert not np.allclose(plain[1]["fc"], local[1]["fc"])


LARS_NUMBERS = dict(learning_rate=optax.linear_schedule(0.5, 0.1, 3),
                    weight_decay=weight_decay_schedule, momentum=0.8,
                    trust_coefficient=0.02, eps=1e-4)
LAMB_NUMBERS = dict(learning_rate=optax.linear_schedule(1e-2, 1e-3, 3),
                    weight_decay=weight_decay_schedule, b1=0.8, b2=0.99,
                    eps=1e-5, eps_root=1e-8)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("optimizer, numbers, rtol", [
    (lars_optax.lars, LARS_NUMBERS, 1e-6), (lars_optax.lamb, LAMB_NUMBERS, 2e-5)])
def test_with_static_args_masks_work_and_hyperparameters_are_logged(
    optimizer, numbers, rtol, jit):
  masks = dict(weight_decay_mask=lars_optax.exclude_bias_and_norm,
               trust_ratio_mask=lars_optax.mask_by_name("bn_scale"))
  tx = optax.inject_hyperparams(optimizer, static_args=tuple(masks))(
      **numbers, **masks)
  injected, state = run(tx, jit=jit)
  plain, _ = run(optimizer(**numbers, **masks))
  for (p1, u1, r1), (p2, u2, r2) in zip(injected, plain, strict=True):
    chex.assert_trees_all_close(p1, p2, rtol=rtol, atol=1e-7)
    chex.assert_trees_all_close(u1, u2, rtol=100 * rtol, atol=1e-9)
    chex.assert_trees_all_close(r1, r2, rtol=10 * rtol)
    assert float(r1["bn_scale"]) == 1.0 and float(r1["conv"]) != 1.0
  # The values used at the last update (step NUM_STEPS - 1), to log.
  step = NUM_STEPS - 1
  assert float(state.hyperparams["learning_rate"]) == pytest.approx(
      float(numbers["learning_rate"](step)))
  assert float(state.hyperparams["weight_decay"]) == pytest.approx(
      weight_decay_schedule(step))
