"""What the commands share: a user's mistake as one line, quiet libraries."""
import os
import sys
import warnings
from typing import NoReturn

from absl import logging


def fail(message: str, status: int = 2) -> NoReturn:
  """Prints ``error: message`` on one line and exits with ``status``."""
  print(f"error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(status)


def quiet_libraries() -> None:
  """Only errors from absl, JAX, orbax, tfds and TensorFlow (before they load)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  # TensorFlow (tfds preparation, TensorBoard events) announces oneDNN on
  # import whatever the log level; its kernels never touch the training math.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  logging.set_verbosity(logging.ERROR)
  warnings.filterwarnings("ignore")  # third-party deprecation notices
