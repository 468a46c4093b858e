"""--stage=pipeline: every --teacher_specs teacher, then the student on them (and any
--teachers), each an ordinary run directory under one pipeline directory (run_dir.py); runs
whose final weights exist are not retrained, so a stopped pipeline resumes. With
--teacher_views=M the teachers' features are cached after them (teacher_features/) and the
student trains from the cache."""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging

from cbd_tf import config as config_lib
from cbd_tf import distribute, evaluation, metrics, pretrained, report, run_dir, run_files
from cbd_tf import run_models, stages, teachers, training
from cbd_tf.data import sources
from cbd_tf.models import keras_hub_backbone
from cbd_tf.stages import teacher_features


def check(config: config_lib.Config, source: sources.Source) -> None:
  """The extra --teachers (keras_hub presets or finished runs) exist already; the trained
  ones are checked when the student starts."""
  teachers.check_teachers(config.distill.teachers, source.num_classes, config.data.image_size,
                          student_dir=run_dir.student_dir(config.workdir))
  if config.model.head_init == "text":
    pretrained.check_text_head(config, source)


def teacher_config(config: config_lib.Config, spec: str) -> config_lib.Config:
  """The teacher run a pipeline trains for `spec` ('augmentation:seed')."""
  augmentation, seed = config_lib.parse_teacher_spec(spec)
  return config.replace(
      stage="teacher", seed=1000 * config.seed + seed,
      workdir=run_dir.teacher_dir(config.workdir, config_lib.teacher_run_name(spec)),
      data={"augmentation": augmentation, "sampling": config.distill.teacher_sampling},
      model={"student_backbone": ""},
      distill={"teachers": ()},  # the student's extra teachers
      output={"export_dir": ""})  # a pipeline exports its student only


def all_teachers(config: config_lib.Config) -> tuple[str, ...]:
  """The student's teachers: those the pipeline trains, then any --teachers."""
  return tuple(teacher_config(config, spec).workdir
               for spec in config.distill.teacher_specs) + tuple(config.distill.teachers)


def features_config(config: config_lib.Config) -> config_lib.Config:
  """With --teacher_views: the --stage=teacher_features run caching every teacher's features."""
  return config.replace(stage="teacher_features",
                        workdir=run_dir.teacher_features_dir(config.workdir),
                        distill={"teachers": all_teachers(config)})


def student_config(config: config_lib.Config) -> config_lib.Config:
  """A pipeline's student: the teachers it trained, then any --teachers (with
  --teacher_views: their cached features), on --student_backbone (default: the teachers'
  --backbone, tuned as they are; another backbone trains in full)."""
  distill = ({"teachers": (), "teacher_features": run_dir.teacher_features_dir(config.workdir)}
             if config.distill.teacher_views else {"teachers": all_teachers(config)})
  return config.replace(stage="student", workdir=run_dir.student_dir(config.workdir),
                        distill=distill,
                        # --init_from initialises --backbone: the student's too if it is the same.
                        model={"backbone": config.model.student_backbone or config.model.backbone,
                               "student_backbone": "",
                               **({"init_from": "", "backbone_tuning": "full", "adapter_rank": 0}
                                  if config.model.student_backbone else {})})


def run(config: config_lib.Config, source: sources.Source,
        strategy: tf.distribute.Strategy | None = None) -> dict:
  """Every teacher, then the student; runs whose final weights exist are not retrained."""
  strategy = strategy or tf.distribute.get_strategy()
  if distribute.is_chief(strategy):
    pretrained.fetch_presets(student_config(config))
    if config.distill.teacher_views:  # kept where the features are cached
      teachers.load_teachers([t for t in config.distill.teachers
                              if keras_hub_backbone.is_preset(t)],
                             run_dir.teacher_features_dir(config.workdir))
  results = {}
  for spec in config.distill.teacher_specs:
    stage_config = teacher_config(config, spec)
    results[config_lib.teacher_run_name(spec)] = train_or_reuse(stage_config, source, strategy)
  if config.distill.teacher_views:
    # Complete and made from these teachers: nothing to do; else caches what is missing.
    stages.check_stage(features_config(config), source)
    teacher_features.run(features_config(config), source, strategy)
  results["student"] = train_or_reuse(student_config(config), source, strategy)
  if not distribute.is_chief(strategy):
    return results
  table = metrics.format_table(results)
  run_files.write_json(os.path.join(config.workdir, run_dir.COMPARISON), results)
  with open(os.path.join(config.workdir, run_dir.COMPARISON_TEXT), "w") as f:
    f.write(table + "\n")
  report.write_report(config.workdir, results, source.train_counts,
                      f"Teachers vs CBD student on {config.data.dataset}")
  print(f"\nTeachers vs CBD student on {config.data.dataset} (top-1 %; shot groups by "
        f"training images: many > 100, medium 20-100, few < 20)\n{table}", flush=True)
  return results


def train_or_reuse(config: config_lib.Config, source: sources.Source,
                   strategy: tf.distribute.Strategy) -> dict:
  if run_dir.is_trained(config.workdir):
    metrics_path = os.path.join(config.workdir, run_dir.METRICS)
    logging.info("%s is trained already; not retraining", config.workdir)
    if os.path.exists(metrics_path):
      return run_files.read_json(metrics_path)
    model, _ = run_models.load_classifier(config.workdir)
    return evaluation.evaluate_and_save(model, config, source)
  stages.check_stage(config, source)  # a student's teachers, just trained
  return training.train_stage(config, source, strategy)
