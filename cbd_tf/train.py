"""Trains CBD teachers, a CBD student, or both.

  python -m cbd_tf.train --flagfile=configs/demo.flags
  python -m cbd_tf.train --flagfile=configs/demo.flags --workdir=/tmp/run --seed=2
"""

from __future__ import annotations

import sys

from absl import app

from cbd_tf import distribute, flags, stages


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    sys.exit(f"cbd_tf.train: error: unexpected arguments {argv[1:]}")
  try:
    config = flags.config_from_flags()
    config.validate()
    # Devices first: logical CPUs and multi-worker collectives need a fresh runtime.
    distribute.configure_process(config.distribute)
    strategy = distribute.build_strategy(config.distribute)
    source = stages.validate_run(config)
  except ValueError as error:
    sys.exit(f"cbd_tf.train: error: {error}")
  try:
    stages.run(config, source, strategy)
  except FloatingPointError as error:
    sys.exit(f"cbd_tf.train: error: {error}")


if __name__ == "__main__":
  app.run(main)
