"""The two data-parallel loops (``config.loop``), which reach the same parameters.

* ``"jit"``: ``jax.jit`` with shardings over a ``Mesh`` of all devices with one
  axis ``"data"``; the batch is sharded over it, params and optimizer state
  replicated or, with ``config.shard_params``, sharded along their largest
  divisible dimension (FSDP / ZeRO style).
* ``"pmap"``: ``jax.pmap`` over the local devices with ``lax.pmean`` of the
  gradients (kept for users with pmap code).

Both honour ``config.grad_accum_steps``, ``config.batch_norm`` and
``config.batch_norm_group_size`` (docs/training.md, "Devices: the two loops"),
pass ``config.model_kwargs`` to ``models.create_model``, and keep a canonical
state for checkpoints laid out by ``state_sharding``.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import models
from experiments import optimizers
from experiments import steps
from experiments.steps import State

LOOPS = ("jit", "pmap")
BATCH_NORM_MODES = ("global", "per_device")
DATA_AXIS = "data"  # mesh axis of the jit loop
PMAP_AXIS = "batch"  # pmap axis of the pmap loop


def _fsdp_spec(shape, num_shards: int) -> P:
  """Shard the largest dimension divisible by the device count; else replicate."""
  best = None
  for axis, size in enumerate(shape):
    if size % num_shards == 0 and size >= num_shards and (
        best is None or size > shape[best]):
      best = axis
  if best is None:
    return P()
  spec = [None] * len(shape)
  spec[best] = DATA_AXIS
  return P(*spec)


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else list(devices)
  return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))


def _model_factory(config, info, *, batch_norm_axis_name, batch_norm_groups):
  model_kwargs = config.model_kwargs.to_dict()

  def make():
    return models.create_model(
        config.model, num_classes=info.num_classes,
        rngs=nnx.Rngs(config.seed),
        batch_norm_axis_name=batch_norm_axis_name,
        batch_norm_groups=batch_norm_groups,
        dtype=jnp.dtype(config.model_dtype),
        image_shape=tuple(info.image_shape), **model_kwargs)
  return make


class _Loop:
  """What both loops share: model, optimizer, shardings, initial state.

  ``train_step(state, local_batch)`` = ``compiled_train_step(state,
  device_batch(local_batch))``; the two parts are public for the training
  benchmark, which times the compiled step alone (same for ``eval_step``).
  """

  name = ""

  def __init__(self, config, info, schedule: optimizers.Schedule, *,
               mesh: jax.sharding.Mesh | None = None):
    self.config = config
    self.info = info
    self.schedule = schedule
    self.mesh = make_mesh() if mesh is None else mesh
    self.num_devices = self.mesh.devices.size
    self.accum_steps = config.grad_accum_steps
    self.tx = optimizers.create_optimizer(config, schedule.fn)
    per_device = config.batch_norm == "per_device"
    if self.name == "jit":
      axis = None
      groups = self.num_devices if per_device else 1
    else:
      axis = None if per_device else PMAP_AXIS
      groups = 1
    if config.batch_norm_group_size:  # groups of one micro-batch
      groups = (config.global_batch_size // self.accum_steps
                // config.batch_norm_group_size)
    self.make_model = _model_factory(config, info, batch_norm_axis_name=axis,
                                     batch_norm_groups=groups)
    abstract_model = nnx.eval_shape(self.make_model)
    abstract_model.train()
    self.train_graphdef, _, _ = nnx.split(abstract_model, nnx.Param, nnx.BatchStat)
    abstract_model.eval()
    self.eval_graphdef, _, _ = nnx.split(abstract_model, nnx.Param, nnx.BatchStat)
    self.abstract_state = jax.eval_shape(self._init_state)
    # Log the trust ratios of the adapted layers (masked ones are always 1).
    self.trust_ratio_names = frozenset()
    if config.log_trust_ratios and config.optimizer in ("lars", "lars_global", "lamb"):
      self.trust_ratio_names = frozenset(
          name for name, adapted in optimizers.adapted_leaves(
              config, self.abstract_state["params"]).items() if adapted)
    replicated = NamedSharding(self.mesh, P())
    if config.shard_params:
      self.state_sharding = jax.tree.map(
          lambda x: NamedSharding(self.mesh, _fsdp_spec(x.shape, self.num_devices)),
          self.abstract_state)
    else:
      self.state_sharding = jax.tree.map(lambda _: replicated, self.abstract_state)
    self.replicated = replicated

  def _init_state(self) -> State:
    model = self.make_model()
    model.train()
    _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "batch_stats": batch_stats, "opt_state": self.tx.init(params)}

  def init_canonical_state(self) -> State:
    """The initial state, created directly with its final sharding."""
    return jax.jit(self._init_state, out_shardings=self.state_sharding)()

  def abstract_canonical_state(self):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        self.abstract_state, self.state_sharding)

  def device_batch(self, local_batch: Mapping[str, np.ndarray]):
    """This process's batch as the compiled steps take it."""
    raise NotImplementedError

  def train_step(self, state, local_batch):
    return self.compiled_train_step(state, self.device_batch(local_batch))

  def eval_step(self, state, local_batch):
    return self.compiled_eval_step(state, self.device_batch(local_batch))


