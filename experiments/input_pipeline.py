"""Input pipeline: batches of a prepared dataset, read by our own index sampler.

``datasets.prepare`` builds the dataset (tfds, ``array_record`` files) and
describes it; this module reads it. ``tfds.data_source`` gives random access to
any record, and on top of it sits a small index sampler of our own:

* the order of epoch ``e`` is a permutation drawn from ``(seed, e)``;
* the global batch of step ``s`` is ``perm[k*B:(k+1)*B]`` with
  ``e, k = divmod(s, steps_per_epoch)`` (the remainder of an epoch is dropped);
* process ``p`` of ``P`` takes the contiguous slice ``[p*B/P:(p+1)*B/P]`` of that
  global batch and decodes only those records (``data_source.__getitems__``);
* the augmentation of the example at global position ``j`` of step ``s`` uses
  random numbers that depend on ``(seed, s, j)`` only (``transforms.py``).

We chose this over ``tf.data`` and over grain's per-process shards because the
global batch of a step is then the same for *any* process count: one process
with 8 devices and two processes with 4 each see bit-identical batches, and a run
resumed at ``start_step`` continues with exactly the batches of an uninterrupted
run (nothing to checkpoint but the step). ``tf.data``'s shuffle buffer and
grain's ``ShardByJaxProcess`` both make the order depend on the number of
processes. Each process still reads only its own records, which is what matters
for multi-host input bandwidth.

With ``cache=True`` a split is decoded into memory once per Python process
(a module-level cache shared by ``train_iterator`` and ``eval_iterator``) and
every later batch is a NumPy gather; this is the fast path for MNIST-sized data.
The next batch is prepared on one background thread (``prefetch`` batches ahead).
The data config's fields are listed in ``datasets.py``.

Validation holdout
------------------
With ``validation_holdout=n > 0`` a fixed set of ``n`` examples of the train
split, drawn by ``holdout_indices(len(train split), n, validation_seed)``, is
set aside: ``train_iterator`` never yields them (``info.num_train`` counts
the rest) and ``eval_iterator(..., subset="validation")`` yields exactly them,
in index order. ``subset="eval"`` (the default) reads ``eval_split``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from experiments import datasets
from experiments import transforms
from experiments.datasets import DatasetInfo
from experiments.user_errors import ConfigError

__all__ = [
    "holdout_indices",
    "train_iterator",
    "eval_iterator",
    "steps_per_epoch",
]

# Salts that keep the random streams of the sampler and augmentation apart.
_PERMUTATION_STREAM = 0
_AUGMENT_STREAM = 1
_HOLDOUT_STREAM = 2


def holdout_indices(num_examples: int, holdout: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, validation) indices, sorted: a fixed split of ``range(num_examples)``.

  ``holdout`` indices drawn without replacement from a stream of ``seed`` alone,
  so the validation set is the same for every training seed and every run.
  """
  rng = np.random.default_rng([*_seed_words(seed), _HOLDOUT_STREAM])
  order = rng.permutation(num_examples)
  return np.sort(order[holdout:]), np.sort(order[:holdout])


# ----------------------------------------------------------------------------
# Reading records.


def _read_records(source, indices: Sequence[int]) -> list[dict]:
  indices = [int(i) for i in indices]
  if not indices:
    return []
  return source.__getitems__(indices)


class _Split:
  """Random access to one split: uint8 images (list or array) and int32 labels."""

  def __init__(self, source, images=None, labels=None):
    self._source = source
    self._images = images
    self._labels = labels

  def __len__(self) -> int:
    return len(self._source) if self._labels is None else len(self._labels)

  @property
  def cached(self) -> bool:
    return self._labels is not None

  def read(self, indices: np.ndarray):
    if self._labels is not None:
      return self._images[indices], self._labels[indices]
    records = _read_records(self._source, indices)
    images = [np.asarray(r["image"]) for r in records]
    labels = np.asarray([r["label"] for r in records], np.int32)
    return images, labels


class _Subset:
  """The examples ``indices`` of a split, renumbered 0..len(indices)-1."""

  def __init__(self, split: _Split, indices: np.ndarray):
    self._split = split
    self._indices = np.asarray(indices)

  def __len__(self) -> int:
    return len(self._indices)

  @property
  def cached(self) -> bool:
    return self._split.cached

  def read(self, indices: np.ndarray):
    return self._split.read(self._indices[np.asarray(indices)])


def _train_part(split: _Split, config: Any, part: str):
  """The training ("train") or held-out ("validation") part of the train split."""
  holdout = datasets.validation_holdout(config, len(split))
  if not holdout:
    return split
  seed = int(datasets.field(config, "validation_seed", 0))
  train, validation = holdout_indices(len(split), holdout, seed)
  return _Subset(split, train if part == "train" else validation)


_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_ENTRIES = 4
_DECODE_CHUNK = 4096


