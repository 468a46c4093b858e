"""The values a run setting accepts, and the teacher-spec names built from them. Standard
library only: config.py declares the settings, config_checks.py checks them against these."""

from __future__ import annotations

# Learning-rate schedules (cbd_tf/schedules.py) and the warmup each uses when
# --warmup_epochs is negative: none in the CBD recipe, 5 epochs in LDAM-DRW's step recipe.
LR_SCHEDULES = ("cosine", "step")
# --posthoc_tau=val: tau chosen on the validation split (evaluation.posthoc_tau).
POSTHOC_TAU_ON_VAL = "val"
# SGD's momentum update (cbd_tf/optimizers.py).
MOMENTUM_UPDATES = ("keras", "official")
DEFAULT_WARMUP_EPOCHS = {"cosine": 0.0, "step": 5.0}
# A --backbone or --teachers entry naming a KerasHub preset (models/keras_hub_backbone.py).
PRESET_PREFIX = "keras_hub:"
AUGMENTATIONS = ("standard", "jitter")
# The paper calls the standard augmentation "vanilla": teacher specs (vanilla:1) and teacher
# run directories (teachers/vanilla_1) use that name, and --augmentation accepts it too.
AUGMENTATION_ALIASES = {"vanilla": "standard"}
TEACHER_RUN_NAMES = {"standard": "vanilla"}
# Classifier heads --head trains (cbd_tf/models/heads.py); --stage=ncm writes an NCM head.
HEADS = ("cosine", "linear")
# How much of a backbone trains (cbd_tf/models/adapters.py).
BACKBONE_TUNINGS = ("full", "frozen", "bias", "lora", "adaptformer")
ADAPTER_TUNINGS = ("lora", "adaptformer")
# Where a classifier head starts: random, or the class names' text embeddings (CLIP, SigLIP).
HEAD_INITS = ("random", "text")
# --class_prompt's name for CLIP's 80 ImageNet templates, averaged.
IMAGENET_PROMPT_ENSEMBLE = "imagenet80"
TEST_TIME_CROPS = (1, 5)
# How the training stream is drawn (cbd_tf/data/sampling.py); auto is index.
SAMPLING_METHODS = ("auto", "index", "per_class", "rejection", "resample")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
MIXED_PRECISION = ("", "bfloat16", "float16")


def parse_teacher_spec(spec: str) -> tuple[str, int]:
  """'jitter:2' -> ('jitter', 2). 'vanilla' is the standard augmentation."""
  augmentation, sep, seed = spec.partition(":")
  if not sep or not seed.strip().lstrip("-").isdigit():
    raise ValueError(f"teacher spec {spec!r} is not augmentation:seed (e.g. vanilla:1)")
  augmentation = AUGMENTATION_ALIASES.get(augmentation.strip(), augmentation.strip())
  if augmentation not in AUGMENTATIONS:
    raise ValueError(f"teacher spec {spec!r}: unknown augmentation {augmentation!r}; "
                     "valid: vanilla, jitter")
  return augmentation, int(seed)


def teacher_run_name(spec: str) -> str:
  """'vanilla:1' and 'standard:1' -> 'vanilla_1': run directories keep the paper's name."""
  augmentation, seed = parse_teacher_spec(spec)
  return f"{TEACHER_RUN_NAMES.get(augmentation, augmentation)}_{seed}"
