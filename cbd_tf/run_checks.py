"""Checks that a run directory is a finished run fitting the data, before any work starts:
ValueErrors naming the directory and what it lacks or does not match."""

from __future__ import annotations

import os

from cbd_tf import config as config_lib
from cbd_tf import run_files
from cbd_tf.models import keras_hub_backbone
from cbd_tf.run_dir import CLASSES, CONFIG, FINAL_WEIGHTS

# How check_finished_run names a run of each role: (the directory, the run it would serve).
_ROLES = {"teacher": ("teacher {!r}", "the student"),
          "backbone": ("--backbone_from={!r}", "this run")}


def check_trained(directory: str) -> None:
  """Raises ValueError naming what a finished run directory lacks."""
  for name in (CONFIG, CLASSES, FINAL_WEIGHTS):
    if not os.path.exists(os.path.join(directory, name)):
      raise ValueError(f"run directory {directory!r} has no {name} (not a finished training run)")


def check_finished_run(directory: str, num_classes: int, image_size: int, role: str,
                       stages: tuple[str, ...] = ()) -> None:
  """Raises ValueError unless `directory` is a finished run whose classes and image size fit
  the data; `role` ("teacher" or "backbone") says how the message names it; `stages`, if
  given, are the stages the run may have been."""
  if role not in _ROLES:
    raise ValueError(f"unknown run role {role!r}; valid: {', '.join(_ROLES)}")
  name, user = _ROLES[role][0].format(directory), _ROLES[role][1]
  check_trained(directory)
  run_config = config_lib.Config.load(os.path.join(directory, CONFIG))
  if stages and run_config.stage not in stages:
    raise ValueError(f"{name} is a {run_config.stage} run; valid: a finished "
                     f"{' or '.join(stages)} run")
  class_names, _ = run_files.read_classes(directory)
  if len(class_names) != num_classes:
    raise ValueError(f"{name} has {len(class_names)} classes, the data has {num_classes}")
  # A keras_hub backbone's converter resizes to what its model takes.
  if (run_config.data.image_size != image_size
      and not keras_hub_backbone.is_preset(run_config.model.backbone)):
    raise ValueError(f"{name} takes {run_config.data.image_size}px images, {user} "
                     f"{image_size}px")
  run_files.check_weights_file(os.path.join(directory, FINAL_WEIGHTS))
