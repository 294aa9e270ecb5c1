"""optimizers.py: the study's control arms against NumPy transcriptions."""
import jax.numpy as jnp
import numpy as np
import optax

from experiments import optimizers
from experiments.configs import default


def _config(**overrides):
  config = default.get_config()
  config.exclude_bias_and_norm = False
  config.update(overrides)
  return config


def _params_and_grads(seed):
  rng = np.random.default_rng(seed)
  params = {"conv": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
            "bias": rng.normal(size=(4,)).astype(np.float32) * 0.1,
            "dense": rng.normal(size=(8, 3)).astype(np.float32) * 0.05}
  grads = [{k: rng.normal(size=v.shape).astype(np.float32) * s
            for (k, v), s in zip(params.items(), (0.3, 2.0, 0.01))}
           for _ in range(3)]
  return params, grads


def _run(tx, params, grads):
  state = tx.init(params)
  params = {k: jnp.asarray(v) for k, v in params.items()}
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return {k: np.asarray(v) for k, v in params.items()}, state


def test_lars_global_is_one_trust_ratio_for_the_network():
  eta, beta, m, lr = 0.001, 5e-4, 0.9, 20.0
  params, grads = _params_and_grads(0)
  tx = optimizers.create_optimizer(
      _config(optimizer="lars_global", weight_decay=beta), lr)
  got, state = _run(tx, params, grads)

  w = {k: v.astype(np.float64) for k, v in params.items()}
  v = {k: np.zeros_like(x) for k, x in w.items()}
  for g in grads:  # Algorithm 1 with the norms over every leaf together
    w_norm = np.sqrt(sum(np.sum(x**2) for x in w.values()))
    g_norm = np.sqrt(sum(np.sum(x.astype(np.float64)**2) for x in g.values()))
    ratio = eta * w_norm / (g_norm + beta * w_norm)
    for k in w:
      v[k] = m * v[k] + lr * ratio * (g[k] + beta * w[k])
      w[k] = w[k] - v[k]
  for k in w:
    np.testing.assert_allclose(got[k], w[k], rtol=2e-5, atol=1e-7)
  logged = optimizers.lars_optax.trust_ratios(state)
  values = {float(x) for x in logged.values()}
  assert len(values) == 1 and np.isclose(values.pop(), ratio, rtol=1e-5)


def test_lars_global_differs_from_the_per_layer_ratio():
  params, grads = _params_and_grads(1)
  per_layer, _ = _run(optimizers.create_optimizer(_config(optimizer="lars"), 20.0),
                      params, grads)
  global_, _ = _run(optimizers.create_optimizer(
      _config(optimizer="lars_global"), 20.0), params, grads)
  assert not np.allclose(per_layer["dense"], global_["dense"], rtol=1e-3)


def test_clip_gradient_norm_bounds_the_gradient_before_the_optimizer():
  lr, clip, m = 0.1, 1.0, 0.9
  params, grads = _params_and_grads(2)
  tx = optimizers.create_optimizer(
      _config(optimizer="sgd", weight_decay=0.0, nesterov=True,
              clip_gradient_norm=clip), lr)
  got, _ = _run(tx, params, grads)
  w = {k: x.astype(np.float64) for k, x in params.items()}
  v = {k: np.zeros_like(x) for k, x in w.items()}
  for g in grads:  # optax.sgd's Nesterov: w -= lr * (g + m * v), v = g + m * v
    norm = np.sqrt(sum(np.sum(x.astype(np.float64)**2) for x in g.values()))
    assert norm > clip  # the clip bites
    for k in w:
      gk = g[k] * min(1.0, clip / norm)
      v[k] = gk + m * v[k]
      w[k] = w[k] - lr * (gk + m * v[k])
  for k in w:
    np.testing.assert_allclose(got[k], w[k], rtol=2e-5, atol=1e-7)
