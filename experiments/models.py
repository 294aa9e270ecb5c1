"""Flax NNX models for the LARS experiments, and the BatchNorm they all use.

``create_model(name, ...)`` builds one; ``MODELS`` maps each name to its input
shape ``(height, width, channels)`` (NHWC float32 in, logits out):

* ``"cnn"`` / ``"cnn_tiny"`` (28x28x1): conv 16 5x5/2 and conv 32 3x3, each
  conv-BN-ReLU-max-pool 2x2, then fc 128-BN-ReLU and the classifier.
* ``"alexnet_bn"`` / ``"alexnet_bn_tiny"`` (224x224x3): conv 96 11x11/4, 256
  5x5, 384, 384, 256 3x3 (max-pool 3/2 after conv 1, 2, 5), fc 4096, 4096.
* ``"resnet50"`` / ``"resnet50_tiny"``: ResNet-50 v1.5, bottleneck blocks
  [3, 4, 6, 3]; the tiny one has one block per stage and width 4.

``model.train()`` / ``model.eval()`` set the static ``use_running_average`` of
every :class:`BatchNorm`, global (``groups=1``) or per group of the batch; the
init schemes and BatchNorm modes: docs/training.md, "Models" and "Devices".
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Dtype = Any

# He et al. 2015 init. Convolutions use fan-out (torchvision / Goyal et al.),
# dense layers fan-in; the classifier starts small (N(0, 0.01), Goyal et al.).
conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_init = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
classifier_init = nnx.initializers.normal(stddev=0.01)

# Initialisation schemes of SmallCNN: name -> (conv, hidden dense, classifier).
# "fan_in" keeps the scale of the activations through a network without BN
# (He et al. 2015) and gives the classifier a norm comparable to the other
# layers', so its LARS trust ratio is not ~1e-4 (N(0, 0.01) gives that).
INIT_SCHEMES = {
    "goyal": (conv_init, dense_init, classifier_init),
    "fan_in": (nnx.initializers.variance_scaling(2.0, "fan_in", "normal"),
               dense_init,
               nnx.initializers.variance_scaling(1.0, "fan_in", "normal")),
}


class BatchNorm(nnx.Module):
  """Batch normalisation over all axes but the last, global or per group.

  Args:
    num_features: size of the last (feature) axis.
    momentum: running averages move as ``r <- momentum * r + (1 - momentum) * s``.
    epsilon: added to the variance before the square root.
    axis_name: a pmap / shard_map axis; the batch statistics are
      ``lax.pmean``-ed over it (global BN across devices).
    groups: split the leading (batch) axis into this many contiguous equal
      groups and normalise each by its own statistics (per-device BN emulated
      on one device or under jit). The batch must be divisible by it.
    use_running_average: use the running averages instead of the batch
      statistics (eval mode); set by ``model.eval()`` / ``model.train()``.
    scale_init: initial value of the scale (gamma) is ``scale_init * 1``; 0
      gives the "zero-init last BN" of residual blocks.
    dtype: dtype of the output (statistics are float32 regardless).
    rngs: unused; accepted for a uniform layer signature.
  """

  def __init__(
      self,
      num_features: int,
      *,
      momentum: float = 0.9,
      epsilon: float = 1e-5,
      axis_name: str | None = None,
      groups: int = 1,
      use_running_average: bool = False,
      scale_init: float = 1.0,
      dtype: Dtype = jnp.float32,
      rngs: nnx.Rngs | None = None,
  ):
    del rngs
    if groups < 1:
      raise ValueError(f"BatchNorm groups must be >= 1, got {groups}.")
    self.num_features = num_features
    self.momentum = momentum
    self.epsilon = epsilon
    self.axis_name = axis_name
    self.groups = groups
    self.use_running_average = use_running_average
    self.dtype = dtype
    self.scale = nnx.Param(jnp.full((num_features,), scale_init, jnp.float32))
    self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32))
    self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))

  def set_view(self, use_running_average: bool | None = None):
    """Hook of ``nnx.view``: switch between batch and running statistics."""
    if use_running_average is not None:
      self.use_running_average = use_running_average

  def _pmean(self, value: jax.Array) -> jax.Array:
    if self.axis_name is None:
      return value
    return jax.lax.pmean(value, self.axis_name)

  def __call__(
      self, x: jax.Array, use_running_average: bool | None = None
  ) -> jax.Array:
    if x.shape[-1] != self.num_features:
      raise ValueError(
          f"BatchNorm expects {self.num_features} features on the last axis, "
          f"got input of shape {x.shape}."
      )
    if use_running_average is None:
      use_running_average = self.use_running_average
    x32 = x.astype(jnp.float32)
    scale, bias = self.scale[...], self.bias[...]

    if use_running_average:
      inv = jax.lax.rsqrt(self.var[...] + self.epsilon) * scale
      y = (x32 - self.mean[...]) * inv + bias
      return y.astype(self.dtype)

    batch = x.shape[0]
    if batch % self.groups:
      raise ValueError(
          f"BatchNorm with groups={self.groups} needs a batch divisible by "
          f"{self.groups} (one equal group per device), got batch {batch}."
      )
    # [groups, batch / groups, ..., features]: group g is the g-th contiguous
    # slice of the batch, i.e. the shard device g holds under a `data` axis.
    xg = x32.reshape((self.groups, batch // self.groups) + x.shape[1:])
    reduce_axes = tuple(range(1, xg.ndim - 1))
    # Two passes (mean, then mean of squared deviations): exact and stable in
    # float32; with axis_name, one pmean per pass over the equal-sized shards.
    mean = self._pmean(jnp.mean(xg, axis=reduce_axes, keepdims=True))
    centred = xg - mean
    var = self._pmean(jnp.mean(jnp.square(centred), axis=reduce_axes, keepdims=True))
    y = centred * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias

    # Running averages: the mean over groups of the group statistics.
    new_mean = jnp.mean(mean.reshape(self.groups, -1), axis=0)
    new_var = jnp.mean(var.reshape(self.groups, -1), axis=0)
    m = self.momentum
    self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * new_mean)
    self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1 - m) * new_var)
    return y.reshape(x.shape).astype(self.dtype)


def _conv(in_features, out_features, kernel_size, strides=1, *, padding=None,
          use_bias=False, kernel_init=conv_init, dtype, rngs):
  """Conv with He init and symmetric padding k // 2; bias-free (a BN follows)."""
  if padding is None:
    padding = [(kernel_size // 2, kernel_size // 2)] * 2
  return nnx.Conv(
      in_features, out_features, (kernel_size, kernel_size), strides,
      padding=padding, use_bias=use_bias, kernel_init=kernel_init,
      dtype=dtype, rngs=rngs,
  )


def _max_pool(x, window: int, stride: int, padding: int = 0):
  """Max-pool over H and W (NHWC), VALID after a symmetric ``padding``."""
  if window == stride and padding == 0:
    # Non-overlapping windows: a reshape + max, same result as reduce_window,
    # and its gradient is several times faster than select_and_scatter on CPU.
    n, h, w, c = x.shape
    h, w = h // window, w // window
    x = x[:, : h * window, : w * window]
    return jnp.max(x.reshape(n, h, window, w, window, c), axis=(2, 4))
  pad = ((padding, padding), (padding, padding))
  return nnx.max_pool(x, (window, window), (stride, stride), padding=pad)


class _ConvBN(nnx.Module):
  """conv -> BN -> ReLU; with ``bn=None``, conv (with bias) -> ReLU."""

  def __init__(self, in_features, out_features, kernel_size, strides=1, *,
               padding=None, bn: Callable[..., BatchNorm] | None,
               kernel_init=conv_init, dtype, rngs):
    self.conv = _conv(in_features, out_features, kernel_size, strides,
                      padding=padding, use_bias=bn is None,
                      kernel_init=kernel_init, dtype=dtype, rngs=rngs)
    self.bn = None if bn is None else bn(out_features)

  def __call__(self, x):
    x = self.conv(x)
    return jax.nn.relu(x if self.bn is None else self.bn(x))


class _DenseBN(nnx.Module):
  """dense (no bias) -> BN -> ReLU; with ``bn=None``, dense (with bias) -> ReLU."""

  def __init__(self, in_features, out_features, *, bn, kernel_init=dense_init,
               dtype, rngs):
    self.dense = nnx.Linear(in_features, out_features, use_bias=bn is None,
                            kernel_init=kernel_init, dtype=dtype, rngs=rngs)
    self.bn = None if bn is None else bn(out_features)

  def __call__(self, x):
    x = self.dense(x)
    return jax.nn.relu(x if self.bn is None else self.bn(x))


def _classifier(in_features, num_classes, *, kernel_init=classifier_init,
                dtype, rngs):
  return nnx.Linear(in_features, num_classes, kernel_init=kernel_init,
                    dtype=dtype, rngs=rngs)


class SmallCNN(nnx.Module):
  """AlexNet-BN in miniature for 28x28 images.

  Each stage is conv (``(features, kernel, stride)``, the first one large and
  strided as AlexNet's conv1) -> BN -> ReLU -> 2x2 max-pool; then
  fc -> BN -> ReLU and the classifier.

  ``use_batch_norm=False`` drops every BN (the AlexNet analogue without BN);
  the conv and hidden dense layers then have zero-initialised biases.
  ``init_scheme`` names the initialisers (``INIT_SCHEMES``).
  """

  def __init__(self, *, num_classes: int,
               stages: Sequence[tuple[int, int, int]] = ((16, 5, 2), (32, 3, 1)),
               hidden: int = 128, image_shape=(28, 28, 1), bn, dtype, rngs,
               use_batch_norm: bool = True, init_scheme: str = "goyal"):
    if init_scheme not in INIT_SCHEMES:
      raise ValueError(f"Unknown init_scheme {init_scheme!r}; valid schemes are: "
                       f"{', '.join(sorted(INIT_SCHEMES))}.")
    conv_kernel_init, dense_kernel_init, classifier_kernel_init = (
        INIT_SCHEMES[init_scheme])
    if not use_batch_norm:
      bn = None
    height, width, channels = image_shape
    layers = []
    for features, kernel, stride in stages:
      layers.append(_ConvBN(channels, features, kernel, stride, bn=bn,
                            kernel_init=conv_kernel_init, dtype=dtype,
                            rngs=rngs))
      channels = features
      # Symmetric padding k // 2 keeps ceil(size / stride); the pool halves it.
      height, width = -(-height // stride) // 2, -(-width // stride) // 2
    if min(height, width) < 1:
      raise ValueError(f"SmallCNN: input {image_shape} is too small.")
    self.stages = nnx.List(layers)
    self.fc = _DenseBN(height * width * channels, hidden, bn=bn,
                       kernel_init=dense_kernel_init, dtype=dtype, rngs=rngs)
    self.head = _classifier(hidden, num_classes,
                            kernel_init=classifier_kernel_init, dtype=dtype,
                            rngs=rngs)

  def __call__(self, x):
    for stage in self.stages:
      x = _max_pool(stage(x), 2, 2)
    x = self.fc(x.reshape(x.shape[0], -1))
    return self.head(x).astype(jnp.float32)


class AlexNetBN(nnx.Module):
  """AlexNet with BatchNorm after each conv and hidden fc (You et al. 2017)."""

  def __init__(self, *, num_classes: int,
               widths: Sequence[int] = (96, 256, 384, 384, 256),
               hidden: int = 4096, image_shape=(224, 224, 3), bn, dtype, rngs):
    height, width, channels = image_shape
    c1, c2, c3, c4, c5 = widths
    # 11x11/4 with padding 2: 224 -> 55, as the original 227 -> 55 (VALID).
    self.conv1 = _ConvBN(channels, c1, 11, 4, padding=[(2, 2), (2, 2)],
                         bn=bn, dtype=dtype, rngs=rngs)
    self.conv2 = _ConvBN(c1, c2, 5, bn=bn, dtype=dtype, rngs=rngs)
    self.conv3 = _ConvBN(c2, c3, 3, bn=bn, dtype=dtype, rngs=rngs)
    self.conv4 = _ConvBN(c3, c4, 3, bn=bn, dtype=dtype, rngs=rngs)
    self.conv5 = _ConvBN(c4, c5, 3, bn=bn, dtype=dtype, rngs=rngs)
    size = [(height + 4 - 11) // 4 + 1, (width + 4 - 11) // 4 + 1]
    for _ in range(3):  # three max-pools 3/2 (VALID): 55 -> 27 -> 13 -> 6
      size = [(s - 3) // 2 + 1 for s in size]
    if min(size) < 1:
      raise ValueError(f"AlexNetBN: input {image_shape} is too small.")
    self.fc6 = _DenseBN(size[0] * size[1] * c5, hidden, bn=bn, dtype=dtype,
                        rngs=rngs)
    self.fc7 = _DenseBN(hidden, hidden, bn=bn, dtype=dtype, rngs=rngs)
    self.fc8 = _classifier(hidden, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    x = _max_pool(self.conv1(x), 3, 2)
    x = _max_pool(self.conv2(x), 3, 2)
    x = self.conv5(self.conv4(self.conv3(x)))
    x = _max_pool(x, 3, 2)
    x = self.fc7(self.fc6(x.reshape(x.shape[0], -1)))
    return self.fc8(x).astype(jnp.float32)


class _Shortcut(nnx.Module):
  """1x1 projection + BN, used where a block changes shape."""

  def __init__(self, in_features, out_features, strides, *, bn, dtype, rngs):
    self.conv = _conv(in_features, out_features, 1, strides, padding="VALID",
                      dtype=dtype, rngs=rngs)
    self.bn = bn(out_features)

  def __call__(self, x):
    return self.bn(self.conv(x))


class _Bottleneck(nnx.Module):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 x4 residual block (ResNet-50)."""

  def __init__(self, in_features, width, strides, *, bn, zero_init_last,
               dtype, rngs, expansion: int = 4):
    out = width * expansion
    self.conv1 = _conv(in_features, width, 1, padding="VALID", dtype=dtype,
                       rngs=rngs)
    self.bn1 = bn(width)
    self.conv2 = _conv(width, width, 3, strides, dtype=dtype, rngs=rngs)
    self.bn2 = bn(width)
    self.conv3 = _conv(width, out, 1, padding="VALID", dtype=dtype, rngs=rngs)
    self.bn3 = bn(out, scale_init=0.0 if zero_init_last else 1.0)
    self.shortcut = (
        _Shortcut(in_features, out, strides, bn=bn, dtype=dtype, rngs=rngs)
        if strides != 1 or in_features != out else None
    )
    self.out_features = out

  def __call__(self, x):
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = jax.nn.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    residual = x if self.shortcut is None else self.shortcut(x)
    return jax.nn.relu(y + residual)


class ResNet(nnx.Module):
  """ImageNet ResNet v1.5 with bottleneck blocks (ResNet-50 by default)."""

  def __init__(self, *, num_classes: int, stage_sizes=(3, 4, 6, 3),
               width: int = 64, image_shape=(224, 224, 3), bn,
               zero_init_last_batch_norm: bool = False, dtype, rngs):
    channels = image_shape[-1]
    self.stem = _ConvBN(channels, width, 7, 2, bn=bn, dtype=dtype, rngs=rngs)
    blocks, features = [], width
    for stage, num_blocks in enumerate(stage_sizes):
      for i in range(num_blocks):
        blocks.append(_Bottleneck(
            features, width * 2**stage, 2 if stage and i == 0 else 1, bn=bn,
            zero_init_last=zero_init_last_batch_norm, dtype=dtype, rngs=rngs))
        features = blocks[-1].out_features
    self.blocks = nnx.List(blocks)
    self.head = _classifier(features, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    x = _max_pool(self.stem(x), 3, 2, padding=1)
    for block in self.blocks:
      x = block(x)
    x = jnp.mean(x, axis=(1, 2))
    return self.head(x).astype(jnp.float32)


# name -> (class, constructor arguments, input shape (H, W, C)).
_REGISTRY: dict[str, tuple[type[nnx.Module], dict[str, Any], tuple[int, int, int]]] = {
    "cnn": (SmallCNN, dict(stages=((16, 5, 2), (32, 3, 1)), hidden=128), (28, 28, 1)),
    "cnn_tiny": (SmallCNN, dict(stages=((4, 5, 2), (8, 3, 1)), hidden=16), (28, 28, 1)),
    "alexnet_bn": (AlexNetBN, {}, (224, 224, 3)),
    "alexnet_bn_tiny": (
        AlexNetBN, dict(widths=(8, 16, 16, 16, 16), hidden=32), (64, 64, 3)),
    "resnet50": (ResNet, {}, (224, 224, 3)),
    "resnet50_tiny": (ResNet, dict(stage_sizes=(1, 1, 1, 1), width=4), (32, 32, 3)),
}

#: Model name -> the input shape (height, width, channels) it is built for.
MODELS: dict[str, tuple[int, int, int]] = {
    name: shape for name, (_, _, shape) in _REGISTRY.items()
}


def create_model(
    name: str,
    *,
    num_classes: int,
    rngs: nnx.Rngs,
    batch_norm_axis_name: str | None = None,
    batch_norm_groups: int = 1,
    dtype: Dtype = jnp.float32,
    **kwargs: Any,
) -> nnx.Module:
  """Builds a model from the registry (see the module docstring).

  Args:
    name: one of ``MODELS``.
    num_classes: size of the logits.
    rngs: ``nnx.Rngs`` for the parameter initialisers.
    batch_norm_axis_name: pmap / shard_map axis over which BN statistics are
      averaged (global BN inside pmap); None elsewhere.
    batch_norm_groups: per-device BN emulated on one device / under jit with
      this many contiguous groups of the batch (1 = global BN).
    dtype: compute dtype of convs and dense layers (params and BN statistics
      stay float32; logits are returned as float32).
    **kwargs: overrides of the model's constructor arguments, e.g.
      ``image_shape=(32, 32, 3)``, ``zero_init_last_batch_norm=True`` (ResNet).

  Returns:
    The model, in train mode (``model.eval()`` switches BN to running averages).

  Raises:
    ValueError: for an unknown name, listing the valid ones.
  """
  if name not in _REGISTRY:
    raise ValueError(
        f"Unknown model {name!r}; valid names are: {', '.join(sorted(_REGISTRY))}."
    )
  cls, arguments, image_shape = _REGISTRY[name]
  arguments = {**arguments, "image_shape": image_shape, **kwargs}
  bn = functools.partial(BatchNorm, axis_name=batch_norm_axis_name,
                         groups=batch_norm_groups, dtype=dtype)
  return cls(num_classes=num_classes, bn=bn, dtype=dtype, rngs=rngs, **arguments)
