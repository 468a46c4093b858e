"""Evaluates a finished run: top-1 overall and by shot group, written to metrics.json.

  python -m cbd_tf.evaluate --workdir=RUN_DIR
  python -m cbd_tf.evaluate --workdir=PIPELINE_DIR   # every teacher and the student
"""

from __future__ import annotations

import glob
import os
import sys

from absl import app

from cbd_tf import flags, metrics, run_dir, stages
from cbd_tf.data import sources


def evaluate_run(directory: str) -> dict:
  """Rebuilds the run's classifier and data, evaluates, writes and returns the metrics."""
  model, config = run_dir.load_classifier(directory)
  source = sources.load_source(config.data)
  _, train_counts = run_dir.read_classes(directory)
  if list(train_counts) != list(source.train_counts):
    raise ValueError(f"{directory}: the data's class counts differ from those it trained on")
  return stages.evaluate_and_save(model, config.replace(workdir=directory), source)


def run_directories(directory: str) -> dict[str, str]:
  """{name: run dir}: the directory itself, or a pipeline's teachers and student."""
  if os.path.exists(os.path.join(directory, run_dir.CONFIG)):
    return {os.path.basename(os.path.normpath(directory)): directory}
  runs = {os.path.basename(d): d for d in sorted(glob.glob(os.path.join(directory, "teachers", "*")))}
  if os.path.isdir(os.path.join(directory, "student")):
    runs["student"] = os.path.join(directory, "student")
  if not runs:
    raise ValueError(f"{directory!r} is neither a run directory nor a pipeline directory")
  return runs


def main(argv: list[str]) -> None:
  del argv
  if not flags.FLAGS.workdir:
    sys.exit("cbd_tf.evaluate: error: --workdir is required")
  try:
    runs = run_directories(flags.FLAGS.workdir)
    for directory in runs.values():
      run_dir.check_trained(directory)
  except ValueError as error:
    sys.exit(f"cbd_tf.evaluate: error: {error}")
  results = {name: evaluate_run(directory) for name, directory in runs.items()}
  if len(results) > 1:
    print(f"\n{metrics.format_table(results)}")


if __name__ == "__main__":
  app.run(main)
