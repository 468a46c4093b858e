"""The training stages as plain functions: what `python -m cbd_tf.train` runs.

  validate_run(config)  every check that needs no training, raising ValueError
  run(config)           teacher, student or the whole pipeline; returns metrics
"""

from __future__ import annotations

import math
import os
import sys
import tempfile

import keras
import tensorflow as tf
from absl import logging

from cbd_tf import config as config_lib
from cbd_tf import distiller, metrics, run_dir, schedules, teachers
from cbd_tf.data import pipeline, sampling, sources
from cbd_tf.models import resnet

COMPARISON = "comparison.json"


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
  for policy in {config.sampling, config.distill.teacher_sampling}:
    sampling.class_probabilities(source.train_counts, policy)
  return source


def run(config: config_lib.Config, source: sources.Source | None = None) -> dict:
  """Trains what `config.stage` names and returns its metrics (per run for a pipeline)."""
  source = source or validate_run(config)
  if config.stage == "pipeline":
    return run_pipeline(config, source)
  return train_stage(config, source)


def teacher_config(config: config_lib.Config, spec: str) -> config_lib.Config:
  """The teacher run a pipeline trains for `spec` ('augmentation:seed')."""
  augmentation, seed = config_lib.parse_teacher_spec(spec)
  return config.replace(
      stage="teacher", seed=1000 * config.seed + seed,
      workdir=os.path.join(config.workdir, "teachers", config_lib.teacher_run_name(spec)),
      data={"augmentation": augmentation, "sampling": config.distill.teacher_sampling})


def student_config(config: config_lib.Config) -> config_lib.Config:
  teacher_dirs = tuple(teacher_config(config, spec).workdir for spec in config.distill.teacher_specs)
  return config.replace(stage="student", workdir=os.path.join(config.workdir, "student"),
                        distill={"teachers": teacher_dirs})


def run_pipeline(config: config_lib.Config, source: sources.Source) -> dict:
  """Every teacher, then the student; runs whose final weights exist are not retrained."""
  results = {}
  for spec in config.distill.teacher_specs:
    stage_config = teacher_config(config, spec)
    results[config_lib.teacher_run_name(spec)] = _train_or_reuse(stage_config, source)
  results["student"] = _train_or_reuse(student_config(config), source)
  table = metrics.format_table(results)
  run_dir.write_json(os.path.join(config.workdir, COMPARISON), results)
  with open(os.path.join(config.workdir, "comparison.txt"), "w") as f:
    f.write(table + "\n")
  print(f"\nTeachers vs CBD student on {config.data.dataset} (top-1 %; shot groups by "
        f"training images: many > 100, medium 20-100, few < 20)\n{table}", flush=True)
  return results


def _train_or_reuse(config: config_lib.Config, source: sources.Source) -> dict:
  if run_dir.is_trained(config.workdir):
    metrics_path = os.path.join(config.workdir, run_dir.METRICS)
    logging.info("%s is trained already; not retraining", config.workdir)
    if os.path.exists(metrics_path):
      return run_dir.read_json(metrics_path)
    model, _ = run_dir.load_classifier(config.workdir)
    return evaluate_and_save(model, config, source)
  if config.stage == "student":
    teachers.check_teachers(config.distill.teachers, source.num_classes, config.data.image_size)
  return train_stage(config, source)


def train_stage(config: config_lib.Config, source: sources.Source) -> dict:
  """Trains one classifier (teacher or CBD student), saves it, evaluates it."""
  os.makedirs(config.workdir, exist_ok=True)
  keras.utils.set_random_seed(config.seed)
  strategy = tf.distribute.get_strategy()
  with strategy.scope():
    if config.stage == "student":
      frozen = teachers.load_teachers(config.distill.teachers)
      config = config.replace(model={"projection_dim": distiller.teacher_feature_dim(frozen)})
    classifier = run_dir.build_classifier(config, source.num_classes)
    trainer = (distiller.CBDDistiller(classifier, frozen, config.distill.alpha,
                                      config.distill.beta)
               if config.stage == "student" else classifier)
    steps_per_epoch = (config.optimizer.steps_per_epoch
                       or math.ceil(len(source.train) / config.data.batch_size))
    trainer.compile(optimizer=_build_optimizer(config, steps_per_epoch),
                    weight_decay=config.optimizer.weight_decay)
  config.save(os.path.join(config.workdir, run_dir.CONFIG))
  run_dir.write_classes(config.workdir, source.class_names, source.train_counts)

  dataset = strategy.distribute_datasets_from_function(
      lambda context: pipeline.build_train_dataset(
          source.train, config.data, config.sampling, config.seed, source.num_classes, context))
  logging.info("training %s in %s: %d epochs x %d steps, %s sampling", config.stage,
               config.workdir, config.optimizer.epochs, steps_per_epoch, config.sampling)
  trainer.fit(dataset, epochs=config.optimizer.epochs, steps_per_epoch=steps_per_epoch,
              callbacks=_callbacks(config.workdir), shuffle=False,
              verbose=1 if sys.stdout.isatty() else 2)
  run_dir.save_final_weights(classifier, config.workdir)
  return evaluate_and_save(classifier, config, source)


def evaluate_and_save(model, config: config_lib.Config, source: sources.Source) -> dict:
  """Test-split metrics of `model`, printed and written to the run's metrics.json."""
  result = metrics.evaluate_model(model, pipeline.build_eval_dataset(source.test, config.data),
                                  source.train_counts)
  run_dir.write_json(os.path.join(config.workdir, run_dir.METRICS), result)
  print(f"\n{config.workdir}\n{metrics.format_table({config.stage: result})}", flush=True)
  return result


def _build_optimizer(config: config_lib.Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
  total_steps = config.optimizer.epochs * steps_per_epoch
  schedule = schedules.WarmupCosineDecay(
      schedules.scaled_learning_rate(config.optimizer.learning_rate, config.data.batch_size),
      total_steps=total_steps,
      warmup_steps=int(round(config.optimizer.warmup_epochs * steps_per_epoch)))
  return keras.optimizers.SGD(schedule, momentum=config.optimizer.momentum)


def _callbacks(workdir: str) -> list[keras.callbacks.Callback]:
  return [
      # Resumes an interrupted run from its last epoch; removed when training ends.
      keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup")),
      keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"), update_freq="epoch"),
  ]


def _check_writable(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir):
      pass
  except OSError as error:
    raise ValueError(f"workdir {workdir!r} is not writable: {error.strerror}") from None


