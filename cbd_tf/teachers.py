"""Frozen teachers for a CBD student: trained runs, each rebuilt from its own run directory,
and pretrained feature extractors from KerasHub presets (`keras_hub:PRESET`), used as they
are: no classes, no training on the long-tailed data. A preset teacher is kept in the
student's run directory the first time (run_dir.preset_teacher_files), so the student
resumes with no network."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Sequence

import keras
import numpy as np

from cbd_tf import run_checks, run_dir, run_files, run_models
from cbd_tf.models import keras_hub_backbone
from cbd_tf.models.keras_hub_backbone import KerasHubBackbone, PresetTeacher


def weights_sha256(teacher) -> str:
  """sha256 of a loaded teacher's weights (a run's classifier or a preset's backbone), in
  their order: what a feature cache records of the teachers it was made from."""
  model = teacher.backbone if isinstance(teacher, PresetTeacher) else teacher
  digest = hashlib.sha256()
  for weight in model.weights:  # shapes and values: paths hold per-process layer numbers
    value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value))
    digest.update(repr((value.shape, value.dtype.str)).encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def teacher_name(teacher: str) -> str:
  """A teacher's short name: its run directory's basename, or its preset's
  (keras_hub:dinov2_base -> dinov2_base)."""
  if keras_hub_backbone.is_preset(teacher):
    teacher = keras_hub_backbone.preset_of(teacher)
  return re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(os.path.normpath(teacher)))


def teacher_metric_names(teachers: Sequence[str]) -> list[str]:
  """Names for the per-teacher metrics: each teacher's name (vanilla_1, dinov2_base, ...), or
  the teachers' indices (0, 1, ...) if two names are the same."""
  names = [teacher_name(teacher) for teacher in teachers]
  return names if len(set(names)) == len(names) else [str(i) for i in range(len(names))]


def check_teachers(teachers: Sequence[str], num_classes: int, image_size: int,
                   student_dir: str = "") -> None:
  """Raises ValueError before training if a teacher run is unfinished or does not fit the
  data, or a preset teacher cannot be found (unless `student_dir` keeps it already)."""
  for teacher in teachers:
    if keras_hub_backbone.is_preset(teacher):
      architecture, _ = run_dir.preset_teacher_files(student_dir, teacher_name(teacher))
      if not (student_dir and os.path.exists(architecture)):
        keras_hub_backbone.check_preset(keras_hub_backbone.preset_of(teacher))
    else:
      run_checks.check_finished_run(teacher, num_classes, image_size, role="teacher")


def load_teachers(teachers: Sequence[str], student_dir: str = "",
                  write: bool = True) -> list:
  """Frozen teachers (trainable=False). Call inside the strategy scope. A preset teacher
  comes from `student_dir` if it keeps one, else from its preset, then is kept there
  (`write`: the chief's job)."""
  loaded = []
  for teacher in teachers:
    if keras_hub_backbone.is_preset(teacher):
      loaded.append(PresetTeacher(_preset_backbone(teacher, student_dir, write)))
      continue
    model, _ = run_models.load_classifier(teacher)
    model.trainable = False
    loaded.append(model)
  return loaded


def _preset_backbone(teacher: str, student_dir: str, write: bool) -> keras.layers.Layer:
  architecture, weights = run_dir.preset_teacher_files(student_dir, teacher_name(teacher))
  if student_dir and os.path.exists(architecture):
    return run_files.load_layer(architecture, weights)
  backbone = KerasHubBackbone.from_preset(keras_hub_backbone.preset_of(teacher))
  if student_dir and write:
    os.makedirs(os.path.dirname(architecture), exist_ok=True)
    run_files.save_layer(backbone, architecture, weights)
  return backbone
