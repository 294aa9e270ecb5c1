"""Input pipeline: batches of a prepared dataset, in our own order, loaded by grain.

``preparation.prepare`` builds the dataset (tfds, ``array_record`` files);
this module reads it through ``tfds.data_source``. The global batch of step
``s`` is drawn from ``(seed, s)`` by our own index sampler, so it is the same
for any process count and after a resume; each process reads and decodes only
its slice of it. grain loads the rows: a ``grain.MapDataset`` over steps,
``read_threads`` threads, ``prefetch`` batches ahead, and with
``worker_processes > 0`` that many worker processes; a worker that dies raises
``RuntimeError``. With ``cache=True`` a split is decoded into memory (see
``open_split``); with ``validation_holdout=n > 0``, ``n`` fixed train examples
(``holdout_indices``) make the ``"validation"`` subset of ``eval_iterator``.
The sampler's rule and why: docs/training.md, "Input"; the data config's
fields: ``datasets.py``.
"""

from __future__ import annotations

import collections
import itertools
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from experiments.data import preparation
from experiments.data import transforms
from experiments.data.datasets import DataConfig
from experiments.data.preparation import DatasetInfo
from experiments.user_errors import ConfigError

# Salts that keep the random streams of the sampler and augmentation apart.
_PERMUTATION_STREAM = 0
_AUGMENT_STREAM = 1
_HOLDOUT_STREAM = 2
# Uncached data is loaded in pieces of at most this many rows of a batch, so
# that worker processes share the work of one step and hold little memory.
_ROWS_PER_PIECE = 64
_DECODE_CHUNK = 4096


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
# Records.


class Records:
  """Random access to examples: ``read(indices) -> (images, int32 labels)``.

  Either decoded in memory (``images`` and ``labels`` arrays) or read from
  ``source`` at each call: anything with ``len()`` and ``__getitems__(list of
  int) -> list of {"image", "label"}`` (a tfds data source). Images are uint8
  arrays, or JPEG bytes for the JPEG recipes. ``subset(indices)`` is the part
  ``indices`` of these records, numbered from 0.
  """

  def __init__(self, source=None, images: np.ndarray | None = None,
               labels: np.ndarray | None = None, indices: np.ndarray | None = None):
    self._source, self._images, self._labels = source, images, labels
    self._indices = None if indices is None else np.asarray(indices)

  def __len__(self) -> int:
    if self._indices is not None:
      return len(self._indices)
    return len(self._source) if self._labels is None else len(self._labels)

  @property
  def cached(self) -> bool:
    return self._labels is not None

  def subset(self, indices: np.ndarray) -> Records:
    indices = np.asarray(indices)
    if self._indices is not None:
      indices = self._indices[indices]
    return Records(self._source, self._images, self._labels, indices)

  def read(self, indices: np.ndarray) -> tuple[Any, np.ndarray]:
    indices = np.asarray(indices)
    if self._indices is not None:
      indices = self._indices[indices]
    if self.cached:
      return self._images[indices], self._labels[indices]
    records = self._source.__getitems__([int(i) for i in indices]) if len(indices) else []
    images = [r["image"] if isinstance(r["image"], bytes) else np.asarray(r["image"])
              for r in records]
    return images, np.asarray([r["label"] for r in records], np.int32)


# Decoding a split is slow (Fashion-MNIST's 60k PNG records: about 10 s on one
# core), longer than a study run trains, and the study runs many runs in one
# Python process: the last few decoded splits are kept here, read-only.
_DECODED: collections.OrderedDict[tuple, Records] = collections.OrderedDict()
_DECODED_SPLITS = 4


