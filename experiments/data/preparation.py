"""Preparing a dataset: tfds builds it once as array_record files, and says what it holds.

``prepare(data_config)`` makes sure the dataset is built under ``data_dir`` in
tfds's ``array_record`` format (random access for the sampler of
``pipeline.py``) and returns a ``DatasetInfo``. When the data is not there yet
it is built from ``manual_dir``, else by the tfds download, else it raises
``DataNotFoundError`` at once, naming the files expected and the folder to put
them in. Building needs TensorFlow (``tensorflow-cpu``); reading does not.
Concurrent ``prepare`` calls are serialised by a file lock. The three build
paths: docs/training.md, "Input"; the data config's fields: ``datasets.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import socket
import sys
import threading
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from experiments.data.datasets import RECIPES, DataConfig
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


_NETWORK_TIMEOUT_S = 3.0


# ----------------------------------------------------------------------------
# Opening a prepared dataset.


def builder(config: DataConfig):
  # tfds loads here, where a dataset is opened, and not with this module: the
  # synthetic-data benchmarks run where tfds is not installed.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder(config.name, data_dir=config.data_dir,
                      file_format="array_record")


def source(dataset_builder, split: str, *, jpeg: bool = False):
  """Random access to the records of ``split`` (a tfds data source).

  With ``jpeg`` the images are the encoded JPEG bytes, for the transforms to
  decode (at reduced scale where they can).
  """
  decoders = None
  if jpeg:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    decoders = {"image": tfds.decode.SkipDecoding()}
  return dataset_builder.as_data_source(split=split, decoders=decoders)


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


def _build(dataset_builder, config: DataConfig) -> None:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name, data_dir, manual_dir = config.name, config.data_dir, config.manual_dir
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


def prepare(data_config: DataConfig) -> DatasetInfo:
  """Makes sure the dataset is prepared (array_record) and describes it.

  Args:
    data_config: from ``DataConfig.from_config(config.data)``.

  Returns:
    A ``DatasetInfo`` with the sizes of the configured splits.

  Raises:
    ConfigError: a split or option that does not fit the prepared data.
    DataNotFoundError: the data is not prepared, not in ``manual_dir`` and not
      downloadable; raised within seconds, naming the files and their folder.
  """
  name = data_config.name
  dataset_builder = builder(data_config)
  if not dataset_builder.is_prepared():
    with _prepare_lock(data_config.data_dir, name):
      # Another process may have built it meanwhile.
      dataset_builder = builder(data_config)
      if not dataset_builder.is_prepared():
        _build(dataset_builder, data_config)
        dataset_builder = builder(data_config)
  file_format = dataset_builder.info.file_format
  if file_format is not None and file_format.value != "array_record":
    raise ConfigError(
        f"{name} under {dataset_builder.data_dir} is prepared as "
        f"{file_format.value}; this pipeline reads array_record files. Use "
        "another data_dir (it is rebuilt there) or convert it with `tfds "
        "convert_format`.")
  num_train = len(source(dataset_builder, data_config.train_split))
  holdout = data_config.validation_holdout
  if holdout >= num_train:
    raise ConfigError(
        f"config.data.validation_holdout={holdout} must be smaller than "
        f"{num_train}, the size of the train split {data_config.train_split!r}.")
  return DatasetInfo(
      name=name,
      num_train=num_train - holdout,
      num_test=len(source(dataset_builder, data_config.eval_split)),
      num_classes=int(dataset_builder.info.features["label"].num_classes),
      image_shape=data_config.image_shape,
      num_validation=holdout,
  )
