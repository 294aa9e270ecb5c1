"""Algorithm 1 of You, Gitman and Ginsburg (2017), transcribed in NumPy.

Independent of lars_optax (float64, no JAX): the reference the tests compare
the library with. Per layer l (one parameter leaf), step t:

    lambda_l = eta * ||w_l|| / (||g_l|| + beta * ||w_l|| + eps)   "paper"
    lambda_l = eta * ||w_l|| / (||g_l + beta * w_l|| + eps)         "combined"
    lambda_l = 1 where ||w_l|| = 0 or the norm in the denominator is 0
    v_l <- m * v_l + gamma_t * lambda_l * (g_l + beta * w_l)
    w_l <- w_l - v_l                        (Nesterov: w_l - (m * v_l + step))

With LARC clipping (timm's trust_clip, apex's LARC clip) the layer's learning
rate gamma_t * lambda_l becomes min(lambda_l, gamma_t).

`timm_lars_steps` transcribes timm's Lars loop instead (learning rate outside
the momentum buffer), the peer the clip is checked against.
"""

import numpy as np


def trust_ratio(w, g, *, weight_decay, trust_coefficient, eps, formula):
  w = np.asarray(w, np.float64)
  g = np.asarray(g, np.float64)
  w_norm = np.linalg.norm(w.ravel())
  if formula == "paper":
    d_norm = np.linalg.norm(g.ravel()) + weight_decay * w_norm
  elif formula == "combined":
    d_norm = np.linalg.norm((g + weight_decay * w).ravel())
  else:
    raise ValueError(formula)
  if w_norm == 0 or d_norm == 0:
    ratio = 1.0
  else:
    ratio = trust_coefficient * w_norm / (d_norm + eps)
  return ratio


def lars_steps(params, grads_fn, learning_rate, num_steps, *, weight_decay=0.0,
               momentum=0.9, trust_coefficient=0.001, eps=0.0, nesterov=False,
               formula="paper", weight_decay_mask=None, trust_ratio_mask=None,
               trust_clip=False):
  """Runs Algorithm 1 on a dict of arrays.

  Args:
    params: dict name -> array.
    grads_fn: (step, params) -> dict name -> gradient array.
    learning_rate: float or callable step -> float (gamma_t).
    num_steps: number of steps.
    weight_decay_mask, trust_ratio_mask: dict name -> bool (default all True).
    trust_clip: LARC clipping, the layer's learning rate min(lambda, gamma_t).
    (other arguments as in the paper; see the module docstring.)

  Returns:
    (list of params dicts after each step, list of {name: r} per step), where
    gamma_t * r is the layer's learning rate (r = lambda without the clip).
  """
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  v = {k: np.zeros_like(x) for k, x in w.items()}
  history, ratios = [], []
  for t in range(num_steps):
    gamma = learning_rate(t) if callable(learning_rate) else learning_rate
    grads = grads_fn(t, w)
    step_ratios = {}
    for k in w:
      g = np.asarray(grads[k], np.float64)
      beta = weight_decay if (weight_decay_mask or {}).get(k, True) else 0.0
      if (trust_ratio_mask or {}).get(k, True):
        lam = trust_ratio(w[k], g, weight_decay=beta,
                          trust_coefficient=trust_coefficient, eps=eps,
                          formula=formula)
      else:
        lam = 1.0
      local_rate = min(lam, gamma) if trust_clip else gamma * lam
      if trust_clip:
        step_ratios[k] = local_rate / gamma if gamma > 0 else 1.0
      else:
        step_ratios[k] = lam
      local_step = local_rate * (g + beta * w[k])
      v[k] = momentum * v[k] + local_step
      if nesterov:
        w[k] = w[k] - (momentum * v[k] + local_step)
      else:
        w[k] = w[k] - v[k]
    history.append({k: x.copy() for k, x in w.items()})
    ratios.append(step_ratios)
  return history, ratios


def warmup_poly(peak, warmup_steps, total_steps, end=0.0, power=2.0, init=0.0):
  """The warm-up + polynomial decay schedule, in plain Python."""
  def schedule(t):
    if t < warmup_steps:
      return init + (peak - init) * t / warmup_steps
    progress = min(max((t - warmup_steps) / (total_steps - warmup_steps), 0.0), 1.0)
    return end + (peak - end) * (1.0 - progress) ** power
  return schedule


def timm_lars_steps(params, grads_fn, learning_rate, num_steps, *,
                    weight_decay, momentum, trust_coefficient, eps, trust_clip):
  """timm's Lars.step (optim/lars.py) at a constant learning rate, per leaf.

  trust_ratio = eta * ||w|| / (||g|| + beta * ||w|| + eps) where both norms
  are positive, else 1; with trust_clip it becomes min(trust_ratio / lr, 1);
  g <- (g + beta * w) * trust_ratio; buf <- m * buf + g; w <- w - lr * buf.
  """
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  buf = {k: np.zeros_like(x) for k, x in w.items()}
  history = []
  for t in range(num_steps):
    grads = grads_fn(t, w)
    for k in w:
      g = np.asarray(grads[k], np.float64)
      w_norm, g_norm = np.linalg.norm(w[k]), np.linalg.norm(g)
      ratio = 1.0
      if w_norm > 0 and g_norm > 0:
        ratio = trust_coefficient * w_norm / (
            g_norm + w_norm * weight_decay + eps)
      if trust_clip:
        ratio = min(ratio / learning_rate, 1.0)
      g = (g + weight_decay * w[k]) * ratio
      buf[k] = momentum * buf[k] + g
      w[k] = w[k] - learning_rate * buf[k]
    history.append({k: x.copy() for k, x in w.items()})
  return history
