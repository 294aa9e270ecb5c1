"""Data-parallel training of the LARS experiments: a jit loop and a pmap loop.

``train_and_evaluate(config, workdir)`` is the whole job: check the config,
prepare the data, build model / optimizer / learning-rate schedule, restore the
latest checkpoint under ``workdir/checkpoints`` if any, train, evaluate, and
write metrics (``metrics.jsonl``, TensorBoard events, ``training_curves.png``,
``final_metrics.json``). It returns the final metrics.

Two data-parallel loops (``config.loop``), which reach the same parameters:

* ``"jit"``: ``jax.jit`` with shardings over a ``Mesh`` of all devices with one
  axis ``"data"``. The global batch is sharded over ``"data"`` (assembled from
  the per-process batches with ``jax.make_array_from_process_local_data``);
  params and optimizer state are replicated, or, with ``config.shard_params``,
  sharded over ``"data"`` along their largest divisible dimension (FSDP / ZeRO
  style). GSPMD inserts the collectives: the mean loss over the sharded batch
  gives the all-reduced gradient, BatchNorm statistics over the batch axis are
  global, and LARS's per-layer norms of sharded params and gradients are norms
  of the whole layer.
* ``"pmap"``: ``jax.pmap`` over the local devices with axis ``"batch"`` and
  ``lax.pmean`` of the gradients (pmap is in maintenance mode in JAX 0.10; it
  is kept for users who still have pmap code).

BatchNorm (``config.batch_norm``): ``"global"`` normalises with the statistics
of the whole global batch (jit: GSPMD; pmap: ``batch_norm_axis_name``);
``"per_device"`` with those of each device's shard (jit: the model is built
with ``batch_norm_groups = number of devices``; pmap: no axis name and a
``pmean`` of the running averages after the step). In both modes every loop
computes the same function of the same global batch.

``config.batch_norm_group_size = n`` (optional, jit loop) normalises over
contiguous groups of ``n`` examples of the global batch whatever its size
(``batch_norm_groups = global_batch_size // n``), as per-GPU BatchNorm with
``n`` examples per GPU. ``config.model_kwargs`` (optional) is passed to
``models.create_model`` (e.g. ``use_batch_norm``, ``init_scheme``).

Optional validation: with ``config.data.validation_holdout > 0`` the periodic
evaluations read the held-out validation examples (logged as kind
``"validation"``) and the test split is evaluated once, at the end;
``config.eval_every_epochs > 0`` evaluates every that many epochs of examples
instead of every ``eval_every_steps`` steps. Warm-up may also be given as a
fraction of the run (``config.warmup_fraction``) with a floor
(``config.min_warmup_steps``).

Models are Flax NNX modules used functionally: ``nnx.split`` into a graphdef
and the ``Param`` / ``BatchStat`` states once, ``nnx.merge`` inside the jitted
step. The train state is a plain dict ``{step, params, batch_stats,
opt_state}``. The data order (and the augmentation) is a pure function of
``(config.seed, step)``, so ``step`` is all a checkpoint needs to resume the
data stream exactly; the models carry no other random state.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import lars_optax
from experiments import input_pipeline
from experiments import models

LOOPS = ("jit", "pmap")
OPTIMIZERS = ("lars", "optax_lars", "sgd")
BATCH_NORM_MODES = ("global", "per_device")
LR_SCALING_RULES = ("linear", "sqrt", "none")
DATA_AXIS = "data"  # mesh axis of the jit loop
PMAP_AXIS = "batch"  # pmap axis of the pmap loop

State = dict[str, Any]


# --------------------------------------------------------------------------
# Config checks: everything that can be wrong is reported before compiling.
# --------------------------------------------------------------------------


def _choice(what: str, value: str, valid) -> None:
  if value not in valid:
    raise ValueError(
        f"Unknown {what} {value!r}; valid {what}s are: {', '.join(sorted(valid))}."
    )


def validate_config(
    config: ml_collections.ConfigDict,
    *,
    num_devices: int,
    num_local_devices: int,
    process_count: int,
) -> None:
  """Raises ValueError for a config that cannot run, naming the field."""
  _choice("dataset", config.data.name, input_pipeline.SUPPORTED_DATASETS)
  _choice("model", config.model, tuple(models.MODELS))
  _choice("optimizer", config.optimizer, OPTIMIZERS)
  _choice("loop", config.loop, LOOPS)
  _choice("batch_norm mode", config.batch_norm, BATCH_NORM_MODES)
  _choice("lr_scaling rule", config.lr_scaling, LR_SCALING_RULES)
  if config.shard_params and config.loop != "jit":
    raise ValueError("config.shard_params=True needs config.loop='jit' "
                     "(pmap keeps a full copy of the state on every device).")
  for field in ("global_batch_size", "eval_batch_size"):
    size = config.get(field) or config.global_batch_size
    if size <= 0:
      raise ValueError(f"config.{field} must be positive, got {size}.")
    if size % num_devices:
      raise ValueError(
          f"config.{field}={size} is not divisible by the number of devices "
          f"({num_devices}); use a multiple of {num_devices}.")
    if size % (process_count * num_local_devices):
      raise ValueError(
          f"config.{field}={size} must split evenly over {process_count} "
          f"processes x {num_local_devices} local devices.")
  if config.num_epochs <= 0 and config.get("num_train_steps", 0) <= 0:
    raise ValueError("Set config.num_epochs > 0 or config.num_train_steps > 0.")
  if config.checkpoint_every_steps < 0 or config.log_every_steps <= 0:
    raise ValueError("config.checkpoint_every_steps must be >= 0 and "
                     "config.log_every_steps > 0.")
  group_size = config.get("batch_norm_group_size", 0)
  if group_size:
    if config.loop != "jit" or config.batch_norm != "global":
      raise ValueError("config.batch_norm_group_size needs config.loop='jit' "
                       "and config.batch_norm='global' (it sets the groups).")
    if config.global_batch_size % group_size:
      raise ValueError(
          f"config.global_batch_size={config.global_batch_size} is not a "
          f"multiple of config.batch_norm_group_size={group_size}.")


def check_batch_fits(config: ml_collections.ConfigDict, info) -> None:
  if config.global_batch_size > info.num_train:
    raise ValueError(
        f"config.global_batch_size={config.global_batch_size} is larger than "
        f"the {info.num_train} training examples of {info.name}; one epoch "
        f"would have no full batch.")


# --------------------------------------------------------------------------
# Learning rate, optimizer, model.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
  fn: optax.Schedule
  peak_learning_rate: float
  warmup_steps: int
  total_steps: int
  steps_per_epoch: int


def create_learning_rate_schedule(config, steps_per_epoch: int) -> Schedule:
  """Warm-up then polynomial decay, peak LR scaled from base_batch_size."""
  if config.lr_scaling == "none":
    peak = float(config.base_learning_rate)
  else:
    peak = float(lars_optax.scale_learning_rate(
        config.base_learning_rate, config.global_batch_size,
        base_batch_size=config.base_batch_size, rule=config.lr_scaling))
  total = int(config.get("num_train_steps", 0) or 0)
  if total <= 0:
    total = max(1, int(round(config.num_epochs * steps_per_epoch)))
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  # Optional: at least a fraction of the run and at least a number of steps.
  warmup = max(warmup, math.ceil(config.get("warmup_fraction", 0.0) * total),
               config.get("min_warmup_steps", 0))
  if warmup >= total:  # a run shorter than its warm-up (a smoke test)
    logging.warning("Warm-up of %d steps >= the run's %d steps: warming up "
                    "for %d steps instead.", warmup, total, total - 1)
    warmup = total - 1
  fn = lars_optax.warmup_polynomial_decay_schedule(
      peak, warmup, total, init_value=0.0,
      end_value=config.end_learning_rate, power=config.power)
  return Schedule(fn, peak, warmup, total, steps_per_epoch)


def create_optimizer(config, learning_rate: optax.ScalarOrSchedule
                     ) -> optax.GradientTransformation:
  """The optimizer named by ``config.optimizer``.

  ``config.exclude_bias_and_norm`` (default True) removes biases and BatchNorm
  parameters (every leaf with ndim <= 1) from weight decay and, for the LARS
  variants, from the trust-ratio adaptation, so they get the plain global LR.
  The paper adapts every layer; then a zero-initialised bias has trust ratio
  1, a step about 1/trust_coefficient larger than its neighbours' (see
  configs/default.py for what we measured). Set it False for the paper's rule.
  """
  mask = (lars_optax.exclude_bias_and_norm
          if config.exclude_bias_and_norm else None)
  if config.optimizer == "lars":
    return lars_optax.lars(
        learning_rate,
        weight_decay=config.weight_decay,
        momentum=config.momentum,
        nesterov=config.nesterov,
        trust_coefficient=config.lars.trust_coefficient,
        eps=config.lars.eps,
        formula=config.lars.formula,
        trust_clip=config.lars.trust_clip,
        weight_decay_mask=mask,
        trust_ratio_mask=mask,
    )
  if config.optimizer == "optax_lars":
    return optax.lars(
        learning_rate,
        weight_decay=config.weight_decay,
        weight_decay_mask=mask if mask is not None else True,
        trust_coefficient=config.lars.trust_coefficient,
        eps=config.lars.eps,
        trust_ratio_mask=mask if mask is not None else True,
        momentum=config.momentum,
        nesterov=config.nesterov,
    )
  if config.optimizer == "sgd":
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=mask),
        optax.sgd(learning_rate, momentum=config.momentum,
                  nesterov=config.nesterov),
    )
  raise ValueError(f"Unknown optimizer {config.optimizer!r}.")


def _model_factory(config, info, *, batch_norm_axis_name, batch_norm_groups):
  model_kwargs = config.get("model_kwargs") or {}
  if hasattr(model_kwargs, "to_dict"):
    model_kwargs = model_kwargs.to_dict()

  def make():
    return models.create_model(
        config.model, num_classes=info.num_classes,
        rngs=nnx.Rngs(config.seed),
        batch_norm_axis_name=batch_norm_axis_name,
        batch_norm_groups=batch_norm_groups,
        dtype=jnp.dtype(config.get("model_dtype", "float32")),
        image_shape=tuple(info.image_shape), **model_kwargs)
  return make


# --------------------------------------------------------------------------
# The step functions (shared by both loops).
# --------------------------------------------------------------------------


def flat_named(tree) -> dict[str, Any]:
  """{'stages/0/conv/kernel': leaf, ...}: the names lars_optax masks match."""
  return dict(zip(lars_optax.parameter_names(tree), jax.tree.leaves(tree)))


def _cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_train_step(graphdef, tx, schedule: optax.Schedule, *,
                    axis_name: str | None, pmean_batch_stats: bool,
                    trust_ratio_names=()):
  """(state, batch) -> (state, metrics); metrics are scalars, averaged over devices.

  ``trust_ratio_names``: the params whose LARS trust ratio goes into the
  metrics as ``trust_ratio/<name>`` (empty: none).
  """

  def loss_fn(params, batch_stats, batch):
    model = nnx.merge(graphdef, params, batch_stats, copy=True)
    logits = model(batch["image"])
    loss = jnp.mean(_cross_entropy(logits, batch["label"]))
    return loss, (logits, nnx.state(model, nnx.BatchStat))

  def train_step(state: State, batch) -> tuple[State, dict[str, jax.Array]]:
    params = state["params"]
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params, state["batch_stats"], batch)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
      loss, accuracy = jax.lax.pmean((loss, accuracy), axis_name)
      if pmean_batch_stats:  # per-device BN: average the running statistics
        batch_stats = jax.lax.pmean(batch_stats, axis_name)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)
    metrics = {
        "loss": loss,
        "accuracy": accuracy,
        "learning_rate": jnp.asarray(schedule(state["step"]), jnp.float32),
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
    }
    if trust_ratio_names:
      for name, ratio in lars_optax.trust_ratios_by_name(opt_state).items():
        if name in trust_ratio_names:
          metrics[f"trust_ratio/{name}"] = jnp.asarray(ratio, jnp.float32)
    new_state = dict(state, step=state["step"] + 1, params=params,
                     batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_eval_step(graphdef, *, axis_name: str | None):
  """(state, batch with mask) -> sums of loss, correct and count."""

  def eval_step(state: State, batch):
    model = nnx.merge(graphdef, state["params"], state["batch_stats"], copy=True)
    logits = model(batch["image"])
    mask = batch["mask"].astype(jnp.float32)
    sums = {
        "loss": jnp.sum(_cross_entropy(logits, batch["label"]) * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
        "count": jnp.sum(mask),
    }
    if axis_name is not None:
      sums = jax.lax.psum(sums, axis_name)
    return sums

  return eval_step


# --------------------------------------------------------------------------
# The two loops. Both keep a "canonical" state for checkpoints: global arrays
# on the mesh of all devices, laid out by `state_sharding`.
# --------------------------------------------------------------------------


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


class _Loop:
  """What both loops share: model, optimizer, shardings, initial state."""

  def __init__(self, config, info, schedule: Schedule, *, devices=None,
               batch_norm_groups: int | None = None):
    self.config = config
    self.info = info
    self.schedule = schedule
    self.mesh = make_mesh(devices)
    self.num_devices = self.mesh.devices.size
    self.tx = create_optimizer(config, schedule.fn)
    per_device = config.batch_norm == "per_device"
    if self.name == "jit":
      axis = None
      groups = self.num_devices if per_device else 1
    else:
      axis = None if per_device else PMAP_AXIS
      groups = 1
    if config.get("batch_norm_group_size", 0):
      groups = config.global_batch_size // config.batch_norm_group_size
    if batch_norm_groups is not None:
      groups = batch_norm_groups
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
    if config.log_trust_ratios and config.optimizer == "lars":
      self.trust_ratio_names = frozenset(
          name for name, x in flat_named(self.abstract_state["params"]).items()
          if x.ndim > 1 or not config.exclude_bias_and_norm)
    replicated = NamedSharding(self.mesh, P())
    if config.shard_params:
      self.state_sharding = jax.tree.map(
          lambda x: NamedSharding(self.mesh, _fsdp_spec(x.shape, self.num_devices)),
          self.abstract_state)
    else:
      self.state_sharding = jax.tree.map(lambda _: replicated, self.abstract_state)
    self.replicated = replicated

  name = ""

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


class JitLoop(_Loop):
  """jax.jit with the batch sharded over the mesh axis "data"."""

  name = "jit"

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.batch_sharding = NamedSharding(self.mesh, P(DATA_AXIS))
    step = make_train_step(self.train_graphdef, self.tx, self.schedule.fn,
                           axis_name=None, pmean_batch_stats=False,
                           trust_ratio_names=self.trust_ratio_names)
    self._train_step = jax.jit(
        step, in_shardings=(self.state_sharding, self.batch_sharding),
        out_shardings=(self.state_sharding, self.replicated), donate_argnums=0)
    self._eval_step = jax.jit(
        make_eval_step(self.eval_graphdef, axis_name=None),
        in_shardings=(self.state_sharding, self.batch_sharding),
        out_shardings=self.replicated)

  def to_loop(self, canonical: State) -> State:
    return canonical

  def to_canonical(self, state: State) -> State:
    return state

  def put_batch(self, local_batch: Mapping[str, np.ndarray]):
    def put(x):
      x = np.asarray(x)
      global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
      return jax.make_array_from_process_local_data(
          self.batch_sharding, x, global_shape)
    return {k: put(v) for k, v in local_batch.items()}

  def train_step(self, state, local_batch):
    return self._train_step(state, self.put_batch(local_batch))

  def eval_step(self, state, local_batch):
    return self._eval_step(state, self.put_batch(local_batch))

  def fetch(self, metrics):
    return {k: float(_replicated_value(v)) for k, v in metrics.items()}


class PmapLoop(_Loop):
  """jax.pmap over the local devices with lax.pmean of the gradients."""

  name = "pmap"

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    if self.num_devices != jax.device_count():
      raise ValueError("loop='pmap' runs on all devices; pass devices=None.")
    self.local_devices = jax.local_devices()
    per_device = self.config.batch_norm == "per_device"
    step = make_train_step(self.train_graphdef, self.tx, self.schedule.fn,
                           axis_name=PMAP_AXIS, pmean_batch_stats=per_device,
                           trust_ratio_names=self.trust_ratio_names)
    self._train_step = jax.pmap(step, axis_name=PMAP_AXIS, donate_argnums=0)
    self._eval_step = jax.pmap(
        make_eval_step(self.eval_graphdef, axis_name=PMAP_AXIS),
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

  def _shard(self, local_batch):
    n = len(self.local_devices)

    def split(x):
      x = np.asarray(x)
      return x.reshape((n, x.shape[0] // n) + x.shape[1:])
    return {k: split(v) for k, v in local_batch.items()}

  def train_step(self, state, local_batch):
    return self._train_step(state, self._shard(local_batch))

  def eval_step(self, state, local_batch):
    return self._eval_step(state, self._shard(local_batch))

  def fetch(self, metrics):
    return {k: float(_first_replica(v)) for k, v in metrics.items()}


def create_loop(config, info, schedule: Schedule, **kwargs) -> _Loop:
  cls = {"jit": JitLoop, "pmap": PmapLoop}[config.loop]
  return cls(config, info, schedule, **kwargs)


# --------------------------------------------------------------------------
# Host-side helpers.
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


def params_checksum(params) -> tuple[float, str]:
  """Sum of all parameters (float64) and sha256 of their bytes: fingerprints."""
  leaves = jax.tree.leaves(to_host(params))
  digest = hashlib.sha256()
  for x in leaves:
    digest.update(np.ascontiguousarray(x).tobytes())
  return float(sum(np.sum(x, dtype=np.float64) for x in leaves)), digest.hexdigest()


def _truncate_event_files(directory: str, keep: Callable[[int, str], bool]) -> None:
  """Rewrites TensorBoard event files, keeping the summaries keep(step, tag) accepts."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.isdir(directory):
    return
  for name in tf.io.gfile.listdir(directory):
    path = os.path.join(directory, name)
    if "tfevents" not in name or name.endswith(".tmp"):
      continue
    records = []
    try:
      for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        event = event_pb2.Event.FromString(raw)
        tags = [v.tag for v in event.summary.value]
        if not tags or all(keep(event.step, tag) for tag in tags):
          records.append(raw)
    except tf.errors.DataLossError:
      pass  # a record cut by a kill
    with tf.io.TFRecordWriter(path + ".tmp") as writer:
      for raw in records:
        writer.write(raw)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


