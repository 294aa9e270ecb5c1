"""Errors that are the user's to fix: the command line shows them as one line.

Everything else (a bug) keeps its traceback. ``ConfigError`` is also a
``ValueError`` so that code calling the training functions directly can
catch it as one.
"""


class UserError(Exception):
  """A mistake in the command, the config or the data: shown as one line."""


class ConfigError(UserError, ValueError):
  """A config that cannot run; the message names the field and what is valid."""
