"""The datasets (their recipes) and the data config, resolved once into ``DataConfig``.

Datasets (tfds names): ``mnist``, ``fashion_mnist``, ``imagenet2012``.
``DataConfig.from_config(config.data)`` applies the defaults, checks
every field (``ConfigError`` naming it) and returns a frozen ``DataConfig``;
``preparation.prepare``, the iterators of ``pipeline`` and the ``transforms``
take that object and nothing else.

The fields, their defaults and what they mean: ``config.data`` in
``experiments/configs/default.py``. A field that is missing or None takes
that default, and where the default is None, the recipe's value.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.configs import default
from experiments.user_errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How a dataset's images are shaped, normalised, augmented and read."""

  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  eval_split: str = "test"
  manual_files: tuple[str, ...] = ()  # only for datasets tfds cannot download
  # Records are read as JPEG bytes, decoded and augmented by the transforms
  # (ImageNet's recipe); otherwise decoded once into memory, not augmented.
  jpeg: bool = False


RECIPES: dict[str, Recipe] = {
    "mnist": Recipe((28, 28, 1), (0.1307,), (0.3081,)),
    "fashion_mnist": Recipe((28, 28, 1), (0.2860,), (0.3530,)),
    "imagenet2012": Recipe(
        (224, 224, 3), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
        eval_split="validation",
        manual_files=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
        jpeg=True),
}
SUPPORTED_DATASETS: tuple[str, ...] = tuple(RECIPES)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The data config with its defaults applied and checked (fields: module docstring).

  Build it with ``DataConfig.from_config(config.data)``; constructing it
  directly checks the fields the same way but applies no defaults.
  """

  name: str
  data_dir: str | None
  manual_dir: str | None
  cache: bool
  augment: bool
  prefetch: int
  read_threads: int
  worker_processes: int
  image_size: int
  train_split: str
  eval_split: str
  validation_holdout: int
  validation_seed: int

  @classmethod
  def from_config(cls, data: Any) -> DataConfig:
    """Resolves ``config.data`` (ConfigDict, mapping or object) over the
    defaults (module docstring), then checks it."""
    given = _fields_of(data)
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ConfigError(
          f"config.data.{unknown[0]} is not a data field; the fields are "
          f"{', '.join(f.name for f in dataclasses.fields(cls))}.")
    given = {key: value
             for fields in (_fields_of(default.get_config().data), given)
             for key, value in fields.items() if value is not None}
    recipe = _recipe(given["name"])
    given.setdefault("eval_split", recipe.eval_split)
    given.setdefault("cache", not recipe.jpeg)
    given.setdefault("image_size", recipe.image_shape[0])
    given.setdefault("worker_processes",
                     (os.cpu_count() or 1) if recipe.jpeg else 0)
    given.setdefault("read_threads", 1 if given["cache"] or given["worker_processes"]
                     else min(8, os.cpu_count() or 1))
    if "data_dir" in given:
      given["data_dir"] = os.fspath(Path(given["data_dir"]).expanduser())
    if "manual_dir" in given:
      given["manual_dir"] = os.fspath(given["manual_dir"])
    given.setdefault("data_dir", None)
    given.setdefault("manual_dir", None)
    return cls(**{key: _integer(value) for key, value in given.items()})

  def __post_init__(self):
    _recipe(self.name)
    for field in ("cache", "augment"):
      if not isinstance(getattr(self, field), bool):
        raise ConfigError(f"config.data.{field} must be True or False, got "
                          f"{getattr(self, field)!r}.")
    for field, low in (("prefetch", 0), ("read_threads", 1), ("worker_processes", 0),
                       ("image_size", 1), ("validation_holdout", 0),
                       ("validation_seed", 0)):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"config.data.{field} must be an integer >= {low}, got "
                          f"{value!r}.")
    for field in ("train_split", "eval_split"):
      if not isinstance(getattr(self, field), str):
        raise ConfigError(f"config.data.{field} must be a tfds split spec such as "
                          f"'train[:10%]', got {getattr(self, field)!r}.")
    native = self.recipe.image_shape[0]
    if self.image_size != native and not self.recipe.jpeg:
      raise ConfigError(
          f"config.data.image_size={self.image_size} is only supported for "
          f"imagenet2012; {self.name} images are {native}x{native}.")
    if self.cache and self.recipe.jpeg:
      raise ConfigError(
          f"config.data.cache=True is not supported for {self.name} "
          "(variable-size images, about 150 GB decoded): set data.cache=False.")

  @property
  def recipe(self) -> Recipe:
    return RECIPES[self.name]

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the images the iterators yield."""
    return (self.image_size, self.image_size, self.recipe.image_shape[2])


def _recipe(name: Any) -> Recipe:
  if name not in RECIPES:
    raise ConfigError(
        f"Unknown dataset name {name!r} (config.data.name): choose one of "
        f"{', '.join(SUPPORTED_DATASETS)} (tfds names).")
  return RECIPES[name]


def _fields_of(data: Any) -> dict[str, Any]:
  if isinstance(data, Mapping):
    return dict(data)
  if hasattr(data, "to_dict"):  # ml_collections.ConfigDict
    return data.to_dict()
  return dict(vars(data))


def _integer(value: Any) -> Any:
  """A NumPy integer as an int; anything else as it is."""
  if isinstance(value, numbers.Integral) and not isinstance(value, bool):
    return int(value)
  return value
