"""What `python -m cbd_tf.train` runs: one generic loop for every stage.

  prepare_process(config)  devices and the strategy, then validate_run (the CLI's first call)
  validate_run(config)     every check that needs no training, raising ValueError
  run(config)              the stage --stage names (stage_registry.py); returns its metrics
  train_stage(config)      builds one run's model (its stage module, cbd_tf/stages/), fits it
                           if the stage trains, saves, exports and evaluates it
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import keras
import tensorflow as tf
from absl import logging

from cbd_tf import config as config_lib
from cbd_tf import callbacks, distribute, environment, evaluation, long_tail_losses, optimizers
from cbd_tf import pretrained, resume, run_dir, run_files, run_lock, run_models, schedules, serving
from cbd_tf import serving_warmup, stages
from cbd_tf.data import pipeline, sampling, sources
from cbd_tf.models import backbones


def validate_run(config: config_lib.Config) -> sources.Source:
  """Checks names, numbers, teachers and the workdir; returns the loaded data source."""
  config.validate()
  sources.check_dataset_name(config.data.dataset)
  # A run that kept its preset's backbone resumes without the preset (pretrained.py).
  if not pretrained.keeps_backbone(config.workdir):
    backbones.check_backbone_name(config.model.backbone)
  if config.model.student_backbone:
    backbones.check_backbone_name(config.model.student_backbone)
  if config.model.init_from:
    pretrained.check_init_from(config.model.init_from)
  sampling.check_policy(config.sampling)
  sampling.check_policy(config.distill.teacher_sampling)
  _check_writable(config.workdir, "workdir")
  if config.output.export_dir:  # written at the end of training: checked before it
    _check_writable(os.path.dirname(os.path.abspath(config.output.export_dir)),
                    "--export_dir's directory")
  source = sources.load_source(config.data)
  stages.check_stage(config, source)
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
  with run_lock.hold(config.workdir, distribute.is_chief(strategy)):
    if config.stage_entry.runs_itself:
      return stages.stage_module(config.stage).run(config, source, strategy)
    return train_stage(config, source, strategy)


def prepare_process(config: config_lib.Config) -> tuple[sources.Source, tf.distribute.Strategy]:
  """What `python -m cbd_tf.train` does before run(): devices and the strategy from
  config.distribute, then the checks of validate_run (ValueError before any training)."""
  # Devices first: logical CPUs and multi-worker collectives need a fresh runtime.
  distribute.configure_process(config.distribute)
  strategy = distribute.build_strategy(config.distribute)
  return validate_run(config), strategy


def train_stage(config: config_lib.Config, source: sources.Source,
                strategy: tf.distribute.Strategy | None = None) -> dict:
  """Builds what `config.stage`'s module builds, trains it if its registry entry says the
  stage trains, saves it, evaluates it.

  A run killed part-way resumes from its last checkpoint when started again.
  """
  strategy = strategy or tf.distribute.get_strategy()
  with run_lock.hold(config.workdir, distribute.is_chief(strategy)):
    return _train_stage(config, source, strategy)


def _train_stage(config: config_lib.Config, source: sources.Source,
                 strategy: tf.distribute.Strategy) -> dict:
  stage = config.stage_entry
  # cRT / LWS: --decoupled_epochs or the recipe (10, 5) and --decoupled_warmup_epochs,
  # written out in config.json.
  config = config.replace(optimizer={"epochs": config.epochs,
                                     "warmup_epochs": config.warmup_epochs})
  chief = distribute.is_chief(strategy)
  save_dir = distribute.worker_directory(config.workdir, strategy)
  os.makedirs(save_dir, exist_ok=True)
  keras.utils.set_random_seed(config.seed)
  with strategy.scope():
    built = stages.stage_module(config.stage).build(config, source)
  config, classifier = built.config, built.classifier
  trained = classifier.trained_weight_counts() if stage.trains else {"backbone": 0, "total": 0}
  logging.info("%s trains %s weights, %s of them in the backbone (--backbone_tuning=%s)",
               config.stage, f"{trained['total']:,}", f"{trained['backbone']:,}",
               config.model.backbone_tuning)
  if chief:
    config.save(os.path.join(config.workdir, run_dir.CONFIG))
    run_models.write_backbone_architecture(classifier, config.workdir)
    run_files.write_classes(config.workdir, source.class_names, source.train_counts)
    run_files.write_json(os.path.join(config.workdir, run_dir.ENVIRONMENT),
                         {**environment.describe(config, source, strategy),
                          "trained_weights": trained})
  selection, dropped = dict(built.selection), None
  if stage.trains:
    dropped, chosen = _fit(built, source, strategy, save_dir)
    selection.update(chosen)
  if selection and chief:
    run_files.write_json(os.path.join(config.workdir, run_dir.SELECTION), selection)
  run_files.save_final_weights(classifier, save_dir)
  if chief:
    warmup_images = serving_warmup.encoded_images(source.test)
    serving_warmup.keep_images(warmup_images, config.workdir)
  if config.output.export_dir and chief:
    tau, _ = evaluation.posthoc_tau(classifier, config, source)
    serving.export_saved_model(classifier, config.output.export_dir, source.class_names,
                               source.train_counts, config, config.output.top_k, warmup_images,
                               tau)
    logging.info("exported a SavedModel to %s", config.output.export_dir)
  result = evaluation.evaluate_and_save(
      classifier, config, source, write=chief, dropped_train_examples=dropped)
  distribute.barrier(strategy)
  if not chief:
    shutil.rmtree(save_dir, ignore_errors=True)
  return result


def _fit(built: stages.Built, source: sources.Source,
         strategy: tf.distribute.Strategy, save_dir: str) -> tuple[int, dict]:
  """Trains `built` from its last checkpoint; returns the training examples dropped (image
  files that broke) and what the stage's callbacks chose on the validation split."""
  config, classifier = built.config, built.classifier
  steps_per_epoch = (config.optimizer.steps_per_epoch
                     or schedules.steps_per_epoch(len(source.train), config.data.batch_size))
  with strategy.scope():
    loss, loss_callbacks = None, []
    if built.compiles_loss:
      loss, loss_callbacks = long_tail_losses.build_loss(
          config.long_tail, source.train_counts, config.model.cosine_scale,
          config.optimizer.epochs)
    optimizer = _build_optimizer(config, steps_per_epoch)
    built.fit_model.compile(optimizer=optimizer, weight_decay=config.optimizer.weight_decay,
                            backbone_learning_rate_multiplier=(
                                config.model.backbone_learning_rate_multiplier),
                            **({"loss": loss} if built.compiles_loss else {}))
    # Built now, so a checkpoint's optimiser slots have variables to restore into.
    optimizer.build(classifier.trainable_variables)
    state = resume.TrainingState(config.workdir, save_dir, classifier, optimizer)
    start_step = state.restore()
  progress, progress_callbacks = sampling.progress_tracker(
      config.sampling, start_step, config.optimizer.epochs * steps_per_epoch)
  # Image files that broke after the check are skipped; counted on the host, per process.
  with tf.device("/cpu:0"):
    dropped = tf.Variable(0, dtype=tf.int64, trainable=False)

  def build_dataset(step):
    return strategy.distribute_datasets_from_function(
        lambda context: pipeline.build_train_dataset(
            source.train, config.data, config.sampling, config.seed, source.num_classes,
            context, start_step=step, progress=progress, drop_counter=dropped,
            views=built.views))
  logging.info("training %s in %s: %d epochs x %d steps from step %d, %s sampling",
               config.stage, config.workdir, config.optimizer.epochs, steps_per_epoch,
               start_step, config.sampling)
  log_dir = os.path.join(save_dir, run_dir.TENSORBOARD)
  stage_callbacks = stages.stage_callbacks(built, source, log_dir, save_dir)
  # A stage that evaluates every epoch itself (cRT / LWS on val) replaces the periodic one.
  periodic = not any(isinstance(c, callbacks.ShotGroupEvaluation) for c in stage_callbacks)
  with strategy.scope():
    resume.fit_from_step(
        built.fit_model, build_dataset, start_step, config.optimizer.epochs, steps_per_epoch,
        callbacks=(loss_callbacks +
                   _callbacks(config, classifier, source, save_dir, periodic_evaluation=periodic) +
                   stage_callbacks + progress_callbacks +
                   [resume.StopOnNonFiniteLoss(),
                    resume.SaveTrainingState(state, config.distribute.checkpoint_every_steps)]),
        verbose=1 if sys.stdout.isatty() else 2)
  chosen = {}
  for callback in stage_callbacks:
    if isinstance(callback, callbacks.BestValidationEpoch):
      chosen.update(callback.restore_best())
  return int(dropped.numpy()), chosen


def _build_optimizer(config: config_lib.Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
  schedule = schedules.build_schedule(
      config.optimizer.lr_schedule,
      schedules.scaled_learning_rate(config.optimizer.learning_rate, config.data.batch_size),
      config.optimizer.epochs, steps_per_epoch, config.warmup_epochs)
  return optimizers.build_sgd(schedule, config.optimizer.momentum,
                              config.optimizer.momentum_update)


def _callbacks(config: config_lib.Config, classifier, source: sources.Source,
               save_dir: str, periodic_evaluation: bool = True) -> list[keras.callbacks.Callback]:
  log_dir = os.path.join(save_dir, run_dir.TENSORBOARD)
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


def _check_writable(directory: str, what: str) -> None:
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory):
      pass
  except OSError as error:
    raise ValueError(f"{what} {directory!r} is not writable: {error.strerror}") from None


