"""LARS (Layer-wise Adaptive Rate Scaling) as optax transformations."""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lars_optax import _masks
from lars_optax import _numerics

_FORMULAS = ("paper", "combined")
_ZERO_GRADIENT_TRUST_RATIOS = ("formula", "one")


class ScaleByLarsState(NamedTuple):
  r"""State of :func:`scale_by_lars` (the trust-ratio step of :func:`lars`
  and :func:`lamb`).

  Attributes:
    count: number of updates so far (int32); the step at which a
      learning-rate schedule is read for ``trust_clip``.
    trust_ratio: the factor applied to each layer's update at the last
      update, a pytree shaped like the params whose leaves have the leaf's
      layer shape (scalars unless ``layer_axes`` is used), in the real dtype
      of ``promote_types(param dtype, float32)``. It is the trust ratio
      :math:`\lambda` (1 where masked out); with ``trust_clip`` it is
      :math:`\min(\lambda / \gamma_t, 1)`. Either way the layer's learning
      rate is :math:`\gamma_t` times it.
  """

  count: jax.Array  # type: ignore[assignment]  # optax's name; shadows tuple.count
  trust_ratio: optax.Updates


def _concrete_float(value: Any) -> Optional[float]:
  """The value as a Python float, or None when it is traced or not a scalar."""
  if isinstance(value, jax.core.Tracer):
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def _check(name: str, value: Any, ok: Any, requirement: str) -> None:
  number = _concrete_float(value)
  if number is not None and not ok(number):
    raise ValueError(f"`{name}` must be {requirement}, got {value!r}.")


def _check_schedule(name: str, value: optax.ScalarOrSchedule) -> None:
  """A float, or a schedule's value at step 0, must be non-negative."""
  if callable(value):
    try:
      first = value(0)
    except Exception:  # pylint: disable=broad-except
      return  # a schedule that needs more than a step count: not our concern
    _check(name, first, lambda v: v >= 0, "non-negative (at step 0)")
  else:
    _check(name, value, lambda v: v >= 0, "non-negative")


def _check_static(**arguments: Any) -> None:
  """Raises for arguments that must be Python values but are arrays.

  optax.inject_hyperparams makes an array of every int and float it is given
  and of the value of every callable (taken for a schedule) at the step
  count, unless the argument is named in its ``static_args``.
  """
  names = tuple(name for name, value in arguments.items()
                if isinstance(value, (jax.Array, np.ndarray)))
  if names:
    raise ValueError(
        f"{', '.join(f'`{name}`' for name in names)}: got an array where a "
        "Python value is needed (a bool, str, int, dtype, mask or callable). "
        "optax.inject_hyperparams makes arrays of numbers and of callables' "
        f"values at the step count: pass static_args={names!r}.")


def _static_layer_axes(layer_axes: Any, params: Any) -> list[int]:
  values = _masks.per_leaf(layer_axes, params, "layer_axes", 0)
  names = _masks.parameter_names(params)
  out = []
  for name, value, leaf in zip(names, values, jax.tree.leaves(params)):
    ndim = jnp.ndim(leaf)
    if isinstance(value, bool) or not isinstance(value, (int, jnp.integer)):
      raise ValueError(
          f"`layer_axes` must be a static int per parameter, got {value!r} for "
          f"{name!r}. Under optax.inject_hyperparams, pass "
          "static_args=('layer_axes',)."
      )
    if not 0 <= value <= ndim:
      raise ValueError(
          f"`layer_axes` is {value} for {name!r}, which has shape "
          f"{jnp.shape(leaf)}: it must be between 0 and ndim={ndim}."
      )
    out.append(int(value))
  return out


def _ratio_dtype(param: jax.Array) -> jnp.dtype:
  """Real dtype of a layer's norms and trust ratio."""
  return jnp.finfo(_numerics.accumulation_dtype(param.dtype)).dtype


