"""Norms for LARS: float32 accumulation, zero-safe, overflow-safe.

Every norm in the library goes through :func:`layer_norms`, so the numerical
policy lives in one place:

* squares are accumulated in float32 whatever the input dtype; the upcast sits
  inside the reduction, so XLA fuses it and no float32 copy is materialised;
* with ``axis_name`` the squared norms are summed over that mapped axis, so the
  norm is the one of the global (sharded) tensor;
* a squared norm that overflows float32 (e.g. bfloat16 values near 1e30) or
  falls below 2**-100 (where float32 squares lose precision or underflow,
  zeros included) is recomputed on ``x * 2**-80`` or ``x * 2**80`` (exact
  power-of-two rescaling) and divided back. All squared norms are computed
  first and ONE ``lax.cond`` for the whole tree decides whether any rescue is
  needed, so the common case costs a single pass over the data and a single
  branch (on GPU every cond may be a host synchronisation);
* zero and denormal inputs give a norm of zero or nearly zero, never NaN, and
  the square root has a finite derivative at zero.

Compile time is kept low by keeping the traced program small, which is why
the code below works on whole lists and uses plain ``lax`` ops:

* the per-layer scalar logic is as short as possible (the rescue decision is
  one min and one max over all squared norms);
* norms come back as separate arrays, one per input, never as slices of one
  concatenated vector: XLA then emits identical kernels for layers of
  identical shapes and compiles each kernel once;
* reductions over fewer than 4096 elements (biases, normalisation scales)
  are zero-padded (along the last axis) to at least 4096, which XLA:CPU
  compiles as one fused kernel instead of three; the padding is a few KiB
  and changes no sum.
"""

from collections.abc import Callable, Sequence
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

AxisName = Union[str, tuple[str, ...], None]

# Squared norms below this are recomputed with scaling: float32 squares of
# values under ~1e-19 are denormal (imprecise, or flushed to zero).
_RESCUE_BELOW = 2.0**-100
# Power-of-two rescaling of the rare path (exact in floating point): with
# 2**-80, float32 values up to the float32 maximum square without overflow;
# with 2**80, values whose squares summed below 2**-100 square as normals.
_SHRINK = 2.0**-80
_GROW = 2.0**80
# See the module docstring: smaller reductions are zero-padded to this size.
_MIN_REDUCTION = 4096


def _sum_of_squares(x: jax.Array, num_layer_axes: int, scale=None) -> jax.Array:
  """Float32 sum of squares over the non-layer axes, times ``scale**2``."""
  x32 = lax.convert_element_type(x, jnp.float32)  # fused into the reduction
  size = int(np.prod(x.shape[num_layer_axes:]))
  if 0 < size < _MIN_REDUCTION and x.ndim > num_layer_axes:
    # Pad the last axis (no reshape: it could move a sharded array).
    rest = size // x.shape[-1]
    padding = -(-_MIN_REDUCTION // rest) - x.shape[-1]
    x32 = lax.pad(x32, np.float32(0),
                  [(0, 0, 0)] * (x.ndim - 1) + [(0, padding, 0)])
  if scale is not None:
    x32 = lax.mul(x32, lax.broadcast_in_dim(scale, x32.shape,
                                            tuple(range(num_layer_axes))))
  return lax.reduce_sum(lax.mul(x32, x32),
                        tuple(range(num_layer_axes, x.ndim)))


@jax.custom_jvp
def _sqrt(squares: list[jax.Array]) -> list[jax.Array]:
  """Square roots of a list, with derivative 0 (not inf) at 0.

  One custom_jvp call for the whole list keeps tracing fast; the forward
  pass is a plain sqrt per array.
  """
  return [lax.sqrt(s) for s in squares]


@_sqrt.defjvp
def _sqrt_jvp(primals, tangents):
  (squares,), (dsquares,) = primals, tangents
  roots, droots = [], []
  for s, ds in zip(squares, dsquares):
    root = lax.sqrt(s)
    positive = lax.gt(s, lax.full_like(s, 0.0))
    safe_root = lax.select(positive, root, lax.full_like(root, 1.0))
    roots.append(root)
    droots.append(lax.select(positive, ds / (2.0 * safe_root),
                             lax.full_like(ds, 0.0)))
  return roots, droots


class Constants:
  """float32 constants by (shape, value), built once per trace and reused.

  The per-layer arithmetic is on scalars (or small layer vectors) but runs
  for every leaf: plain lax ops with shared constants keep tracing fast and
  the program small (jnp wrappers would stage a nested jit per call).
  """

  def __init__(self):
    self._cache = {}

  def __call__(self, like: jax.Array, value: float) -> jax.Array:
    key = (jnp.shape(like), value)
    if key not in self._cache:
      self._cache[key] = lax.full(key[0], value, jnp.float32)
    return self._cache[key]


def _rescue_scale(s: jax.Array, const: Constants) -> jax.Array:
  """2**-80 where s overflowed, 2**80 where it is tiny, else 1 (exact)."""
  return lax.select(lax.eq(s, const(s, jnp.inf)), const(s, _SHRINK),
                    lax.select(lax.lt(s, const(s, _RESCUE_BELOW)),
                               const(s, _GROW), const(s, 1.0)))


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
  # The whole tree's rescue decision, on one vector: an overflowed (inf) or
  # tiny sum needs it (a zero one too: its inputs may have underflowed); NaN
  # (from NaN inputs) lands there too and stays NaN.
  flat = lax.concatenate([lax.reshape(s, (s.size,)) for s in squares], 0)
  any_rescue = lax.bitwise_or(
      lax.bitwise_not(lax.ge(lax.reduce_min(flat, (0,)),
                             np.float32(_RESCUE_BELOW))),
      lax.eq(lax.reduce_max(flat, (0,)), np.float32(jnp.inf)))

  def rescue():
    # Rare: one more pass over the data, each layer rescaled by a power of two.
    branch_const = Constants()  # constants of this branch stay in it
    return sums_of_squares([_rescue_scale(s, branch_const) for s in squares])

  # ONE cond for the whole tree. The common branch returns its input; the
  # rescue scale is recomputed outside (it is 1 everywhere when no rescue
  # ran), so the square roots and the undoing of the scaling are fused into
  # each leaf's kernel.
  rescued = lax.cond(any_rescue, rescue, lambda: list(squares))
  return [lax.div(root, _rescue_scale(s, const))
          for s, root in zip(squares, _sqrt(rescued))]
