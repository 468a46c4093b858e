"""Run settings as frozen dataclasses: the one object every layer below the CLI takes.

Standard library only, so a notebook can build a `Config` without absl, and a run
directory's `config.json` can be read back without TensorFlow.

Each setting is declared once, here or in long_tail_config.py (the baselines' section): its
field carries its default, its flag name and its help (`setting`, cbd_tf/settings.py), and
cbd_tf/flags.py generates the flags and `config_from_flags` from them. Fields a run fills in
(`run_value`) have no flag.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from cbd_tf import config_migrations, errors, stage_registry
from cbd_tf.choices import (  # pylint: disable=unused-import  (re-exported)
    ADAPTER_TUNINGS, AUGMENTATION_ALIASES, AUGMENTATIONS, BACKBONE_TUNINGS,
    DEFAULT_WARMUP_EPOCHS, HEAD_INITS, HEADS, IMAGENET_PROMPT_ENSEMBLE, LR_SCHEDULES,
    MIXED_PRECISION, MOMENTUM_UPDATES, POSTHOC_TAU_ON_VAL, PRESET_PREFIX, SAMPLING_METHODS,
    STRATEGIES, TEACHER_RUN_NAMES, TEST_TIME_CROPS, parse_teacher_spec, teacher_run_name)
from cbd_tf.config_checks import check, check_config
from cbd_tf.long_tail_config import (  # pylint: disable=unused-import  (re-exported)
    DECOUPLED_BATCHNORM, LOSSES, NCM_DISTANCES, NCM_FEATURES, LongTailConfig)
from cbd_tf.settings import flag_fields, run_value, setting  # pylint: disable=unused-import

STAGES = tuple(stage_registry.STAGES)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  dataset: str = setting("mnist_lt", "dataset", "Data set name, e.g. mnist_lt.")
  data_dir: str = setting("", "data_dir", "Where the data set lives, if not bundled.")
  image_size: int = setting(224, "image_size", "Square input size of the model.")
  imbalance_ratio: float = setting(
      100.0, "imbalance_ratio",
      "rho = largest / smallest class for generated long-tailed splits.")
  # Empty: the stage's default (Config.sampling).
  sampling: str = setting(
      "", "sampling", "instance | class_balanced | sqrt | progressive (instance to "
      "class-balanced over the run). Empty: instance for teachers, class_balanced for students.")
  sampling_method: str = setting(
      "auto", "sampling_method",
      "How the training stream is drawn: auto (= index) | index | per_class | rejection | "
      "resample (the reference's copies in a row + 1,000-record shuffle buffer). index is the "
      "default: it draws independently, while resample repeats 12.5% (ImageNet-LT-like) / "
      "15.2% (iNaturalist-like) of a 128-batch against 0.3% / 0.1% for independent draws. "
      "index and resample resume in constant time; per_class and rejection skip to the "
      "resumed step.",
      choices=SAMPLING_METHODS)
  augmentation: str = setting(
      "standard", "augmentation",
      "standard (also called vanilla) | jitter (SimCLR colour jitter + grayscale) for "
      "--stage=teacher.", choices=AUGMENTATIONS + tuple(AUGMENTATION_ALIASES))
  crop_min_area: float = setting(
      0.05, "crop_min_area", "Smallest area fraction of the training random resized crop.")
  horizontal_flip: bool = setting(True, "horizontal_flip", "Random horizontal flips.")
  # 224 / 256 on ImageNet: resize the short side to image_size / fraction, crop image_size;
  # 1.0 means no crop.
  eval_crop_fraction: float = setting(
      224 / 256, "eval_crop_fraction",
      "Evaluation centre crop as a fraction of the resized short side.")
  batch_size: int = setting(128, "batch_size", "Global training batch size.")
  eval_batch_size: int = setting(256, "eval_batch_size", "Evaluation batch size.")
  # Real data sets (cbd_tf/data/sources.py). TFDS prepares under data_dir; list paths are
  # relative to data_dir.
  manual_dir: str = setting(
      "", "manual_dir", "TFDS manual-download directory (ImageNet tars for imagenet_lt).")
  train_list: str = setting(
      "", "train_list", "file_list / places_lt: training list of 'relative/path label' lines.")
  val_list: str = setting(
      "", "val_list", "file_list / places_lt: validation list (periodic evaluation).")
  test_list: str = setting(
      "", "test_list", "file_list / places_lt: test list, evaluated once at the end (without "
      "it, --val_list is the test split).")
  num_classes: int = setting(
      0, "num_classes", "Classes of file_list / tfrecord data; 0: largest training label + 1.")
  tfrecord_train: str = setting(
      "", "tfrecord_train", "tfrecord: comma-separated glob patterns of the training files.")
  tfrecord_test: str = setting(
      "", "tfrecord_test", "tfrecord: comma-separated glob patterns of the evaluation files.")
  tfrecord_val: str = setting(
      "", "tfrecord_val",
      "tfrecord: optional glob patterns of validation files (periodic evaluation).")
  tfrecord_image_key: str = setting(
      "image", "tfrecord_image_key",
      "tfrecord: tf.train.Example feature holding the encoded image.")
  tfrecord_label_key: str = setting(
      "label", "tfrecord_label_key", "tfrecord: tf.train.Example int64 feature holding the label.")
  class_names_file: str = setting(
      "", "class_names_file", "Readable class names, one a line in label order, for "
      "--head_init=text and --stage=zero_shot; empty: the data set's (ImageNet's: CLIP's list).")
  test_time_crops: int = setting(
      1, "test_time_crops", "Evaluation and export: 1 (the centre crop) | 5 (LIFT's test-time "
      "ensemble: short side to image_size + 24, the four corner crops and the centre one, their "
      "logits averaged).")
  validate_images: bool = setting(
      True, "validate_images",
      "Decode every image file once before training; leave out those that fail.")
  # Resolved by Config: empty means WORKDIR/data_cache (see Config.__post_init__).
  cache_dir: str = setting(
      "", "data_cache_dir",
      "Exported TFDS/TFRecord images and image checks; empty: WORKDIR/data_cache.")
  # Pillow's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS).
  max_image_pixels: int = setting(
      89_478_485, "max_image_pixels",
      "The most pixels an image file may declare (a GIF: its first frame, the only one "
      "decoded). Checked before decoding: training, evaluation and the image check skip a "
      "larger file and list it with the skipped files; the export refuses it.")
  randaugment: bool = setting(False, "randaugment", "RandAugment in training.")
  randaugment_num_ops: int = setting(
      2, "randaugment_num_ops", "RandAugment operations per image.")
  randaugment_magnitude: float = setting(
      9.0, "randaugment_magnitude", "RandAugment magnitude, 0-10.")

  def __post_init__(self):
    # One name per augmentation in config.json, whichever spelling the user wrote.
    object.__setattr__(self, "augmentation",
                       AUGMENTATION_ALIASES.get(self.augmentation, self.augmentation))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  backbone: str = setting(
      "resnet50", "backbone", "Backbone: a built-in name (resnet50, resnet32, ...) or "
      "keras_hub:PRESET, a KerasHub preset name (keras_hub:resnet_50_imagenet) or directory, "
      "fine-tuned from its pretrained weights.")
  student_backbone: str = setting(
      "", "student_backbone", "--stage=pipeline: the student's backbone; empty: --backbone "
      "(the teachers').")
  backbone_tuning: str = setting(
      "full", "backbone_tuning",
      "What of the backbone trains: full (every weight) | frozen (none: only what sits on it) "
      "| bias (BitFit: biases only) | lora (LoRA on the attention's query and value) | "
      "adaptformer (an AdaptFormer beside each MLP; LIFT's recipe). lora and adaptformer need a "
      "keras_hub CLIP, SigLIP, ViT or DINOv2 preset. Every mode but full keeps every "
      "pretrained weight and statistic as it was; --freeze_backbone is --backbone_tuning=frozen.",
      choices=BACKBONE_TUNINGS)
  adapter_rank: int = setting(
      0, "adapter_rank", "LoRA rank / AdaptFormer bottleneck; 0: LIFT's rule, "
      "2 ** floor(log2(classes / (2 * blocks))).")
  backbone_learning_rate_multiplier: float = setting(
      1.0, "backbone_learning_rate_multiplier",
      "The backbone's learning rate as a multiple of --learning_rate (e.g. 0.01 to fine-tune "
      "a pretrained backbone gently).")
  init_from: str = setting(
      "", "init_from", "Initialise --backbone from a .weights.h5 file (model.backbone."
      "save_weights), a .keras file or a finished run directory (in a pipeline: the teachers, "
      "and the student unless --student_backbone differs).")
  cosine_scale: float = setting(20.0, "cosine_scale", "sigma of the cosine classifier.")
  head_init: str = setting(
      "random", "head_init", "Where the classifier head starts: random | text (a CLIP or "
      "SigLIP preset's text embedding of --class_prompt for each class name; the cosine head "
      "then starts as the zero-shot classifier).", choices=HEAD_INITS)
  class_prompt: str = setting(
      "a photo of a {}.", "class_prompt",
      f"--head_init=text and --stage=zero_shot: the prompt, {{}} standing for a class name, or "
      f"{IMAGENET_PROMPT_ENSEMBLE} (CLIP's 80 ImageNet templates, their embeddings averaged).")
  head: str = setting(
      "cosine", "head", "Classifier head: cosine (sigma * cos, no bias; CBD, LDAM) | linear "
      "(Dense with bias, as the Decoupling / logit adjustment / balanced softmax baselines).",
      choices=HEADS)
  projection_dim: int = run_value(
      0, "Student only: width of the projection head, the teachers' embeddings concatenated "
      "(set by stages.student.with_teacher_width); 0: no projection head.")
  # Written by decoupled stages from long_tail.tau (tau_norm), crt and lws.
  head_norm_power: float | None = run_value(
      None, "Each class weight divided by its raw norm^head_norm_power (tau-norm); None: the "
      "head as trained (1 for the cosine head; the linear head keeps its bias).")
  class_scales: bool = run_value(False, "Per-class logit scales (LWS).")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  learning_rate: float = setting(
      0.1, "learning_rate",
      "Learning rate per 256 images; the run uses learning_rate * batch_size / 256.")
  momentum: float = setting(0.9, "momentum", "SGD momentum.")
  momentum_update: str = setting(
      "keras", "momentum_update", "keras (m = mu * m - lr * g; w += m) | official (the "
      "official code's Sonnet Momentum: acc = mu * acc + g; w -= lr * acc; the paper configs).",
      choices=MOMENTUM_UPDATES)
  weight_decay: float = setting(
      5e-4, "weight_decay", "Coefficient of the official explicit L2 term "
      "wd * 0.5 * tf.nn.l2_loss(w) = 0.25 * wd * sum(w^2) over every trainable weight.")
  # cRT and LWS take long_tail.decoupled_epochs instead (Config.epochs).
  epochs: int = setting(
      90, "epochs", "Training epochs of the teacher and student stages (crt and lws take "
      "--decoupled_epochs).")
  lr_schedule: str = setting(
      "cosine", "lr_schedule", "cosine (the CBD recipe) | step (LDAM-DRW's CIFAR recipe: x0.01 "
      "from 80% and x0.0001 from 90% of --epochs).", choices=LR_SCHEDULES)
  warmup_epochs: float = setting(
      -1.0, "warmup_epochs",
      "Linear warmup epochs; negative: the schedule's own (cosine 0, step 5).")
  steps_per_epoch: int = setting(
      0, "steps_per_epoch",
      "Steps per epoch; 0 means training images // batch_size (at least 1), as the official code.")

  @property
  def resolved_warmup_epochs(self) -> float:
    """The warmup the run uses: --warmup_epochs, or its schedule's when negative."""
    if self.warmup_epochs >= 0:
      return self.warmup_epochs
    return DEFAULT_WARMUP_EPOCHS.get(self.lr_schedule, 0.0)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  # The CBD defaults (the paper, README). Code elsewhere takes DistillConfig.alpha / .beta
  # as its default rather than writing the numbers again.
  alpha: float = setting(
      0.4, "distill_alpha", "alpha in (1 - alpha) * CE + alpha * beta * (1 - cos).")
  beta: float = setting(100.0, "distill_beta", "beta of the distillation term.")
  teachers: tuple[str, ...] = setting(
      (), "teachers", "Teachers of --stage=student (and extra teachers of a pipeline): run "
      "directories, or keras_hub:PRESET for a frozen pretrained feature extractor.")
  teacher_specs: tuple[str, ...] = setting(
      ("vanilla:1", "vanilla:2"), "teacher_specs",
      "Teachers trained by --stage=pipeline, as augmentation:seed (augmentation vanilla or "
      "jitter).")
  teacher_sampling: str = setting(
      "instance", "teacher_sampling", "Sampling of the teachers trained by --stage=pipeline.")
  teacher_views: int = setting(
      0, "teacher_views", "M fixed augmented views per image (0: a fresh view at every draw): "
      "--stage=teacher_features caches the teachers' features of each; a student or pipeline "
      "draws one of its image's M views per example (a pipeline trains it from the cache).")
  teacher_features: str = setting(
      "", "teacher_features", "--stage=student: a --stage=teacher_features directory; the "
      "student reads its teachers' features there and loads no teacher.")


