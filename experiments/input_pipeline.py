"""Input pipeline: tfds datasets read by our own deterministic index sampler.

Datasets (tfds names): ``mnist``, ``fashion_mnist``, ``cifar10``,
``imagenet2012``.

Design, and why
---------------
The data is prepared once with tensorflow-datasets in the ``array_record``
file format and read with ``tfds.data_source``, which gives random access to
any record. On top of it sits a small index sampler of our own:

* the order of epoch ``e`` is a permutation drawn from ``(seed, e)``;
* the global batch of step ``s`` is ``perm[k*B:(k+1)*B]`` with
  ``e, k = divmod(s, steps_per_epoch)`` (the remainder of an epoch is dropped);
* process ``p`` of ``P`` takes the contiguous slice ``[p*B/P:(p+1)*B/P]`` of that
  global batch and decodes only those records (``data_source.__getitems__``);
* the augmentation of the example at global position ``j`` of step ``s`` uses
  random numbers that depend on ``(seed, s, j)`` only.

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

Preparation (``prepare``)
-------------------------
``prepare`` builds the dataset under ``data_dir`` when it is not there yet:

1. from ``manual_dir`` when it holds every expected file. ``manual_dir`` may be a
   root with one ``<name>/`` folder per dataset (like ``../shared/datasets``) or
   the folder with the files itself. Each dataset gets its own download and
   extract folder, ``<data_dir>/downloads/<name>``: mnist and fashion_mnist use
   the same file names and would otherwise read each other's files;
2. else by the ordinary tfds download, when the download host answers within a
   few seconds;
3. else it raises ``DataNotFoundError`` at once (no 200 s tfds retry loop),
   naming the files expected and the folder to put them in. ImageNet is never
   downloadable: it needs ``ILSVRC2012_img_train.tar`` and
   ``ILSVRC2012_img_val.tar`` in ``manual_dir``.

Building needs TensorFlow (``tensorflow-cpu``); reading does not. Concurrent
``prepare`` calls (several processes of one run) are serialised by a file lock.

Recipes (images come out float32 NHWC, normalised per channel by the dataset's
mean and standard deviation, see ``_RECIPES``)
--------------------------------------------------------------------------------
* mnist, fashion_mnist: no augmentation (the paper-style small CNN recipe);
  normalisation only. ``augment`` has no effect.
* cifar10: training images zero-padded by 4 pixels, randomly cropped back to
  32x32 and flipped horizontally with probability 1/2.
* imagenet2012: training: random-resized crop (area 8%-100%, aspect ratio
  3/4-4/3, 10 attempts, else a central crop) resized to ``image_size`` and
  flipped with probability 1/2. Evaluation: resize the shorter side to
  ``image_size * 256 / 224`` and take the central ``image_size`` square.
  Done with PIL (bilinear), so it runs without a GPU and without TensorFlow.

With ``augment=False`` the training images get the evaluation transform.

Config fields (``data_config``: an ``ml_collections.ConfigDict``, a mapping or
any object with these attributes; missing fields take the defaults)
--------------------------------------------------------------------------------
==============  =========================  =========================================
field           default                    meaning
==============  =========================  =========================================
name            (required)                 tfds name, one of ``SUPPORTED_DATASETS``
data_dir        None (tfds default,        where the prepared array_record data lives
                ``~/tensorflow_datasets``)
manual_dir      None                       root with ``<name>/`` folders, or the
                                           folder with the original files
cache           None -> True for mnist,    decode a split into memory once
                fashion_mnist, cifar10;
                False for imagenet2012
augment         True                       training augmentation of the recipe
prefetch        1                          batches prepared ahead on a thread (0: off)
read_threads    min(8, cpu count)          threads decoding uncached records
image_size      None -> 224                imagenet2012 only: side of the crops
train_split     None -> "train"            tfds split spec, e.g. "train[:10%]"
eval_split      None -> "test"             ("validation" for imagenet2012)
validation_     0                          examples held out of the train split as
holdout                                    a validation set (0: none)
validation_     0                          seeds the choice of the held-out examples
seed                                       (fixed whatever the training seed)
==============  =========================  =========================================

Validation holdout
------------------
With ``validation_holdout=n > 0`` a fixed set of ``n`` examples of the train
split, drawn by ``holdout_indices(len(train split), n, validation_seed)``, is
set aside: ``train_iterator`` never yields them (``info.num_train`` counts
the rest) and ``eval_iterator(..., subset="validation")`` yields exactly them,
in index order. ``subset="eval"`` (the default) reads ``eval_split`` as before.

Tests with ``tfds.testing.mock_data``
-------------------------------------
Everything here works inside ``tfds.testing.mock_data(num_examples=N)``:
``prepare`` skips the build (tfds's mock makes it a no-op) and counts the
mocked records; the iterators read random examples of the real feature shapes
(imagenet2012 mock images have random small sizes, which the recipe resizes).
Call ``prepare`` and ``train_iterator``/``eval_iterator`` inside the context;
with ``cache=True`` (the default for mnist/cifar10) the data is read when the
iterator is created, so iterating may continue after the context has closed.
tfds 4.9.10's mock does not bind ``__getitems__`` correctly, so under the
mock records are read one at a time.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import math
import os
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

try:  # POSIX only; elsewhere concurrent prepares are not serialised.
  import fcntl
except ImportError:  # pragma: no cover
  fcntl = None

__all__ = [
    "SUPPORTED_DATASETS",
    "DataNotFoundError",
    "DatasetInfo",
    "holdout_indices",
    "prepare",
    "train_iterator",
    "eval_iterator",
    "steps_per_epoch",
]


class DataNotFoundError(FileNotFoundError):
  """The dataset is not prepared, not in manual_dir and cannot be downloaded."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the training side needs to know about a prepared dataset.

  ``image_shape`` is the (H, W, C) of the images the iterators yield.
  ``num_train`` / ``num_test`` count the records of the configured train and
  eval splits (under ``tfds.testing.mock_data``: the mocked ``num_examples``);
  with a validation holdout, ``num_train`` excludes the ``num_validation``
  held-out examples.
  """

  name: str
  num_train: int
  num_test: int
  num_classes: int
  image_shape: tuple[int, int, int]
  num_validation: int = 0


@dataclasses.dataclass(frozen=True)
class _Recipe:
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augmentation: str  # "none" | "cifar" | "imagenet"
  cache: bool
  eval_split: str = "test"
  manual_files: tuple[str, ...] = ()  # only for datasets tfds cannot download


_RECIPES: dict[str, _Recipe] = {
    "mnist": _Recipe((28, 28, 1), (0.1307,), (0.3081,), "none", True),
    "fashion_mnist": _Recipe((28, 28, 1), (0.2860,), (0.3530,), "none", True),
    "cifar10": _Recipe(
        (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        "cifar", True),
    "imagenet2012": _Recipe(
        (224, 224, 3), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
        "imagenet", False, eval_split="validation",
        manual_files=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")),
}
SUPPORTED_DATASETS: tuple[str, ...] = tuple(_RECIPES)

_NETWORK_TIMEOUT_S = 3.0
# Salts that keep the random streams of the sampler and augmentation apart.
_PERMUTATION_STREAM = 0
_AUGMENT_STREAM = 1
_HOLDOUT_STREAM = 2
# Random-resized crop: attempts, each (area, log aspect ratio, x, y), + flip.
_CROP_ATTEMPTS = 10


# ----------------------------------------------------------------------------
# Config access.


def _field(config: Any, name: str, default: Any = None) -> Any:
  if isinstance(config, Mapping):
    value = config.get(name, default)
  else:
    value = getattr(config, name, default)
  return default if value is None else value


def _dataset_name(config: Any) -> str:
  name = _field(config, "name")
  if name not in _RECIPES:
    raise ValueError(
        f"Unknown dataset name {name!r}: choose one of "
        f"{', '.join(SUPPORTED_DATASETS)} (tfds names).")
  return name


def _image_shape(config: Any, name: str) -> tuple[int, int, int]:
  shape = _RECIPES[name].image_shape
  size = _field(config, "image_size")
  if size is None or size == shape[0]:
    return shape
  if name != "imagenet2012":
    raise ValueError(
        f"image_size={size} is only supported for imagenet2012; {name} images "
        f"are {shape[0]}x{shape[1]}.")
  return (int(size), int(size), shape[2])


def _splits(config: Any, name: str) -> tuple[str, str]:
  return (_field(config, "train_split", "train"),
          _field(config, "eval_split", _RECIPES[name].eval_split))


def _validation_holdout(config: Any, num_examples: int) -> int:
  holdout = int(_field(config, "validation_holdout", 0))
  if not 0 <= holdout < num_examples:
    raise ValueError(
        f"validation_holdout={holdout} must be in [0, {num_examples}), the size "
        "of the train split.")
  return holdout


def holdout_indices(num_examples: int, holdout: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, validation) indices, sorted: a fixed split of ``range(num_examples)``.

  ``holdout`` indices drawn without replacement from a stream of ``seed`` alone,
  so the validation set is the same for every training seed and every run.
  """
  rng = np.random.default_rng([*_seed_words(seed), _HOLDOUT_STREAM])
  order = rng.permutation(num_examples)
  return np.sort(order[holdout:]), np.sort(order[:holdout])


