"""Frozen teachers for a CBD student, each rebuilt from its own run directory."""

from __future__ import annotations

from typing import Sequence

from cbd_tf import run_dir
from cbd_tf.models.classifier import Classifier


def check_teachers(run_dirs: Sequence[str], num_classes: int, image_size: int) -> None:
  """Raises ValueError before training if a teacher is unfinished or does not fit the data."""
  for directory in run_dirs:
    run_dir.check_finished_run(directory, num_classes, image_size, role="teacher")


def load_teachers(run_dirs: Sequence[str]) -> list[Classifier]:
  """Trained classifiers, frozen (trainable=False). Call inside the strategy scope."""
  teachers = []
  for directory in run_dirs:
    model, _ = run_dir.load_classifier(directory)
    model.trainable = False
    teachers.append(model)
  return teachers