def open_split(config: DataConfig, split: str) -> Records:
  """The records of a tfds ``split``; with ``config.cache``, decoded in memory."""
  dataset_builder = preparation.builder(config)
  source = preparation.source(dataset_builder, split, jpeg=config.recipe.jpeg)
  if not config.cache:
    return Records(source)
  key = (config.name, str(dataset_builder.data_dir), split, len(source))
  if key in _DECODED:
    _DECODED.move_to_end(key)
    return _DECODED[key]
  images, labels = [], []
  for start in range(0, len(source), _DECODE_CHUNK):
    chunk = Records(source).read(np.arange(start, min(start + _DECODE_CHUNK,
                                                      len(source))))
    images.extend(chunk[0])
    labels.append(chunk[1])
  images = (np.stack(images) if images
            else np.zeros((0, *config.recipe.image_shape), np.uint8))
  labels = np.concatenate(labels) if labels else np.zeros((0,), np.int32)
  images.flags.writeable = False
  labels.flags.writeable = False
  _DECODED[key] = Records(images=images, labels=labels)
  while len(_DECODED) > _DECODED_SPLITS:
    _DECODED.popitem(last=False)
  return _DECODED[key]


def _train_part(records: Records, config: DataConfig, part: str) -> Records:
  """The training ("train") or held-out ("validation") part of the train split."""
  if not config.validation_holdout:
    return records
  train, validation = holdout_indices(len(records), config.validation_holdout,
                                      config.validation_seed)
  return records.subset(train if part == "train" else validation)


# ----------------------------------------------------------------------------
# The sampler.


def _seed_words(seed: int) -> list[int]:
  seed = int(seed) % 2**64
  return [seed & 0xFFFFFFFF, seed >> 32]


def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  rng = np.random.default_rng([*_seed_words(seed), _PERMUTATION_STREAM, epoch])
  return rng.permutation(num_examples)


def _step_uniforms(seed: int, step: int, rows: range, k: int) -> np.ndarray:
  """Rows ``rows`` of the step's [B, k] uniforms; row j depends on (seed, step, j).

  The stream draws one 64-bit number per uniform, row after row, so rows
  ``a:b`` are the numbers after the first ``a*k``: ``advance`` skips to them.
  """
  rng = np.random.default_rng([*_seed_words(seed), _AUGMENT_STREAM, step])
  rng.bit_generator.advance(rows.start * k)
  return rng.random((len(rows), k))


def steps_per_epoch(info: DatasetInfo, global_batch_size: int) -> int:
  """Number of full global batches in one epoch of the train split."""
  return _steps_per_epoch(info.num_train, global_batch_size, info.name)


def _steps_per_epoch(num_train: int, global_batch_size: int, name: str) -> int:
  if global_batch_size <= 0:
    raise ConfigError(f"global_batch_size must be positive, got {global_batch_size}.")
  if global_batch_size > num_train:
    raise ConfigError(
        f"global_batch_size={global_batch_size} is larger than the "
        f"{num_train} training examples of {name}; one epoch would "
        "have no full batch.")
  return num_train // global_batch_size


def _process_rows(batch_size: int, process_index: int, process_count: int,
                  what: str) -> range:
  if process_count <= 0 or not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index={process_index} must be in [0, process_count="
        f"{process_count}).")
  if batch_size % process_count:
    raise ValueError(
        f"The {what} {batch_size} is not divisible by the process count "
        f"{process_count}.")
  per_process = batch_size // process_count
  return range(process_index * per_process, (process_index + 1) * per_process)


def _pieces(rows: range, cached: bool) -> list[range]:
  """This process's rows of a batch, cut into the pieces that grain loads."""
  size = len(rows) if cached else min(len(rows), _ROWS_PER_PIECE)
  return [range(start, min(start + size, rows.stop))
          for start in range(rows.start, rows.stop, max(size, 1))]