@dataclasses.dataclass(frozen=True)
class DistributeConfig:
  """Devices, numerics and fault tolerance."""
  strategy: str = setting(
      "auto", "strategy", "auto | default | mirrored | multi_worker (reads TF_CONFIG) | tpu.",
      choices=STRATEGIES)
  tpu: str = setting("", "tpu", "TPU address or name; 'local' on a TPU VM.")
  cpu_devices: int = setting(
      0, "cpu_devices",
      "Split the host CPU into N logical devices (test Mirrored without GPUs).")
  sync_batchnorm: bool = setting(
      False, "sync_batchnorm", "Synchronise BatchNorm statistics across replicas.")
  mixed_precision: str = setting(
      "", "mixed_precision",
      "'' | bfloat16 (TPU, recent GPUs) | float16 (GPUs; with loss scaling).",
      choices=MIXED_PRECISION)
  deterministic: bool = setting(
      False, "deterministic",
      "Deterministic ops: a resumed run matches an uninterrupted one exactly.")
  checkpoint_every_steps: int = setting(
      100, "checkpoint_every_steps",
      "Save the training state every N steps and at epoch ends; 0: epochs only.")


@dataclasses.dataclass(frozen=True)
class OutputConfig:
  """What a run writes beside its weights: logs, evaluations, profiles, an export."""
  log_every_steps: int = setting(
      10, "log_every_steps", "Write train/* TensorBoard scalars every this many steps.")
  eval_every_epochs: int = setting(
      1, "eval_every_epochs",
      "Evaluate by shot group (val/* scalars) every this many epochs; 0: never.")
  # e.g. (5, 8); empty: no profiling.
  profile_batches: tuple[int, ...] = setting(
      (), "profile_batches", "FIRST,LAST training steps to profile into TensorBoard.")
  export_dir: str = setting(
      "", "export_dir", "Write a SavedModel for TF Serving here (train: at the end of training; "
      "export: required).")
  top_k: int = setting(
      5, "top_k", "Classes a served prediction returns (capped at the class count).")
  max_request_images: int = setting(
      64, "max_request_images", "Export: the served model refuses a request of more images.")


