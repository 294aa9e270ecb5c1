"""LARS and LAMB as their papers and timm write them, transcribed in NumPy.

Independent of lars_optax (float64, no JAX): the references the tests compare
the library with.

LARS, Algorithm 1 of You, Gitman and Ginsburg (2017). Per layer l (one
parameter leaf), step t:

    lambda_l = eta * ||w_l|| / (||g_l|| + beta * ||w_l|| + eps)   "paper"
    lambda_l = eta * ||w_l|| / (||g_l + beta * w_l|| + eps)         "combined"
    lambda_l = 1 where ||w_l|| = 0 or the norm in the denominator is 0
    v_l <- m * v_l + gamma_t * lambda_l * (g_l + beta * w_l)
    w_l <- w_l - v_l                        (Nesterov: w_l - (m * v_l + step))

With LARC clipping (timm's trust_clip, apex's LARC clip) the learning rate
gamma_t * lambda_l of an adapted layer becomes min(lambda_l, gamma_t); a layer
outside the trust-ratio mask keeps gamma_t (timm clips inside its adaptation).

`timm_lars_steps` transcribes timm's Lars loop instead (learning rate outside
the momentum buffer), the peer the clip is checked against.

LAMB, Algorithm 2 of You et al. (2019, "Large Batch Optimization for Deep
Learning: Training BERT in 76 minutes"), in `lamb_steps`; timm's Lamb with
its global gradient clipping and param groups in `timm_lamb_steps`.

The peers' switches, in both: `ratio_bounds` clips lambda (DeepSpeed's
min/max coefficients), `weight_norm_bounds` clips ||w|| in the numerator (the
LAMB paper's phi), and `zero_gradient="one"` sets lambda = 1 where the
gradient (LAMB: Adam's direction) is zero (timm's Lars, MLPerf). Neither
bound applies where lambda is the 1 of a zero norm.

The norms are exact (float64) unless `trust_ratio` is given `norm` (e.g.
`float32_norm`, float32 accumulation with its overflow and underflow) and
`tiny` (norms below it count as zero: float32's smallest normal number for
the library's rule on denormal norms). A norm that is infinite (its squares
overflowed) gives lambda = 0, a zero step, which no bound changes.
"""

import numpy as np


def bound(value, bounds):
  """min(max(value, low), high); the value itself for bounds None."""
  if bounds is None:
    return value
  low, high = bounds
  return min(max(value, low), high)


def float32_norm(x, flush_denormals=False):
  """||x|| as float32 arithmetic gives it: squares and their sum in float32
  (infinite when they overflow); with ``flush_denormals``, as XLA on CPU does,
  squares below float32's smallest normal number are 0."""
  x = np.asarray(x, np.float32).ravel()
  with np.errstate(over="ignore", under="ignore"):
    squares = x * x
    if flush_denormals:
      squares = np.where(squares < np.finfo(np.float32).tiny, 0, squares)
    return float(np.sqrt(np.sum(squares, dtype=np.float32)))


def _exact_norm(x):
  return float(np.linalg.norm(np.ravel(x)))


def trust_ratio(w, g, *, weight_decay, trust_coefficient, eps, formula,
                ratio_bounds=None, weight_norm_bounds=None,
                zero_gradient="formula", norm=_exact_norm, tiny=0.0):
  w = np.asarray(w, np.float64)
  g = np.asarray(g, np.float64)
  w_norm = norm(w)
  if formula == "paper":
    d_norm = norm(g) + weight_decay * w_norm
  elif formula == "combined":
    d_norm = norm(g + weight_decay * w)
  else:
    raise ValueError(formula)
  numerator = bound(w_norm, weight_norm_bounds)

  def negligible(value):
    return value == 0 or value < tiny

  if negligible(numerator) or negligible(d_norm):
    return 1.0
  if zero_gradient == "one" and negligible(norm(g)):
    return 1.0
  if not (np.isfinite(numerator) and np.isfinite(d_norm)):
    return 0.0
  return bound(trust_coefficient * numerator / (d_norm + eps), ratio_bounds)