class JitLoop(_Loop):
  """jax.jit with the batch sharded over the mesh axis "data"."""

  name = "jit"

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.batch_sharding = NamedSharding(self.mesh, P(DATA_AXIS))
    step = steps.make_train_step(self.train_graphdef, self.tx, self.schedule.fn,
                                 axis_name=None, pmean_batch_stats=False,
                                 trust_ratio_names=self.trust_ratio_names,
                                 accum_steps=self.accum_steps,
                                 num_shards=self.num_devices)
    self.compiled_train_step = jax.jit(
        step, in_shardings=(self.state_sharding, self.batch_sharding),
        out_shardings=(self.state_sharding, self.replicated), donate_argnums=0)
    self.compiled_eval_step = jax.jit(
        steps.make_eval_step(self.eval_graphdef, axis_name=None),
        in_shardings=(self.state_sharding, self.batch_sharding),
        out_shardings=self.replicated)

  def to_loop(self, canonical: State) -> State:
    return canonical

  def to_canonical(self, state: State) -> State:
    return state

  def device_batch(self, local_batch: Mapping[str, np.ndarray]):
    """The global batch, sharded over "data" (each process gives its rows)."""
    def put(x):
      x = np.asarray(x)
      global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
      return jax.make_array_from_process_local_data(
          self.batch_sharding, x, global_shape)
    return {k: put(v) for k, v in local_batch.items()}

  def fetch(self, metrics):
    return {k: float(_replicated_value(v)) for k, v in metrics.items()}


class PmapLoop(_Loop):
  """jax.pmap over the local devices with lax.pmean of the gradients."""

  name = "pmap"

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    if self.num_devices != jax.device_count():
      raise ValueError("loop='pmap' runs on all devices; pass mesh=None.")
    self.local_devices = jax.local_devices()
    per_device = self.config.batch_norm == "per_device"
    step = steps.make_train_step(self.train_graphdef, self.tx, self.schedule.fn,
                                 axis_name=PMAP_AXIS, pmean_batch_stats=per_device,
                                 trust_ratio_names=self.trust_ratio_names,
                                 accum_steps=self.accum_steps)
    self.compiled_train_step = jax.pmap(step, axis_name=PMAP_AXIS, donate_argnums=0)
    self.compiled_eval_step = jax.pmap(
        steps.make_eval_step(self.eval_graphdef, axis_name=PMAP_AXIS),
        axis_name=PMAP_AXIS)

  def to_loop(self, canonical: State) -> State:
    """Replicate onto the local devices (leading axis = local device)."""
    host = to_host(canonical)
    n = len(self.local_devices)
    # pmap (built on jit + shard_map in JAX 0.10) takes arrays sharded along
    # axis 0 over the local devices as they are.
    local_mesh = jax.sharding.Mesh(np.asarray(self.local_devices), (PMAP_AXIS,))
    sharding = NamedSharding(local_mesh, P(PMAP_AXIS))

    def replicate(x):
      return jax.device_put(np.broadcast_to(x, (n,) + x.shape), sharding)
    return jax.tree.map(replicate, host)

  def to_canonical(self, state: State) -> State:
    def unreplicate(x, sharding):
      host = _first_replica(x)
      return jax.make_array_from_callback(host.shape, sharding,
                                          lambda index: host[index])
    return jax.tree.map(unreplicate, state, self.state_sharding)

  def device_batch(self, local_batch: Mapping[str, np.ndarray]):
    """This process's batch split into one slice per local device."""
    n = len(self.local_devices)

    def split(x):
      x = np.asarray(x)
      return x.reshape((n, x.shape[0] // n) + x.shape[1:])
    return {k: split(v) for k, v in local_batch.items()}

  def fetch(self, metrics):
    return {k: float(_first_replica(v)) for k, v in metrics.items()}


def create_loop(config, info, schedule: optimizers.Schedule, **kwargs) -> _Loop:
  cls = {"jit": JitLoop, "pmap": PmapLoop}[config.loop]
  return cls(config, info, schedule, **kwargs)


# --------------------------------------------------------------------------
# Host-side copies of device arrays.
# --------------------------------------------------------------------------


def _first_replica(x: jax.Array) -> np.ndarray:
  """Device 0's copy of a pmap output (its shards have a leading axis of 1)."""
  return np.asarray(x.addressable_shards[0].data)[0]


def _replicated_value(x: jax.Array) -> np.ndarray:
  if x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(x.addressable_data(0))


def to_host(tree):
  """numpy copy of a tree of (possibly multi-process, sharded) global arrays."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def get(x):
    if not isinstance(x, jax.Array):
      return np.asarray(x)
    if x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(get, tree)
