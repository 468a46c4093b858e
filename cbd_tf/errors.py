"""Errors a user can mend, met after a command's checks: every cbd_tf command prints one as
one line naming the problem, with no traceback unless --traceback (flags.run_cli).

Only these classes (and run_files.RunFault's) become one line: any other exception is a bug
and keeps its traceback. The two below are ValueErrors too, so the checks before a run
(which stop on ValueError) report them the same way.
"""

from __future__ import annotations

import re


class UserError(Exception):
  """A problem in what the command was given or found (files, network, other processes)."""


class DamagedFile(UserError, ValueError):
  """A file cbd_tf reads is damaged: truncated, overwritten, not what its name says."""


class PresetUnavailable(UserError, ValueError):
  """A KerasHub preset that cannot be loaded: no network and no cached copy, or a damaged
  download."""


def reason(error: BaseException) -> str:
  """An OSError's or TensorFlow op error's reason in one line: TensorFlow's wrapping
  ("{{function_node ...}} reason [Op:SaveV2] name:") taken off."""
  message = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
  message = str(message).splitlines()[0] if str(message) else type(error).__name__
  return " ".join(re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", message).split()) or str(error)
