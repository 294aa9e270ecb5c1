"""Resuming a run: the config must be the one the checkpoints were made with.

A run restarted in a workdir that holds checkpoints continues from them. If
its config differs from the saved ``config.json`` in a field that changes the
result (model, optimizer, batch size, schedule, seed, data...), continuing
would silently mix two runs, so the run stops and names the fields, unless
the user says the change is intended. Fields that only change what is logged,
saved or shown may differ.
"""
import dataclasses
import json
import os
from typing import Any

import ml_collections

from experiments.configs import default
from experiments.data.datasets import DataConfig
from experiments.user_errors import ConfigError

# Fields that do not change the trained parameters or the reported metrics.
# Every other field (including ones added later) counts as changing them.
NOT_AFFECTING_RESULTS = frozenset({
    "log_every_steps", "log_trust_ratios", "eval_every_steps",
    "checkpoint_every_steps", "checkpoints_to_keep", "tensorboard",
    "progress_bar", "plot", "data.data_dir", "data.manual_dir",
    "data.prefetch", "data.cache", "data.read_threads", "data.worker_processes",
})
CONFIG_FILE = "config.json"


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


def has_checkpoints(workdir: str) -> bool:
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(
      name.isdigit() for name in os.listdir(directory))


def check_config_matches(config: ml_collections.ConfigDict, workdir: str, *,
                         allow_changes: bool) -> None:
  """Raises ConfigError when resuming with a result-changing config change."""
  path = os.path.join(workdir, CONFIG_FILE)
  if allow_changes or not has_checkpoints(workdir) or not os.path.exists(path):
    return
  with open(path) as f:
    changed = changed_fields(config, json.load(f))
  if changed:
    listing = ", ".join(f"{key} ({old!r} -> {new!r})"
                        for key, (old, new) in list(changed.items())[:6])
    if len(changed) > 6:
      listing += f" and {len(changed) - 6} more"
    raise ConfigError(
        f"{workdir} holds checkpoints of a run with a different config: "
        f"{listing}. Use another --workdir, or pass --allow_config_change to "
        "continue from those checkpoints anyway.")
