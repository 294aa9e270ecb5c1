"""Tests of experiments/data/datasets.py: the data config, resolved once."""

import dataclasses
import os

import pytest

from experiments.data.datasets import DataConfig
from experiments.user_errors import ConfigError


def test_defaults_follow_the_recipe():
  mnist = DataConfig.from_config({"name": "mnist"})
  assert (mnist.cache, mnist.augment, mnist.prefetch) == (True, True, 1)
  assert (mnist.read_threads, mnist.worker_processes) == (1, 0)
  assert (mnist.train_split, mnist.eval_split) == ("train", "test")
  assert mnist.image_shape == (28, 28, 1) and mnist.image_size == 28
  assert (mnist.validation_holdout, mnist.validation_seed) == (0, 0)
  imagenet = DataConfig.from_config({"name": "imagenet2012", "image_size": 160})
  assert not imagenet.cache and imagenet.eval_split == "validation"
  assert imagenet.worker_processes == (os.cpu_count() or 1)
  assert imagenet.read_threads == 1 and imagenet.image_shape == (160, 160, 3)
  uncached = DataConfig.from_config({"name": "fashion_mnist", "cache": False})
  assert uncached.read_threads == min(8, os.cpu_count() or 1)


def test_config_dict_placeholders_take_the_defaults(tmp_path):
  ml_collections = pytest.importorskip("ml_collections")
  data = ml_collections.ConfigDict({
      "name": "fashion_mnist", "cache": True, "prefetch": 1,
      "data_dir": ml_collections.config_dict.placeholder(str),
      "manual_dir": ml_collections.config_dict.placeholder(str)})
  config = DataConfig.from_config(data)
  assert config.data_dir is None and config.manual_dir is None
  data.data_dir = "~/somewhere"
  assert DataConfig.from_config(data).data_dir == os.path.expanduser("~/somewhere")
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.prefetch = 2  # type: ignore[misc]


@pytest.mark.parametrize("fields, message", [
    ({"name": "svhn"}, r"Unknown dataset name 'svhn' \(config.data.name\)"),
    ({"name": "mnist", "prefetc": 1}, r"config.data.prefetc is not a data field"),
    ({"name": "mnist", "prefetch": -1}, r"config.data.prefetch must be an integer >= 0"),
    ({"name": "mnist", "read_threads": 0}, r"config.data.read_threads must be"),
    ({"name": "mnist", "cache": "yes"}, r"config.data.cache must be True or False"),
    ({"name": "mnist", "image_size": 32}, r"config.data.image_size=32 is only"),
    ({"name": "imagenet2012", "cache": True}, r"config.data.cache=True is not supported"),
    ({"name": "mnist", "train_split": 3}, r"config.data.train_split must be a tfds"),
])
def test_bad_fields_are_one_line_config_errors(fields, message):
  with pytest.raises(ConfigError, match=message) as error:
    DataConfig.from_config(fields)
  assert "\n" not in str(error.value)
