"""A quiet console for cbd_tf's commands: our own log lines, TensorFlow's only at or above
--tf_verbosity (default error), and TensorFlow's start-up lines at most once.

TensorFlow 2.21 prints its start-up lines (oneDNN, "Could not find cuda drivers", the CPU
instructions) through C++ absl logging before absl::InitializeLog, which ignores
TF_CPP_MIN_LOG_LEVEL, and prints them twice: `import tensorflow` loads
_pywrap_profiler_plugin.so, whose own copy of that logging prints them again. So the
command imports TensorFlow with stderr (fd 2) captured, then prints the captured lines its
--tf_verbosity keeps, each once. TF_CPP_MIN_LOG_LEVEL, read once when TensorFlow loads, is
set from --tf_verbosity first (the command line and its flagfiles are read for it).

After the flags are parsed, `configure` keeps the log records of every library (TensorFlow's
Python side, as functional_saver's "Sharding callback duration" per checkpoint; TFDS,
KerasHub) below --tf_verbosity off the console; cbd_tf's own records stay, whatever the
level.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import tempfile

# --tf_verbosity -> (TF_CPP_MIN_LOG_LEVEL, the lowest Python logging level shown).
VERBOSITIES = {"info": ("0", logging.INFO), "warning": ("1", logging.WARNING),
               "error": ("2", logging.ERROR), "fatal": ("3", logging.CRITICAL)}
DEFAULT_VERBOSITY = "error"
FLAG = "tf_verbosity"

# A C++ log line: severity, MMDD, time, thread, then "file:line] message".
_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ (.*)$")
_SEVERITIES = {"I": "info", "W": "warning", "E": "error", "F": "fatal"}
_PYTHON_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def verbosity_from_environment() -> str:
  """The verbosity TF_CPP_MIN_LOG_LEVEL asks for, if set; else the default."""
  levels = {level: name for name, (level, _) in VERBOSITIES.items()}
  return levels.get(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip(), DEFAULT_VERBOSITY)


def import_tensorflow_quietly(argv: list[str] | None = None) -> None:
  """Imports TensorFlow as the module docstring says; call it before anything imports
  TensorFlow. Does nothing if TensorFlow is already loaded (a test, a notebook)."""
  if "tensorflow" in sys.modules:
    return
  verbosity = requested_verbosity(sys.argv if argv is None else argv)
  if verbosity in VERBOSITIES:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = VERBOSITIES[verbosity][0]
  else:  # not given (or misspelt: absl names it later): TF_CPP_MIN_LOG_LEVEL, else error
    verbosity = verbosity_from_environment()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", VERBOSITIES[verbosity][0])
  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # no stderr to capture
    importlib.import_module("tensorflow")
    return
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    failed = True
    try:
      importlib.import_module("tensorflow")
      failed = False
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode("utf-8", "replace")
      # An import that failed: all it printed, as it printed it.
      sys.stderr.write(text if failed else "".join(startup_lines(text, verbosity)))
      sys.stderr.flush()


def startup_lines(text: str, verbosity: str) -> list[str]:
  """The lines of `text` (what stderr got while TensorFlow loaded) that `verbosity` keeps:
  C++ log records at or above it and other lines (a Python warning), each once; absl's
  notice about InitializeLog at `info` only. A line that starts none of these continues the
  record before it ("To enable the following instructions: ...")."""
  order = list(VERBOSITIES)
  kept, seen, keep = [], set(), True
  for line in text.splitlines(keepends=True):
    record = _LOG_LINE.match(line)
    if record:
      key = record.groups()
      keep = order.index(_SEVERITIES[key[0]]) >= order.index(verbosity) and key not in seen
    elif line.startswith(_ABSL_NOTICE):
      key = line
      keep = verbosity == "info" and key not in seen
    elif _PYTHON_WARNING.match(line) or not seen:  # a line of its own
      key = line
      keep = key not in seen
    else:
      key = None  # a continuation: kept with its record
    seen.add(key)
    if keep:
      kept.append(line)
  return kept


def requested_verbosity(argv: list[str]) -> str | None:
  """The last --tf_verbosity in `argv` and the flagfiles it names (as absl reads them:
  a flagfile's lines where it stands), or None."""
  value, flagfiles = None, set()
  arguments = list(argv[1:])
  while arguments:
    argument = arguments.pop(0)
    if argument == "--":
      break
    if argument.startswith("--flagfile="):
      path = argument.split("=", 1)[1]
      if path not in flagfiles:  # one that includes itself: absl names it
        flagfiles.add(path)
        arguments[:0] = _flagfile_lines(path)
    elif argument.startswith(f"--{FLAG}="):
      value = argument.split("=", 1)[1]
    elif argument == f"--{FLAG}" and arguments:
      value = arguments.pop(0)
  return value


def _flagfile_lines(path: str) -> list[str]:
  try:
    with open(path) as f:
      return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
  except OSError:
    return []  # absl names it when it parses the flags


class _TheirsBelow(logging.Filter):
  """Passes cbd_tf's records (and the running script's), and others' at `level` or above."""

  def __init__(self, level: int):
    super().__init__()
    self.level = level

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= self.level:
      return True
    path = os.path.abspath(record.pathname)
    return (path.startswith(_PACKAGE + os.sep)
            or path == os.path.abspath(getattr(sys.modules.get("__main__"), "__file__", "")))


def configure(verbosity: str | None) -> None:
  """Keeps other libraries' log records below `verbosity` (None: what TF_CPP_MIN_LOG_LEVEL
  says, else error) off the console; cbd_tf's own stay. Call after absl parsed the flags."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  level = VERBOSITIES[verbosity or verbosity_from_environment()][1]
  handler = absl_logging.get_absl_handler()
  for old in [f for f in handler.filters if isinstance(f, _TheirsBelow)]:
    handler.removeFilter(old)
  handler.addFilter(_TheirsBelow(level))
  # TensorFlow's Python logger has a handler of its own ("INFO:tensorflow:Assets written to").
  logging.getLogger("tensorflow").setLevel(level)
