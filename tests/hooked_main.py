"""``python -m experiments.main`` with hooks that interrupt the run at a known step.

Tests that stop a run send the signal from inside it, at a step they name,
never from outside while it runs (a fast machine could finish first):

* ``TEST_SIGNAL_AT_STEP=STEP:NAME`` (e.g. ``5:SIGTERM``): the process sends
  itself the signal when the training loop asks whether to stop after step
  STEP, just before it asks. One process then stops after exactly STEP; the
  processes of a multi-process run stop together at the step JAX's
  preemption sync agrees on (STEP or one shortly after it).
* ``TEST_KILL_AFTER_CHECKPOINT=STEP``: the process SIGKILLs itself as soon
  as the checkpoint of STEP is written (the save finished).

Run as ``python -m tests.hooked_main <the flags of experiments.main>`` from
the repository root. The hooks replace functions of
``experiments.interruption`` and ``experiments.checkpoints`` in this process
only; the training code has no test switches.
"""
import os
import signal

from absl import app

from experiments import interruption
from experiments import main


def signal_at_step(step: int, number: int) -> None:
  after = interruption.StopSignals.after

  def after_with_signal(self, current):
    if current == step:
      os.kill(os.getpid(), number)
    return after(self, current)

  interruption.StopSignals.after = after_with_signal


def kill_after_checkpoint(step: int) -> None:
  # For one process: the module imports orbax, here before main() calls
  # jax.distributed.initialize.
  from experiments import checkpoints  # pylint: disable=g-import-not-at-top
  save = checkpoints.save

  def save_then_kill(manager, current, state):
    save(manager, current, state)
    if current == step:
      manager.wait_until_finished()
      os.kill(os.getpid(), signal.SIGKILL)

  checkpoints.save = save_then_kill


def hooked_main(argv):
  if "TEST_SIGNAL_AT_STEP" in os.environ:
    step, name = os.environ["TEST_SIGNAL_AT_STEP"].split(":")
    signal_at_step(int(step), signal.Signals[name].value)
  if "TEST_KILL_AFTER_CHECKPOINT" in os.environ:
    kill_after_checkpoint(int(os.environ["TEST_KILL_AFTER_CHECKPOINT"]))
  main.main(argv)


if __name__ == "__main__":
  app.run(hooked_main, flags_parser=main._parse_flags)  # pylint: disable=protected-access
