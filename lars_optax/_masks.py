"""Masks choosing which parameters LARS adapts or decays, failing loudly.

A mask is a pytree of booleans shaped like the params (or a prefix of them;
a single bool is one for every leaf), or a callable ``params -> mask``, as
:func:`optax.masked` takes. ``True`` means "apply" (adapt the learning rate /
decay the weight), ``False`` "skip".
"""

import re
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

Mask = Any  # a pytree of bools, or a callable params -> pytree of bools


def path_to_name(path: tuple[Any, ...]) -> str:
  """Joins a jax key path with '/': ``'params/Dense_0/kernel'``.

  The ``.value`` attribute through which a Flax NNX ``Variable`` holds its
  array is dropped, so NNX and dict params get the same names.
  """
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.GetAttrKey) and key.name == "value":
      continue
    for attribute in ("key", "name", "idx"):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def parameter_names(params: Any) -> list[str]:
  """The names that :func:`mask_by_name` matches, one per leaf, in leaf order.

  A name is the leaf's '/'-joined key path, e.g. ``'conv1/kernel'``.

  Example:
    >>> import jax.numpy as jnp
    >>> parameter_names({'conv1': {'kernel': jnp.ones((3, 3)), 'bias': jnp.zeros(3)}})
    ['conv1/bias', 'conv1/kernel']
  """
  leaves_with_paths, _ = jax.tree_util.tree_flatten_with_path(params)
  return [path_to_name(path) for path, _ in leaves_with_paths]


def _mismatch_message(option_name: str, option: Any, params: Any) -> str:
  option_names = parameter_names(option)
  param_names = parameter_names(params)

  def covered(param: str) -> bool:
    return any(
        param == name or param.startswith(name + "/") or not name
        for name in option_names
    )

  def used(name: str) -> bool:
    return any(
        param == name or param.startswith(name + "/") or not name
        for param in param_names
    )

  missing = [p for p in param_names if not covered(p)]
  extra = [n for n in option_names if not used(n)]

  def show(names: list[str]) -> str:
    head = ", ".join(repr(n) for n in names[:8])
    return head + (f", ... ({len(names)} in all)" if len(names) > 8 else "")

  lines = [
      f"The tree given as `{option_name}` does not match the structure of "
      "the params (it must have the same structure or be a prefix of it)."
  ]
  if missing:
    lines.append(f"  params not covered by `{option_name}`: {show(missing)}")
  if extra:
    lines.append(f"  entries of `{option_name}` with no parameter: {show(extra)}")
  if not missing and not extra:
    lines.append(
        f"  same names but different containers: `{option_name}` is "
        f"{jax.tree.structure(option)}, params are {jax.tree.structure(params)}"
    )
  return "\n".join(lines)


def per_leaf(option: Any, params: Any, option_name: str, default: Any) -> list[Any]:
  """Resolves a per-parameter option to one value per leaf of ``params``.

  Args:
    option: ``None`` (use ``default``), a single value for every leaf, a pytree
      matching ``params`` or a prefix of it, or a callable ``params -> such a
      pytree``.
    params: the parameters.
    option_name: the argument's name, for error messages.
    default: value for every leaf when ``option`` is None.

  Returns:
    A list with one value per leaf of ``params`` (``jax.tree.leaves`` order).

  Raises:
    ValueError: naming the paths that differ when the tree does not match.
  """
  num_leaves = len(jax.tree.leaves(params))
  if option is None:
    return [default] * num_leaves
  if callable(option):
    option = option(params)
  if isinstance(option, (bool, int, np.bool_, np.integer)):
    return [option] * num_leaves
  try:
    expanded = jax.tree.map(
        lambda value, subtree: jax.tree.map(lambda _: value, subtree),
        option,
        params,
    )
  except (ValueError, TypeError, KeyError):
    expanded = None
  values = jax.tree.leaves(expanded)
  if len(values) != num_leaves:
    raise ValueError(_mismatch_message(option_name, option, params))
  return values


def static_bools(option: Mask, params: Any, option_name: str) -> list[bool]:
  """A mask resolved to one Python bool per leaf (True where it is None)."""
  values = per_leaf(option, params, option_name, True)
  out = []
  for name, value in zip(parameter_names(params), values):
    try:
      out.append(bool(value))
    except jax.errors.ConcretizationTypeError:
      raise ValueError(
          f"`{option_name}` must hold static booleans, got a traced value for "
          f"{name!r}. Under optax.inject_hyperparams, pass "
          f"static_args=({option_name!r},)."
      ) from None
  return out


