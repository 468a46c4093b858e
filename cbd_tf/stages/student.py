"""--stage=student: CBD's stage two, a class-balanced student distilled from frozen
--teachers (finished runs or keras_hub presets) in a CBDDistiller."""

from __future__ import annotations

from cbd_tf import config as config_lib
from cbd_tf import distiller, distribute, pretrained, teachers
from cbd_tf.data import sources
from cbd_tf.stages import Built


def check(config: config_lib.Config, source: sources.Source) -> None:
  teachers.check_teachers(config.distill.teachers, source.num_classes, config.data.image_size,
                          student_dir=config.workdir)


def build(config: config_lib.Config, source: sources.Source) -> Built:
  writes = distribute.is_chief()
  frozen = teachers.load_teachers(config.distill.teachers, config.workdir, writes)
  config = with_teacher_width(config, frozen)
  student = pretrained.build_starting_classifier(config, source.num_classes, writes)
  return Built(student, config, fit_model=distiller.CBDDistiller(
      student, frozen, config.distill.alpha, config.distill.beta,
      # TensorBoard: train/loss_distill_<teacher name>, e.g. loss_distill_vanilla_1.
      teacher_names=teachers.teacher_metric_names(config.distill.teachers)))


def with_teacher_width(config: config_lib.Config, frozen: list) -> config_lib.Config:
  """The student's config with its projection as wide as the teachers' concatenated
  embeddings: the one place the width is resolved, before the student is built."""
  return config.replace(model={"projection_dim": distiller.teacher_feature_dim(frozen)})