class _TrainPiece:
  """grain element ``i`` -> piece ``i % len(pieces)`` of step ``i // len(pieces)``."""

  def __init__(self, records: Records, config: DataConfig, *,
               global_batch_size: int, seed: int, pieces: Sequence[range]):
    self.records, self.config, self.seed = records, config, seed
    self.global_batch_size, self.pieces = global_batch_size, list(pieces)
    self.steps_per_epoch = _steps_per_epoch(len(records), global_batch_size,
                                            config.name)
    self.num_uniforms = transforms.num_uniforms(config)
    self._permutation: tuple[int, np.ndarray] | None = None
    self._lock = threading.Lock()

  def __getstate__(self):  # for worker processes: no lock, no cached permutation
    return {k: v for k, v in self.__dict__.items()
            if k not in ("_permutation", "_lock")}

  def __setstate__(self, state):
    self.__dict__.update(state, _permutation=None, _lock=threading.Lock())

  def permutation(self, epoch: int) -> np.ndarray:
    with self._lock:  # one epoch's order, kept while the epoch lasts
      if self._permutation is None or self._permutation[0] != epoch:
        self._permutation = (epoch, _epoch_permutation(self.seed, epoch,
                                                       len(self.records)))
      return self._permutation[1]

  def __call__(self, element: int) -> dict[str, np.ndarray]:
    step, piece = divmod(int(element), len(self.pieces))
    epoch, k = divmod(step, self.steps_per_epoch)
    rows = self.pieces[piece]
    first = k * self.global_batch_size
    indices = self.permutation(epoch)[first + rows.start:first + rows.stop]
    uniforms = None
    if self.num_uniforms:
      uniforms = _step_uniforms(self.seed, step, rows, self.num_uniforms)
    images, labels = self.records.read(indices)
    return {"image": transforms.transform(self.config, images, uniforms),
            "label": labels}


class _EvalPiece:
  """grain element ``i`` -> piece ``i % len(pieces)`` of eval batch ``i // len(pieces)``."""

  def __init__(self, records: Records, config: DataConfig, *, batch_size: int,
               pieces: Sequence[range]):
    self.records, self.config = records, config
    self.batch_size, self.pieces = batch_size, list(pieces)

  def __call__(self, element: int) -> dict[str, np.ndarray]:
    batch, piece = divmod(int(element), len(self.pieces))
    rows = self.pieces[piece]
    positions = np.arange(batch * self.batch_size + rows.start,
                          batch * self.batch_size + rows.stop)
    valid = positions < len(self.records)
    n = int(valid.sum())  # Valid positions come first.
    images = np.zeros((len(rows), *self.config.image_shape), np.float32)
    labels = np.zeros((len(rows),), np.int32)
    if n:
      raw, labels[:n] = self.records.read(positions[:n])
      images[:n] = transforms.transform(self.config, raw, None)
    return {"image": images, "label": labels, "mask": valid.astype(np.float32)}


# ----------------------------------------------------------------------------
# Loading with grain, and the iterators.