class MetricsWriter:
  """metrics.jsonl (append-safe across resumes) and TensorBoard, on process 0."""

  def __init__(self, workdir: str, *, start_step: int, tensorboard: bool,
               enabled: bool, redo_eval_at_start: bool = False):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = None
    self._tb = None
    if not enabled:
      return

    def keep(step: int, kind: str) -> bool:  # what a killed run logged before the checkpoint
      return step < start_step or (step == start_step and not (
          redo_eval_at_start and kind in ("eval", "validation")))

    kept = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        for line in f:
          try:
            record = json.loads(line)
          except json.JSONDecodeError:
            continue  # a line cut by a kill
          if keep(record.get("step", 0), record.get("kind")):
            kept.append(line if line.endswith("\n") else line + "\n")
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)
    self._file = open(self.path, "a")
    if tensorboard:
      # tf.summary.write with the "scalars" plugin metadata: what
      # tf.summary.scalar writes, without needing the tensorboard package.
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
      self._tf = tf
      self._scalar_metadata = summary_pb2.SummaryMetadata()
      self._scalar_metadata.plugin_data.plugin_name = "scalars"
      tb_dir = os.path.join(workdir, "tensorboard")
      _truncate_event_files(tb_dir, lambda step, tag: keep(step, tag.split("/")[0]))
      self._tb = tf.summary.create_file_writer(tb_dir)

  def write(self, step: int, kind: str, values: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "kind": kind}
    record.update({k: float(v) for k, v in values.items()})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      with self._tb.as_default(step=int(step)):
        for key, value in values.items():
          self._tf.summary.write(
              f"{kind}/{key}", self._tf.constant(float(value), self._tf.float32),
              metadata=self._scalar_metadata)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()
      self._tb = None


