"""Checkpoints of the train state in the run's checkpoint folder, with orbax.

A checkpoint is the loop's canonical state (global arrays laid out by its
``state_sharding``) saved with ``ocp.args.StandardSave`` in a folder named
after its step; the step is all a run needs besides it to resume exactly.

Damaged checkpoints: a checkpoint whose files were cut short or corrupted (a
full disk, an interrupted copy, a bad block) fails to restore. A resumed run
tries the checkpoints newest first and continues from the newest one that
restores. Each newer one is moved aside, never deleted, to the workdir's
folder of damaged checkpoints (kept for inspection, and out of the way of
the run's next saves), with a warning that names its step and folder.
If none restores, nothing is moved and the run stops with
``CheckpointError``, naming the folder.
"""
from __future__ import annotations

import glob
import os
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments.user_errors import UserError

State = dict[str, Any]


class CheckpointError(UserError):
  """The run's checkpoints exist but none of them can be restored."""


def create_manager(directory: str, *, max_to_keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True,
      cleanup_tmp_directories=True)  # half-written saves of a killed run
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: State) -> None:
  """Starts saving ``state`` as the checkpoint of ``step`` (asynchronously)."""
  manager.save(step, args=ocp.args.StandardSave(state))


def restore(manager: ocp.CheckpointManager, step: int, abstract_state) -> State:
  """The checkpoint of ``step``, laid out as ``abstract_state`` says."""
  return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))


def last_saved_step(manager: ocp.CheckpointManager) -> int | None:
  """The step of the newest finished checkpoint (waits for a save under way)."""
  manager.wait_until_finished()
  return manager.latest_step()


def restore_newest(manager: ocp.CheckpointManager, abstract_state, *,
                   corrupt_dir: str) -> tuple[int, State] | None:
  """(step, state) of the newest checkpoint that restores; None if there are none.

  Newer checkpoints that fail to restore are moved aside (see the module
  docstring). Every process of a multi-process run takes the same decision:
  a checkpoint counts as restored only where it restored on every process.

  Raises:
    CheckpointError: there are checkpoints but none of them restores.
  """
  folder = str(manager.directory)
  failed = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      _read_stored_values(os.path.join(folder, str(step)))
      state, reason = restore(manager, step, abstract_state), ""
    # orbax raises bare Exceptions for unreadable arrays, and JSON or
    # TensorStore errors for damaged metadata: any failure counts.
    except Exception as error:  # pylint: disable=broad-except
      state, reason = None, _first_line(error)
    if _on_every_process(state is not None):
      _move_aside(manager, failed, good_step=step, corrupt=corrupt_dir)
      return step, state
    failed.append((step, reason or "failed on another process"))
  if not failed:
    return None
  raise CheckpointError(
      f"None of the checkpoints in {folder} can be restored ("
      + "; ".join(f"step {step}: {reason}" for step, reason in failed)
      + "). They are left in place; resume from an intact copy of the folder,"
      " or start afresh with another workdir.")


def _read_stored_values(step_dir: str) -> None:
  """Reads every value stored in the step's OCDBT databases, one at a time.

  orbax reads a checkpoint's arrays concurrently; when one read fails, the
  reads still under way finish after its event loop has closed and each
  prints a traceback. Reading the stored bytes here first turns a truncated
  data file, or a corrupted index of one, into one clean error (damage that
  only shows when a chunk is decompressed is still found by the restore
  itself). The checkpoint is read twice, once per resumed run.
  """
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  for manifest in sorted(glob.glob(os.path.join(step_dir, "*", "manifest.ocdbt"))):
    database = os.path.dirname(manifest)
    store = ts.KvStore.open({"driver": "ocdbt",
                             "base": {"driver": "file", "path": database + "/"}}
                            ).result()
    for key in store.list().result():
      store.read(key).result()


def _first_line(error: Exception, limit: int = 200) -> str:
  text = (str(error).strip().splitlines() or [type(error).__name__])[0]
  return text if len(text) <= limit else text[:limit] + "..."


def _on_every_process(ok: bool) -> bool:
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _move_aside(manager: ocp.CheckpointManager, failed: list[tuple[int, str]],
                *, good_step: int, corrupt: str) -> None:
  """Moves the checkpoints that failed to ``corrupt`` (process 0)."""
  if not failed:
    return
  folder = str(manager.directory)
  if jax.process_index() == 0:
    os.makedirs(corrupt, exist_ok=True)
    for step, reason in failed:
      target, copy = os.path.join(corrupt, str(step)), 1
      while os.path.exists(target):  # damaged at the same step before
        target, copy = os.path.join(corrupt, f"{step}.{copy}"), copy + 1
      os.rename(os.path.join(folder, str(step)), target)
      # A line of its own: the run shows it even when library logs are off.
      print(f"warning: the checkpoint of step {step} in {folder} cannot be "
            f"restored ({reason}); moved it to {target} and resuming from the "
            f"checkpoint of step {good_step}.", file=sys.stderr, flush=True)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("damaged checkpoints moved aside")
  manager.reload()  # forget the moved steps