def _check_bounds(name: str, bounds: Any) -> Any:
  """``bounds`` as a pair (low, high) with 0 <= low <= high, or None.

  Concrete bounds come back as floats; traced ones (an array of bounds
  injected as a hyperparameter, under jit) as they are, unchecked.
  """
  if bounds is None:
    return None
  message = (f"`{name}` must be None or a pair (low, high) of numbers with "
             f"0 <= low <= high, got {bounds!r}.")
  if isinstance(bounds, jax.core.Tracer):
    return bounds[0], bounds[1]
  try:
    low, high = (float(value) for value in bounds)
  except (TypeError, ValueError):
    raise ValueError(message) from None
  if not 0 <= low <= high:  # also false for NaN
    raise ValueError(message)
  return low, high


def _trust_ratio(w_norm, d_norm, trust_coefficient, eps, *, g_norm=None,
                 ratio_bounds=None, weight_norm_bounds=None):
  """eta phi(||w||) / (d + eps), within ``ratio_bounds``.

  phi clips ``w_norm`` to ``weight_norm_bounds`` (the identity for None). The
  ratio is 1 where phi(||w||), ``d_norm`` or ``g_norm`` (when given) is zero
  or denormal, and 0 where it is not finite (a norm whose squares
  overflowed); neither of these is bounded.
  """
  tiny = jnp.finfo(w_norm.dtype).tiny
  if weight_norm_bounds is not None:
    w_norm = jnp.clip(w_norm, *weight_norm_bounds)
  denominator = d_norm if _concrete_float(eps) == 0.0 else d_norm + eps
  computed = (w_norm >= tiny) & (d_norm >= tiny)
  if g_norm is not None:
    computed = computed & (g_norm >= tiny)
  ratio = jnp.where(computed, trust_coefficient * w_norm / denominator, 1)
  finite = jnp.isfinite(ratio)
  if ratio_bounds is not None:
    ratio = jnp.where(computed & jnp.isfinite(d_norm),
                      jnp.clip(ratio, *ratio_bounds), ratio)
  return jnp.where(finite, ratio, 0).astype(w_norm.dtype)


def _larc_clip(ratio, gamma):
  """min(lambda, gamma) / gamma, the factor applied before gamma; 1 at gamma 0."""
  clipped = ratio < gamma
  return jnp.where(clipped, ratio / jnp.where(clipped, gamma, 1),
                   1).astype(ratio.dtype)


