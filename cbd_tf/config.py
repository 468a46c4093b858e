"""Run settings as frozen dataclasses: the one object every layer below the CLI takes.

Standard library only, so a notebook can build a `Config` without absl, and a run
directory's `config.json` can be read back without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

STAGES = ("teacher", "student", "pipeline")
AUGMENTATIONS = ("standard", "jitter")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  dataset: str = "mnist_lt"
  data_dir: str = ""
  image_size: int = 224
  imbalance_ratio: float = 100.0
  # Empty means the stage's default: instance for teachers, class_balanced for students.
  sampling: str = ""
  augmentation: str = "standard"  # "jitter" adds SimCLR colour jitter + grayscale.
  crop_min_area: float = 0.05
  horizontal_flip: bool = True
  # Evaluation resizes the short side to image_size / eval_crop_fraction, then
  # centre-crops image_size (224 / 256 on ImageNet; 1.0 means no crop).
  eval_crop_fraction: float = 224 / 256
  batch_size: int = 128
  eval_batch_size: int = 256


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  backbone: str = "resnet50"
  cosine_scale: float = 20.0
  # Student only: width of the projection head; set from the teachers at run time.
  projection_dim: int = 0


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  # Learning rate per 256 images; the run uses learning_rate * batch_size / 256.
  learning_rate: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 5e-4
  epochs: int = 90
  warmup_epochs: float = 0.0
  # 0 means one pass over the training split: ceil(num_train / batch_size).
  steps_per_epoch: int = 0


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  alpha: float = 0.4
  beta: float = 100.0
  # Run directories of trained teachers (stage "student").
  teachers: tuple[str, ...] = ()
  # "augmentation:seed" per teacher trained by stage "pipeline".
  teacher_specs: tuple[str, ...] = ("vanilla:1", "vanilla:2")
  teacher_sampling: str = "instance"


@dataclasses.dataclass(frozen=True)
class Config:
  stage: str = "teacher"
  workdir: str = ""
  seed: int = 0
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  distill: DistillConfig = DistillConfig()

  @property
  def sampling(self) -> str:
    """The sampling policy this stage trains with."""
    if self.data.sampling:
      return self.data.sampling
    return "instance" if self.stage == "teacher" else "class_balanced"

  def replace(self, **sections: Any) -> "Config":
    """Returns a copy; `sections` maps top-level fields or section names to dicts."""
    changes = {}
    for name, value in sections.items():
      current = getattr(self, name)
      if dataclasses.is_dataclass(current) and isinstance(value, dict):
        value = dataclasses.replace(current, **value)
      changes[name] = value
    return dataclasses.replace(self, **changes)

  def validate(self) -> "Config":
    """Checks values that need no registry; raises ValueError naming the problem."""
    _check(self.stage in STAGES, f"unknown stage {self.stage!r}; valid: {', '.join(STAGES)}")
    _check(bool(self.workdir), "--workdir is required")
    _check(self.data.augmentation in AUGMENTATIONS,
           f"unknown augmentation {self.data.augmentation!r}; valid: {', '.join(AUGMENTATIONS)}")
    _check(self.data.image_size >= 8, f"image_size must be >= 8, got {self.data.image_size}")
    _check(self.data.imbalance_ratio >= 1,
           f"imbalance_ratio must be >= 1, got {self.data.imbalance_ratio}")
    _check(0 < self.data.crop_min_area <= 1,
           f"crop_min_area must be in (0, 1], got {self.data.crop_min_area}")
    _check(0 < self.data.eval_crop_fraction <= 1,
           f"eval_crop_fraction must be in (0, 1], got {self.data.eval_crop_fraction}")
    _check(self.data.batch_size > 0, f"batch_size must be positive, got {self.data.batch_size}")
    _check(self.data.eval_batch_size > 0,
           f"eval_batch_size must be positive, got {self.data.eval_batch_size}")
    _check(self.model.cosine_scale > 0,
           f"cosine_scale must be positive, got {self.model.cosine_scale}")
    _check(self.optimizer.learning_rate > 0,
           f"learning_rate must be positive, got {self.optimizer.learning_rate}")
    _check(0 <= self.optimizer.momentum < 1,
           f"momentum must be in [0, 1), got {self.optimizer.momentum}")
    _check(self.optimizer.weight_decay >= 0,
           f"weight_decay must be >= 0, got {self.optimizer.weight_decay}")
    _check(self.optimizer.epochs > 0, f"epochs must be positive, got {self.optimizer.epochs}")
    _check(0 <= self.optimizer.warmup_epochs < self.optimizer.epochs,
           f"warmup_epochs must be in [0, epochs), got {self.optimizer.warmup_epochs}")
    _check(self.optimizer.steps_per_epoch >= 0,
           f"steps_per_epoch must be >= 0, got {self.optimizer.steps_per_epoch}")
    _check(0 <= self.distill.alpha <= 1,
           f"distill_alpha must be in [0, 1], got {self.distill.alpha}")
    _check(self.distill.beta >= 0, f"distill_beta must be >= 0, got {self.distill.beta}")
    if self.stage == "student":
      _check(bool(self.distill.teachers),
             "--stage=student needs --teachers=RUN_DIR[,RUN_DIR...]")
    if self.stage == "pipeline":
      _check(bool(self.distill.teacher_specs),
             "--stage=pipeline needs --teacher_specs=augmentation:seed[,...]")
      names = [teacher_run_name(spec) for spec in self.distill.teacher_specs]
      _check(len(set(names)) == len(names),
             f"--teacher_specs repeats a teacher: {','.join(self.distill.teacher_specs)}")
    return self

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "Config":
    sections = {
        "data": DataConfig, "model": ModelConfig,
        "optimizer": OptimizerConfig, "distill": DistillConfig,
    }
    kwargs = dict(values)
    for name, section_cls in sections.items():
      if name in kwargs:
        section = dict(kwargs[name])
        known = {field.name for field in dataclasses.fields(section_cls)}
        unknown = set(section) - known
        _check(not unknown, f"config section {name!r} has unknown keys: {sorted(unknown)}")
        for field in dataclasses.fields(section_cls):
          if field.name in section and isinstance(section[field.name], list):
            section[field.name] = tuple(section[field.name])
        kwargs[name] = section_cls(**section)
    return cls(**kwargs)

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump(self.to_dict(), f, indent=2, sort_keys=True)
      f.write("\n")

  @classmethod
  def load(cls, path: str) -> "Config":
    if not os.path.exists(path):
      raise ValueError(f"no config.json at {path}")
    with open(path) as f:
      return cls.from_dict(json.load(f))


def parse_teacher_spec(spec: str) -> tuple[str, int]:
  """'jitter:2' -> ('jitter', 2). 'vanilla' is the standard augmentation."""
  augmentation, sep, seed = spec.partition(":")
  if not sep or not seed.strip().lstrip("-").isdigit():
    raise ValueError(f"teacher spec {spec!r} is not augmentation:seed (e.g. vanilla:1)")
  augmentation = augmentation.strip()
  if augmentation == "vanilla":
    augmentation = "standard"
  if augmentation not in AUGMENTATIONS:
    raise ValueError(f"teacher spec {spec!r}: unknown augmentation {augmentation!r}; "
                     "valid: vanilla, jitter")
  return augmentation, int(seed)


def teacher_run_name(spec: str) -> str:
  augmentation, seed = parse_teacher_spec(spec)
  return f"{'vanilla' if augmentation == 'standard' else augmentation}_{seed}"


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)