def reject_step_count(params: Any, function_name: str) -> None:
  """Raises when a mask function is given a step count instead of params.

  :func:`optax.inject_hyperparams` calls every callable argument that is not
  named in ``static_args`` as a schedule, with the step count: an integer
  scalar, which no params tree is. Left alone, the mask would then be one
  bool for every leaf.
  """
  if isinstance(params, (int, np.integer)) or (
      isinstance(params, (jax.Array, np.ndarray)) and params.ndim == 0
      and np.issubdtype(params.dtype, np.integer)):
    raise ValueError(
        f"{function_name} was called with an integer scalar, not with params: "
        "optax.inject_hyperparams calls every callable argument as a schedule "
        "of the step count. Name the masks in static_args, e.g. "
        "optax.inject_hyperparams(lars_optax.lars, static_args=("
        "'weight_decay_mask', 'trust_ratio_mask')); for lamb's `mask`, "
        "static_args=('mask',).")


def exclude_bias_and_norm(params: Any) -> Any:
  """Mask that skips biases and normalisation parameters.

  Returns ``False`` for leaves with ``ndim <= 1`` (biases, BatchNorm and
  LayerNorm scales and offsets) and ``True`` for the rest (kernels,
  embeddings). Use it as ``weight_decay_mask`` and ``trust_ratio_mask``, as
  the MLPerf and SimCLR/BYOL LARS recipes do. For layers stacked on leading
  axes (``layer_axes``) a stacked bias has ``ndim == 2``: use
  :func:`mask_by_name` there.

  Args:
    params: the parameters (or any pytree of arrays shaped like them).

  Returns:
    A pytree of Python bools shaped like ``params``.

  Raises:
    ValueError: when given an integer scalar instead of params: what
      :func:`optax.inject_hyperparams` passes to a mask that is not named in
      its ``static_args``.

  Example:
    >>> import jax.numpy as jnp
    >>> exclude_bias_and_norm({'w': jnp.ones((3, 2)), 'b': jnp.zeros(2)})
    {'b': False, 'w': True}
  """
  reject_step_count(params, "exclude_bias_and_norm")
  return jax.tree.map(lambda x: np.ndim(x) > 1, params)


def mask_by_name(*patterns: str, exclude: bool = True) -> Callable[[Any], Any]:
  """Mask from regular expressions on parameter names.

  A parameter's name is its '/'-joined key path, e.g.
  ``'params/Conv_0/kernel'`` or ``'layers/0/bias'``; a pattern matches when
  :func:`re.search` finds it in the name. Every pattern must match at least
  one parameter: a pattern that matches nothing is almost always a typo in a
  config, so the mask raises instead of silently doing nothing.

  Args:
    *patterns: regular expressions.
    exclude: if True (the default), matching parameters get ``False`` (they
      are skipped: no weight decay / no trust ratio) and all others ``True``;
      if False, only matching parameters get ``True``.

  Returns:
    A callable ``params -> pytree of bools``, usable as ``weight_decay_mask``
    or ``trust_ratio_mask`` (or with :func:`optax.masked`).

  Raises:
    ValueError: at build time for no or invalid patterns; when called, if a
      pattern matches no parameter (the message lists the names) or if given
      a step count instead of params (see :func:`exclude_bias_and_norm`).

  Example:
    >>> import jax.numpy as jnp
    >>> mask = mask_by_name(r'bias$', r'(^|/)bn')
    >>> mask({'conv': {'kernel': jnp.ones((3, 3)), 'bias': jnp.zeros(3)},
    ...       'bn': {'scale': jnp.ones(3)}})
    {'bn': {'scale': False}, 'conv': {'bias': False, 'kernel': True}}
  """
  if not patterns:
    raise ValueError("mask_by_name needs at least one pattern.")
  compiled = []
  for pattern in patterns:
    if not isinstance(pattern, str):
      raise ValueError(f"patterns must be strings, got {pattern!r}.")
    try:
      compiled.append(re.compile(pattern))
    except re.error as error:
      raise ValueError(f"invalid regular expression {pattern!r}: {error}") from None

  def mask_fn(params: Any) -> Any:
    reject_step_count(params, "mask_by_name's mask")
    names = parameter_names(params)
    unmatched = [
        p.pattern for p in compiled if not any(p.search(n) for n in names)
    ]
    if unmatched:
      listing = ", ".join(repr(n) for n in names[:20])
      more = f", ... ({len(names)} in all)" if len(names) > 20 else ""
      raise ValueError(
          f"mask_by_name: pattern(s) {unmatched} match no parameter. "
          f"Parameter names: {listing}{more}"
      )
    matches = [any(p.search(n) for p in compiled) for n in names]
    values = [(not m) if exclude else m for m in matches]
    return jax.tree.unflatten(jax.tree.structure(params), values)

  return mask_fn