def _use_cache(config: Any, name: str) -> bool:
  cache = bool(_field(config, "cache", _RECIPES[name].cache))
  if cache and name == "imagenet2012":
    raise ValueError(
        "cache=True is not supported for imagenet2012 (variable-size images, "
        "about 150 GB decoded): set data.cache=False.")
  return cache


def _data_dir(config: Any) -> str | None:
  data_dir = _field(config, "data_dir")
  return None if data_dir is None else os.fspath(Path(data_dir).expanduser())


def _builder(name: str, config: Any):
  return tfds.builder(name, data_dir=_data_dir(config),
                      file_format="array_record")


def _is_mocked() -> bool:
  """True inside ``tfds.testing.mock_data`` (it replaces download_and_prepare)."""
  method = tfds.core.DatasetBuilder.download_and_prepare
  return getattr(method, "__module__", "").startswith("tensorflow_datasets.testing")


# ----------------------------------------------------------------------------
# Preparation.


def _expected_files(builder, name: str) -> list[str]:
  if _RECIPES[name].manual_files:
    return list(_RECIPES[name].manual_files)
  return sorted(info.filename for info in (builder.url_infos or {}).values()
                if info.filename)


def _download_hosts(builder) -> list[tuple[str, int]]:
  hosts = []
  for url in (builder.url_infos or {}):
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if (parsed.hostname, port) not in hosts:
      hosts.append((parsed.hostname, port))
  return hosts