def scale_by_lars(
    *,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    formula: str = "paper",
    weight_decay_mask: Optional[_masks.Mask] = None,
    trust_ratio_mask: Optional[_masks.Mask] = None,
    trust_clip: bool = False,
    learning_rate: Optional[optax.ScalarOrSchedule] = None,
    layer_axes: Any = None,
    axis_name: _numerics.AxisName = None,
    ratio_bounds: Optional[tuple[float, float]] = None,
    weight_norm_bounds: Optional[tuple[float, float]] = None,
    zero_gradient_trust_ratio: str = "formula",
) -> optax.GradientTransformation:
  r"""Scales each layer's update by its LARS trust ratio.

  For each layer :math:`l` (a parameter leaf, or one slice of it along its
  ``layer_axes``), with weight decay :math:`\beta`, trust coefficient
  :math:`\eta` and gradient :math:`g_l`:

  .. math::

    \lambda_l = \frac{\eta \, \|w_l\|}{\|g_l\| + \beta \|w_l\| + \epsilon}
    \quad\text{(formula="paper")}, \qquad
    \lambda_l = \frac{\eta \, \|w_l\|}{\|g_l + \beta w_l\| + \epsilon}
    \quad\text{(formula="combined")},

    u_l = \lambda_l \, (g_l + \beta w_l).

  :math:`\lambda_l = 1` where :math:`\|w_l\|` or the denominator's norm is
  zero or denormal (the rule of optax.lars). With a zero gradient and
  :math:`\beta > 0` the formula, taken literally as by default here and in
  optax.lars, gives :math:`\eta / \beta`; timm's ``Lars`` and the MLPerf
  reference use 1 there, which ``zero_gradient_trust_ratio="one"`` gives.
  A norm whose squares overflow the accumulation dtype (float32: values
  above about 1e19, e.g. bfloat16 gradients near 1e30) is infinite: the
  ratio is then 0 and that layer's update is 0 for this step, never NaN or
  Inf.

  Two clips, each off by default: ``weight_norm_bounds`` :math:`=
  (\gamma_l, \gamma_u)` replaces :math:`\|w_l\|` in the numerator by
  :math:`\phi(\|w_l\|) = \min(\max(\|w_l\|, \gamma_l), \gamma_u)`, the
  scaling function :math:`\phi` of the LAMB paper (You et al. 2019, also
  MXNet's ``lower_bound``/``upper_bound``); ``ratio_bounds`` :math:`=
  (\lambda_{\min}, \lambda_{\max})` clips :math:`\lambda_l` itself, as
  DeepSpeed's ``min_coeff``/``max_coeff`` and timm's LAMB ``trust_clip``
  (bounds (0, 1)) do. Neither touches the 1 at zero norms nor the 0 at
  infinite ones (DeepSpeed leaves its 1 unclipped too).

  With ``trust_clip`` (LARC clipping: timm's ``Lars(trust_clip=True)``,
  NVIDIA apex's ``LARC(clip=True)``) the global learning rate
  :math:`\gamma_t` caps the local one: the layer's learning rate is
  :math:`\min(\lambda_l, \gamma_t)`, so the update is
  :math:`\min(\lambda_l / \gamma_t, 1) \, (g_l + \beta w_l)`, to be scaled
  by :math:`\gamma_t` later in the chain. This needs ``learning_rate``, the
  same :math:`\gamma_t` that the chain applies.

  Norms are accumulated in ``promote_types(param dtype, float32)`` (float32
  for bfloat16 params, float64 for float64 ones; complex params use the
  modulus and keep their imaginary part in the update); updates come back in
  the parameter dtype. The state keeps the factor applied to every layer
  (:func:`lars_optax.trust_ratios`).

  Args:
    weight_decay: :math:`\beta`, added to the gradient as :math:`\beta w`
      and used in the trust ratio: a float or a schedule of the update count
      (read at the same step for both).
    trust_coefficient: :math:`\eta`, the trust coefficient (paper: 0.001).
    eps: :math:`\epsilon`, added to the denominator of the trust ratio.
    formula: ``"paper"`` (Algorithm 1 of You et al.; also timm, apex LARC and
      the MLPerf reference) or ``"combined"`` (optax.lars, SimCLR, BYOL).
    weight_decay_mask: where to apply weight decay: a pytree of bools like
      the params (or a prefix of them), or a callable ``params -> pytree``,
      as :func:`optax.masked` takes; ``True`` for every leaf, ``False`` for
      none. None (default) decays every leaf.
    trust_ratio_mask: where to apply the trust ratio, same forms; elsewhere
      :math:`\lambda = 1`. None (default) adapts every leaf.
    trust_clip: LARC clipping, the layer's learning rate
      :math:`\min(\lambda_l, \gamma_t)`.
    learning_rate: :math:`\gamma_t`, a float or a schedule of the update
      count; required with ``trust_clip`` and unused without it.
    layer_axes: how many leading axes of a leaf index layers stacked in one
      array (scanned or vmapped blocks): an int for every leaf, a pytree of
      ints like the params, or a callable ``params -> pytree``. Norms reduce
      over the remaining axes and :math:`\lambda` gets the leading shape.
      None (default) is 0: one :math:`\lambda` per leaf.
    axis_name: a ``shard_map``/``pmap`` axis name (or tuple of names) over
      which the params and gradients are sharded (FSDP/ZeRO style): squared
      norms are ``psum``-ed over it so that :math:`\lambda` is that of the
      global tensor. Not needed under ``jax.jit`` with shardings, where
      norms are already global. A leaf replicated over the axis is then
      counted N times in both norms, which leaves :math:`\lambda` unchanged
      when ``eps == 0``; keep replicated leaves out of such a transform.
    ratio_bounds: ``(low, high)``, the interval :math:`\lambda_l` is clipped
      to (before ``trust_clip``), or None (default) for no clip.
    weight_norm_bounds: ``(low, high)``, the interval :math:`\|w_l\|` is
      clipped to in the numerator (the LAMB paper's :math:`\phi`), or None
      (default) for the identity. With ``low > 0`` a zero-initialised layer
      gets :math:`\lambda_l = \eta \, \mathrm{low} / \|g_l\|` instead of 1.
    zero_gradient_trust_ratio: :math:`\lambda_l` where :math:`g_l = 0`:
      ``"formula"`` (default; optax.lars, and the paper taken literally) or
      ``"one"`` (timm's ``Lars``, the MLPerf reference). They differ only
      when the layer is decayed.

  Returns:
    An :class:`optax.GradientTransformation` whose state is a
    :class:`ScaleByLarsState`.

  Raises:
    ValueError: at build time for negative ``weight_decay`` (for a schedule:
      at step 0) or ``eps``, ``trust_coefficient <= 0``, an array where a
      static value is needed (see :func:`lars`), an unknown ``formula`` or
      ``zero_gradient_trust_ratio``, bounds that are not a pair with
      ``0 <= low <= high``, or ``trust_clip`` without ``learning_rate``; at
      init/update for masks or ``layer_axes`` that do not match the params,
      or when params are not given.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from lars_optax import scale_by_lars
    >>> tx = optax.chain(scale_by_lars(weight_decay=1e-4),
    ...                  optax.scale_by_learning_rate(0.1))
    >>> params = {'w': jnp.ones((2, 2))}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.ones((2, 2))}, state, params)

  References:
    You, Gitman and Ginsburg, `Scaling SGD Batch Size to 32K for ImageNet
    Training <https://arxiv.org/abs/1708.03888>`_, Technical Report
    UCB/EECS-2017-156, 2017 (arXiv:1708.03888, later retitled "Large Batch
    Training of Convolutional Networks").
  """
  _check_static(formula=formula, weight_decay_mask=weight_decay_mask,
                trust_ratio_mask=trust_ratio_mask, trust_clip=trust_clip,
                layer_axes=layer_axes, axis_name=axis_name,
                zero_gradient_trust_ratio=zero_gradient_trust_ratio)
  _check_schedule("weight_decay", weight_decay)
  _check("trust_coefficient", trust_coefficient, lambda v: v > 0, "positive")
  _check("eps", eps, lambda v: v >= 0, "non-negative")
  if formula not in _FORMULAS:
    raise ValueError(f"`formula` must be one of {_FORMULAS}, got {formula!r}.")
  if zero_gradient_trust_ratio not in _ZERO_GRADIENT_TRUST_RATIOS:
    raise ValueError(
        "`zero_gradient_trust_ratio` must be one of "
        f"{_ZERO_GRADIENT_TRUST_RATIOS}, got {zero_gradient_trust_ratio!r}.")
  ratio_bounds = _check_bounds("ratio_bounds", ratio_bounds)
  weight_norm_bounds = _check_bounds("weight_norm_bounds", weight_norm_bounds)
  if not isinstance(trust_clip, bool):
    raise ValueError(f"`trust_clip` must be a bool, got {trust_clip!r}.")
  if trust_clip and learning_rate is None:
    raise ValueError("`trust_clip=True` needs the `learning_rate` it clips at.")
  clip_at: optax.ScalarOrSchedule = 0.0 if learning_rate is None else learning_rate
  no_weight_decay = (not callable(weight_decay)
                     and _concrete_float(weight_decay) == 0.0)

  def resolve(params):
    return (
        _masks.static_bools(weight_decay_mask, params, "weight_decay_mask"),
        _masks.static_bools(trust_ratio_mask, params, "trust_ratio_mask"),
        _static_layer_axes(layer_axes, params),
    )

  def init_fn(params):
    _, _, num_layer_axes = resolve(params)
    ratios = [jnp.ones(jnp.shape(w)[:k], _ratio_dtype(w))
              for w, k in zip(jax.tree.leaves(params), num_layer_axes)]
    return ScaleByLarsState(
        count=jnp.zeros([], jnp.int32),
        trust_ratio=jax.tree.unflatten(jax.tree.structure(params), ratios))

  def layer_trust_ratio(w, g, u, beta, decayed, k):
    """lambda of one layer from its weights w, gradient g and u = g + beta w."""
    w_norm = _numerics.layer_norm(w, k, axis_name)
    # With decay the denominator stays positive at g = 0, so "one" needs ||g||.
    one_at_zero_gradient = decayed and zero_gradient_trust_ratio == "one"
    if formula == "paper" or one_at_zero_gradient:
      g_norm = _numerics.layer_norm(g, k, axis_name)
    if formula == "paper":
      d_norm = g_norm + beta * w_norm if decayed else g_norm
    else:
      d_norm = _numerics.layer_norm(u, k, axis_name)
    return _trust_ratio(
        w_norm, d_norm, trust_coefficient, eps,
        g_norm=g_norm if one_at_zero_gradient else None,
        ratio_bounds=ratio_bounds, weight_norm_bounds=weight_norm_bounds)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
          "scale_by_lars needs the params: call update(updates, state, params)."
      )
    decay, adapt, num_layer_axes = resolve(params)
    weights, treedef = jax.tree.flatten(params)
    # tree.map checks that updates and params have the same structure.
    grads = jax.tree.leaves(jax.tree.map(lambda g, _: g, updates, params))
    if trust_clip:
      gamma = clip_at(state.count) if callable(clip_at) else clip_at
    beta_t = (weight_decay(state.count) if callable(weight_decay)
              else weight_decay)

    new_updates, ratios = [], []
    for w, g, decayed, adapted, k in zip(weights, grads, decay, adapt,
                                         num_layer_axes):
      dtype = _numerics.accumulation_dtype(w.dtype)
      w_, g_ = w.astype(dtype), g.astype(dtype)
      decayed = decayed and not no_weight_decay
      beta = beta_t if decayed else 0.0
      u = g_ + beta * w_ if decayed else g_
      ratio = jnp.ones(w.shape[:k], _ratio_dtype(w))
      if adapted:
        ratio = layer_trust_ratio(w_, g_, u, beta, decayed, k)
        if trust_clip:
          ratio = _larc_clip(ratio, gamma)
      ratios.append(ratio)
      u = u * (ratio.reshape(ratio.shape + (1,) * (w.ndim - k)) if k else ratio)
      new_updates.append(u.astype(w.dtype))

    return (
        jax.tree.unflatten(treedef, new_updates),
        ScaleByLarsState(count=optax.safe_int32_increment(state.count),
                         trust_ratio=jax.tree.unflatten(treedef, ratios)),
    )

  return optax.GradientTransformation(init_fn, update_fn)


