"""Frozen teachers for a CBD student, each rebuilt from its own run directory."""

from __future__ import annotations

import os
from typing import Sequence

from cbd_tf import config as config_lib
from cbd_tf import run_dir
from cbd_tf.models.classifier import Classifier


def check_teachers(run_dirs: Sequence[str], num_classes: int, image_size: int) -> None:
  """Raises ValueError before training if a teacher is unfinished or does not fit the data."""
  for directory in run_dirs:
    run_dir.check_trained(directory)
    class_names, _ = run_dir.read_classes(directory)
    if len(class_names) != num_classes:
      raise ValueError(f"teacher {directory!r} has {len(class_names)} classes, the data has "
                       f"{num_classes}")
    teacher_size = config_lib.Config.load(os.path.join(directory, run_dir.CONFIG)).data.image_size
    if teacher_size != image_size:
      raise ValueError(f"teacher {directory!r} takes {teacher_size}px images, the student "
                       f"{image_size}px")


def load_teachers(run_dirs: Sequence[str]) -> list[Classifier]:
  """Trained classifiers, frozen (trainable=False). Call inside the strategy scope."""
  teachers = []
  for directory in run_dirs:
    model, _ = run_dir.load_classifier(directory)
    model.trainable = False
    teachers.append(model)
  return teachers