def load(dataset: grain.MapDataset, config: DataConfig, *,
         elements_per_batch: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Iterates a ``grain.MapDataset`` of dicts of arrays as the config says.

  ``config.read_threads`` threads prepare elements, ``config.prefetch``
  batches ahead; with ``config.worker_processes > 0`` they run in that many
  worker processes (a worker that dies raises ``RuntimeError``). Every
  ``elements_per_batch`` consecutive elements are concatenated into one batch.
  """
  if config.prefetch:
    options = grain.ReadOptions(
        num_threads=config.read_threads,
        prefetch_buffer_size=max(config.prefetch * elements_per_batch,
                                 config.read_threads))
  else:  # each element is made when it is asked for
    options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
  iter_dataset = dataset.to_iter_dataset(options)
  if config.worker_processes:
    _let_grain_read_its_flags()
    iter_dataset = iter_dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=config.worker_processes))
  return _concatenated(iter(iter_dataset), elements_per_batch)


def _let_grain_read_its_flags() -> None:
  # grain 0.2.18 reads an absl flag when it starts workers, which fails
  # outside an absl app (google/grain#1355, fixed after that release).
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _concatenated(iterator, n: int) -> Iterator[dict[str, np.ndarray]]:
  try:
    while parts := list(itertools.islice(iterator, n)):
      yield parts[0] if n == 1 else {
          key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
  finally:
    # A generator left open is closed at garbage collection; at interpreter
    # exit grain's own finalizers stop its workers.
    if not sys.is_finalizing():
      iterator.close()


def train_batches(records: Records, config: DataConfig, *, global_batch_size: int,
                  seed: int, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Endless training batches of ``records`` for this process, from ``start_step``.

  The batch of step ``s`` is a function of ``(seed, s)`` only (see the module
  docstring); this process gets rows ``[p*B/P:(p+1)*B/P]`` of it.
  """
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  rows = _process_rows(global_batch_size, process_index, process_count,
                       "global batch size")
  pieces = _pieces(rows, records.cached)
  make_piece = _TrainPiece(records, config, global_batch_size=global_batch_size,
                           seed=seed, pieces=pieces)
  elements = grain.MapDataset.range(start_step * len(pieces), sys.maxsize)
  return load(elements.map(make_piece), config, elements_per_batch=len(pieces))


def train_iterator(config: DataConfig, info: DatasetInfo, *, global_batch_size: int,
                   seed: int, start_step: int = 0, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Endless training batches of process p of P, from ``start_step`` (resume).

  ``info`` comes from ``preparation.prepare(config)``; P must divide the global
  batch B. The split is opened (and, with ``cache``, decoded) at this call, not
  at the first ``next``. Yields ``{"image": float32 [B/P, H, W, C], "label":
  int32 [B/P]}``.
  """
  _check_info(config, info)
  steps_per_epoch(info, global_batch_size)
  _process_rows(global_batch_size, process_index, process_count,
                "global batch size")
  records = _train_part(open_split(config, config.train_split), config, "train")
  if len(records) != info.num_train:
    raise ValueError(f"{config.name} {config.train_split} has {len(records)} "
                     f"examples, info says {info.num_train}: call prepare() again.")
  return train_batches(records, config, global_batch_size=global_batch_size,
                       seed=seed, start_step=start_step,
                       process_index=process_index, process_count=process_count)


def eval_iterator(config: DataConfig, info: DatasetInfo, *, batch_size: int,
                  process_index: int = 0, process_count: int = 1,
                  subset: str = "eval") -> Iterator[dict[str, np.ndarray]]:
  """Every eval example exactly once, in order, padded to full batches.

  ``subset``: ``"eval"`` reads ``eval_split``; ``"validation"`` the examples
  held out of the train split (``validation_holdout`` must be > 0);
  ``"train"`` the examples trained on, without augmentation.

  Batch ``b`` covers global positions ``[b*B, (b+1)*B)``; positions past the end
  are padding (zero image, label 0, mask 0). This process gets rows
  ``[p*B/P:(p+1)*B/P]`` and reads only its real records. Every process yields
  ``ceil(num_examples / B)`` batches.

  Yields:
    ``{"image": float32 [B/P, H, W, C], "label": int32 [B/P],
    "mask": float32 [B/P]}`` (mask 1 for real examples, 0 for padding).
  """
  _check_info(config, info)
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  rows = _process_rows(batch_size, process_index, process_count, "eval batch size")
  if subset == "eval":
    records = open_split(config, config.eval_split)
  elif subset in ("train", "validation"):
    if subset == "validation" and not info.num_validation:
      raise ValueError("subset='validation' needs data.validation_holdout > 0.")
    records = _train_part(open_split(config, config.train_split), config, subset)
  else:
    raise ValueError(
        f"Unknown subset {subset!r}; use 'eval', 'train' or 'validation'.")
  pieces = _pieces(rows, records.cached)
  num_batches = -(-len(records) // batch_size)
  elements = grain.MapDataset.range(num_batches * len(pieces))
  make_piece = _EvalPiece(records, config, batch_size=batch_size, pieces=pieces)
  return load(elements.map(make_piece), config, elements_per_batch=len(pieces))


def _check_info(config: DataConfig, info: DatasetInfo) -> None:
  if config.name != info.name:
    raise ValueError(f"info is for {info.name!r} but the data config is for "
                     f"{config.name!r}.")
