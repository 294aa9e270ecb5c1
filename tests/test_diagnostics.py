"""trust_ratios finds the LARS state wherever it sits in an optimizer state."""

import jax.numpy as jnp
import optax
import pytest

import lars_optax

PARAMS = {"dense": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.ones(2)}}
GRADS = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}


def _expected():
  tx = lars_optax.scale_by_lars()
  _, state = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  return state.trust_ratio


@pytest.mark.parametrize("wrap", [
    lambda tx: tx,
    lambda tx: optax.chain(optax.clip(1e3), tx),
    lambda tx: optax.apply_if_finite(tx, 3),
    lambda tx: optax.MultiSteps(tx, every_k_schedule=1),
    lambda tx: optax.masked(tx, {"dense": {"kernel": True, "bias": True}}),
    lambda tx: optax.multi_transform({"a": tx, "b": optax.sgd(0.1)},
                                     {"dense": {"kernel": "a", "bias": "a"}}),
])
def test_found_in_wrappers(wrap):
  tx = wrap(lars_optax.lars(0.1))
  state = tx.init(PARAMS)
  _, state = tx.update(GRADS, state, PARAMS)
  got = lars_optax.trust_ratios(state)
  assert float(got["dense"]["kernel"]) == pytest.approx(
      float(_expected()["dense"]["kernel"]))


def test_found_under_inject_hyperparams():
  tx = optax.inject_hyperparams(lars_optax.lars)(learning_rate=0.1)
  _, state = tx.update(GRADS, tx.init(PARAMS), PARAMS)
  assert float(lars_optax.trust_ratios(state)["dense"]["kernel"]) == pytest.approx(
      float(_expected()["dense"]["kernel"]))


def test_ones_before_first_update_and_by_name():
  state = lars_optax.lars(0.1).init(PARAMS)
  by_name = lars_optax.trust_ratios_by_name(state)
  assert set(by_name) == {"dense/kernel", "dense/bias"}
  assert all(float(v) == 1.0 for v in by_name.values())


def test_errors_for_none_or_several():
  with pytest.raises(ValueError, match="No LARS state"):
    lars_optax.trust_ratios(optax.sgd(0.1).init(PARAMS))
  tx = optax.chain(lars_optax.lars(0.1), lars_optax.lars(0.1))
  with pytest.raises(ValueError, match="2 LARS states"):
    lars_optax.trust_ratios(tx.init(PARAMS))
