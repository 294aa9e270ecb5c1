"""Stopping a run cleanly: at a signal, or when a process of the run is lost.

* ``StopSignals``: while a run trains, SIGTERM (a preempted cloud VM, a job
  scheduler) and SIGINT (Ctrl-C) only ask it to stop. The training loop
  finishes the step under way, saves a checkpoint and raises ``Interrupted``,
  which the command line prints as one line before it exits with status
  128 + the signal's number. A second SIGINT quits at once, without a
  checkpoint. The processes of a multi-process run stop after the same step.
* ``ProcessLost``: a process of a multi-process run that dies (SIGKILL, a
  lost host) makes the others' next collective fail. They stop with one line
  that names it, the step and the last checkpoint; rerunning all the
  processes resumes from that checkpoint.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import threading

from experiments.user_errors import UserError


class Interrupted(UserError):
  """The run stopped at a signal after saving a checkpoint."""

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    self.exit_status = 128 + signal_number


class ProcessLost(Exception):
  """Another process of the run is gone: a collective with it failed."""

  exit_status = 75  # EX_TEMPFAIL (sysexits.h): run the same commands again


def lost_process(error: BaseException, *, step: int,
                 checkpoints_dir: str) -> ProcessLost | None:
  """``ProcessLost`` if ``error`` is a collective that failed in a
  multi-process run (gloo, NCCL or MPI name themselves), else None.

  With two processes the lost one is the other; with more, the collective
  does not say which (JAX's coordination service knows only after its
  heartbeat timeout, when it ends every process).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from orbax.checkpoint import utils  # pylint: disable=g-import-not-at-top
  count, index = jax.process_count(), jax.process_index()
  reason = (str(error).strip().splitlines() or [""])[0]
  if count == 1 or not re.search(r"\b(Gloo|NCCL|MPI)\b", reason):
    return None
  # "UNKNOWN: Gloo all-reduce failed: [external/gloo/.../pair.cc:538] Read
  # error [host]:port: Connection reset by peer": keep what and whom.
  reason = re.sub(r"^[A-Z_]+: |\[[^\]]+\.cc:\d+\] ", "", reason)
  who = (f"process {1 - index} of 2" if count == 2 else
         f"another of the {count} processes")
  saved = utils.checkpoint_steps(checkpoints_dir)  # finished saves only
  checkpoint = (f"the last checkpoint is step {max(saved)} in {checkpoints_dir}"
                if saved else f"there is no checkpoint in {checkpoints_dir} yet")
  return ProcessLost(
      f"{who} was lost at step {step} ({reason}); {checkpoint}. Run all "
      f"{count} processes again to resume.")


class StopSignals:
  """Within ``with StopSignals() as stop:``, ``stop.requested`` names the first
  SIGTERM or SIGINT received (None before) and ``stop.after(step)`` says
  whether to stop after ``step`` (``stop.step``: the last step it was asked
  about). Outside the main thread, where Python cannot install handlers, it
  installs none.

  With ``multi_process=True`` (after ``jax.distributed.initialize``), SIGTERM
  is left to JAX's distributed runtime, which tells every process, and a
  SIGINT is passed on to it as a SIGTERM; ``after(step)`` is then True on
  every process at the same step
  (``multihost_utils.reached_preemption_sync_point``), whichever process got
  the signal.
  """

  def __init__(self, multi_process: bool = False):
    self.requested: signal.Signals | None = None
    self.step: int | None = None
    self._multi_process = multi_process
    self._previous: dict[int, object] = {}

  def _handle(self, number, frame):
    del frame
    if self.requested is not None and number == signal.SIGINT:
      print("error: interrupted twice; quitting without a checkpoint.",
            file=sys.stderr, flush=True)
      os._exit(128 + number)
    if self.requested is None:
      self.requested = signal.Signals(number)
      if self._multi_process:  # JAX's handler tells the other processes
        os.kill(os.getpid(), signal.SIGTERM)

  def after(self, step: int) -> bool:
    """Whether to stop after ``step``; call it at every step, in order."""
    self.step = step
    if not self._multi_process:
      return self.requested is not None
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    if multihost_utils.reached_preemption_sync_point(step):
      self.requested = self.requested or signal.SIGTERM
      return True
    return False

  def __enter__(self) -> StopSignals:
    if threading.current_thread() is threading.main_thread():
      numbers = [signal.SIGINT] if self._multi_process else [signal.SIGTERM,
                                                             signal.SIGINT]
      for number in numbers:
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for number, handler in self._previous.items():
      signal.signal(number, handler)
