"""--stage=student: CBD's stage two, a class-balanced student distilled from frozen
--teachers (finished runs or keras_hub presets) in a CBDDistiller, or from their features
cached by --stage=teacher_features (--teacher_features: no teacher is loaded)."""

from __future__ import annotations

import keras

from cbd_tf import config as config_lib
from cbd_tf import distiller, distribute, pretrained, teachers
from cbd_tf.data import sources, teacher_cache, teacher_views
from cbd_tf.stages import Built


def check(config: config_lib.Config, source: sources.Source) -> None:
  if config.distill.teacher_features:
    teacher_cache.check_fits(teacher_cache.FeatureReader(config.distill.teacher_features),
                             config.data, source.train, config.distill.teacher_views)
    return
  teachers.check_teachers(config.distill.teachers, source.num_classes, config.data.image_size,
                          student_dir=config.workdir)


def build(config: config_lib.Config, source: sources.Source) -> Built:
  if config.distill.teacher_features:
    return _build_cached(config, source)
  writes = distribute.is_chief()
  frozen = teachers.load_teachers(config.distill.teachers, config.workdir, writes)
  config = with_teacher_width(config, distiller.teacher_feature_dim(frozen))
  # Loading teachers draws initialisers: seeded again, the student starts as a cached one does.
  keras.utils.set_random_seed(config.seed)
  student = pretrained.build_starting_classifier(config, source.num_classes, writes)
  views = (teacher_views.Views(config.distill.teacher_views, config.seed)
           if config.distill.teacher_views else None)
  return Built(student, config, views=views, fit_model=distiller.CBDDistiller(
      student, frozen, config.distill.alpha, config.distill.beta,
      # TensorBoard: train/loss_distill_<teacher name>, e.g. loss_distill_vanilla_1.
      teacher_names=teachers.teacher_metric_names(config.distill.teachers)))


def _build_cached(config: config_lib.Config, source: sources.Source) -> Built:
  """The student of a feature cache: its views (the cache's M and view seed) and widths."""
  reader = teacher_cache.FeatureReader(config.distill.teacher_features)
  config = with_teacher_width(config, sum(reader.widths))
  config = config.replace(distill={"teacher_views": reader.views})
  student = pretrained.build_starting_classifier(config, source.num_classes,
                                                 distribute.is_chief())
  names = reader.teacher_names
  return Built(student, config,
               views=teacher_views.Views(reader.views, reader.made_from["view_seed"], reader),
               fit_model=distiller.CBDDistiller(
                   student, alpha=config.distill.alpha, beta=config.distill.beta,
                   teacher_names=names if len(set(names)) == len(names) else None,
                   teacher_widths=reader.widths))


def with_teacher_width(config: config_lib.Config, width: int) -> config_lib.Config:
  """The student's config with its projection as wide as the teachers' concatenated
  embeddings: the one place the width is resolved, before the student is built."""
  return config.replace(model={"projection_dim": width})
