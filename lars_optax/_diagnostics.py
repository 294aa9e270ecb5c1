"""Per-layer diagnostics read from an optimizer state."""

from typing import Any

import jax

from lars_optax import _masks
from lars_optax._lars import ScaleByLarsState


def _is_lars_state(x: Any) -> bool:
  return isinstance(x, ScaleByLarsState)


def trust_ratios(opt_state: Any) -> Any:
  """The per-layer trust ratios (lambda) of the last LARS or LAMB update.

  Walks any optimizer state, so the state of :func:`~lars_optax.lars`,
  :func:`~lars_optax.lamb` or :func:`~lars_optax.scale_by_lars` is found inside
  :func:`optax.chain` tuples, :func:`optax.masked`,
  :func:`optax.inject_hyperparams`, :class:`optax.MultiSteps`,
  :func:`optax.apply_if_finite` and the like.

  Args:
    opt_state: an optimizer state containing exactly one
      :class:`~lars_optax.ScaleByLarsState` (LAMB's trust ratio is a
      ``scale_by_lars`` step too, so its state holds one).

  Returns:
    A pytree shaped like the params of float32 arrays (scalars, or the layer
    shape with ``layer_axes``); 1.0 for leaves whose trust ratio is masked.
    Before the first update every ratio is 1.0.

  Raises:
    ValueError: if the state holds no LARS/LAMB state, or more than one
      (then pass the relevant sub-state, e.g.
      ``opt_state.inner_states['a']``).

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from lars_optax import lars, trust_ratios
    >>> tx = optax.MultiSteps(lars(0.1), every_k_schedule=2)
    >>> trust_ratios(tx.init({'w': jnp.ones(3)}))
    {'w': Array(1., dtype=float32)}
  """
  found = [
      x
      for x in jax.tree.leaves(opt_state, is_leaf=_is_lars_state)
      if _is_lars_state(x)
  ]
  if not found:
    raise ValueError(
        "No LARS state (ScaleByLarsState) in this optimizer state: was it "
        "built with lars_optax.lars, lars_optax.lamb or "
        "lars_optax.scale_by_lars?"
    )
  if len(found) > 1:
    raise ValueError(
        f"{len(found)} LARS states in this optimizer state; pass the part of "
        "the state that holds the one you want."
    )
  return found[0].trust_ratio


def trust_ratios_by_name(opt_state: Any) -> dict[str, jax.Array]:
  """:func:`trust_ratios` flattened to ``{'/'-joined param path: lambda}``.

  Convenient for logging (one scalar per layer, e.g. ``'conv1/kernel'``).

  Args:
    opt_state: an optimizer state containing one LARS or LAMB state.

  Returns:
    A dict from parameter name to its float32 trust ratio array.
  """
  ratios = trust_ratios(opt_state)
  leaves = jax.tree_util.tree_flatten_with_path(ratios)[0]
  return {_masks.path_to_name(path): value for path, value in leaves}