@dataclasses.dataclass(frozen=True)
class Config:
  """A run's settings. Derived values are resolved here, once, for the CLI and Python alike:

  * data.cache_dir: empty means WORKDIR/data_cache, fixed when the Config is first built
    with a workdir. `replace(workdir=...)` keeps it, so a pipeline's teacher and student
    runs share their parent's cache. (A DataConfig used without a Config, e.g. by a
    tool, falls back to the system temp directory: data/source_cache.py.)
  * epochs and sampling: the stage's recipe when not given (properties below).
  * model.projection_dim: a student's is its teachers' embedding widths summed, which needs
    the loaded teachers: stages.student.with_teacher_width sets it, before the student is built.
  """
  stage: str = setting(
      "teacher", "stage", "; ".join(f"{stage.name}: {stage.summary}"
                                    for stage in stage_registry.STAGES.values()) + ".",
      choices=STAGES)
  workdir: str = setting(
      "", "workdir", "Run directory: config, checkpoints, weights, metrics.", required=True)
  seed: int = setting(
      0, "seed", "Random seed. In a pipeline, teacher 'aug:k' uses seed 1000 * seed + k.")
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  distill: DistillConfig = DistillConfig()
  output: OutputConfig = OutputConfig()
  distribute: DistributeConfig = DistributeConfig()
  long_tail: LongTailConfig = LongTailConfig()

  def __post_init__(self):
    if self.workdir and not self.data.cache_dir:
      object.__setattr__(self, "data", dataclasses.replace(
          self.data, cache_dir=os.path.join(self.workdir, "data_cache")))

  @property
  def stage_entry(self) -> stage_registry.Stage:
    return stage_registry.get_stage(self.stage)

  @property
  def epochs(self) -> int:
    """Training epochs: --decoupled_epochs or the recipe of a stage with its own (cRT, LWS),
    else --epochs."""
    if self.stage_entry.own_epochs:
      return self.long_tail.decoupled_epochs or self.stage_entry.default_epochs
    return self.optimizer.epochs

  @property
  def warmup_epochs(self) -> float:
    """Warm-up epochs: --decoupled_warmup_epochs for cRT / LWS, else the optimizer's."""
    if self.stage_entry.own_epochs:
      return self.long_tail.decoupled_warmup_epochs
    return self.optimizer.resolved_warmup_epochs

  @property
  def sampling(self) -> str:
    """The sampling policy this stage trains with: --sampling, or the stage's default."""
    return self.data.sampling or self.stage_entry.default_sampling

  def replace(self, **sections: Any) -> "Config":
    """Returns a copy; `sections` maps top-level fields or section names to dicts."""
    changes = {}
    for name, value in sections.items():
      current = getattr(self, name)
      if dataclasses.is_dataclass(current) and isinstance(value, dict):
        value = dataclasses.replace(current, **value)
      changes[name] = value
    return dataclasses.replace(self, **changes)

  def with_test_time_crops(self, crops: int | None) -> "Config":
    """This config evaluating with `crops` test-time crops (None: as it is)."""
    if crops is None:
      return self
    check(crops in TEST_TIME_CROPS, f"test_time_crops must be 1 or 5, got {crops}")
    return self.replace(data={"test_time_crops": crops})

  def validate(self) -> "Config":
    """Checks every value (config_checks.py); raises ValueError naming the first problem.
    Returns the config, so calls chain."""
    check_config(self)
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
    kwargs = config_migrations.upgrade(kwargs)
    for name, section_cls in sections.items():
      if name in kwargs:
        section = dict(kwargs[name])
        known = {field.name for field in dataclasses.fields(section_cls)}
        unknown = set(section) - known
        check(not unknown, f"config section {name!r} has unknown keys: {sorted(unknown)}")
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
      try:
        values = json.load(f)
      except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise errors.DamagedFile(f"{path} is damaged: not JSON ({error})") from error
    return cls.from_dict(values)

