"""A run's folder: its layout, its lock and its saved config, owned here.

Every other module asks ``Workdir`` for a path instead of naming a file.
One run uses a folder at a time: ``Workdir.lock`` holds an OS file lock,
which the OS releases however the process ends, so a killed run leaves no
stale lock. Resuming checks that the config would not change the result
(``check_config``; the fields that may change are ``NOT_AFFECTING_RESULTS``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import ml_collections

from experiments.configs import default
from experiments.data.datasets import DataConfig
from experiments.user_errors import ConfigError
from experiments.user_errors import UserError

# Fields that do not change the trained parameters or the reported metrics.
# Every other field (including ones added later) counts as changing them.
NOT_AFFECTING_RESULTS = frozenset({
    "log_every_steps", "log_trust_ratios", "eval_every_steps",
    "checkpoint_every_steps", "checkpoints_to_keep", "tensorboard",
    "progress_bar", "plot", "data.data_dir", "data.manual_dir",
    "data.prefetch", "data.cache", "data.read_threads", "data.worker_processes",
})


class WorkdirInUse(UserError):
  """Another run holds the workdir's lock."""


@dataclasses.dataclass(frozen=True)
class Workdir:
  """The files of the run in ``root``."""

  root: str

  def _path(self, name: str) -> str:
    return os.path.join(self.root, name)

  @property
  def config(self) -> str:
    return self._path("config.json")

  @property
  def metrics(self) -> str:
    return self._path("metrics.jsonl")

  @property
  def final_metrics(self) -> str:
    return self._path("final_metrics.json")

  @property
  def tensorboard(self) -> str:
    return self._path("tensorboard")

  @property
  def plot(self) -> str:
    return self._path("training_curves.png")

  @property
  def checkpoints(self) -> str:
    return self._path("checkpoints")

  @property
  def corrupt_checkpoints(self) -> str:
    """Where damaged checkpoints are moved aside (checkpoints.py)."""
    return self._path("checkpoints_corrupt")

  def outputs(self) -> list[tuple[str, str]]:
    """(what, path) of the run's outputs that exist, for its summary."""
    named = [("metrics", self.metrics), ("summary", self.final_metrics),
             ("TensorBoard", self.tensorboard), ("plot", self.plot),
             ("checkpoints", self.checkpoints)]
    return [(what, path) for what, path in named if os.path.exists(path)]

  def has_checkpoints(self) -> bool:
    return os.path.isdir(self.checkpoints) and any(
        name.isdigit() for name in os.listdir(self.checkpoints))

  def save_config(self, config: ml_collections.ConfigDict) -> None:
    os.makedirs(self.root, exist_ok=True)
    with open(self.config, "w") as f:
      f.write(config.to_json(indent=2, sort_keys=True))

  def check_config(self, config: ml_collections.ConfigDict, *,
                   allow_changes: bool) -> None:
    """Raises ConfigError when resuming with a result-changing config change."""
    if allow_changes or not self.has_checkpoints() or not os.path.exists(self.config):
      return
    with open(self.config) as f:
      changed = changed_fields(config, json.load(f))
    if changed:
      listing = ", ".join(f"{key} ({old!r} -> {new!r})"
                          for key, (old, new) in list(changed.items())[:6])
      if len(changed) > 6:
        listing += f" and {len(changed) - 6} more"
      raise ConfigError(
          f"{self.root} holds checkpoints of a run with a different config: "
          f"{listing}. Use another --workdir, or pass --allow_config_change to "
          "continue from those checkpoints anyway.")

  @contextlib.contextmanager
  def lock(self, *, enabled: bool = True) -> Iterator[None]:
    """Holds ``<root>/.lock`` for the duration; ``WorkdirInUse`` if taken."""
    if not enabled:
      yield
      return
    os.makedirs(self.root, exist_ok=True)
    with open(self._path(".lock"), "a+") as f:
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        raise WorkdirInUse(
            f"{os.path.abspath(self.root)} is in use by another run ({holder}); "
            "wait for it to finish, stop it, or use another --workdir.") from None
      f.seek(0)
      f.truncate()
      f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
      f.flush()
      try:
        yield
      finally:
        f.seek(0)
        f.truncate()
        fcntl.flock(f, fcntl.LOCK_UN)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(tree, dict):
    return {prefix: tree}
  out: dict[str, Any] = {}
  for key, value in tree.items():
    out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
  return out


def _resolved(tree: dict) -> dict[str, Any]:
  """A config's fields over today's defaults (a field added since a run was
  saved takes its default, which reproduces that run), with the data fields
  as the run resolves them."""
  fields = {**_flatten(json.loads(default.get_config().to_json())),
            **_flatten(tree)}
  data = DataConfig.from_config({key.removeprefix("data."): value
                                 for key, value in fields.items()
                                 if key.startswith("data.")})
  fields.update({f"data.{key}": value
                 for key, value in dataclasses.asdict(data).items()})
  return fields


def changed_fields(config: ml_collections.ConfigDict, saved: dict
                   ) -> dict[str, tuple[Any, Any]]:
  """{field: (saved value, new value)} of the result-changing differences."""
  new = _resolved(json.loads(config.to_json()))
  old = _resolved(saved)
  return {key: (old.get(key, "<unset>"), new.get(key, "<unset>"))
          for key in sorted(set(new) | set(old))
          if key not in NOT_AFFECTING_RESULTS and new.get(key) != old.get(key)}
