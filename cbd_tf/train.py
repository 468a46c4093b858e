"""Trains CBD teachers, a CBD student, or both.

  python -m cbd_tf.train --flagfile=configs/demo.flags
  python -m cbd_tf.train --flagfile=configs/demo.flags --workdir=/tmp/run --seed=2
"""

from __future__ import annotations

import sys

from cbd_tf import flags, run_files, training


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    sys.exit(f"cbd_tf.train: error: unexpected arguments {argv[1:]}")
  try:
    config = flags.config_from_flags()
    config.validate()
    source, strategy = training.prepare_process(config)
  except ValueError as error:
    sys.exit(f"cbd_tf.train: error: {error}")
  # Past the checks, a ValueError is a bug and keeps its traceback.
  try:
    training.run(config, source, strategy)
  except (FloatingPointError, run_files.RunFault) as error:
    sys.exit(f"cbd_tf.train: error: {error}")


def run() -> None:
  """The cbd-train console script (pyproject.toml)."""
  flags.run_cli(main, __doc__, None)


if __name__ == "__main__":
  run()
