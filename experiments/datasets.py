"""The datasets: what each one is, the data config's fields, and preparing them.

Datasets (tfds names): ``mnist``, ``fashion_mnist``, ``cifar10``,
``imagenet2012``. ``prepare(data_config)`` makes sure the dataset is built
under ``data_dir`` in tfds's ``array_record`` format (random access for the
sampler of ``input_pipeline.py``) and returns a ``DatasetInfo``. When the
data is not there yet it is built:

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
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import socket
import sys
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.user_errors import ConfigError, UserError

try:  # POSIX only; elsewhere concurrent prepares are not serialised.
  import fcntl
except ImportError:  # pragma: no cover
  fcntl = None


class DataNotFoundError(UserError, FileNotFoundError):
  """The dataset is not prepared, not in manual_dir and cannot be downloaded."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the training side needs to know about a prepared dataset.

  ``image_shape`` is the (H, W, C) of the images the iterators yield.
  ``num_train`` / ``num_test`` count the records of the configured train and
  eval splits; with a validation holdout, ``num_train`` excludes the
  ``num_validation`` held-out examples.
  """

  name: str
  num_train: int
  num_test: int
  num_classes: int
  image_shape: tuple[int, int, int]
  num_validation: int = 0


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How a dataset's images are shaped, normalised, augmented and read."""

  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augmentation: str  # "none" | "cifar" | "imagenet"
  cache: bool
  eval_split: str = "test"
  manual_files: tuple[str, ...] = ()  # only for datasets tfds cannot download


RECIPES: dict[str, Recipe] = {
    "mnist": Recipe((28, 28, 1), (0.1307,), (0.3081,), "none", True),
    "fashion_mnist": Recipe((28, 28, 1), (0.2860,), (0.3530,), "none", True),
    "cifar10": Recipe(
        (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        "cifar", True),
    "imagenet2012": Recipe(
        (224, 224, 3), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
        "imagenet", False, eval_split="validation",
        manual_files=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")),
}
SUPPORTED_DATASETS: tuple[str, ...] = tuple(RECIPES)

_NETWORK_TIMEOUT_S = 3.0


# ----------------------------------------------------------------------------
# Config access.


def field(config: Any, name: str, default: Any = None) -> Any:
  if isinstance(config, Mapping):
    value = config.get(name, default)
  else:
    value = getattr(config, name, default)
  return default if value is None else value


def dataset_name(config: Any) -> str:
  name = field(config, "name")
  if name not in RECIPES:
    raise ConfigError(
        f"Unknown dataset name {name!r}: choose one of "
        f"{', '.join(SUPPORTED_DATASETS)} (tfds names).")
  return name


def _image_shape(config: Any, name: str) -> tuple[int, int, int]:
  shape = RECIPES[name].image_shape
  size = field(config, "image_size")
  if size is None or size == shape[0]:
    return shape
  if name != "imagenet2012":
    raise ConfigError(
        f"image_size={size} is only supported for imagenet2012; {name} images "
        f"are {shape[0]}x{shape[1]}.")
  return (int(size), int(size), shape[2])


def splits(config: Any, name: str) -> tuple[str, str]:
  """(train split, eval split) as tfds split specs."""
  return (field(config, "train_split", "train"),
          field(config, "eval_split", RECIPES[name].eval_split))


def validation_holdout(config: Any, num_examples: int) -> int:
  holdout = int(field(config, "validation_holdout", 0))
  if not 0 <= holdout < num_examples:
    raise ConfigError(
        f"validation_holdout={holdout} must be in [0, {num_examples}), the size "
        "of the train split.")
  return holdout


def use_cache(config: Any, name: str) -> bool:
  cache = bool(field(config, "cache", RECIPES[name].cache))
  if cache and name == "imagenet2012":
    raise ConfigError(
        "cache=True is not supported for imagenet2012 (variable-size images, "
        "about 150 GB decoded): set data.cache=False.")
  return cache


def _data_dir(config: Any) -> str | None:
  data_dir = field(config, "data_dir")
  return None if data_dir is None else os.fspath(Path(data_dir).expanduser())


def builder(name: str, config: Any):
  # tfds loads here, where a dataset is opened, and not with this module: the
  # synthetic-data benchmarks run where tfds is not installed.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder(name, data_dir=_data_dir(config),
                      file_format="array_record")


def source(dataset_builder, split: str):
  """Random access to the records of ``split`` (a tfds data source)."""
  return dataset_builder.as_data_source(split=split)


# ----------------------------------------------------------------------------
# Preparation.


def _expected_files(dataset_builder, name: str) -> list[str]:
  if RECIPES[name].manual_files:
    return list(RECIPES[name].manual_files)
  return sorted(info.filename
                for info in (dataset_builder.url_infos or {}).values()
                if info.filename)


def _download_hosts(dataset_builder) -> list[tuple[str, int]]:
  hosts = []
  for url in (dataset_builder.url_infos or {}):
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


def _build(dataset_builder, name: str, config: Any) -> None:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = _data_dir(config)
  manual_dir = field(config, "manual_dir")
  expected = _expected_files(dataset_builder, name)
  folder, searched = _manual_folder(manual_dir, name, expected)
  hosts = _download_hosts(dataset_builder) if not RECIPES[name].manual_files else []
  if folder is None and not (hosts and all(_host_reachable(h, p) for h, p in hosts)):
    raise DataNotFoundError(_missing_data_message(
        name, data_dir, manual_dir, searched, expected, hosts,
        sorted(dataset_builder.url_infos or {}) if hosts else []))
  # One download/extract folder per dataset: mnist and fashion_mnist share
  # file names and tfds extracts to downloads/extracted/GZIP.<file name>.
  download_dir = Path(dataset_builder.data_dir_root) / "downloads" / name
  print(f"Preparing {name} in {dataset_builder.data_dir_root} (once) from "
        f"{folder or 'the network'} ...", file=sys.stderr, flush=True)
  tfds.disable_progress_bar()  # the line above is the progress shown
  with contextlib.redirect_stdout(io.StringIO()):  # tfds prints its own
    dataset_builder.download_and_prepare(
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
  name = dataset_name(data_config)
  image_shape = _image_shape(data_config, name)
  use_cache(data_config, name)  # Validates the option before any work.
  dataset_builder = builder(name, data_config)
  if not dataset_builder.is_prepared():
    with _prepare_lock(_data_dir(data_config), name):
      # Another process may have built it meanwhile.
      dataset_builder = builder(name, data_config)
      if not dataset_builder.is_prepared():
        _build(dataset_builder, name, data_config)
        dataset_builder = builder(name, data_config)
  file_format = dataset_builder.info.file_format
  if file_format is not None and file_format.value != "array_record":
    raise ConfigError(
        f"{name} under {dataset_builder.data_dir} is prepared as "
        f"{file_format.value}; this pipeline reads array_record files. Use "
        "another data_dir (it is rebuilt there) or convert it with `tfds "
        "convert_format`.")
  train_split, eval_split = splits(data_config, name)
  num_train = len(source(dataset_builder, train_split))
  holdout = validation_holdout(data_config, num_train)
  return DatasetInfo(
      name=name,
      num_train=num_train - holdout,
      num_test=len(source(dataset_builder, eval_split)),
      num_classes=int(dataset_builder.info.features["label"].num_classes),
      image_shape=image_shape,
      num_validation=holdout,
  )