def _host_reachable(host: str, port: int, timeout: float = _NETWORK_TIMEOUT_S) -> bool:
  """Whether a TCP connection to host:port opens within ``timeout`` seconds.

  Runs in a daemon thread so that a slow DNS lookup cannot exceed the timeout.
  """
  result = []

  def connect():
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      result.append(True)
    except OSError:
      result.append(False)

  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(timeout + 0.5)
  return bool(result and result[0])


def _manual_folder(manual_dir: str | None, name: str,
                   expected: Sequence[str]) -> tuple[Path | None, list[Path]]:
  """The folder holding all expected files, and the folders searched."""
  if manual_dir is None:
    return None, []
  root = Path(manual_dir).expanduser()
  searched = [root / name, root]
  for folder in searched:
    if expected and all((folder / f).is_file() for f in expected):
      return folder, searched
  return None, searched


def _missing_data_message(name, data_dir, manual_dir, searched, expected,
                          hosts, urls) -> str:
  target = (Path(manual_dir).expanduser() / name if manual_dir
            else Path("<manual_dir>") / name)
  lines = [f"Dataset {name!r} is not prepared under data_dir="
           f"{data_dir or '~/tensorflow_datasets'} and cannot be built here."]
  if searched:
    lines.append("manual_dir does not hold all of its files; searched: "
                 + ", ".join(str(p) for p in searched) + ".")
  else:
    lines.append("No manual_dir is set.")
  if hosts:
    lines.append("The download host(s) " + ", ".join(f"{h}:{p}" for h, p in hosts)
                 + " did not answer, so the normal tfds download is not possible.")
  else:
    lines.append(f"tfds cannot download {name}; its files must be supplied by hand.")
  lines.append(f"Put these files in {target}/ (or directly in the folder given "
               "as manual_dir): " + ", ".join(expected) + ".")
  if urls:
    lines.append("Their sources: " + ", ".join(urls) + ".")
  if not manual_dir:
    lines.append("Then set the config field data.manual_dir to that root, e.g. "
                 f"--config.data.manual_dir={Path('<root>')}.")
  return "\n".join(lines)


