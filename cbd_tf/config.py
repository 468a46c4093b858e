"""Run settings as frozen dataclasses: the one object every layer below the CLI takes.

Standard library only, so a notebook can build a `Config` without absl, and a run
directory's `config.json` can be read back without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

# Decoupled stages re-balance the classifier of a finished run (--backbone_from).
DECOUPLED_STAGES = ("crt", "lws", "tau_norm", "ncm")
STAGES = ("teacher", "student", "pipeline") + DECOUPLED_STAGES
LOSSES = ("ce", "logit_adjusted", "balanced_softmax", "focal", "class_balanced", "ldam",
          "class_balanced_focal")
# Learning-rate schedules (cbd_tf/schedules.py) and the warmup each uses when
# --warmup_epochs is negative: none in the CBD recipe, 5 epochs in LDAM-DRW's step recipe.
LR_SCHEDULES = ("cosine", "step")
DEFAULT_WARMUP_EPOCHS = {"cosine": 0.0, "step": 5.0}
AUGMENTATIONS = ("standard", "jitter")
# Classifier heads --head trains (cbd_tf/models/heads.py); --stage=ncm writes an NCM head.
HEADS = ("cosine", "linear")
# --stage=ncm, as classifier-balancing's KNNClassifier (feat_type / dist_type).
NCM_FEATURES = ("cl2n", "l2n", "raw")
NCM_DISTANCES = ("euclidean", "cosine")
# cRT / LWS: what the frozen backbone's BatchNorm does (frozen: inference mode; train:
# statistics follow the class-balanced batches, weights still frozen, as upstream).
DECOUPLED_BATCHNORM = ("frozen", "train")
# cRT / LWS epochs when --decoupled_epochs is not given: classifier-balancing's ImageNet-LT
# recipes (config/ImageNet_LT/cls_crt.yaml, cls_lws.yaml). They never take --epochs, which
# a paper flagfile sets for its backbone stages (90, 200).
STAGE_EPOCHS = {"crt": 10, "lws": 5}
# How the training stream is drawn (cbd_tf/data/sampling.py); auto is index.
SAMPLING_METHODS = ("auto", "index", "per_class", "rejection", "resample")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  dataset: str = "mnist_lt"
  data_dir: str = ""
  image_size: int = 224
  imbalance_ratio: float = 100.0
  # Empty means the stage's default: instance for teachers, class_balanced for students.
  sampling: str = ""
  # One of SAMPLING_METHODS. Only index (auto) resumes in constant time; the others
  # skip to the resumed step.
  sampling_method: str = "auto"
  augmentation: str = "standard"  # "jitter" adds SimCLR colour jitter + grayscale.
  crop_min_area: float = 0.05
  horizontal_flip: bool = True
  # Evaluation resizes the short side to image_size / eval_crop_fraction, then
  # centre-crops image_size (224 / 256 on ImageNet; 1.0 means no crop).
  eval_crop_fraction: float = 224 / 256
  batch_size: int = 128
  eval_batch_size: int = 256
  # Real data sets (cbd_tf/data/sources.py). TFDS prepares under data_dir; manual_dir
  # holds manually downloaded archives (ImageNet for imagenet_lt).
  manual_dir: str = ""
  # file_list / places_lt: 'relative/path label' lines, paths relative to data_dir.
  train_list: str = ""
  val_list: str = ""
  test_list: str = ""
  # 0: one more than the largest training label (file_list, tfrecord).
  num_classes: int = 0
  # tfrecord: comma-separated glob patterns of tf.train.Example files.
  tfrecord_train: str = ""
  tfrecord_test: str = ""
  tfrecord_val: str = ""  # optional validation files
  tfrecord_image_key: str = "image"
  tfrecord_label_key: str = "label"
  # Decode every image file once before training and leave out those that fail.
  validate_images: bool = True
  # Exported TFDS/TFRecord images, file checks, skipped_files.txt; "" is the temp dir.
  cache_dir: str = ""
  randaugment: bool = False
  randaugment_num_ops: int = 2
  randaugment_magnitude: float = 9.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  backbone: str = "resnet50"
  cosine_scale: float = 20.0
  head: str = "cosine"  # one of HEADS: cosine (CBD, LDAM) or linear (Dense with bias)
  # Student only: width of the projection head; set from the teachers at run time.
  projection_dim: int = 0
  # Head variants written by decoupled stages: each class weight divided by its raw
  # norm^head_norm_power (tau-norm; None: the head as trained, which for the cosine head is
  # 1 and for the linear head keeps its bias), per-class logit scales (LWS).
  head_norm_power: float | None = None
  class_scales: bool = False


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  # Learning rate per 256 images; the run uses learning_rate * batch_size / 256.
  learning_rate: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 5e-4
  # Teacher / student epochs; cRT and LWS take long_tail.decoupled_epochs (Config.epochs).
  epochs: int = 90
  lr_schedule: str = "cosine"
  warmup_epochs: float = -1.0  # negative: the schedule's own (DEFAULT_WARMUP_EPOCHS)
  # 0 means one pass over the training split: ceil(num_train / batch_size).
  steps_per_epoch: int = 0

  @property
  def resolved_warmup_epochs(self) -> float:
    """The warmup the run uses: --warmup_epochs, or its schedule's when negative."""
    if self.warmup_epochs >= 0:
      return self.warmup_epochs
    return DEFAULT_WARMUP_EPOCHS.get(self.lr_schedule, 0.0)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  alpha: float = 0.4
  beta: float = 100.0
  # Run directories of trained teachers (stage "student").
  teachers: tuple[str, ...] = ()
  # "augmentation:seed" per teacher trained by stage "pipeline".
  teacher_specs: tuple[str, ...] = ("vanilla:1", "vanilla:2")
  teacher_sampling: str = "instance"


STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
MIXED_PRECISION = ("", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class DistributeConfig:
  """Devices, numerics and fault tolerance."""
  # auto: TPU if --tpu is set, else Mirrored over every GPU (2 or more), else default.
  strategy: str = "auto"
  tpu: str = ""
  # Split the host CPU into this many logical devices (tests of Mirrored without GPUs).
  cpu_devices: int = 0
  sync_batchnorm: bool = False
  mixed_precision: str = ""
  # Op determinism: a resumed run ends with the same weights as an uninterrupted one.
  deterministic: bool = False
  # Save the training state every this many steps (and at every epoch end); 0: epochs only.
  checkpoint_every_steps: int = 100


@dataclasses.dataclass(frozen=True)
class OutputConfig:
  """What a run writes beside its weights: logs, evaluations, profiles, an export."""
  # TensorBoard train/* scalars every this many steps.
  log_every_steps: int = 10
  # Shot-group evaluation on the test split (val/* scalars) every this many epochs; 0: never.
  eval_every_epochs: int = 1
  # First and last step to profile, e.g. (5, 8); empty: no profiling.
  profile_batches: tuple[int, ...] = ()
  # SavedModel written at the end of training; empty: none.
  export_dir: str = ""
  top_k: int = 5


@dataclasses.dataclass(frozen=True)
class LongTailConfig:
  """Re-balancing baselines beside CBD: loss-level (teacher stage) and decoupled stages."""
  loss: str = "ce"
  logit_adjust_tau: float = 1.0  # Menon et al. 2021.
  focal_gamma: float = 1.0  # The long-tail papers' focal baseline (LDAM-DRW, Cui et al.).
  class_balanced_beta: float = 0.9999  # Cui et al. 2019 effective number; also LDAM's DRW.
  ldam_max_margin: float = 0.5  # Largest margin, in cosine units (Cao et al. 2019).
  # LDAM's s: its logits are s * (cos - m), whatever the head's --cosine_scale.
  ldam_scale: float = 30.0
  # Cui et al.'s large-scale sigmoid focal loss with class-balanced weights.
  class_balanced_focal_beta: float = 0.999
  class_balanced_focal_gamma: float = 0.5
  # Epoch at which LDAM switches on class-balanced weights (DRW); negative: 4/5 of the epochs.
  drw_epoch: int = -1
  # Evaluation subtracts posthoc_tau * log(class prior) from the logits; 0 leaves them.
  posthoc_tau: float = 0.0
  # Decoupled stages: the finished run (teacher or CBD student) whose backbone is kept.
  backbone_from: str = ""
  # tau_norm: class weights divided by norm^tau; None: swept over 0, 0.1, ..., 2 on the
  # validation split.
  tau: float | None = None
  decoupled_batchnorm: str = "frozen"  # one of DECOUPLED_BATCHNORM
  # cRT / LWS epochs; None: the stage's recipe (STAGE_EPOCHS).
  decoupled_epochs: int | None = None
  ncm_features: str = "cl2n"  # one of NCM_FEATURES
  ncm_distance: str = "euclidean"  # one of NCM_DISTANCES


@dataclasses.dataclass(frozen=True)
class Config:
  stage: str = "teacher"
  workdir: str = ""
  seed: int = 0
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  distill: DistillConfig = DistillConfig()
  output: OutputConfig = OutputConfig()
  distribute: DistributeConfig = DistributeConfig()
  long_tail: LongTailConfig = LongTailConfig()

  @property
  def epochs(self) -> int:
    """Training epochs: --decoupled_epochs or the recipe for cRT / LWS, else --epochs."""
    if self.stage in STAGE_EPOCHS:
      return self.long_tail.decoupled_epochs or STAGE_EPOCHS[self.stage]
    return self.optimizer.epochs

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
    _check(self.data.sampling_method in SAMPLING_METHODS,
           f"unknown sampling_method {self.data.sampling_method!r}; "
           f"valid: {', '.join(SAMPLING_METHODS)}")
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
    _check(self.data.num_classes >= 0,
           f"num_classes must be >= 0, got {self.data.num_classes}")
    _check(self.data.randaugment_num_ops >= 1,
           f"randaugment_num_ops must be >= 1, got {self.data.randaugment_num_ops}")
    _check(0 <= self.data.randaugment_magnitude <= 10,
           f"randaugment_magnitude must be in [0, 10], got {self.data.randaugment_magnitude}")
    _check(self.model.cosine_scale > 0,
           f"cosine_scale must be positive, got {self.model.cosine_scale}")
    _check(self.model.head in HEADS,
           f"unknown head {self.model.head!r}; valid: {', '.join(HEADS)}")
    _check(self.model.head_norm_power is None or self.model.head_norm_power >= 0,
           f"head_norm_power must be >= 0, got {self.model.head_norm_power}")
    _check(self.long_tail.loss != "ldam" or self.model.head == "cosine",
           "--loss=ldam needs --head=cosine (its margins are in cosine units)")
    _check(self.optimizer.learning_rate > 0,
           f"learning_rate must be positive, got {self.optimizer.learning_rate}")
    _check(0 <= self.optimizer.momentum < 1,
           f"momentum must be in [0, 1), got {self.optimizer.momentum}")
    _check(self.optimizer.weight_decay >= 0,
           f"weight_decay must be >= 0, got {self.optimizer.weight_decay}")
    _check(self.epochs > 0, f"epochs must be positive, got {self.epochs}")
    _check(self.optimizer.lr_schedule in LR_SCHEDULES, f"unknown lr_schedule "
           f"{self.optimizer.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
    _check(self.optimizer.resolved_warmup_epochs < self.epochs,
           f"warmup of {self.optimizer.resolved_warmup_epochs:g} epochs must be shorter than "
           f"--epochs={self.epochs}; set --warmup_epochs")
    _check(self.optimizer.steps_per_epoch >= 0,
           f"steps_per_epoch must be >= 0, got {self.optimizer.steps_per_epoch}")
    _check(0 <= self.distill.alpha <= 1,
           f"distill_alpha must be in [0, 1], got {self.distill.alpha}")
    _check(self.distill.beta >= 0, f"distill_beta must be >= 0, got {self.distill.beta}")
    _check(self.distribute.strategy in STRATEGIES, f"unknown strategy "
           f"{self.distribute.strategy!r}; valid: {', '.join(STRATEGIES)}")
    _check(self.distribute.mixed_precision in MIXED_PRECISION,
           f"unknown mixed_precision {self.distribute.mixed_precision!r}; valid: bfloat16, float16")
    _check(self.distribute.cpu_devices >= 0,
           f"cpu_devices must be >= 0, got {self.distribute.cpu_devices}")
    _check(self.distribute.checkpoint_every_steps >= 0,
           f"checkpoint_every_steps must be >= 0, got {self.distribute.checkpoint_every_steps}")
    _check(self.distribute.strategy != "tpu" or bool(self.distribute.tpu),
           "--strategy=tpu needs --tpu=ADDRESS (or 'local')")
    _check(self.output.log_every_steps > 0,
           f"log_every_steps must be positive, got {self.output.log_every_steps}")
    _check(self.output.eval_every_epochs >= 0,
           f"eval_every_epochs must be >= 0, got {self.output.eval_every_epochs}")
    _check(len(self.output.profile_batches) in (0, 2) and
           list(self.output.profile_batches) == sorted(self.output.profile_batches) and
           all(b >= 0 for b in self.output.profile_batches),
           f"profile_batches must be FIRST,LAST steps, got {self.output.profile_batches}")
    _check(self.output.top_k >= 1, f"top_k must be >= 1, got {self.output.top_k}")
    _check(self.long_tail.loss in LOSSES,
           f"unknown loss {self.long_tail.loss!r}; valid: {', '.join(LOSSES)}")
    _check(self.long_tail.loss == "ce" or self.stage == "teacher",
           f"--loss={self.long_tail.loss} applies to --stage=teacher only, not {self.stage}")
    _check(self.long_tail.focal_gamma >= 0,
           f"focal_gamma must be >= 0, got {self.long_tail.focal_gamma}")
    _check(0 <= self.long_tail.class_balanced_beta < 1,
           f"class_balanced_beta must be in [0, 1), got {self.long_tail.class_balanced_beta}")
    _check(self.long_tail.ldam_max_margin >= 0,
           f"ldam_max_margin must be >= 0, got {self.long_tail.ldam_max_margin}")
    _check(self.long_tail.ldam_scale > 0,
           f"ldam_scale must be positive, got {self.long_tail.ldam_scale}")
    _check(0 <= self.long_tail.class_balanced_focal_beta < 1, "class_balanced_focal_beta "
           f"must be in [0, 1), got {self.long_tail.class_balanced_focal_beta}")
    _check(self.long_tail.class_balanced_focal_gamma >= 0, "class_balanced_focal_gamma "
           f"must be >= 0, got {self.long_tail.class_balanced_focal_gamma}")
    _check(self.long_tail.tau is None or self.long_tail.tau >= 0,
           f"tau must be >= 0, got {self.long_tail.tau}")
    _check(self.long_tail.decoupled_batchnorm in DECOUPLED_BATCHNORM,
           f"unknown decoupled_batchnorm {self.long_tail.decoupled_batchnorm!r}; "
           f"valid: {', '.join(DECOUPLED_BATCHNORM)}")
    _check(self.long_tail.ncm_features in NCM_FEATURES, f"unknown ncm_features "
           f"{self.long_tail.ncm_features!r}; valid: {', '.join(NCM_FEATURES)}")
    _check(self.long_tail.ncm_distance in NCM_DISTANCES, f"unknown ncm_distance "
           f"{self.long_tail.ncm_distance!r}; valid: {', '.join(NCM_DISTANCES)}")
    if self.stage in DECOUPLED_STAGES:
      _check(bool(self.long_tail.backbone_from),
             f"--stage={self.stage} needs --backbone_from=RUN_DIR (a finished teacher or student)")
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
        "optimizer": OptimizerConfig, "distill": DistillConfig, "output": OutputConfig,
        "distribute": DistributeConfig,
        "long_tail": LongTailConfig,
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
