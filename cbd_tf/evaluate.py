"""Evaluates a finished run: top-1 overall and by shot group, written to metrics.json.

  python -m cbd_tf.evaluate --workdir=RUN_DIR
  python -m cbd_tf.evaluate --workdir=PIPELINE_DIR   # every teacher and the student
  python -m cbd_tf.evaluate --saved_model=EXPORT_DIR # an export; prints, writes nothing
"""

from __future__ import annotations

import glob
import os
import sys

import tensorflow as tf
from absl import app

from cbd_tf import export, flags, metrics, run_dir, stages
from cbd_tf.data import pipeline, sources


def _matching_source(data, train_counts, where: str) -> sources.Source:
  """The data set `where` was trained on, checked against its stored class counts."""
  source = sources.load_source(data)
  if list(train_counts) != list(source.train_counts):
    raise ValueError(f"{where}: the data's class counts differ from those it trained on")
  return source


def evaluate_run(directory: str) -> dict:
  """Rebuilds the run's classifier and data, evaluates, writes and returns the metrics."""
  model, config = run_dir.load_classifier(directory)
  source = _matching_source(config.data, run_dir.read_classes(directory)[1], directory)
  return stages.evaluate_and_save(model, config.replace(workdir=directory), source)


def evaluate_saved_model(export_dir: str) -> dict:
  """Metrics of an export's predict_images signature on the test split it was trained for."""
  _, train_counts, config = export.read_export_assets(export_dir)
  source = _matching_source(config.data, train_counts, export_dir)
  predict = tf.saved_model.load(export_dir).signatures["predict_images"]
  # Log-probabilities are logits whose softmax is the export's probabilities (for ECE).
  result = metrics.evaluate_model(
      lambda images, training=False: tf.math.log(predict(images=images)["probabilities"]),
      pipeline.build_eval_dataset(source.test, config.data), source.train_counts)
  print(f"\n{export_dir}\n{metrics.format_table({'saved_model': result})}", flush=True)
  return result


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
  if flags.FLAGS.saved_model:
    if not os.path.exists(os.path.join(flags.FLAGS.saved_model, "saved_model.pb")):
      sys.exit(f"cbd_tf.evaluate: error: no saved_model.pb in {flags.FLAGS.saved_model!r}")
    evaluate_saved_model(flags.FLAGS.saved_model)
    return
  if not flags.FLAGS.workdir:
    sys.exit("cbd_tf.evaluate: error: --workdir=RUN_DIR or --saved_model=EXPORT_DIR is required")
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
