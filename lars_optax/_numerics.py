"""Norms for LARS: float32 accumulation, zero-safe, overflow-safe.

Every norm in the library goes through :func:`layer_norms`, so the numerical
policy lives in one place:

* squares are accumulated in float32 whatever the input dtype; the upcast sits
  inside the reduction, so XLA fuses it and no float32 copy is materialised;
* with ``axis_name`` the squared norms are summed over that mapped axis, so the
  norm is the one of the global (sharded) tensor;
* a squared norm that overflows float32 (e.g. bfloat16 values near 1e30) or
  falls into the range where float32 squares lose precision or underflow
  (below 2**-100, zeros included) is recomputed on ``x * 2**-80`` or
  ``x * 2**80`` (exact power-of-two rescaling) and divided back. All squared
  norms are computed first and ONE ``lax.cond`` for the whole tree decides
  whether any rescue is needed, so the common case costs a single pass over
  the data and a single branch (on GPU every cond may be a host
  synchronisation);
* zero and denormal inputs give a norm of zero or nearly zero, never NaN;
* norms come back as separate arrays, one per input, never as slices of one
  concatenated vector: XLA on CPU then emits identical kernels for leaves of
  identical shapes and compiles each kernel once (slices of a shared vector
  make every kernel unique and triple the compile time of a ResNet-50 step).
"""

from collections.abc import Callable, Sequence
from typing import Union

import jax
import jax.numpy as jnp
from jax import lax

AxisName = Union[str, tuple[str, ...], None]

# Squared norms below this are recomputed with scaling: float32 squares of
# values under ~1e-19 are denormal (imprecise, or flushed to zero on CPU).
_RESCUE_BELOW = 2.0**-100
# Power-of-two rescaling of the rare path (exact in floating point): with
# 2**-80, float32 values up to the float32 maximum square without overflow;
# with 2**80, values whose squares summed below 2**-100 square as normals.
_SHRINK = 2.0**-80
_GROW = 2.0**80


def _sum_of_squares(x: jax.Array, num_layer_axes: int, scale=None) -> jax.Array:
  x32 = lax.convert_element_type(x, jnp.float32)  # fused into the reduction
  if scale is not None:
    x32 = x32 * scale
  return jnp.sum(x32 * x32, axis=tuple(range(num_layer_axes, x.ndim)))


# The per-layer arithmetic below is on scalars (or small layer vectors) but
# runs for every leaf: plain lax ops keep tracing fast (jnp wrappers would
# stage a nested jit per call, thousands for a ResNet).
class Constants:
  """float32 constants by (shape, value), built once per trace and reused."""

  def __init__(self):
    self._cache = {}

  def __call__(self, like: jax.Array, value: float) -> jax.Array:
    key = (jnp.shape(like), value)
    if key not in self._cache:
      self._cache[key] = lax.full(key[0], value, jnp.float32)
    return self._cache[key]


_full = lambda x, value: lax.full_like(x, value)  # for one-off uses


def _safe_sqrt(s: jax.Array, const=_full) -> jax.Array:
  """sqrt with a finite gradient at zero."""
  zero = const(s, 0.0)
  positive = lax.gt(s, zero)
  return lax.select(positive, lax.sqrt(lax.select(positive, s, const(s, 1.0))),
                    zero)


def layer_norms(
    arrays: Sequence[Callable[[], jax.Array]],
    num_layer_axes: Sequence[int],
    axis_name: AxisName = None,
) -> list[jax.Array]:
  """Float32 L2 norms of several arrays, one per layer.

  Args:
    arrays: zero-argument callables, each returning an array whose norm is
      wanted (e.g. ``lambda: g + beta * w``). They are callables so that the
      rare rescue branch recomputes the expression from its inputs instead of
      forcing XLA to materialise it.
    num_layer_axes: for each array, how many leading axes index stacked
      layers; its norm reduces over the remaining axes and has the shape of
      the leading ones.
    axis_name: optional mapped axis (``shard_map``/``pmap``) over which the
      arrays are sharded; squared norms are summed over it.

  Returns:
    A list of float32 norms, one per array. Finite for every finite input
    whose norm is representable in float32, and never NaN for zero or
    denormal inputs.
  """
  num_layer_axes = list(num_layer_axes)
  if not arrays:
    return []
  const = Constants()

  def sums_of_squares(scales=None):
    out = [
        _sum_of_squares(f(), k, None if scales is None else scales[i])
        for i, (f, k) in enumerate(zip(arrays, num_layer_axes))
    ]
    if axis_name is not None:
      out = lax.psum(out, axis_name)
    return out

  squares = sums_of_squares()
  # Overflowed (inf) or tiny sums need the rescue; NaN (from NaN inputs)
  # lands there too and stays NaN.
  needs_rescue = [
      lax.bitwise_or(lax.bitwise_not(lax.ge(s, const(s, _RESCUE_BELOW))),
                     lax.eq(s, const(s, jnp.inf)))
      for s in squares
  ]

  def power_of_two_scale(s, const):
    """2**-80 where s overflowed, 2**80 where it is tiny, else 1 (exact)."""
    return lax.select(lax.eq(s, const(s, jnp.inf)), const(s, _SHRINK),
                      lax.select(lax.lt(s, const(s, _RESCUE_BELOW)),
                                 const(s, _GROW), const(s, 1.0)))

  def rescue():
    # Rare: one more pass over the data, each layer rescaled by a power of two.
    branch_const = Constants()  # constants of this branch stay in it
    return sums_of_squares([
        lax.broadcast_in_dim(power_of_two_scale(s, branch_const),
                             s.shape + (1,) * (f().ndim - k), tuple(range(k)))
        for s, f, k in zip(squares, arrays, num_layer_axes)
    ])

  # ONE cond for the whole tree (on GPU each cond may cost a host sync). The
  # branches only return sums of squares, and the common one returns its
  # input: the square roots and the undoing of the scaling happen outside,
  # fused into each leaf's kernel, which keeps the compiled program small.
  any_rescue = jnp.any(jnp.concatenate([jnp.ravel(b) for b in needs_rescue]))
  rescued = lax.cond(any_rescue, rescue, lambda: list(squares))
  norms = []
  for bad, s, r in zip(needs_rescue, squares, rescued):
    scale = lax.select(bad, power_of_two_scale(s, const), const(s, 1.0))
    norms.append(lax.div(_safe_sqrt(r, const), scale))
  return norms
