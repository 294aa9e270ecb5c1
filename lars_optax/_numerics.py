"""The one norm of the library: per layer, accumulated in at least float32.

* Squares are summed in ``promote_types(dtype, float32)``: float32 for
  bfloat16/float16/float32 values, float64 for float64 (with
  ``jax_enable_x64``); complex values give the norm of their modulus, in the
  matching real dtype.
* With ``axis_name`` the squared norms are ``psum``-ed over that mapped axis,
  so the norm is that of the global (sharded) tensor.
* A sum of squares that overflows (float32: values above about 1e19) gives
  ``inf``; zero and underflowing inputs give 0. The trust ratio turns both
  into finite values (see :func:`lars_optax.scale_by_lars`).
"""

from typing import Union

import jax
import jax.numpy as jnp
from jax import lax

AxisName = Union[str, tuple[str, ...], None]


def accumulation_dtype(dtype: jax.typing.DTypeLike) -> jnp.dtype:
  """The dtype a layer's arithmetic runs in: at least float32, complex kept."""
  return jnp.promote_types(dtype, jnp.float32)


def layer_norm(x: jax.Array, num_layer_axes: int = 0,
               axis_name: AxisName = None) -> jax.Array:
  """L2 norm over all but the ``num_layer_axes`` leading axes of ``x``.

  Args:
    x: an array of any float or complex dtype.
    num_layer_axes: leading axes that index layers stacked in one array; the
      result has their shape (a scalar for 0).
    axis_name: optional ``shard_map``/``pmap`` axis over which ``x`` is
      sharded; squared norms are summed over it.

  Returns:
    The norm in the real dtype of :func:`accumulation_dtype` of ``x.dtype``.
  """
  x = x.astype(accumulation_dtype(x.dtype))
  squares = jnp.square(x.real) + jnp.square(x.imag) if jnp.iscomplexobj(x) \
      else jnp.square(x)
  sum_of_squares = jnp.sum(squares, axis=tuple(range(num_layer_axes, x.ndim)))
  if axis_name is not None:
    sum_of_squares = lax.psum(sum_of_squares, axis_name)
  return jnp.sqrt(sum_of_squares)