def _open_split(name: str, config: Any, split: str) -> _Split:
  """One split of the dataset; with ``cache``, decoded once and kept in memory."""
  builder = datasets.builder(name, config)
  source = datasets.source(builder, split)
  if not datasets.use_cache(config, name):
    return _Split(source)
  key = (name, str(builder.data_dir), split, len(source))
  with _CACHE_LOCK:
    if key in _CACHE:
      _CACHE.move_to_end(key)
      return _CACHE[key]
    images, labels = [], []
    for start in range(0, len(source), _DECODE_CHUNK):
      records = _read_records(source, range(start, min(start + _DECODE_CHUNK,
                                                       len(source))))
      images.extend(np.asarray(r["image"]) for r in records)
      labels.extend(int(r["label"]) for r in records)
    if images:
      images = np.stack(images)
    else:
      images = np.zeros((0, *datasets.RECIPES[name].image_shape), np.uint8)
    labels = np.asarray(labels, np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    split_data = _Split(source, images, labels)
    _CACHE[key] = split_data
    while len(_CACHE) > _CACHE_ENTRIES:
      _CACHE.popitem(last=False)
    return split_data


# ----------------------------------------------------------------------------
# The sampler and the iterators.


def _seed_words(seed: int) -> list[int]:
  seed = int(seed) % 2**64
  return [seed & 0xFFFFFFFF, seed >> 32]


def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  rng = np.random.default_rng([*_seed_words(seed), _PERMUTATION_STREAM, epoch])
  return rng.permutation(num_examples)


def _step_uniforms(seed: int, step: int, global_batch_size: int, k: int) -> np.ndarray:
  """[B, k] uniforms; row j depends only on (seed, step, j)."""
  rng = np.random.default_rng([*_seed_words(seed), _AUGMENT_STREAM, step])
  return rng.random((global_batch_size, k))


_READ_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_READ_POOL_LOCK = threading.Lock()


def _read_threads(config: Any) -> int:
  return max(1, int(datasets.field(config, "read_threads", min(8, os.cpu_count() or 1))))


def _read_pool() -> concurrent.futures.ThreadPoolExecutor:
  global _READ_POOL
  with _READ_POOL_LOCK:
    if _READ_POOL is None:
      _READ_POOL = concurrent.futures.ThreadPoolExecutor(
          max_workers=min(8, os.cpu_count() or 1),
          thread_name_prefix="input_pipeline_read")
    return _READ_POOL


def _read_and_transform(split: _Split, name: str, indices: np.ndarray,
                        uniforms: np.ndarray | None, image_shape, threads: int):
  """Reads and transforms records; uncached reads are split over threads.

  JPEG/PNG decoding and PIL resizing release the GIL, so threads help on the
  uncached path. The result does not depend on ``threads``.
  """
  def work(part):
    images, labels = split.read(indices[part])
    part_uniforms = None if uniforms is None else uniforms[part]
    return transforms.transform(name, images, part_uniforms, image_shape), labels

  if split.cached or threads <= 1 or len(indices) < 2 * threads:
    images, labels = work(slice(None))
  else:
    bounds = np.linspace(0, len(indices), threads + 1).astype(int)
    parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    results = list(_read_pool().map(work, parts))
    images = np.concatenate([r[0] for r in results])
    labels = np.concatenate([r[1] for r in results])
  return images, np.asarray(labels, np.int32)


def steps_per_epoch(info: DatasetInfo, global_batch_size: int) -> int:
  """Number of full global batches in one epoch of the train split."""
  if global_batch_size <= 0:
    raise ConfigError(f"global_batch_size must be positive, got {global_batch_size}.")
  if global_batch_size > info.num_train:
    raise ConfigError(
        f"global_batch_size={global_batch_size} is larger than the "
        f"{info.num_train} training examples of {info.name}; one epoch would "
        "have no full batch.")
  return info.num_train // global_batch_size


def _process_slice(batch_size: int, process_index: int, process_count: int,
                   what: str) -> tuple[int, int]:
  if process_count <= 0 or not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index={process_index} must be in [0, process_count="
        f"{process_count}).")
  if batch_size % process_count:
    raise ValueError(
        f"The {what} {batch_size} is not divisible by the process count "
        f"{process_count}.")
  per_process = batch_size // process_count
  return process_index * per_process, (process_index + 1) * per_process


def _prefetched(make_batch: Callable[[int], dict], steps: Iterator[int],
                prefetch: int) -> Iterator[dict]:
  """Yields make_batch(s) for s in steps, computing up to `prefetch` ahead."""
  if prefetch <= 0:
    for step in steps:
      yield make_batch(step)
    return
  executor = concurrent.futures.ThreadPoolExecutor(
      max_workers=1, thread_name_prefix="input_pipeline")
  pending = collections.deque()
  try:
    for step in steps:
      pending.append(executor.submit(make_batch, step))
      if len(pending) > prefetch:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
  finally:
    # A generator left open is closed at garbage collection; at interpreter
    # exit the executor's module may already be torn down.
    if not sys.is_finalizing():
      executor.shutdown(wait=False, cancel_futures=True)


def train_iterator(data_config: Any, info: DatasetInfo, *, global_batch_size: int,
                   seed: int, start_step: int = 0, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Endless training batches of this process, starting at ``start_step``.

  The batch of step ``s`` is a function of ``(seed, s)`` only (see the module
  docstring); this process gets rows ``[p*B/P:(p+1)*B/P]`` of it and reads only
  those records. The split is opened (and, with ``cache``, decoded) when this
  function is called, not at the first ``next``.

  Args:
    data_config: the data config.
    info: from ``prepare(data_config)``.
    global_batch_size: B, the batch over all processes.
    seed: seeds the epoch orders and the augmentation.
    start_step: first step to yield (resume).
    process_index: p.
    process_count: P; must divide B.

  Yields:
    ``{"image": float32 [B/P, H, W, C], "label": int32 [B/P]}``.
  """
  name = datasets.dataset_name(data_config)
  if name != info.name:
    raise ValueError(f"info is for {info.name!r} but data_config.name is {name!r}.")
  per_epoch = steps_per_epoch(info, global_batch_size)
  lo, hi = _process_slice(global_batch_size, process_index, process_count,
                          "global batch size")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  train_split, _ = datasets.splits(data_config, name)
  split = _train_part(_open_split(name, data_config, train_split), data_config,
                      "train")
  if len(split) != info.num_train:
    raise ValueError(f"{name} {train_split} has {len(split)} examples, info "
                     f"says {info.num_train}: call prepare() again.")
  augment = bool(datasets.field(data_config, "augment", True))
  num_uniforms = transforms.num_uniforms(name) if augment else 0
  image_shape = info.image_shape
  permutation_cache: dict[int, np.ndarray] = {}
  lock = threading.Lock()

  def permutation(epoch):
    with lock:
      if epoch not in permutation_cache:
        permutation_cache.clear()
        permutation_cache[epoch] = _epoch_permutation(seed, epoch, info.num_train)
      return permutation_cache[epoch]

  read_threads = _read_threads(data_config)

  def make_batch(step: int) -> dict[str, np.ndarray]:
    epoch, k = divmod(step, per_epoch)
    indices = permutation(epoch)[k * global_batch_size:(k + 1) * global_batch_size]
    uniforms = None
    if num_uniforms:
      uniforms = _step_uniforms(seed, step, global_batch_size, num_uniforms)[lo:hi]
    images, labels = _read_and_transform(split, name, indices[lo:hi], uniforms,
                                         image_shape, read_threads)
    return {"image": images, "label": labels}

  prefetch = int(datasets.field(data_config, "prefetch", 1))
  return _prefetched(make_batch, _count_from(start_step), prefetch)


def _count_from(start: int) -> Iterator[int]:
  step = start
  while True:
    yield step
    step += 1


def eval_iterator(data_config: Any, info: DatasetInfo, *, batch_size: int,
                  process_index: int = 0, process_count: int = 1,
                  subset: str = "eval") -> Iterator[dict[str, np.ndarray]]:
  """Every eval example exactly once, in order, padded to full batches.

  ``subset``: ``"eval"`` reads ``eval_split``; ``"validation"`` the examples
  held out of the train split (``validation_holdout`` must be > 0);
  ``"train"`` the examples trained on, without augmentation.

  Batch ``b`` covers global positions ``[b*B, (b+1)*B)``; positions past the end
  are padding (zero image, label 0, mask 0). This process gets rows
  ``[p*B/P:(p+1)*B/P]`` and reads only its real records. Every process yields
  ``ceil(num_test / B)`` batches.

  Yields:
    ``{"image": float32 [B/P, H, W, C], "label": int32 [B/P],
    "mask": float32 [B/P]}`` (mask 1 for real examples, 0 for padding).
  """
  name = datasets.dataset_name(data_config)
  if name != info.name:
    raise ValueError(f"info is for {info.name!r} but data_config.name is {name!r}.")
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  lo, hi = _process_slice(batch_size, process_index, process_count,
                          "eval batch size")
  train_split, eval_split = datasets.splits(data_config, name)
  if subset == "eval":
    split = _open_split(name, data_config, eval_split)
  elif subset in ("train", "validation"):
    if subset == "validation" and not info.num_validation:
      raise ValueError("subset='validation' needs data.validation_holdout > 0.")
    split = _train_part(_open_split(name, data_config, train_split),
                        data_config, subset)
  else:
    raise ValueError(
        f"Unknown subset {subset!r}; use 'eval', 'train' or 'validation'.")
  num_examples = len(split)
  image_shape = info.image_shape
  read_threads = _read_threads(data_config)

  def make_batch(batch: int) -> dict[str, np.ndarray]:
    positions = np.arange(batch * batch_size + lo, batch * batch_size + hi)
    valid = positions < num_examples
    n = int(valid.sum())  # Valid positions come first.
    images = np.zeros((hi - lo, *image_shape), np.float32)
    labels = np.zeros((hi - lo,), np.int32)
    if n:
      images[:n], labels[:n] = _read_and_transform(
          split, name, positions[:n], None, image_shape, read_threads)
    return {"image": images, "label": labels, "mask": valid.astype(np.float32)}

  num_batches = -(-num_examples // batch_size)
  prefetch = int(datasets.field(data_config, "prefetch", 1))
  return _prefetched(make_batch, iter(range(num_batches)), prefetch)