def lars(
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    weight_decay_mask: Optional[_masks.Mask] = None,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Optional[_masks.Mask] = None,
    momentum: float = 0.9,
    nesterov: bool = False,
    *,
    formula: str = "paper",
    trust_clip: bool = False,
    layer_axes: Any = None,
    axis_name: _numerics.AxisName = None,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
    ratio_bounds: Optional[tuple[float, float]] = None,
    weight_norm_bounds: Optional[tuple[float, float]] = None,
    zero_gradient_trust_ratio: str = "formula",
) -> optax.GradientTransformationExtraArgs:
  r"""The LARS optimizer (Algorithm 1 of You, Gitman and Ginsburg, 2017).

  For each layer :math:`l`, at step :math:`t`, with global learning rate
  :math:`\gamma_t`, momentum :math:`m`, weight decay :math:`\beta` and trust
  coefficient :math:`\eta`:

  .. math::

    \lambda_l = \frac{\eta \, \|w_l\|}{\|g_l\| + \beta \|w_l\| + \epsilon},
    \qquad
    v_l \leftarrow m \, v_l + \gamma_t \lambda_l (g_l + \beta w_l),
    \qquad
    w_l \leftarrow w_l - v_l,

  the learning rate sitting inside the momentum as in the paper (with a
  varying :math:`\gamma_t` this differs from applying it after momentum).
  ``formula="combined"`` uses :math:`\|g_l + \beta w_l\|` in the denominator
  and then equals :func:`optax.lars` step for step. Every leaf is adapted
  and decayed by default, as in the paper and in optax.lars; pass
  ``weight_decay_mask=exclude_bias_and_norm`` and
  ``trust_ratio_mask=exclude_bias_and_norm`` for the common recipe that
  skips biases and normalisation parameters.

  The positional parameters are those of :func:`optax.lars`, in its order
  and with its names and meanings (a mask of ``True`` is every leaf, as
  optax's default; None here is the same); the options only this one has
  are keyword-only.

  Args:
    learning_rate: :math:`\gamma_t`, a float or a schedule (step -> value),
      e.g. :func:`lars_optax.warmup_polynomial_decay_schedule`.
    weight_decay: :math:`\beta`, a float or a schedule of the update count.
    weight_decay_mask: where to decay: a pytree of bools like the params (or
      a prefix of them), a callable ``params -> pytree`` such as
      :func:`exclude_bias_and_norm`, or one bool for every leaf. None
      (default) decays every leaf.
    trust_coefficient: :math:`\eta` (paper: 0.001).
    eps: :math:`\epsilon`, added to the trust-ratio denominator.
    trust_ratio_mask: where to adapt, same forms; elsewhere
      :math:`\lambda = 1`. None (default) adapts every leaf.
    momentum: :math:`m`, in [0, 1).
    nesterov: use Nesterov momentum.
    formula: ``"paper"`` or ``"combined"``, see :func:`scale_by_lars`.
    trust_clip: LARC clipping (timm, apex): the layer's learning rate is
      :math:`\min(\lambda_l, \gamma_t)` instead of
      :math:`\gamma_t \lambda_l`, see :func:`scale_by_lars`.
    layer_axes: leading axes that index stacked layers, see
      :func:`scale_by_lars`.
    axis_name: mapped axis over which params are sharded inside
      ``shard_map``/``pmap``, see :func:`scale_by_lars`.
    mu_dtype: dtype of the momentum buffer (default: that of the params).
    ratio_bounds: ``(low, high)`` that :math:`\lambda_l` is clipped to
      (DeepSpeed's ``min_coeff``/``max_coeff``), or None.
    weight_norm_bounds: ``(low, high)`` that :math:`\|w_l\|` is clipped to
      in the numerator (the LAMB paper's :math:`\phi`), or None.
    zero_gradient_trust_ratio: :math:`\lambda_l` where :math:`g_l = 0` and
      the layer is decayed: ``"formula"`` (default, :math:`\eta / \beta`,
      as optax.lars) or ``"one"`` (timm's ``Lars``, the MLPerf reference).
      See :func:`scale_by_lars` for all three.

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`, the chain
    ``scale_by_lars -> scale_by_learning_rate -> trace``.

  Raises:
    ValueError: when built with a negative learning rate or weight decay
      (for a schedule: at step 0), momentum outside [0, 1), negative eps, a
      non-positive trust coefficient, an unknown formula or
      ``zero_gradient_trust_ratio``, bounds that are not a pair with
      ``0 <= low <= high``, or an array for an argument that must be a
      Python value (a mask, ``nesterov``, ``trust_clip``, ``formula``,
      ``layer_axes``, ``axis_name``, ``mu_dtype``,
      ``zero_gradient_trust_ratio``): see the note.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from lars_optax import lars
    >>> def loss(params): return jnp.sum((params['w'] - 1.0) ** 2)
    >>> params = {'w': jnp.full((4,), 3.0)}
    >>> tx = lars(learning_rate=50.0, momentum=0.9)
    >>> state = tx.init(params)
    >>> for _ in range(100):
    ...   grads = jax.grad(loss)(params)
    ...   updates, state = tx.update(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> print(f"{float(loss(params)):.2f}")  # was 16.00
    0.08

  Note:
    :func:`optax.inject_hyperparams` takes every callable argument for a
    schedule of the step count, and makes an array of every number. Name
    the masks, and any other argument given as a callable or an int that is
    not a hyperparameter (``layer_axes``, ``mu_dtype=jnp.bfloat16``), in
    ``static_args``; the numbers (``learning_rate``, ``weight_decay``,
    ``momentum``, ``trust_coefficient``, ``eps``) become hyperparameters
    in the state, to log or to change:

    >>> from lars_optax import exclude_bias_and_norm, trust_ratios_by_name
    >>> tx = optax.inject_hyperparams(
    ...     lars, static_args=('weight_decay_mask', 'trust_ratio_mask'))(
    ...     learning_rate=0.1, weight_decay=1e-4,
    ...     weight_decay_mask=exclude_bias_and_norm,
    ...     trust_ratio_mask=exclude_bias_and_norm)
    >>> params = {'w': jnp.ones((2, 2)), 'b': jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> _, state = tx.update(params, state, params)
    >>> print(f"{float(state.hyperparams['learning_rate']):.2f}")
    0.10
    >>> {k: round(float(v), 6) for k, v in trust_ratios_by_name(state).items()}
    {'b': 1.0, 'w': 0.001}

    Without ``static_args``, :func:`exclude_bias_and_norm`,
    :func:`mask_by_name` and the arguments that would come in as arrays
    raise at ``init``. A mask function of your own cannot be caught: called
    with the step count, one that maps each array to a bool returns one
    bool, which then applies to every leaf.

  References:
    You, Gitman and Ginsburg, `Scaling SGD Batch Size to 32K for ImageNet
    Training <https://arxiv.org/abs/1708.03888>`_, Technical Report
    UCB/EECS-2017-156, 2017 (arXiv:1708.03888, later retitled "Large Batch
    Training of Convolutional Networks").
  """
  _check_static(nesterov=nesterov, mu_dtype=mu_dtype)
  _check_schedule("learning_rate", learning_rate)
  _check("momentum", momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  return optax.chain(
      # 1. g -> lambda * (g + beta * w), per layer (masks applied inside, so
      #    the state holds a lambda for every leaf).
      scale_by_lars(
          weight_decay=weight_decay,
          trust_coefficient=trust_coefficient,
          eps=eps,
          formula=formula,
          weight_decay_mask=weight_decay_mask,
          trust_ratio_mask=trust_ratio_mask,
          trust_clip=trust_clip,
          learning_rate=learning_rate if trust_clip else None,
          layer_axes=layer_axes,
          axis_name=axis_name,
          ratio_bounds=ratio_bounds,
          weight_norm_bounds=weight_norm_bounds,
          zero_gradient_trust_ratio=zero_gradient_trust_ratio,
      ),
      # 2. times -gamma_t: the learning rate goes in BEFORE momentum, ...
      optax.scale_by_learning_rate(learning_rate),
      # 3. ... so v <- m * v + gamma_t * lambda * (g + beta * w); w <- w - v.
      optax.trace(decay=momentum, nesterov=nesterov, accumulator_dtype=mu_dtype),
  )

