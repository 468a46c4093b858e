"""The training stages as plain functions: what `python -m cbd_tf.train` runs.

  validate_run(config)  every check that needs no training, raising ValueError
  run(config)           teacher, student, the whole pipeline, or a decoupled stage
                        (crt / lws / tau_norm / ncm on --backbone_from); returns metrics
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile

import keras
import tensorflow as tf
from absl import logging

from cbd_tf import config as config_lib
from cbd_tf import callbacks, distiller, export, metrics, report, run_dir, schedules, teachers
from cbd_tf import decoupled, distribute, environment, long_tail_losses, resume
from cbd_tf.data import pipeline, sampling, sources
from cbd_tf.models import resnet

COMPARISON = "comparison.json"
TENSORBOARD = "tensorboard"


def validate_run(config: config_lib.Config) -> sources.Source:
  """Checks names, numbers, teachers and the workdir; returns the loaded data source."""
  config.validate()
  sources.check_dataset_name(config.data.dataset)
  resnet.check_backbone_name(config.model.backbone)
  sampling.check_policy(config.sampling)
  sampling.check_policy(config.distill.teacher_sampling)
  _check_writable(config.workdir)
  source = sources.load_source(config.data)
  if config.stage == "student":
    teachers.check_teachers(config.distill.teachers, source.num_classes, config.data.image_size)
  if config.stage in config_lib.DECOUPLED_STAGES:
    decoupled.check_backbone_run(config.long_tail.backbone_from, source.num_classes,
                                 config.data.image_size)
    decoupled.check_tau_split(config, source)
  for policy in {config.sampling, config.distill.teacher_sampling}:
    sampling.class_probabilities(source.train_counts, policy)
  return source


def run(config: config_lib.Config, source: sources.Source | None = None,
        strategy: tf.distribute.Strategy | None = None) -> dict:
  """Trains what `config.stage` names and returns its metrics (per run for a pipeline).

  `strategy` defaults to the current one; the CLI builds it from --strategy.
  """
  source = source or validate_run(config)
  strategy = strategy or tf.distribute.get_strategy()
  if config.stage == "pipeline":
    return run_pipeline(config, source, strategy)
  return train_stage(config, source, strategy)


def teacher_config(config: config_lib.Config, spec: str) -> config_lib.Config:
  """The teacher run a pipeline trains for `spec` ('augmentation:seed')."""
  augmentation, seed = config_lib.parse_teacher_spec(spec)
  return config.replace(
      stage="teacher", seed=1000 * config.seed + seed,
      workdir=os.path.join(config.workdir, "teachers", config_lib.teacher_run_name(spec)),
      data={"augmentation": augmentation, "sampling": config.distill.teacher_sampling},
      output={"export_dir": ""})  # a pipeline exports its student only


def student_config(config: config_lib.Config) -> config_lib.Config:
  teacher_dirs = tuple(teacher_config(config, spec).workdir for spec in config.distill.teacher_specs)
  return config.replace(stage="student", workdir=os.path.join(config.workdir, "student"),
                        distill={"teachers": teacher_dirs})


def run_pipeline(config: config_lib.Config, source: sources.Source,
                 strategy: tf.distribute.Strategy | None = None) -> dict:
  """Every teacher, then the student; runs whose final weights exist are not retrained."""
  strategy = strategy or tf.distribute.get_strategy()
  results = {}
  for spec in config.distill.teacher_specs:
    stage_config = teacher_config(config, spec)
    results[config_lib.teacher_run_name(spec)] = _train_or_reuse(stage_config, source, strategy)
  results["student"] = _train_or_reuse(student_config(config), source, strategy)
  if not distribute.is_chief(strategy):
    return results
  table = metrics.format_table(results)
  run_dir.write_json(os.path.join(config.workdir, COMPARISON), results)
  with open(os.path.join(config.workdir, "comparison.txt"), "w") as f:
    f.write(table + "\n")
  report.write_report(config.workdir, results, source.train_counts,
                      f"Teachers vs CBD student on {config.data.dataset}")
  print(f"\nTeachers vs CBD student on {config.data.dataset} (top-1 %; shot groups by "
        f"training images: many > 100, medium 20-100, few < 20)\n{table}", flush=True)
  return results


def _train_or_reuse(config: config_lib.Config, source: sources.Source,
                    strategy: tf.distribute.Strategy) -> dict:
  if run_dir.is_trained(config.workdir):
    metrics_path = os.path.join(config.workdir, run_dir.METRICS)
    logging.info("%s is trained already; not retraining", config.workdir)
    if os.path.exists(metrics_path):
      return run_dir.read_json(metrics_path)
    model, _ = run_dir.load_classifier(config.workdir)
    return evaluate_and_save(model, config, source)
  if config.stage == "student":
    teachers.check_teachers(config.distill.teachers, source.num_classes, config.data.image_size)
  return train_stage(config, source, strategy)


def train_stage(config: config_lib.Config, source: sources.Source,
                strategy: tf.distribute.Strategy | None = None) -> dict:
  """Trains one classifier (teacher, CBD student or decoupled head), saves it, evaluates it.

  A run killed part-way resumes from its last checkpoint when started again.
  """
  # cRT / LWS: --decoupled_epochs or the recipe (10, 5), written out in config.json.
  config = config.replace(optimizer={"epochs": config.epochs})
  strategy = strategy or tf.distribute.get_strategy()
  chief = distribute.is_chief(strategy)
  save_dir = distribute.worker_directory(config.workdir, strategy)
  os.makedirs(save_dir, exist_ok=True)
  keras.utils.set_random_seed(config.seed)
  with strategy.scope():
    if config.stage == "student":
      frozen = teachers.load_teachers(config.distill.teachers)
      config = config.replace(model={"projection_dim": distiller.teacher_feature_dim(frozen)})
    selection = {}  # what a decoupled stage chooses on the validation split
    if config.stage in config_lib.DECOUPLED_STAGES:
      # The finished run's backbone, frozen, under the head this stage re-balances.
      classifier, config, selection = decoupled.build_decoupled_classifier(config, source)
    else:
      classifier = run_dir.build_classifier(config, source.num_classes)
    trainer = (distiller.CBDDistiller(classifier, frozen, config.distill.alpha,
                                      config.distill.beta)
               if config.stage == "student" else classifier)
    steps_per_epoch = (config.optimizer.steps_per_epoch
                       or math.ceil(len(source.train) / config.data.batch_size))
    loss, loss_callbacks = long_tail_losses.build_loss(
        config.long_tail, source.train_counts, config.model.cosine_scale, config.optimizer.epochs)
    optimizer = _build_optimizer(config, steps_per_epoch)
    trainer.compile(optimizer=optimizer, weight_decay=config.optimizer.weight_decay,
                    **({} if config.stage == "student" else {"loss": loss}))
    # Built now, so a checkpoint's optimiser slots have variables to restore into.
    optimizer.build(classifier.trainable_variables)
    state = resume.TrainingState(config.workdir, save_dir, classifier, optimizer)
    start_step = state.restore()
  if chief:
    config.save(os.path.join(config.workdir, run_dir.CONFIG))
    run_dir.write_classes(config.workdir, source.class_names, source.train_counts)
    run_dir.write_json(os.path.join(config.workdir, run_dir.ENVIRONMENT),
                       environment.describe(config, source, strategy))

  dropped = None
  if config.stage not in config_lib.DECOUPLED_STAGES or config.stage in decoupled.TRAINED_STAGES:
    progress, progress_callbacks = None, []
    if config.sampling == "progressive":
      # Kang et al.'s sampling moves with training; created outside the strategy scope,
      # since the input pipelines read it on the host.
      total_steps = config.optimizer.epochs * steps_per_epoch
      progress = tf.Variable(start_step / total_steps, trainable=False, dtype=tf.float32)
      progress_callbacks = [callbacks.SamplingProgress(progress, total_steps)]

    # Image files that broke after the check are skipped; counted on the host, per process.
    with tf.device("/cpu:0"):
      dropped = tf.Variable(0, dtype=tf.int64, trainable=False)

    def build_dataset(step):
      return strategy.distribute_datasets_from_function(
          lambda context: pipeline.build_train_dataset(
              source.train, config.data, config.sampling, config.seed, source.num_classes,
              context, start_step=step, progress=progress, drop_counter=dropped))
    logging.info("training %s in %s: %d epochs x %d steps from step %d, %s sampling",
                 config.stage, config.workdir, config.optimizer.epochs, steps_per_epoch,
                 start_step, config.sampling)
    # cRT / LWS keep the epoch with the best validation top-1, as classifier-balancing.
    best_epoch = None
    if config.stage in decoupled.TRAINED_STAGES and source.val is not None:
      best_epoch = callbacks.BestValidationEpoch(
          classifier, pipeline.build_eval_dataset(source.val, config.data), source.train_counts,
          os.path.join(save_dir, TENSORBOARD), save_dir)
    with strategy.scope():
      resume.fit_from_step(
          trainer, build_dataset, start_step, config.optimizer.epochs, steps_per_epoch,
          callbacks=(loss_callbacks +
                     _callbacks(config, classifier, source, save_dir,
                                periodic_evaluation=best_epoch is None) +
                     ([best_epoch] if best_epoch else []) + progress_callbacks +
                     [resume.StopOnNonFiniteLoss(),
                      resume.SaveTrainingState(state, config.distribute.checkpoint_every_steps)]),
          verbose=1 if sys.stdout.isatty() else 2)
    if best_epoch is not None:
      selection = {**selection, **best_epoch.restore_best()}
  if selection and chief:
    run_dir.write_json(os.path.join(config.workdir, run_dir.SELECTION), selection)
  run_dir.save_final_weights(classifier, save_dir)
  if config.output.export_dir and chief:
    export.export_saved_model(classifier, config.output.export_dir, source.class_names,
                              source.train_counts, config, config.output.top_k)
    logging.info("exported a SavedModel to %s", config.output.export_dir)
  result = evaluate_and_save(
      classifier, config, source, write=chief,
      dropped_train_examples=None if dropped is None else int(dropped.numpy()))
  distribute.barrier(strategy)
  if not chief:
    shutil.rmtree(save_dir, ignore_errors=True)
  return result


def evaluate_and_save(model, config: config_lib.Config, source: sources.Source,
                      write: bool = True, dropped_train_examples: int | None = None) -> dict:
  """Test-split metrics of `model` (and, under "val", those of the validation split where
  the data set has one), printed and written to the run's metrics.json.

  `dropped_train_examples`: image files training skipped because they no longer read or
  decoded (since this process started: a resumed run counts from the resume)."""
  # Post-hoc logit adjustment (--posthoc_tau) lives in the config, so reloads repeat it.
  adjusted = long_tail_losses.posthoc_adjusted(model, source.train_counts,
                                               config.long_tail.posthoc_tau)
  result = metrics.evaluate_model(adjusted, pipeline.build_eval_dataset(source.test, config.data),
                                  source.train_counts)
  if source.val is not None:
    val = metrics.evaluate_model(adjusted, pipeline.build_eval_dataset(source.val, config.data),
                                 source.train_counts)
    val["num_val"] = val.pop("num_test")
    result["val"] = val
  # Image files left out because they did not decode (listed in skipped_files.txt).
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
  if config.stage in config_lib.DECOUPLED_STAGES and os.path.exists(selection_path):
    result.update(run_dir.read_json(selection_path))
  if not write:
    return result
  run_dir.write_json(os.path.join(config.workdir, run_dir.METRICS), result)
  report.write_report(config.workdir, {config.stage: result}, source.train_counts,
                      f"{config.stage} on {config.data.dataset}: {config.workdir}")
  rows = {config.stage: result}
  if "val" in result:
    rows[f"{config.stage} (val)"] = result["val"]
  print(f"\n{config.workdir}\n{metrics.format_table(rows)}", flush=True)
  return result


def _build_optimizer(config: config_lib.Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
  schedule = schedules.build_schedule(
      config.optimizer.lr_schedule,
      schedules.scaled_learning_rate(config.optimizer.learning_rate, config.data.batch_size),
      config.optimizer.epochs, steps_per_epoch, config.optimizer.resolved_warmup_epochs)
  return keras.optimizers.SGD(schedule, momentum=config.optimizer.momentum)


def _callbacks(config: config_lib.Config, classifier, source: sources.Source,
               save_dir: str, periodic_evaluation: bool = True) -> list[keras.callbacks.Callback]:
  log_dir = os.path.join(save_dir, TENSORBOARD)
  result = [callbacks.StepScalars(log_dir, config.output.log_every_steps)]
  if config.output.eval_every_epochs and periodic_evaluation:
    # Never the test split of a data set that has a validation split: test is seen once.
    periodic = source.val if source.val is not None else source.test
    result.append(callbacks.ShotGroupEvaluation(
        classifier, pipeline.build_eval_dataset(periodic, config.data), source.train_counts,
        log_dir, config.output.eval_every_epochs))
  if config.output.profile_batches:
    result.append(callbacks.Profile(log_dir, *config.output.profile_batches))
  return result


def _check_writable(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as error:
    raise ValueError(f"workdir {workdir!r} is not writable: {error.strerror}") from None


