"""Trains CBD teachers, a CBD student, or both.

  python -m cbd_tf.train --flagfile=configs/demo.flags
  python -m cbd_tf.train --flagfile=configs/demo.flags --workdir=/tmp/run --seed=2
"""

from __future__ import annotations

import sys

from absl import app

from cbd_tf import flags, stages


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    sys.exit(f"cbd_tf.train: error: unexpected arguments {argv[1:]}")
  config = flags.config_from_flags()
  try:
    source = stages.validate_run(config)
  except ValueError as error:
    sys.exit(f"cbd_tf.train: error: {error}")
  stages.run(config, source)


if __name__ == "__main__":
  app.run(main)
