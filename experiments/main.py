r"""Command line: train and evaluate one config (kept short on purpose).

  python -m experiments.main --config=experiments/configs/default.py \
      --workdir=runs/default [--config.KEY=VALUE ...]

Multi-process (one command per process; all share --workdir):

  python -m experiments.main ... --coordinator_address=127.0.0.1:1234 \
      --num_processes=2 --process_id=0

Rerunning a command resumes from the latest checkpoint in WORKDIR/checkpoints.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0, for jax.distributed.initialize.")
flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
flags.DEFINE_integer("process_id", None, "Index of this process.")
config_flags.DEFINE_config_file(
    "config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging.logging.Filter):
  """Drops the INFO chatter of orbax and tfds (a dozen lines per checkpoint)."""

  def filter(self, record):
    noisy = ("/orbax/", "/tensorflow_datasets/", "/absl/")
    return record.levelno >= logging.WARNING or not any(
        part in record.pathname for part in noisy)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.coordinator_address is not None or FLAGS.num_processes is not None:
    # Before any other JAX call.
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  from experiments import train  # pylint: disable=g-import-not-at-top
  logging.info("JAX process %d / %d, %d local / %d global devices (%s).",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
