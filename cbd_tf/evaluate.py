"""Evaluates a finished run: top-1 overall and by shot group, written to metrics.json.

  python -m cbd_tf.evaluate --workdir=RUN_DIR
  python -m cbd_tf.evaluate --workdir=PIPELINE_DIR   # every teacher and the student
  python -m cbd_tf.evaluate --saved_model=EXPORT_DIR # an export; prints, writes nothing
  [--test_time_crops=5]   LIFT's five crops, logits averaged (default: the run's setting)

The work is done by cbd_tf/evaluation.py.
"""

from __future__ import annotations

import sys

from cbd_tf import console

console.import_tensorflow_quietly()  # first: TensorFlow's start-up lines once at most

# pylint: disable=wrong-import-position
from cbd_tf import evaluation, flags

PROGRAM = "cbd_tf.evaluate"

# Every other flag is a training setting: given here, it stops the command (it would do nothing).
FLAGS_READ = {"workdir", "saved_model", "test_time_crops"}


def main(argv: list[str]) -> None:
  del argv
  values = flags.FLAGS
  unexpected = flags.unexpected_flag_error("evaluate", FLAGS_READ)
  if unexpected:
    sys.exit(unexpected)
  if not values.saved_model and not values.workdir:
    sys.exit("cbd_tf.evaluate: error: --workdir=RUN_DIR or --saved_model=EXPORT_DIR is required")
  crops = values.test_time_crops if values["test_time_crops"].present else None
  try:
    if values.saved_model:
      evaluation.evaluate_saved_model(values.saved_model, crops)
    else:
      evaluation.evaluate_directory(values.workdir, crops)
  except ValueError as error:
    flags.exit_with_error(PROGRAM, error)


def run() -> None:
  """The cbd-evaluate console script (pyproject.toml)."""
  flags.run_cli(main, __doc__, FLAGS_READ, PROGRAM)


if __name__ == "__main__":
  run()