def evaluate(loop: _Loop, state, config, info,
             subset: str = "eval") -> dict[str, float]:
  """Loss and accuracy on the eval split, or ``subset="validation"``."""
  batch_size = config.get("eval_batch_size") or config.global_batch_size
  totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
  for batch in input_pipeline.eval_iterator(
      config.data, info, batch_size=batch_size,
      process_index=jax.process_index(), process_count=jax.process_count(),
      subset=subset):
    sums = loop.fetch(loop.eval_step(state, batch))
    for k in totals:
      totals[k] += sums[k]
  count = max(totals["count"], 1.0)
  return {"loss": totals["loss"] / count, "accuracy": totals["correct"] / count,
          "num_examples": totals["count"]}


# --------------------------------------------------------------------------
# The job.
# --------------------------------------------------------------------------


def _checkpoint_manager(workdir: str, config):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.get("checkpoints_to_keep", 3), create=True,
      cleanup_tmp_directories=True)  # half-written saves of a killed run
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")), options=options)


def _save(manager, step: int, canonical: State) -> None:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager.save(step, args=ocp.args.StandardSave(canonical))


def _restore(manager, step: int, loop: _Loop) -> State:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return manager.restore(
      step, args=ocp.args.StandardRestore(loop.abstract_canonical_state()))


