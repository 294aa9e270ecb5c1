"""The library's checks of its arguments, at their boundaries, with whole messages.

Each check is tested from both sides: the value at the boundary is accepted
(0 where a value must be non-negative, 1 where an int must be positive), the
first value past it is refused, and the error says exactly what the docstring
and the user need: the argument's name, the rule and the value given. The
messages are compared in full, so a check that names the wrong argument or
states the wrong rule fails here (mutation testing found both unseen by the
``match=name`` tests).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lars_optax


def raises_exactly(message):
  return pytest.raises(ValueError, match=f"^{re.escape(message)}$")


# --- schedules ---------------------------------------------------------------

SCHEDULE = dict(peak_value=1.0, warmup_steps=5, total_steps=10)


@pytest.mark.parametrize("changes, message", [
    (dict(peak_value=-1.0),
     "`peak_value` must be finite and non-negative, got -1.0."),
    (dict(init_value=float("inf")),
     "`init_value` must be finite and non-negative, got inf."),
    (dict(end_value=float("nan")),
     "`end_value` must be finite and non-negative, got nan."),
    (dict(warmup_steps=-1), "`warmup_steps` must be a non-negative int, got -1."),
    (dict(warmup_steps=1.0),
     "`warmup_steps` must be a non-negative int, got 1.0."),
    (dict(total_steps=5), "`total_steps` must be an int > warmup_steps=5, got 5."),
    (dict(total_steps=10.0),
     "`total_steps` must be an int > warmup_steps=5, got 10.0."),
    (dict(power=0.0), "`power` must be positive, got 0.0."),
    (dict(power=float("inf")), "`power` must be positive, got inf."),
])
def test_schedule_refuses(changes, message):
  with raises_exactly(message):
    lars_optax.warmup_polynomial_decay_schedule(**dict(SCHEDULE, **changes))


@pytest.mark.parametrize("changes", [
    dict(peak_value=0.0), dict(init_value=0.0), dict(end_value=0.0),
    dict(warmup_steps=0), dict(total_steps=6), dict(power=1e-3),
])
def test_schedule_accepts_the_boundary(changes):
  schedule = lars_optax.warmup_polynomial_decay_schedule(
      **dict(SCHEDULE, **changes))
  assert float(schedule(0)) >= 0


@pytest.mark.parametrize("args, kwargs, message", [
    ((-0.1, 256), {},
     "`base_learning_rate` must be finite and non-negative, got -0.1."),
    ((float("nan"), 256), {},
     "`base_learning_rate` must be finite and non-negative, got nan."),
    ((0.1, 0), {}, "`global_batch_size` must be a positive int, got 0."),
    ((0.1, 256.0), {}, "`global_batch_size` must be a positive int, got 256.0."),
    ((0.1, 256), dict(base_batch_size=0),
     "`base_batch_size` must be a positive int, got 0."),
    ((0.1, 256), dict(base_batch_size=2.0),
     "`base_batch_size` must be a positive int, got 2.0."),
    ((0.1, 256), dict(rule="cubic"),
     "`rule` must be 'linear' or 'sqrt', got 'cubic'."),
])
def test_scale_learning_rate_refuses(args, kwargs, message):
  with raises_exactly(message):
    lars_optax.scale_learning_rate(*args, **kwargs)


def test_scale_learning_rate_at_the_boundaries():
  assert lars_optax.scale_learning_rate(0.0, 512) == 0.0
  assert lars_optax.scale_learning_rate(0.1, 1) == pytest.approx(0.1 / 256)
  assert lars_optax.scale_learning_rate(0.1, 4, base_batch_size=1) == (
      pytest.approx(0.4))
  assert lars_optax.scale_learning_rate(
      0.1, 4, base_batch_size=1, rule="sqrt") == pytest.approx(0.2)


def test_preset_schedule_refuses():
  preset = lars_optax.mlperf_resnet50_lars(8192)
  with raises_exactly("`steps_per_epoch` must be a positive int, got 0."):
    preset.schedule(0, 40)
  with raises_exactly("`steps_per_epoch` must be a positive int, got 10.0."):
    preset.schedule(10.0, 40)
  with raises_exactly("`total_epochs` must exceed warmup_epochs=5, got 5."):
    preset.schedule(10, 5)
  for batch in (0, 64.0):
    with raises_exactly(
        f"`global_batch_size` must be a positive int, got {batch!r}."):
      lars_optax.mlperf_resnet50_lars(batch)


def test_preset_at_the_boundaries_and_its_power():
  assert lars_optax.mlperf_resnet50_lars(1).peak_learning_rate == 10.0
  schedule = lars_optax.mlperf_resnet50_lars(8192).schedule(1, 6)
  assert float(schedule(5)) == pytest.approx(10.0)  # one step per epoch
  # A preset's power reaches its schedule (the MLPerf presets all use 2).
  linear = lars_optax.LarsPreset(peak_learning_rate=1.0, warmup_epochs=0,
                                 end_learning_rate=0.0, power=1.0)
  assert float(linear.schedule(10, 1)(5)) == pytest.approx(0.5)


# --- lars, lamb and scale_by_lars -----------------------------------------

PARAMS = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
ARRAY_MESSAGE = (
    "{names}: got an array where a Python value is needed (a bool, str, int, "
    "dtype, mask or callable). optax.inject_hyperparams makes arrays of "
    "numbers and of callables' values at the step count: pass "
    "static_args={static!r}.")


@pytest.mark.parametrize("optimizer, kwargs, message", [
    ("lars", dict(learning_rate=-1.0),
     "`learning_rate` must be non-negative, got -1.0."),
    ("lars", dict(learning_rate=lambda t: -1.0 + 0 * t),
     "`learning_rate` must be non-negative (at step 0), got -1.0."),
    ("lars", dict(weight_decay=-1.0),
     "`weight_decay` must be non-negative, got -1.0."),
    ("lars", dict(weight_decay=lambda t: -2.0 + 0 * t),
     "`weight_decay` must be non-negative (at step 0), got -2.0."),
    ("lars", dict(trust_coefficient=0.0),
     "`trust_coefficient` must be positive, got 0.0."),
    ("lars", dict(eps=-1.0), "`eps` must be non-negative, got -1.0."),
    ("lars", dict(momentum=1.0), "`momentum` must be in [0, 1), got 1.0."),
    ("lars", dict(momentum=-0.5), "`momentum` must be in [0, 1), got -0.5."),
    ("lars", dict(formula="x"),
     "`formula` must be one of ('paper', 'combined'), got 'x'."),
    ("lars", dict(zero_gradient_trust_ratio="x"),
     "`zero_gradient_trust_ratio` must be one of ('formula', 'one'), got 'x'."),
    ("lars", dict(ratio_bounds=(2, 1)),
     "`ratio_bounds` must be None or a pair (low, high) of numbers with "
     "0 <= low <= high, got (2, 1)."),
    ("lars", dict(weight_norm_bounds=(-1, 1)),
     "`weight_norm_bounds` must be None or a pair (low, high) of numbers "
     "with 0 <= low <= high, got (-1, 1)."),
    ("lars", dict(trust_clip=1), "`trust_clip` must be a bool, got 1."),
    ("lars", dict(nesterov=jnp.asarray(True)),
     ARRAY_MESSAGE.format(names="`nesterov`", static=("nesterov",))),
    ("lars", dict(formula=np.asarray(1), trust_clip=jnp.asarray(True)),
     ARRAY_MESSAGE.format(names="`formula`, `trust_clip`",
                          static=("formula", "trust_clip"))),
    ("lamb", dict(learning_rate=-1.0),
     "`learning_rate` must be non-negative, got -1.0."),
    ("lamb", dict(b1=1.0), "`b1` must be in [0, 1), got 1.0."),
    ("lamb", dict(b2=-0.1), "`b2` must be in [0, 1), got -0.1."),
    ("lamb", dict(eps=-1.0), "`eps` must be non-negative, got -1.0."),
    ("lamb", dict(eps_root=-1.0), "`eps_root` must be non-negative, got -1.0."),
    ("lamb", dict(weight_decay=-1.0),
     "`weight_decay` must be non-negative, got -1.0."),
    ("lamb", dict(mask=True, weight_decay_mask=True),
     "Give `mask` (optax.lamb's name) or `weight_decay_mask`, not both."),
    ("lamb", dict(mask=jnp.asarray(True)),
     ARRAY_MESSAGE.format(names="`mask`", static=("mask",))),
    ("lamb", dict(mu_dtype=jnp.asarray(1.0)),
     ARRAY_MESSAGE.format(names="`mu_dtype`", static=("mu_dtype",))),
])
def test_optimizers_refuse(optimizer, kwargs, message):
  kwargs = dict({"learning_rate": 0.1}, **kwargs)
  with raises_exactly(message):
    getattr(lars_optax, optimizer)(**kwargs)


@pytest.mark.parametrize("optimizer, kwargs", [
    ("lars", dict(learning_rate=0.0, weight_decay=0.0, eps=0.0, momentum=0.0,
                  ratio_bounds=(0, 0), weight_norm_bounds=(0.0, 0.0))),
    ("lars", dict(learning_rate=lambda t: 0.0 * t,
                  weight_decay=lambda t: 0.0 * t, trust_coefficient=1e-30)),
    ("lamb", dict(learning_rate=0.0, b1=0.0, b2=0.0, eps=0.0, eps_root=0.0,
                  weight_decay=0.0)),
])
def test_optimizers_accept_the_boundary(optimizer, kwargs):
  tx = getattr(lars_optax, optimizer)(**kwargs)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


def test_scale_by_lars_refuses():
  with raises_exactly("`trust_clip=True` needs the `learning_rate` it clips at."):
    lars_optax.scale_by_lars(trust_clip=True)
  tx = lars_optax.scale_by_lars()
  with raises_exactly(
      "scale_by_lars needs the params: call update(updates, state, params)."):
    tx.update(PARAMS, tx.init(PARAMS))


@pytest.mark.parametrize("kwargs, message", [
    (dict(layer_axes={"w": 3, "b": 0}),
     "`layer_axes` is 3 for 'w', which has shape (2, 2): it must be between 0 "
     "and ndim=2."),
    (dict(layer_axes={"w": 0, "b": -1}),
     "`layer_axes` is -1 for 'b', which has shape (2,): it must be between 0 "
     "and ndim=1."),
    (dict(layer_axes={"w": 1.0, "b": 0}),
     "`layer_axes` must be a static int per parameter, got 1.0 for 'w'. Under "
     "optax.inject_hyperparams, pass static_args=('layer_axes',)."),
    (dict(layer_axes={"w": True, "b": 0}),
     "`layer_axes` must be a static int per parameter, got True for 'w'. "
     "Under optax.inject_hyperparams, pass static_args=('layer_axes',)."),
    (dict(weight_decay_mask={"w": True}),
     "The tree given as `weight_decay_mask` does not match the structure of "
     "the params (it must have the same structure or be a prefix of it).\n"
     "  params not covered by `weight_decay_mask`: 'b'"),
    (dict(trust_ratio_mask={"w": True, "b": True, "c": False}),
     "The tree given as `trust_ratio_mask` does not match the structure of "
     "the params (it must have the same structure or be a prefix of it).\n"
     "  entries of `trust_ratio_mask` with no parameter: 'c'"),
])
def test_init_refuses_options_that_do_not_fit_the_params(kwargs, message):
  tx = lars_optax.scale_by_lars(**kwargs)
  with raises_exactly(message):
    tx.init(PARAMS)


def test_layer_axes_accepts_zero_to_ndim():
  tx = lars_optax.scale_by_lars(layer_axes={"w": 2, "b": 0})
  assert tx.init(PARAMS).trust_ratio["w"].shape == (2, 2)
  tx = lars_optax.scale_by_lars(layer_axes={"w": np.int64(1), "b": 1})
  assert tx.init(PARAMS).trust_ratio["b"].shape == (2,)


# --- masks and diagnostics ---------------------------------------------------

STEP_COUNT_MESSAGE = (
    "{} was called with an integer scalar, not with params: "
    "optax.inject_hyperparams calls every callable argument as a schedule of "
    "the step count. Name the masks in static_args, e.g. "
    "optax.inject_hyperparams(lars_optax.lars, static_args=("
    "'weight_decay_mask', 'trust_ratio_mask')); for lamb's `mask`, "
    "static_args=('mask',).")


def test_masks_refuse():
  with raises_exactly("mask_by_name needs at least one pattern."):
    lars_optax.mask_by_name()
  with raises_exactly("patterns must be strings, got 1."):
    lars_optax.mask_by_name("b", 1)
  with pytest.raises(ValueError, match=r"^invalid regular expression '\(': "):
    lars_optax.mask_by_name("(")
  with raises_exactly("mask_by_name: pattern(s) ['zzz'] match no parameter. "
                      "Parameter names: 'b', 'w'"):
    lars_optax.mask_by_name("w", "zzz")(PARAMS)
  for step in (3, np.int32(3), jnp.asarray(3)):
    with raises_exactly(STEP_COUNT_MESSAGE.format("mask_by_name's mask")):
      lars_optax.mask_by_name("w")(step)
    with raises_exactly(STEP_COUNT_MESSAGE.format("exclude_bias_and_norm")):
      lars_optax.exclude_bias_and_norm(step)


def test_trust_ratios_refuse():
  with raises_exactly(
      "No LARS state (ScaleByLarsState) in this optimizer state: was it built "
      "with lars_optax.lars, lars_optax.lamb or lars_optax.scale_by_lars?"):
    lars_optax.trust_ratios(optax.sgd(0.1).init(PARAMS))
  state = lars_optax.lars(learning_rate=0.1).init(PARAMS)
  with raises_exactly("2 LARS states in this optimizer state; pass the part "
                      "of the state that holds the one you want."):
    lars_optax.trust_ratios((state, state))


MISMATCH = ("The tree given as `weight_decay_mask` does not match the structure "
            "of the params (it must have the same structure or be a prefix of "
            "it).")


def test_mismatched_mask_names_what_differs():
  params = {"conv": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)},
            "dense": {"kernel": jnp.ones((2, 2))}, "head": {"w": jnp.ones(2)}}
  # "conv" covers conv/bias and conv/kernel as a prefix; head/w is missing.
  mask = {"conv": True, "dense": {"kernel": True, "bias": False}}
  with raises_exactly(
      MISMATCH + "\n  params not covered by `weight_decay_mask`: 'head/w'"
      "\n  entries of `weight_decay_mask` with no parameter: 'dense/bias'"):
    lars_optax.scale_by_lars(weight_decay_mask=mask).init(params)


@pytest.mark.parametrize("num_missing, listed", [
    (8, "'p0', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7'"),
    (9, "'p0', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7', ... (9 in all)"),
])
def test_mismatch_lists_at_most_eight_names(num_missing, listed):
  params = {f"p{i}": jnp.ones(2) for i in range(num_missing)}
  params["q"] = jnp.ones(2)
  with raises_exactly(
      MISMATCH + f"\n  params not covered by `weight_decay_mask`: {listed}"):
    lars_optax.scale_by_lars(weight_decay_mask={"q": True}).init(params)


def test_mismatch_of_containers_names_both_structures():
  params = [jnp.ones(2), jnp.ones(2)]
  mask = (True, False)
  with raises_exactly(
      MISMATCH + "\n  same names but different containers: `weight_decay_mask`"
      f" is {jax.tree.structure(mask)}, params are {jax.tree.structure(params)}"):
    lars_optax.scale_by_lars(weight_decay_mask=mask).init(params)


@pytest.mark.parametrize("num_params, listed", [
    (20, ", ".join(f"'p{i:02d}'" for i in range(20))),
    (21, ", ".join(f"'p{i:02d}'" for i in range(20)) + ", ... (21 in all)"),
])
def test_unmatched_pattern_lists_at_most_twenty_names(num_params, listed):
  params = {f"p{i:02d}": jnp.ones(2) for i in range(num_params)}
  with raises_exactly("mask_by_name: pattern(s) ['zzz'] match no parameter. "
                      f"Parameter names: {listed}"):
    lars_optax.mask_by_name("zzz")(params)
