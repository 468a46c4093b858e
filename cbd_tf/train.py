"""Trains CBD teachers, a CBD student, or both.

  python -m cbd_tf.train --flagfile=configs/demo.flags
  python -m cbd_tf.train --flagfile=configs/demo.flags --workdir=/tmp/run --seed=2
"""

from __future__ import annotations

import sys

from cbd_tf import console

console.import_tensorflow_quietly()  # first: TensorFlow's start-up lines once at most

# pylint: disable=wrong-import-position
from cbd_tf import flags, training

PROGRAM = "cbd_tf.train"


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    sys.exit(f"{PROGRAM}: error: unexpected arguments {argv[1:]}")
  try:
    config = flags.config_from_flags()
    config.validate()
    source, strategy = training.prepare_process(config)
  except ValueError as error:
    flags.exit_with_error(PROGRAM, error)
  # Past the checks, a ValueError is a bug and keeps its traceback; a user error
  # (errors.UserError: an unreachable preset, a damaged file, a held lock) is one line.
  try:
    training.run(config, source, strategy)
  except FloatingPointError as error:
    flags.exit_with_error(PROGRAM, error)


def run() -> None:
  """The cbd-train console script (pyproject.toml)."""
  flags.run_cli(main, __doc__, None, PROGRAM)


if __name__ == "__main__":
  run()
