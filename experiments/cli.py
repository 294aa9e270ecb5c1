"""What the commands share: a user's mistake as one line, quiet libraries."""
import difflib
import os
import re
import sys
import warnings
from typing import NoReturn

import ml_collections
from absl import logging


def fail(message: str, status: int = 2) -> NoReturn:
  """Prints ``error: message`` on one line and exits with ``status``."""
  print(f"error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(status)


def fail_to_load_config(filename: str, error: OSError) -> NoReturn:
  """A config file that does not load, as one line (the error's last)."""
  reason = str(error.__cause__ or error).strip().splitlines()[-1]
  fail(f"cannot load the config file {filename}: {reason.strip()}")


def _config_keys(config: ml_collections.ConfigDict, prefix: str = ""):
  """Every dotted key of ``config``, nested ConfigDicts' included."""
  for key in config.keys():
    yield prefix + key
    if isinstance(config[key], ml_collections.ConfigDict):
      yield from _config_keys(config[key], f"{prefix}{key}.")


def check_config_overrides(argv: list[str], config_flag) -> None:
  """Stops with one line where a ``--config.KEY`` in ``argv`` is not a field of
  the config file that ``--config`` names (close keys are suggested).

  ``config_flag``: the flag of ``config_flags.DEFINE_config_file``; its parser
  loads the file as the flag will.
  """
  keys = [m.group(1) for m in map(re.compile(r"--?(?:no)?config\.([^=]+)").match,
                                  argv[1:]) if m]
  paths = [arg.split("=", 1)[1] if "=" in arg else value
           for arg, value in zip(argv[1:], argv[2:] + [""])
           if re.fullmatch(r"--?config(=.*)?", arg)]
  if not keys or not paths:
    return
  try:
    config = config_flag.parser.parse(paths[-1])
  except (TypeError, ValueError):
    return  # a broken config file: the flag's own parsing reports it
  if not isinstance(config, ml_collections.ConfigDict):
    try:
      config.to_json()  # a file that did not load raises its error here
    except OSError as error:
      fail_to_load_config(paths[-1], error)
    return
  for key in keys:
    node = config
    for name in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        close = difflib.get_close_matches(key, list(_config_keys(config)), n=2)
        fail(f"unknown config key {key!r}"
             + (f"; did you mean {' or '.join(map(repr, close))}?" if close else "")
             + f" (the keys: get_config() in {paths[-1].split(':')[0]})")
      node = node[name]


def quiet_libraries() -> None:
  """Only errors from absl, JAX, orbax, tfds and TensorFlow (before they load)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  # TensorFlow (tfds preparation) announces oneDNN on
  # import whatever the log level; its kernels never touch the training math.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  logging.set_verbosity(logging.ERROR)
  warnings.filterwarnings("ignore")  # third-party deprecation notices
