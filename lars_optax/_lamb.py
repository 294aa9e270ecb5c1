"""LAMB (Layer-wise Adaptive Moments for Batch training) as an optax chain."""

from typing import Any, Optional

import jax
import optax

from lars_optax import _masks
from lars_optax import _numerics
from lars_optax._lars import _check
from lars_optax._lars import _check_schedule
from lars_optax._lars import _check_static
from lars_optax._lars import scale_by_lars


def lamb(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Optional[_masks.Mask] = None,
    *,
    weight_decay_mask: Optional[_masks.Mask] = None,
    trust_ratio_mask: Optional[_masks.Mask] = None,
    ratio_bounds: Optional[tuple[float, float]] = None,
    weight_norm_bounds: Optional[tuple[float, float]] = None,
    zero_gradient_trust_ratio: str = "formula",
    layer_axes: Any = None,
    axis_name: _numerics.AxisName = None,
    mu_dtype: Optional[jax.typing.DTypeLike] = None,
) -> optax.GradientTransformationExtraArgs:
  r"""The LAMB optimizer (Algorithm 2 of You et al., 2019): Adam, layer-wise.

  For each layer :math:`l`, at step :math:`t`, with gradient :math:`g_t`,
  learning rate :math:`\gamma_t` and weight decay :math:`\beta`, Adam's
  direction :math:`r_t` is scaled by the layer's trust ratio, that of LARS
  with :math:`\eta = 1` applied to :math:`r_t + \beta w`:

  .. math::

    m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
    v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2,

    r_t = \frac{m_t / (1 - \beta_1^t)}
               {\sqrt{v_t / (1 - \beta_2^t) + \epsilon_{\mathrm{root}}}
                + \epsilon},
    \qquad
    u_l = r_{t,l} + \beta w_l,

    w_l \leftarrow w_l - \gamma_t \, \lambda_l \, u_l, \qquad
    \lambda_l = \frac{\phi(\|w_l\|)}{\|u_l\|},

  :math:`\phi` the identity unless ``weight_norm_bounds`` is given. As in
  optax.lamb, timm and apex, :math:`\lambda_l = 1` where :math:`\|w_l\|` or
  :math:`\|u_l\|` is zero (here also denormal); a norm whose squares
  overflow gives that layer a zero step. Norms are accumulated in at least
  float32, whatever the parameter dtype.

  The chain is ``scale_by_adam -> scale_by_lars(formula="combined",
  trust_coefficient=1) -> scale_by_learning_rate``: LAMB is the LARS trust
  ratio of Adam's direction, computed by the same transformation as
  :func:`lars`, so ``trust_ratios(opt_state)`` finds :math:`\lambda` and
  every switch of :func:`scale_by_lars` applies. The decay is added inside
  that step rather than by ``optax.add_decayed_weights`` before it, which
  gives the same :math:`u_l` and keeps :math:`r_t` apart for
  ``zero_gradient_trust_ratio``.

  Differences from the peers, and the switch that reproduces each:

  * ``optax.lamb``: the same update, step for step to float32 rounding, for
    every call written for it: the positional parameters are its own, in
    its order, ``mask`` included (the weight-decay mask; every leaf is
    adapted unless ``trust_ratio_mask`` says otherwise), and the options
    only this one has are keyword-only. It takes norms in the parameter
    dtype (bfloat16 for bfloat16 params) and gives NaN where a norm
    overflows.
  * timm's ``Lamb`` with its defaults (``weight_decay=0.01``,
    ``max_grad_norm=1.0``, ``always_adapt=False``, bias correction, the
    decay added to the direction): ``optax.chain(optax.clip_by_global_norm(
    1.0), lamb(lr, weight_decay=0.01, weight_decay_mask=m,
    trust_ratio_mask=m))``, where ``m`` marks the leaves of the param groups
    with non-zero weight decay (timm adapts only those), all False when
    ``weight_decay=0``. timm clips the global gradient norm before the
    moments, here a transformation of its own. ``trust_clip=True`` (LAMBC)
    is ``ratio_bounds=(0, 1)``; ``always_adapt=True`` is
    ``trust_ratio_mask=None``. Not reproduced: ``bias_correction=False``,
    ``grad_averaging=False``, ``decoupled_decay=True`` and ``caution``.
  * The paper's :math:`\phi(z) = \min(\max(z, \gamma_l), \gamma_u)` is
    ``weight_norm_bounds=(gamma_l, gamma_u)``. DeepSpeed's ``FusedLamb``
    clips the ratio instead: ``ratio_bounds=(min_coeff, max_coeff)``.
  * Zero direction: where :math:`r_{t,l} = 0` and the layer is decayed, the
    formula gives :math:`\lambda_l = 1/\beta` (the default, as the paper,
    optax.lamb, timm's ``Lamb`` and DeepSpeed's ``FusedLamb`` give);
    ``zero_gradient_trust_ratio="one"`` gives 1, the rule timm's ``Lars``
    and the MLPerf LARS reference use for a zero gradient.

  Args:
    learning_rate: :math:`\gamma_t`, a float or a schedule (step -> value).
    b1: :math:`\beta_1`, decay of the first moment, in [0, 1).
    b2: :math:`\beta_2`, decay of the second moment, in [0, 1).
    eps: :math:`\epsilon`, added to :math:`\sqrt{\hat v}` (paper, timm and
      optax.lamb: 1e-6).
    eps_root: :math:`\epsilon_{\mathrm{root}}`, added to :math:`\hat v`
      inside the square root (as in :func:`optax.scale_by_adam`).
    weight_decay: :math:`\beta`, decoupled from the moments: added to the
      direction, inside the trust ratio; a float or a schedule of the update
      count.
    mask: optax.lamb's name for ``weight_decay_mask``; give one or the
      other.
    weight_decay_mask: where to decay: a pytree of bools like the params (or
      a prefix of them), a callable ``params -> pytree`` such as
      :func:`exclude_bias_and_norm` or :func:`mask_by_name`, or one bool
      for every leaf. None (default) decays every leaf.
    trust_ratio_mask: where to adapt, same forms; elsewhere
      :math:`\lambda = 1` and the step is Adam(W)'s. None (default) adapts
      every leaf.
    ratio_bounds: ``(low, high)`` that :math:`\lambda_l` is clipped to
      (DeepSpeed's ``min_coeff``/``max_coeff``; timm's ``trust_clip`` is
      ``(0, 1)``), or None.
    weight_norm_bounds: ``(gamma_l, gamma_u)`` of the paper's :math:`\phi`,
      or None for the identity.
    zero_gradient_trust_ratio: :math:`\lambda_l` where Adam's direction is
      zero: ``"formula"`` (default) or ``"one"``, see above.
    layer_axes: leading axes that index stacked layers, see
      :func:`scale_by_lars`.
    axis_name: mapped axis over which params are sharded inside
      ``shard_map``/``pmap``, see :func:`scale_by_lars`.
    mu_dtype: dtype of the first moment (default: that of the params).

  Returns:
    An :class:`optax.GradientTransformationExtraArgs`, the chain
    ``scale_by_adam -> scale_by_lars -> scale_by_learning_rate``.

  Raises:
    ValueError: when built with a negative learning rate or weight decay
      (for a schedule: at step 0), ``b1`` or ``b2`` outside [0, 1), negative
      ``eps`` or ``eps_root``, bad bounds, an unknown
      ``zero_gradient_trust_ratio``, both ``mask`` and ``weight_decay_mask``,
      or an array for an argument that must be a Python value (see the
      note).

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from lars_optax import lamb
    >>> def loss(params): return jnp.sum((params['w'] - 1.0) ** 2)
    >>> params = {'w': jnp.full((4,), 3.0)}
    >>> tx = lamb(learning_rate=0.05)
    >>> state = tx.init(params)
    >>> for _ in range(100):
    ...   grads = jax.grad(loss)(params)
    ...   updates, state = tx.update(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> print(f"{float(loss(params)):.2f}")  # was 16.00
    0.00

  Note:
    Under :func:`optax.inject_hyperparams`, name the masks (and any other
    callable or int that is not a hyperparameter: ``layer_axes``,
    ``mu_dtype=jnp.bfloat16``) in ``static_args``, as for :func:`lars`;
    the numbers become hyperparameters in the state:

    >>> from lars_optax import mask_by_name, trust_ratios_by_name
    >>> tx = optax.inject_hyperparams(lamb, static_args=('mask',))(
    ...     learning_rate=1e-3, weight_decay=1e-2, mask=mask_by_name('b'))
    >>> params = {'w': jnp.ones((2, 2)), 'b': jnp.ones(2)}
    >>> state = tx.init(params)
    >>> _, state = tx.update(params, state, params)
    >>> print(f"{float(state.hyperparams['learning_rate']):.3f}")
    0.001
    >>> {k: round(float(v), 4) for k, v in trust_ratios_by_name(state).items()}
    {'b': 1.0, 'w': 0.9901}

  References:
    You, Li, Reddi, Hseu, Kumar, Bhojanapalli, Song, Demmel, Keutzer and
    Hsieh, `Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes <https://arxiv.org/abs/1904.00962>`_, ICLR 2020
    (arXiv:1904.00962), Algorithm 2.
  """
  _check_static(mask=mask, mu_dtype=mu_dtype)
  if mask is not None and weight_decay_mask is not None:
    raise ValueError("Give `mask` (optax.lamb's name) or `weight_decay_mask`, "
                     "not both.")
  _check_schedule("learning_rate", learning_rate)
  _check("b1", b1, lambda v: 0 <= v < 1, "in [0, 1)")
  _check("b2", b2, lambda v: 0 <= v < 1, "in [0, 1)")
  _check("eps", eps, lambda v: v >= 0, "non-negative")
  _check("eps_root", eps_root, lambda v: v >= 0, "non-negative")
  return optax.chain(
      # 1. g -> r = m_hat / (sqrt(v_hat + eps_root) + eps), Adam's direction.
      optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root,
                          mu_dtype=mu_dtype),
      # 2. r -> lambda * (r + beta * w), lambda = phi(||w||) / ||r + beta w||
      #    per layer (masks applied inside, so the state holds every lambda).
      scale_by_lars(
          weight_decay=weight_decay,
          trust_coefficient=1.0,
          formula="combined",
          weight_decay_mask=mask if mask is not None else weight_decay_mask,
          trust_ratio_mask=trust_ratio_mask,
          layer_axes=layer_axes,
          axis_name=axis_name,
          ratio_bounds=ratio_bounds,
          weight_norm_bounds=weight_norm_bounds,
          zero_gradient_trust_ratio=zero_gradient_trust_ratio,
      ),
      # 3. times -gamma_t, after the trust ratio: w <- w - gamma_t lambda u.
      optax.scale_by_learning_rate(learning_rate),
  )
