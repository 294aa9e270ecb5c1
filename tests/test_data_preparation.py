"""Tests of experiments/data/preparation.py: preparing a dataset, and what fails fast.

The real-data tests prepare Fashion-MNIST from ../shared/datasets into a fresh
tfds data_dir.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments.data import pipeline
from experiments.data import preparation
from experiments.data.datasets import DataConfig
from tests.conftest import SHARED_DATASETS

FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture
def no_download(monkeypatch):
  """Fails the test if tfds is asked to download or build a dataset (with no
  network, tfds retries a download for about 200 s before it fails)."""
  def fail(*args, **kwargs):
    raise AssertionError("tfds was asked to download or build the dataset")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)


# ----------------------------------------------------------------------------
# Real data.


@pytest.fixture(scope="module")
def real_data(fashion_mnist_data_dir):
  """fashion_mnist as the suite prepares it from ../shared/datasets (the root).

  (``test_main`` prepares it again from scratch, in a fresh data_dir.)
  """
  if not all((SHARED_DATASETS / "fashion_mnist" / f).is_file() for f in FASHION_FILES):
    pytest.skip(f"the original Fashion-MNIST files are not in "
                f"{SHARED_DATASETS / 'fashion_mnist'} (see that folder's README)")
  config = DataConfig.from_config(dict(
      name="fashion_mnist", data_dir=fashion_mnist_data_dir,
      manual_dir=str(SHARED_DATASETS), prefetch=0))
  return config, preparation.prepare(config)


@pytest.mark.slow  # decodes Fashion-MNIST's 70k records
def test_prepare_fashion_mnist_from_shared_files(real_data, monkeypatch):
  config, info = real_data
  assert info == preparation.DatasetInfo(
      name="fashion_mnist", num_train=60000, num_test=10000, num_classes=10,
      image_shape=(28, 28, 1))
  # Prepared once: a second prepare only reads the metadata, it builds nothing.
  def build(*args, **kwargs):
    raise AssertionError("prepared a second time")
  monkeypatch.setattr(preparation, "_build", build)
  assert preparation.prepare(config) == info
  # Downloads are extracted per dataset (mnist uses the same file names).
  extracted = Path(config.data_dir) / "downloads" / "fashion_mnist" / "extracted"
  assert sorted(p.name for p in extracted.iterdir()) == sorted(
      f"GZIP.{f}" for f in FASHION_FILES)
  # Every class 6000 times in train (read as an "eval" pass over train) and
  # 1000 times in test; masks count each example once.
  for split, num, per_class in (("train", 60000, 6000), ("test", 10000, 1000)):
    split_config = dataclasses.replace(config, eval_split=split)
    split_info = preparation.prepare(split_config)
    batches = list(pipeline.eval_iterator(split_config, split_info,
                                          batch_size=num))
    assert len(batches) == 1 and batches[0]["mask"].sum() == num
    np.testing.assert_array_equal(np.bincount(batches[0]["label"]), [per_class] * 10)
  image = batches[0]["image"]
  assert image.dtype == np.float32 and image.shape == (10000, 28, 28, 1)
  assert abs(image.mean()) < 0.05 and abs(image.std() - 1) < 0.05  # normalised


def test_manual_dir_is_a_root_or_the_folder_itself(tmp_path):
  folder = tmp_path / "mnist"
  folder.mkdir()
  for f in FASHION_FILES:  # mnist uses the same four file names
    (folder / f).write_bytes(b"")
  for manual_dir in (tmp_path, folder):
    found, _ = preparation._manual_folder(str(manual_dir), "mnist", FASHION_FILES)
    assert found == folder
  found, searched = preparation._manual_folder(str(tmp_path), "fashion_mnist",
                                              FASHION_FILES)
  assert found is None and searched == [tmp_path / "fashion_mnist", tmp_path]


# ----------------------------------------------------------------------------
# Bad input and missing data.


def test_unknown_dataset_name_raises():
  with pytest.raises(ValueError, match=r"Unknown dataset name 'svhn'.*fashion_mnist"):
    DataConfig.from_config({"name": "svhn"})


def test_imagenet_without_files_fails_fast(tmp_path, no_download):
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  config = DataConfig.from_config(dict(
      name="imagenet2012", data_dir=str(tmp_path / "tfds"),
      manual_dir=str(manual_dir), cache=False))
  with pytest.raises(preparation.DataNotFoundError) as error:
    preparation.prepare(config)
  message = str(error.value)
  for expected in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar",
                   str(manual_dir / "imagenet2012"), "manual_dir"):
    assert expected in message


@pytest.mark.parametrize("with_manual_dir", [True, False])
def test_offline_fashion_mnist_fails_fast(tmp_path, monkeypatch, with_manual_dir,
                                          no_download):
  # Hermetic: pretend the download host is unreachable even where it is not.
  monkeypatch.setattr(preparation, "_host_reachable", lambda *a, **k: False)
  manual_dir = tmp_path / "manual"
  (manual_dir / "fashion_mnist").mkdir(parents=True)
  (manual_dir / "fashion_mnist" / FASHION_FILES[0]).write_bytes(b"")  # 1 of 4
  config = DataConfig.from_config(dict(
      name="fashion_mnist", data_dir=str(tmp_path / "tfds"),
      manual_dir=str(manual_dir) if with_manual_dir else None))
  with pytest.raises(preparation.DataNotFoundError) as error:
    preparation.prepare(config)
  message = str(error.value)
  for expected in FASHION_FILES:
    assert expected in message
  assert "fashion-mnist.s3-website" in message  # the unreachable host
  if with_manual_dir:
    assert str(manual_dir / "fashion_mnist") in message
  else:
    assert "data.manual_dir" in message