def eval_steps_by_epochs(every_epochs: float, num_train: int,
                         global_batch_size: int, total_steps: int) -> set[int]:
  """Steps in [1, total_steps) that first reach each multiple of ``every_epochs``.

  Epochs are counted in examples (``num_train`` examples each), so the
  evaluations fall at the same fractions of the data for every batch size.
  """
  steps_per_epoch = num_train / global_batch_size
  steps, k = set(), 1
  while (step := math.ceil(k * every_epochs * steps_per_epoch - 1e-9)) < total_steps:
    steps.add(max(step, 1))
    k += 1
  return steps


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> dict[str, Any]:
  """Trains and evaluates; resumes from workdir/checkpoints; returns final metrics."""
  start_time = time.time()
  validate_config(config, num_devices=jax.device_count(),
                  num_local_devices=jax.local_device_count(),
                  process_count=jax.process_count())
  info = input_pipeline.prepare(config.data)
  check_batch_fits(config, info)
  is_chief = jax.process_index() == 0
  if is_chief:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json(indent=2, sort_keys=True))

  steps_per_epoch = input_pipeline.steps_per_epoch(info, config.global_batch_size)
  schedule = create_learning_rate_schedule(config, steps_per_epoch)
  loop = create_loop(config, info, schedule)
  total_steps = schedule.total_steps
  logging.info(
      "%s: %d train / %d test examples; model %s; optimizer %s; loop %s on %d "
      "devices (%d processes); global batch %d; %d steps (%d per epoch); peak "
      "LR %.4g after %d warm-up steps.", info.name, info.num_train,
      info.num_test, config.model, config.optimizer, config.loop,
      jax.device_count(), jax.process_count(), config.global_batch_size,
      total_steps, steps_per_epoch, schedule.peak_learning_rate,
      schedule.warmup_steps)

  manager = _checkpoint_manager(workdir, config)
  latest = manager.latest_step()
  if latest is not None:
    canonical = _restore(manager, latest, loop)
    start_step = int(latest)
    logging.info("Resuming from the checkpoint of step %d.", start_step)
  else:
    canonical = loop.init_canonical_state()
    start_step = 0
  state = loop.to_loop(canonical)
  del canonical

  # A finished run that is started again evaluates again: replace that line.
  writer = MetricsWriter(workdir, start_step=start_step,
                         tensorboard=config.tensorboard, enabled=is_chief,
                         redo_eval_at_start=start_step >= total_steps)
  eval_every = config.eval_every_steps
  if eval_every < 0:  # -1: once per epoch
    eval_every = steps_per_epoch
  eval_steps = None  # optional: by epochs of examples instead
  if config.get("eval_every_epochs", 0) > 0:
    eval_steps = eval_steps_by_epochs(config.eval_every_epochs, info.num_train,
                                      config.global_batch_size, total_steps)
  # With a validation holdout, the periodic evaluations use it.
  periodic = "validation" if info.num_validation else "eval"
  checkpoint_every = config.checkpoint_every_steps
  log_every = config.log_every_steps
  batch_examples = config.global_batch_size

  import tqdm  # pylint: disable=g-import-not-at-top
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit="step",
                       disable=not (is_chief and config.progress_bar),
                       dynamic_ncols=True, desc="train")
  train_iter: Iterator = input_pipeline.train_iterator(
      config.data, info, global_batch_size=config.global_batch_size,
      seed=config.seed, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())

  last_train: dict[str, float] = {}
  last_eval: dict[str, float] = {}
  last_validation: dict[str, float] | None = None
  timing = {"first_step_done": None, "steps_timed": 0, "last_time": None}

  def handle(step: int, device_metrics) -> None:
    """Fetch one step's metrics: NaN check, logging, progress bar."""
    values = loop.fetch(device_metrics)
    for key in ("loss", "grad_norm", "param_norm"):
      if not math.isfinite(values[key]):
        manager.wait_until_finished()
        good = manager.latest_step()
        raise FloatingPointError(
            f"Non-finite {key} ({values[key]}) at step {step}: training stopped."
            f" The last good checkpoint (step {good}) is kept in "
            f"{os.path.join(workdir, 'checkpoints')}; the bad state was not "
            f"saved. Lower the learning rate or check the data.")
    now = time.time()
    if timing["last_time"] is None:
      timing["first_step_done"] = now
    else:
      timing["steps_timed"] += 1
    timing["last_time"] = now
    if timing["steps_timed"]:
      values["examples_per_sec"] = (
          timing["steps_timed"] * batch_examples
          / max(now - timing["first_step_done"], 1e-9))
    last_train.clear()
    last_train.update(values)
    if step % log_every == 0 or step == total_steps:
      writer.write(step, "train", values)
    progress.update(1)
    postfix = {"loss": f"{values['loss']:.4f}"}
    if "examples_per_sec" in values:
      postfix["ex/s"] = f"{values['examples_per_sec']:.0f}"
    progress.set_postfix(postfix, refresh=False)

  try:
    pending = None
    for step in range(start_step + 1, total_steps + 1):
      batch = next(train_iter)
      state, metrics = loop.train_step(state, batch)
      if pending is not None:  # fetch the previous step while this one runs
        handle(*pending)
      pending = (step, metrics)
      do_checkpoint = checkpoint_every and step % checkpoint_every == 0
      if eval_steps is None:
        do_eval = eval_every and step % eval_every == 0
      else:
        do_eval = step in eval_steps
      if do_checkpoint or do_eval or step == total_steps:
        handle(*pending)
        pending = None
      # Evaluate before saving: a run killed after the checkpoint of `step`
      # has logged everything up to `step`, so the resumed run logs no gaps.
      if do_eval and step != total_steps:
        last_eval = evaluate(loop, state, config, info, periodic)
        writer.write(step, periodic, last_eval)
      if do_checkpoint or step == total_steps:
        _save(manager, step, loop.to_canonical(state))
    if pending is not None:
      handle(*pending)
    progress.close()
    manager.wait_until_finished()
    if start_step == total_steps and latest is not None:
      logging.info("Checkpoint of step %d is the final step; evaluating only.",
                   total_steps)
    if info.num_validation:
      last_validation = evaluate(loop, state, config, info, "validation")
      writer.write(total_steps, "validation", last_validation)
    last_eval = evaluate(loop, state, config, info)
    writer.write(total_steps, "eval", last_eval)
  finally:
    progress.close()
    writer.close()
    manager.wait_until_finished()
    manager.close()

  canonical = loop.to_canonical(state)
  train_time = ((timing["last_time"] - timing["first_step_done"])
                if timing["steps_timed"] else 0.0)
  checksum, sha256 = params_checksum(canonical["params"])
  final = {
      "step": total_steps,
      "dataset": info.name,
      "model": config.model,
      "optimizer": config.optimizer,
      "loop": config.loop,
      "batch_norm": config.batch_norm,
      "global_batch_size": config.global_batch_size,
      "peak_learning_rate": schedule.peak_learning_rate,
      "num_devices": jax.device_count(),
      "num_processes": jax.process_count(),
      "train_loss": last_train.get("loss", float("nan")),
      "train_accuracy": last_train.get("accuracy", float("nan")),
      "test_loss": last_eval["loss"],
      "test_accuracy": last_eval["accuracy"],
      "params_checksum": checksum,
      "params_sha256": sha256,
      "resumed_from_step": start_step,
      "examples_per_sec": (timing["steps_timed"] * batch_examples / train_time
                           if train_time > 0 else float("nan")),
      "wall_time_s": time.time() - start_time,
  }
  if last_validation is not None:
    final["val_loss"] = last_validation["loss"]
    final["val_accuracy"] = last_validation["accuracy"]
  if is_chief:
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump(final, f, indent=2)
    if config.plot:
      from experiments import plotting  # pylint: disable=g-import-not-at-top
      plotting.plot_training_curves(
          os.path.join(workdir, "metrics.jsonl"),
          os.path.join(workdir, "training_curves.png"),
          title=f"{config.model} on {info.name}, {config.optimizer}, "
                f"batch {config.global_batch_size}")
  logging.info("Final metrics: %s", final)
  return final
