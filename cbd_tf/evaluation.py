"""Evaluating a model, a finished run or an export on its data's splits.

  evaluate_and_save(model, config, source)  test (and val) metrics, with the run's post-hoc
                                            adjustment, written to metrics.json and a report
  evaluate_run(directory)                   rebuilds a finished run and does the above
  evaluate_directory(directory)             a run, or every run of a pipeline directory
  evaluate_saved_model(export_dir)          an export's predict_images; prints, writes nothing
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from cbd_tf import config as config_lib
from cbd_tf import errors, long_tail_losses, metrics, report, run_checks, run_dir
from cbd_tf import run_files, run_models, serving
from cbd_tf.data import pipeline, sources


def evaluate_and_save(model, config: config_lib.Config, source: sources.Source,
                      write: bool = True, dropped_train_examples: int | None = None) -> dict:
  """Test-split metrics of `model` (and, under "val", those of the validation split where
  the data set has one), printed and written to the run's metrics.json.

  `dropped_train_examples`: image files training skipped because they no longer read or
  decoded (since this process started: a resumed run counts from the resume)."""
  # Post-hoc logit adjustment (--posthoc_tau) lives in the config, so reloads repeat it.
  tau, choice = posthoc_tau(model, config, source)
  adjusted = long_tail_losses.posthoc_adjusted(averaged_over_crops(model), source.train_counts,
                                               tau)
  result = metrics.evaluate_model(adjusted, _eval_dataset(source.test, config.data),
                                  source.train_counts)
  if source.val is not None:
    val = metrics.evaluate_model(adjusted, _eval_dataset(source.val, config.data),
                                 source.train_counts)
    val["num_val"] = val.pop("num_test")
    result["val"] = val
  result.update(choice)
  if config.data.test_time_crops > 1:
    result["test_time_crops"] = config.data.test_time_crops
  # Image files left out because they did not decode (listed in the cache's skipped files).
  result["skipped_images"] = source.num_skipped
  if dropped_train_examples is not None:
    result["dropped_train_examples"] = dropped_train_examples
    if dropped_train_examples:
      logging.warning("training skipped %d examples whose image files failed to read",
                      dropped_train_examples)
  if source.num_skipped:
    logging.warning("%d unreadable image files were skipped", source.num_skipped)
  # What a decoupled stage chose on the validation split (tau, best epoch), kept on re-evaluation.
  selection_path = os.path.join(config.workdir, run_dir.SELECTION)
  if run_dir.SELECTION in config.stage_entry.run_files and os.path.exists(selection_path):
    result.update(run_files.read_json(selection_path))
  if not write:
    return result
  run_files.write_json(os.path.join(config.workdir, run_dir.METRICS), result)
  report.write_report(config.workdir, {config.stage: result}, source.train_counts,
                      f"{config.stage} on {config.data.dataset}: {config.workdir}")
  rows = {config.stage: result}
  if "val" in result:
    rows[f"{config.stage} (val)"] = result["val"]
  print(f"\n{config.workdir}\n{metrics.format_table(rows)}", flush=True)
  return result


def posthoc_tau(model, config: config_lib.Config, source: sources.Source) -> tuple[float, dict]:
  """(tau, what was chosen) of --posthoc_tau: the number given ({}), or for `val` the tau of
  metrics.TAU_SWEEP (0, 0.1, ..., 2) whose adjusted logits have the best mean per-class
  accuracy on the validation split, as the tau-norm sweep chooses ({"posthoc_tau",
  "posthoc_tau_sweep"}). ValueError if `val` and the data set has no validation split."""
  value = config.long_tail.posthoc_tau
  if str(value) != config_lib.POSTHOC_TAU_ON_VAL:
    return float(value), {}
  if source.val is None:
    raise ValueError(f"--posthoc_tau=val picks tau on a validation split, and "
                     f"{config.data.dataset} has none; give a number")
  logits, labels = [], []
  model = averaged_over_crops(model)
  for images, batch_labels in _eval_dataset(source.val, config.data):
    logits.append(np.asarray(model(images, training=False), np.float64))
    labels.append(np.asarray(batch_labels))
  logits, labels = np.concatenate(logits), np.concatenate(labels)
  prior = long_tail_losses.log_prior(source.train_counts)
  sweep = {tau: metrics.logits_accuracy(logits - tau * prior, labels, source.train_counts)
           for tau in metrics.TAU_SWEEP}
  tau = metrics.best_tau(sweep)
  return tau, {"posthoc_tau": tau, "posthoc_tau_chosen_on": "val", "posthoc_tau_sweep": {
      f"{t:g}": metrics.mean_class_accuracy(r) for t, r in sweep.items()}}


def averaged_over_crops(model):
  """`model` (images -> logits) for evaluation batches: images (N, S, S, 3) as they are, or
  test-time crops (N, K, S, S, 3) -> the mean of the K crops' logits (LIFT's ensemble)."""
  def averaged(images, training=False):
    if images.shape.rank == 4:
      return model(images, training=training)
    shape = tf.shape(images)
    logits = model(tf.reshape(images, tf.concat([[-1], shape[2:]], 0)), training=training)
    return tf.reduce_mean(tf.reshape(logits, tf.stack([shape[0], shape[1], -1])), axis=1)
  return averaged


def _eval_dataset(split, data: config_lib.DataConfig):
  """The final evaluation's batches, with the run's --test_time_crops."""
  return pipeline.build_eval_dataset(split, data, data.test_time_crops)


def matching_source(data: config_lib.DataConfig, train_counts, where: str) -> sources.Source:
  """The data set `where` was trained on, checked against its stored class counts."""
  source = sources.load_source(data)
  if list(train_counts) != list(source.train_counts):
    raise ValueError(f"{where}: the data's class counts differ from those it trained on")
  return source


def evaluate_run(directory: str, test_time_crops: int | None = None) -> dict:
  """Rebuilds the run's classifier and data, evaluates (with `test_time_crops`, None: the
  run's), writes and returns the metrics."""
  model, config = run_models.load_classifier(directory)
  config = config.with_test_time_crops(test_time_crops)
  source = matching_source(config.data, run_files.read_classes(directory)[1], directory)
  return evaluate_and_save(model, config.replace(workdir=directory), source)


