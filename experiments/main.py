r"""Command line: train and evaluate one config (kept short on purpose).

  python -m experiments.main --config=experiments/configs/default.py \
      --workdir=runs/default [--config.KEY=VALUE ...] [--verbose]

Multi-process (one command per process; all share --workdir):

  python -m experiments.main ... --coordinator_address=127.0.0.1:1234 \
      --num_processes=2 --process_id=0

Resuming, errors (exit status 2), SIGTERM and lost processes: docs/training.md.
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments.cli import check_config_overrides
from experiments.cli import fail
from experiments.cli import fail_to_load_config
from experiments.cli import quiet_libraries

FLAGS = flags.FLAGS
# JAX's distributed runtime declares a process dead after this long without a
# heartbeat and then ends every other process (a C++ fatal error). A process
# that is not at a collective when another dies (e.g. waiting for a save)
# ends then; at a collective, it stops at once with one line (ProcessLost).
HEARTBEAT_TIMEOUT_S = 25  # JAX's default: 100

flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0, for jax.distributed.initialize.")
flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
flags.DEFINE_integer("process_id", None, "Index of this process.")
flags.DEFINE_bool("verbose", False,
                  "Show the INFO and WARNING logs of absl, JAX, orbax, tfds and "
                  "TensorFlow.")
flags.DEFINE_bool("allow_config_change", False,
                  "Resume from WORKDIR's checkpoints even if the config differs "
                  "from the saved one in fields that change the result.")
config_flags.DEFINE_config_file(
    "config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a user's mistake as one line."""
  check_config_overrides(argv, FLAGS["config"])
  try:
    return FLAGS(argv)
  except flags.Error as error:
    fail(str(error))
  raise AssertionError("unreachable")


def _summary(final: dict, run) -> str:
  lines = [
      f"{final['dataset']}, {final['model']}, {final['optimizer']}, batch "
      f"{final['global_batch_size']}, {final['step']} steps: test accuracy "
      f"{100 * final['test_accuracy']:.2f} %, test loss {final['test_loss']:.4f}, "
      f"train loss {final['train_loss']:.4f} ({final['wall_time_s']:.0f} s)"]
  lines += [f"  {what + ':':13s}{path}" for what, path in run.outputs()]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.verbose:
    quiet_libraries()
  config = FLAGS.config
  try:
    config.to_json()  # the config file is loaded lazily
  except OSError as error:
    fail_to_load_config(FLAGS["config"].config_filename, error)
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.coordinator_address is not None or FLAGS.num_processes is not None:
    # Before any other JAX call.
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  from experiments import interruption  # pylint: disable=g-import-not-at-top
  from experiments import train  # pylint: disable=g-import-not-at-top
  from experiments.user_errors import UserError  # pylint: disable=g-import-not-at-top
  from experiments.workdir import Workdir  # pylint: disable=g-import-not-at-top
  run = Workdir(FLAGS.workdir)
  logging.info("JAX process %d / %d, %d local / %d global devices (%s).",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  try:
    with run.lock(enabled=jax.process_index() == 0):
      run.check_config(config, allow_changes=FLAGS.allow_config_change)
      final = train.train_and_evaluate(config, FLAGS.workdir)
  except interruption.Interrupted as stopped:
    fail(str(stopped), status=stopped.exit_status)
  except interruption.ProcessLost as lost:
    # Out at once: JAX's shutdown at exit would wait for the lost process,
    # then end this one in a C++ fatal error.
    try:
      fail(str(lost), status=lost.exit_status)
    except SystemExit:
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(lost.exit_status)
  except UserError as error:
    fail(str(error))
  if jax.process_index() == 0:
    print(_summary(final, run))


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
