"""Masks: exclude_bias_and_norm, mask_by_name, and loud mismatches."""

import jax
import jax.numpy as jnp
import optax
import pytest

import lars_optax

PARAMS = {
    "conv1": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.zeros(2)},
    "bn1": {"scale": jnp.ones(2), "bias": jnp.zeros(2)},
    "dense": {"kernel": jnp.ones((2, 3))},
}


def test_exclude_bias_and_norm():
  assert lars_optax.exclude_bias_and_norm(PARAMS) == {
      "conv1": {"kernel": True, "bias": False},
      "bn1": {"scale": False, "bias": False},
      "dense": {"kernel": True},
  }


def test_exclude_bias_and_norm_in_lars_skips_decay_and_ratio():
  tx = lars_optax.lars(0.1, weight_decay=0.5,
                       weight_decay_mask=lars_optax.exclude_bias_and_norm,
                       trust_ratio_mask=lars_optax.exclude_bias_and_norm)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  state = tx.init(PARAMS)
  updates, state = tx.update(grads, state, PARAMS)
  ratios = lars_optax.trust_ratios(state)
  assert float(ratios["bn1"]["scale"]) == 1.0
  assert float(ratios["dense"]["kernel"]) != 1.0
  # bias: no decay, lambda = 1: the update is -lr * g.
  assert bool(jnp.allclose(updates["bn1"]["scale"], -0.1))


def test_mask_by_name_patterns():
  mask = lars_optax.mask_by_name(r"bias$", r"^bn")(PARAMS)
  assert mask == {
      "conv1": {"kernel": True, "bias": False},
      "bn1": {"scale": False, "bias": False},
      "dense": {"kernel": True},
  }
  only = lars_optax.mask_by_name(r"kernel", exclude=False)(PARAMS)
  assert only["dense"]["kernel"] and not only["bn1"]["scale"]


def test_mask_by_name_raises_on_pattern_matching_nothing():
  with pytest.raises(ValueError, match=r"'batchnorm'.*match no parameter"):
    lars_optax.mask_by_name("bias", "batchnorm")(PARAMS)


def test_mask_by_name_bad_patterns():
  with pytest.raises(ValueError, match="at least one"):
    lars_optax.mask_by_name()
  with pytest.raises(ValueError, match="regular expression"):
    lars_optax.mask_by_name("(")


def test_mask_by_name_list_paths():
  params = [jnp.ones((2, 2)), {"b": jnp.ones(2)}]
  assert lars_optax.mask_by_name(r"^1/b$")(params) == [True, {"b": False}]


def test_prefix_mask_is_accepted():
  tx = lars_optax.scale_by_lars(trust_ratio_mask={"conv1": False, "bn1": False,
                                                  "dense": True})
  _, state = tx.update(PARAMS, tx.init(PARAMS), PARAMS)
  assert float(state.trust_ratio["conv1"]["kernel"]) == 1.0


def test_mask_with_missing_and_extra_keys():
  mask = {"conv1": {"kernel": True, "bias": False}, "bn": True, "dense": True}
  tx = lars_optax.lars(0.1, trust_ratio_mask=mask)
  with pytest.raises(ValueError) as info:
    tx.update(PARAMS, tx.init(PARAMS), PARAMS)
  message = str(info.value)
  assert "trust_ratio_mask" in message
  assert "bn1/scale" in message and "'bn'" in message


def test_mask_with_wrong_container():
  mask = [True, True, True]
  with pytest.raises(ValueError, match="weight_decay_mask"):
    lars_optax.lars(0.1, weight_decay_mask=mask).init(PARAMS)


def test_traced_mask_values_are_rejected():
  tx = lars_optax.scale_by_lars(
      weight_decay_mask=lambda p: jax.tree.map(lambda x: jnp.ndim(x) > 1 + x.sum(), p))
  with pytest.raises(ValueError, match="static"):
    jax.jit(lambda p: tx.update(p, tx.init(p), p))(PARAMS)


def test_masks_also_work_with_optax_masked():
  tx = optax.masked(optax.set_to_zero(), lars_optax.mask_by_name("kernel", exclude=False))
  updates, _ = tx.update(PARAMS, tx.init(PARAMS), PARAMS)
  assert float(updates["dense"]["kernel"].sum()) == 0.0