def evaluate_directory(directory: str, test_time_crops: int | None = None) -> dict[str, dict]:
  """{name: metrics} of a finished run, or of every run of a pipeline directory (checked
  finished before any is evaluated); prints a table of them for a pipeline."""
  runs = run_dir.run_directories(directory)
  for run in runs.values():
    run_checks.check_trained(run)
  results = {name: evaluate_run(run, test_time_crops) for name, run in runs.items()}
  if len(results) > 1:
    print(f"\n{metrics.format_table(results)}")
  return results


def run_posthoc_tau(directory: str, tau_setting=None) -> float:
  """The post-hoc tau an export of the finished run `directory` bakes in: `tau_setting` (a
  number or `val`), or the run's own --posthoc_tau when None. `val` reads the run's data."""
  config = config_lib.Config.load(os.path.join(directory, run_dir.CONFIG))
  if tau_setting is not None:
    config = config.replace(long_tail={"posthoc_tau": str(tau_setting)}).validate()
  if str(config.long_tail.posthoc_tau) != config_lib.POSTHOC_TAU_ON_VAL:
    return float(config.long_tail.posthoc_tau)
  model, _ = run_models.load_classifier(directory)
  source = matching_source(config.data, run_files.read_classes(directory)[1], directory)
  return posthoc_tau(model, config, source)[0]


def evaluate_saved_model(export_dir: str, test_time_crops: int | None = None) -> dict:
  """Metrics of an export's predict_images signature on the test split it was trained for,
  with the export's test-time crops (or `test_time_crops`)."""
  serving.check_export(export_dir)
  try:
    _, train_counts, config = serving.read_export_assets(export_dir)
  except OSError as error:
    raise errors.DamagedFile(f"{export_dir} is damaged: {error.strerror or error}: "
                             f"{error.filename}") from error
  config = config.with_test_time_crops(test_time_crops)
  source = matching_source(config.data, train_counts, export_dir)
  try:
    predict = tf.saved_model.load(export_dir).signatures["predict_images"]
  except (OSError, KeyError, tf.errors.OpError) as error:
    raise errors.DamagedFile(f"{export_dir} is damaged: not a SavedModel cbd_tf.export wrote "
                             f"({(str(error).strip().splitlines() or [''])[0]})") from error
  # Log-probabilities are logits whose softmax is the export's probabilities (for ECE); their
  # mean over test-time crops differs from the mean logits by a constant per image, so it
  # ranks and calibrates as serving_default's crop-averaged logits do.
  result = metrics.evaluate_model(
      averaged_over_crops(lambda images, training=False: tf.math.log(
          predict(images=images)["probabilities"])),
      _eval_dataset(source.test, config.data), source.train_counts)
  print(f"\n{export_dir}\n{metrics.format_table({'saved_model': result})}", flush=True)
  return result