@contextlib.contextmanager
def _prepare_lock(data_dir: str | None, name: str):
  root = Path(data_dir) if data_dir else Path("~/tensorflow_datasets").expanduser()
  if fcntl is None:
    yield
    return
  root.mkdir(parents=True, exist_ok=True)
  with open(root / f".{name}.prepare.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _build(builder, name: str, config: Any) -> None:
  data_dir = _data_dir(config)
  manual_dir = _field(config, "manual_dir")
  expected = _expected_files(builder, name)
  folder, searched = _manual_folder(manual_dir, name, expected)
  hosts = _download_hosts(builder) if not _RECIPES[name].manual_files else []
  if folder is None and not (hosts and all(_host_reachable(h, p) for h, p in hosts)):
    raise DataNotFoundError(_missing_data_message(
        name, data_dir, manual_dir, searched, expected, hosts,
        sorted(builder.url_infos or {}) if hosts else []))
  # One download/extract folder per dataset: mnist and fashion_mnist share
  # file names and tfds extracts to downloads/extracted/GZIP.<file name>.
  download_dir = Path(builder.data_dir_root) / "downloads" / name
  builder.download_and_prepare(
      download_dir=download_dir,
      download_config=tfds.download.DownloadConfig(
          manual_dir=folder,
          extract_dir=download_dir / "extracted",
          try_download_gcs=False,
      ),
      file_format="array_record",
  )


def prepare(data_config: Any) -> DatasetInfo:
  """Makes sure the dataset is prepared (array_record) and describes it.

  Args:
    data_config: the data config (see the module docstring for its fields).

  Returns:
    A ``DatasetInfo`` with the sizes of the configured splits.

  Raises:
    ValueError: unknown dataset name or unsupported option.
    DataNotFoundError: the data is not prepared, not in ``manual_dir`` and not
      downloadable; raised within seconds, naming the files and their folder.
  """
  name = _dataset_name(data_config)
  image_shape = _image_shape(data_config, name)
  _use_cache(data_config, name)  # Validates the option before any work.
  builder = _builder(name, data_config)
  if not _is_mocked() and not builder.is_prepared():
    with _prepare_lock(_data_dir(data_config), name):
      builder = _builder(name, data_config)  # Another process may have built it.
      if not builder.is_prepared():
        _build(builder, name, data_config)
        builder = _builder(name, data_config)
  file_format = builder.info.file_format
  if file_format is not None and file_format.value != "array_record":
    raise ValueError(
        f"{name} under {builder.data_dir} is prepared as {file_format.value}; "
        "this pipeline reads array_record files. Use another data_dir (it is "
        "rebuilt there) or convert it with `tfds convert_format`.")
  train_split, eval_split = _splits(data_config, name)
  num_train = len(_source(builder, train_split))
  holdout = _validation_holdout(data_config, num_train)
  return DatasetInfo(
      name=name,
      num_train=num_train - holdout,
      num_test=len(_source(builder, eval_split)),
      num_classes=int(builder.info.features["label"].num_classes),
      image_shape=image_shape,
      num_validation=holdout,
  )


# ----------------------------------------------------------------------------
# Reading records.


def _source(builder, split: str):
  return builder.as_data_source(split=split)


def _read_records(source, indices: Sequence[int]) -> list[dict]:
  indices = [int(i) for i in indices]
  if not indices:
    return []
  from unittest import mock  # pylint: disable=g-import-not-at-top
  if isinstance(getattr(source, "data_source", None), mock.NonCallableMock):
    # tfds.testing.mock_data (4.9.10) leaves the mocked __getitems__ unbound.
    return [source[i] for i in indices]
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
  holdout = _validation_holdout(config, len(split))
  if not holdout:
    return split
  train, validation = holdout_indices(len(split), holdout,
                                      int(_field(config, "validation_seed", 0)))
  return _Subset(split, train if part == "train" else validation)


_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_ENTRIES = 4
_DECODE_CHUNK = 4096


def _open_split(name: str, config: Any, split: str) -> _Split:
  builder = _builder(name, config)
  source = _source(builder, split)
  if not _use_cache(config, name):
    return _Split(source)
  key = (name, str(builder.data_dir), split, len(source), _is_mocked())
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
    images = np.stack(images) if images else np.zeros((0, *_RECIPES[name].image_shape),
                                                      np.uint8)
    labels = np.asarray(labels, np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    split_data = _Split(source, images, labels)
    _CACHE[key] = split_data
    while len(_CACHE) > _CACHE_ENTRIES:
      _CACHE.popitem(last=False)
    return split_data


# ----------------------------------------------------------------------------
# Image transforms. ``uniforms`` rows hold the random numbers of one example.


def _normalise(images: np.ndarray, name: str) -> np.ndarray:
  recipe = _RECIPES[name]
  mean = np.asarray(recipe.mean, np.float32) * 255.0
  inv_std = 1.0 / (np.asarray(recipe.std, np.float32) * 255.0)
  return (np.asarray(images, np.float32) - mean) * inv_std


def _cifar_augment(images: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  out = np.empty_like(images)
  offsets_y = np.minimum((uniforms[:, 0] * 9).astype(int), 8)
  offsets_x = np.minimum((uniforms[:, 1] * 9).astype(int), 8)
  for i in range(n):
    crop = padded[i, offsets_y[i]:offsets_y[i] + h, offsets_x[i]:offsets_x[i] + w]
    out[i] = crop[:, ::-1] if uniforms[i, 2] < 0.5 else crop
  return out


def _resize(image: np.ndarray, box: tuple[float, float, float, float],
            size: tuple[int, int]) -> np.ndarray:
  """Crops ``box`` = (left, top, right, bottom) and resizes it to (w, h)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pil = Image.fromarray(np.ascontiguousarray(image))
  return np.asarray(pil.resize(size, Image.Resampling.BILINEAR, box=box))


def _random_resized_crop_box(height, width, u):
  area = height * width
  for attempt in range(_CROP_ATTEMPTS):
    a, r, x, y = u[4 * attempt:4 * attempt + 4]
    target_area = area * (0.08 + a * (1.0 - 0.08))
    aspect = math.exp(math.log(3 / 4) + r * (math.log(4 / 3) - math.log(3 / 4)))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      left = min(int(x * (width - w + 1)), width - w)
      top = min(int(y * (height - h + 1)), height - h)
      return (left, top, left + w, top + h)
  side = min(height, width)  # Fallback: the central square.
  left, top = (width - side) // 2, (height - side) // 2
  return (left, top, left + side, top + side)


def _imagenet_train(image: np.ndarray, u: np.ndarray, size: int) -> np.ndarray:
  box = _random_resized_crop_box(image.shape[0], image.shape[1], u)
  out = _resize(image, box, (size, size))
  return out[:, ::-1] if u[4 * _CROP_ATTEMPTS] < 0.5 else out


def _imagenet_eval(image: np.ndarray, size: int) -> np.ndarray:
  height, width = image.shape[:2]
  # Central crop covering size/resize of the shorter side == resize + crop.
  side = min(height, width) * size / (size * 256 / 224)
  left, top = (width - side) / 2, (height - side) / 2
  return _resize(image, (left, top, left + side, top + side), (size, size))


def _transform(name: str, images, uniforms: np.ndarray | None,
               image_shape: tuple[int, int, int]) -> np.ndarray:
  """uint8 images -> normalised float32 [n, H, W, C]; uniforms=None: eval."""
  kind = _RECIPES[name].augmentation
  if kind == "imagenet":
    size = image_shape[0]
    if uniforms is None:
      out = [_imagenet_eval(im, size) for im in images]
    else:
      out = [_imagenet_train(im, u, size) for im, u in zip(images, uniforms)]
    images = np.stack(out) if out else np.zeros((0, *image_shape), np.uint8)
  else:
    images = np.stack(images) if isinstance(images, list) else images
    images = images.reshape((-1, *image_shape))
    if kind == "cifar" and uniforms is not None:
      images = _cifar_augment(images, uniforms)
  return _normalise(images, name)


def _num_uniforms(name: str) -> int:
  return {"none": 0, "cifar": 3, "imagenet": 4 * _CROP_ATTEMPTS + 1}[
      _RECIPES[name].augmentation]


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
  return max(1, int(_field(config, "read_threads", min(8, os.cpu_count() or 1))))


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
    return _transform(name, images, part_uniforms, image_shape), labels

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
    raise ValueError(f"global_batch_size must be positive, got {global_batch_size}.")
  if global_batch_size > info.num_train:
    raise ValueError(
        f"The global batch size {global_batch_size} is larger than the "
        f"{info.num_train} training examples of {info.name}.")
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
  name = _dataset_name(data_config)
  if name != info.name:
    raise ValueError(f"info is for {info.name!r} but data_config.name is {name!r}.")
  per_epoch = steps_per_epoch(info, global_batch_size)
  lo, hi = _process_slice(global_batch_size, process_index, process_count,
                          "global batch size")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  train_split, _ = _splits(data_config, name)
  split = _train_part(_open_split(name, data_config, train_split), data_config,
                      "train")
  if len(split) != info.num_train:
    raise ValueError(f"{name} {train_split} has {len(split)} examples, info "
                     f"says {info.num_train}: call prepare() again.")
  augment = bool(_field(data_config, "augment", True))
  num_uniforms = _num_uniforms(name) if augment else 0
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

  prefetch = int(_field(data_config, "prefetch", 1))
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
  held out of the train split (``validation_holdout`` must be > 0).

  Batch ``b`` covers global positions ``[b*B, (b+1)*B)``; positions past the end
  are padding (zero image, label 0, mask 0). This process gets rows
  ``[p*B/P:(p+1)*B/P]`` and reads only its real records. Every process yields
  ``ceil(num_test / B)`` batches.

  Yields:
    ``{"image": float32 [B/P, H, W, C], "label": int32 [B/P],
    "mask": float32 [B/P]}`` (mask 1 for real examples, 0 for padding).
  """
  name = _dataset_name(data_config)
  if name != info.name:
    raise ValueError(f"info is for {info.name!r} but data_config.name is {name!r}.")
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  lo, hi = _process_slice(batch_size, process_index, process_count,
                          "eval batch size")
  train_split, eval_split = _splits(data_config, name)
  if subset == "eval":
    split = _open_split(name, data_config, eval_split)
  elif subset == "validation":
    if not info.num_validation:
      raise ValueError("subset='validation' needs data.validation_holdout > 0.")
    split = _train_part(_open_split(name, data_config, train_split),
                        data_config, "validation")
  else:
    raise ValueError(f"Unknown subset {subset!r}; use 'eval' or 'validation'.")
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
  prefetch = int(_field(data_config, "prefetch", 1))
  return _prefetched(make_batch, iter(range(num_batches)), prefetch)