def lars_steps(params, grads_fn, learning_rate, num_steps, *, weight_decay=0.0,
               momentum=0.9, trust_coefficient=0.001, eps=0.0, nesterov=False,
               formula="paper", weight_decay_mask=None, trust_ratio_mask=None,
               trust_clip=False, **switches):
  """Runs Algorithm 1 on a dict of arrays.

  Args:
    params: dict name -> array.
    grads_fn: (step, params) -> dict name -> gradient array.
    learning_rate: float or callable step -> float (gamma_t).
    num_steps: number of steps.
    weight_decay: float or callable step -> float (beta_t).
    weight_decay_mask, trust_ratio_mask: dict name -> bool (default all True).
    trust_clip: LARC clipping, the learning rate min(lambda, gamma_t) of each
      adapted layer.
    **switches: ratio_bounds, weight_norm_bounds, zero_gradient (see the
      module docstring).
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
    decay = weight_decay(t) if callable(weight_decay) else weight_decay
    grads = grads_fn(t, w)
    step_ratios = {}
    for k in w:
      g = np.asarray(grads[k], np.float64)
      beta = decay if (weight_decay_mask or {}).get(k, True) else 0.0
      adapted = (trust_ratio_mask or {}).get(k, True)
      if adapted:
        lam = trust_ratio(w[k], g, weight_decay=beta,
                          trust_coefficient=trust_coefficient, eps=eps,
                          formula=formula, **switches)
      else:
        lam = 1.0
      local_rate = min(lam, gamma) if trust_clip and adapted else gamma * lam
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


def lamb_steps(params, grads_fn, learning_rate, num_steps, *, b1=0.9, b2=0.999,
               eps=1e-6, weight_decay=0.0, weight_decay_mask=None,
               trust_ratio_mask=None, ratio_bounds=None,
               weight_norm_bounds=None, zero_gradient="formula"):
  """Runs Algorithm 2 (LAMB) of You et al. (2019) on a dict of arrays.

  Per layer l, step t = 1, 2, ... (phi = clip to weight_norm_bounds):

      m <- b1 * m + (1 - b1) * g;   v <- b2 * v + (1 - b2) * g**2
      r = (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)
      u = r + beta * w
      w <- w - gamma_t * phi(||w||) / ||u|| * u

  The paper leaves phi(||w||) / ||u|| undefined where a norm is 0; like every
  implementation this one uses 1 there. ``learning_rate`` and
  ``weight_decay`` are floats or callables of the step t = 0, 1, ...

  Returns:
    (list of params dicts after each step, list of {name: lambda} per step).
  """
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(x) for k, x in w.items()}
  v = {k: np.zeros_like(x) for k, x in w.items()}
  history, ratios = [], []
  for t in range(num_steps):
    gamma = learning_rate(t) if callable(learning_rate) else learning_rate
    decay = weight_decay(t) if callable(weight_decay) else weight_decay
    grads = grads_fn(t, w)
    step_ratios = {}
    for k in w:
      g = np.asarray(grads[k], np.float64)
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      r = (m[k] / (1 - b1 ** (t + 1))) / (
          np.sqrt(v[k] / (1 - b2 ** (t + 1))) + eps)
      beta = decay if (weight_decay_mask or {}).get(k, True) else 0.0
      u = r + beta * w[k]
      lam = 1.0
      if (trust_ratio_mask or {}).get(k, True):
        numerator = bound(np.linalg.norm(w[k]), weight_norm_bounds)
        u_norm = np.linalg.norm(u)
        zero_direction = zero_gradient == "one" and np.linalg.norm(r) == 0
        if numerator > 0 and u_norm > 0 and not zero_direction:
          lam = bound(numerator / u_norm, ratio_bounds)
      step_ratios[k] = lam
      w[k] = w[k] - gamma * lam * u
    history.append({k: x.copy() for k, x in w.items()})
    ratios.append(step_ratios)
  return history, ratios


def timm_lamb_steps(params, grads_fn, learning_rate, num_steps, *,
                    betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                    max_grad_norm=1.0, trust_clip=False, always_adapt=False,
                    no_weight_decay=()):
  """timm's Lamb.step (optim/lamb.py) with its other defaults, per leaf.

  Leaves named in ``no_weight_decay`` form a second param group with
  weight decay 0, as timm's param_groups_weight_decay makes for biases and
  norms. Each step:

      c = max(||all gradients|| / max_grad_norm, 1); g <- g / c
      m <- b1 * m + (1 - b1) * g;   v <- b2 * v + (1 - b2) * g**2
      u = (m / (1 - b1**t)) / (sqrt(v) / sqrt(1 - b2**t) + eps) + wd * w
      if wd != 0 or always_adapt:
        q = ||w|| / ||u|| where both norms are positive, else 1
        q = min(q, 1) with trust_clip (LAMBC)
        u <- q * u
      w <- w - lr * u
  """
  b1, b2 = betas
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(x) for k, x in w.items()}
  v = {k: np.zeros_like(x) for k, x in w.items()}
  history = []
  for t in range(1, num_steps + 1):
    grads = {k: np.asarray(g, np.float64)
             for k, g in grads_fn(t - 1, w).items()}
    clip = 1.0
    if max_grad_norm is not None:
      global_norm = np.sqrt(sum(np.sum(g * g) for g in grads.values()))
      clip = max(global_norm / max_grad_norm, 1.0)
    for k in w:
      g = grads[k] / clip
      m[k] = b1 * m[k] + (1 - b1) * g
      v[k] = b2 * v[k] + (1 - b2) * g * g
      u = (m[k] / (1 - b1 ** t)) / (
          np.sqrt(v[k]) / np.sqrt(1 - b2 ** t) + eps)
      wd = 0.0 if k in no_weight_decay else weight_decay
      if wd != 0:
        u = u + wd * w[k]
      if wd != 0 or always_adapt:
        w_norm, u_norm = np.linalg.norm(w[k]), np.linalg.norm(u)
        q = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        if trust_clip:
          q = min(q, 1.0)
        u = q * u
      w[k] = w[k] - learning_rate * u
    history.append({k: x.copy() for k, x in w.items()})
  return history
