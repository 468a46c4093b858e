"""The checks of a Config's values (Config.validate): one-line ValueErrors naming the
problem, before any work. Standard library only, like config.py; the stage checks read the
stage registry (stage_registry.py)."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

from cbd_tf import stage_registry
from cbd_tf.choices import (
    ADAPTER_TUNINGS, AUGMENTATIONS, BACKBONE_TUNINGS, HEAD_INITS, HEADS,
    IMAGENET_PROMPT_ENSEMBLE, TEST_TIME_CROPS, LR_SCHEDULES, MIXED_PRECISION, MOMENTUM_UPDATES, POSTHOC_TAU_ON_VAL,
    PRESET_PREFIX, SAMPLING_METHODS, STRATEGIES, teacher_run_name)
from cbd_tf.long_tail_config import DECOUPLED_BATCHNORM, LOSSES, NCM_DISTANCES, NCM_FEATURES


def check(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)


def check_config(config: Any) -> None:
  """Raises ValueError naming the first value out of range or combination that cannot run."""
  stage_registry.get_stage(config.stage)  # ValueError naming the valid stages
  check(bool(config.workdir), "--workdir is required")
  for section_check in (_check_data, _check_model, _check_optimizer, _check_distill,
                        _check_distribute, _check_output, _check_long_tail, _check_stage):
    section_check(config)


def _check_data(config: Any) -> None:
  check(config.data.augmentation in AUGMENTATIONS,
        f"unknown augmentation {config.data.augmentation!r}; valid: {', '.join(AUGMENTATIONS)}")
  check(config.data.sampling_method in SAMPLING_METHODS,
        f"unknown sampling_method {config.data.sampling_method!r}; "
        f"valid: {', '.join(SAMPLING_METHODS)}")
  check(config.data.image_size >= 8, f"image_size must be >= 8, got {config.data.image_size}")
  check(config.data.imbalance_ratio >= 1,
        f"imbalance_ratio must be >= 1, got {config.data.imbalance_ratio}")
  check(0 < config.data.crop_min_area <= 1,
        f"crop_min_area must be in (0, 1], got {config.data.crop_min_area}")
  check(0 < config.data.eval_crop_fraction <= 1,
        f"eval_crop_fraction must be in (0, 1], got {config.data.eval_crop_fraction}")
  check(config.data.batch_size > 0, f"batch_size must be positive, got {config.data.batch_size}")
  check(config.data.eval_batch_size > 0,
        f"eval_batch_size must be positive, got {config.data.eval_batch_size}")
  check(config.data.num_classes >= 0,
        f"num_classes must be >= 0, got {config.data.num_classes}")
  check(config.data.randaugment_num_ops >= 1,
        f"randaugment_num_ops must be >= 1, got {config.data.randaugment_num_ops}")
  check(0 <= config.data.randaugment_magnitude <= 10,
        f"randaugment_magnitude must be in [0, 10], got {config.data.randaugment_magnitude}")


def _check_model(config: Any) -> None:
  check(config.model.cosine_scale > 0,
        f"cosine_scale must be positive, got {config.model.cosine_scale}")
  check(config.model.head in HEADS,
        f"unknown head {config.model.head!r}; valid: {', '.join(HEADS)}")
  check(config.model.backbone_learning_rate_multiplier >= 0,
        "backbone_learning_rate_multiplier must be >= 0, got "
        f"{config.model.backbone_learning_rate_multiplier}")
  check(config.model.head_norm_power is None or config.model.head_norm_power >= 0,
        f"head_norm_power must be >= 0, got {config.model.head_norm_power}")
  check(config.model.head_init in HEAD_INITS,
        f"unknown head_init {config.model.head_init!r}; valid: {', '.join(HEAD_INITS)}")
  check(config.model.class_prompt == IMAGENET_PROMPT_ENSEMBLE or
        config.model.class_prompt.count("{}") == 1,
        f"--class_prompt must hold {{}} once (where the class name goes) or be "
        f"{IMAGENET_PROMPT_ENSEMBLE}, got {config.model.class_prompt!r}")
  check(config.data.test_time_crops in TEST_TIME_CROPS,
        f"test_time_crops must be 1 or 5, got {config.data.test_time_crops}")
  check(config.model.backbone_tuning in BACKBONE_TUNINGS,
        f"unknown backbone_tuning {config.model.backbone_tuning!r}; valid: "
        f"{', '.join(BACKBONE_TUNINGS)}")
  check(config.model.adapter_rank >= 0,
        f"adapter_rank must be >= 0 (0: LIFT's rule), got {config.model.adapter_rank}")
  check(config.model.adapter_rank == 0 or config.model.backbone_tuning in ADAPTER_TUNINGS,
        f"--adapter_rank applies to --backbone_tuning=lora or adaptformer, not "
        f"{config.model.backbone_tuning}")
  # A pipeline's --student_backbone, when given, trains in full (stages/pipeline.py).
  check(config.model.backbone_tuning not in ADAPTER_TUNINGS or
        config.model.backbone.startswith(PRESET_PREFIX),
        f"--backbone_tuning={config.model.backbone_tuning} needs a keras_hub CLIP, SigLIP, ViT "
        f"or DINOv2 preset, not --backbone={config.model.backbone} (full, frozen and bias fit "
        "any backbone)")
  _check_text_head(config)


def _check_text_head(config: Any) -> None:
  """A head from text (--stage=zero_shot, --head_init=text) needs a preset and the cosine
  head; whether the preset is CLIP or SigLIP is checked once it is read (pretrained.py)."""
  text_head = config.stage_entry.text_head
  if not (text_head == stage_registry.TEXT_HEAD_ALWAYS or
          (text_head and config.model.head_init == "text")):
    return
  what = (f"--stage={config.stage}" if text_head == stage_registry.TEXT_HEAD_ALWAYS
          else "--head_init=text")
  check(config.model.backbone.startswith(PRESET_PREFIX),
        f"{what} needs a keras_hub CLIP or SigLIP preset (--backbone=keras_hub:PRESET), not "
        f"--backbone={config.model.backbone}")
  check(config.model.head == "cosine", f"{what} needs --head=cosine (the text embeddings are "
        f"its class weights), not --head={config.model.head}")


def _check_optimizer(config: Any) -> None:
  check(config.optimizer.learning_rate > 0,
        f"learning_rate must be positive, got {config.optimizer.learning_rate}")
  check(0 <= config.optimizer.momentum < 1,
        f"momentum must be in [0, 1), got {config.optimizer.momentum}")
  check(config.optimizer.momentum_update in MOMENTUM_UPDATES, "unknown momentum_update "
        f"{config.optimizer.momentum_update!r}; valid: {', '.join(MOMENTUM_UPDATES)}")
  check(config.optimizer.weight_decay >= 0,
        f"weight_decay must be >= 0, got {config.optimizer.weight_decay}")
  check(config.epochs > 0, f"epochs must be positive, got {config.epochs}")
  check(config.optimizer.lr_schedule in LR_SCHEDULES, f"unknown lr_schedule "
        f"{config.optimizer.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
  check(0 <= config.warmup_epochs < config.epochs,
        f"warmup of {config.warmup_epochs:g} epochs must be shorter than "
        f"--epochs={config.epochs}; set --"
        f"{'decoupled_' if config.stage_entry.own_epochs else ''}warmup_epochs")
  check(config.optimizer.steps_per_epoch >= 0,
        f"steps_per_epoch must be >= 0, got {config.optimizer.steps_per_epoch}")


def _check_distill(config: Any) -> None:
  check(0 <= config.distill.alpha <= 1,
        f"distill_alpha must be in [0, 1], got {config.distill.alpha}")
  check(config.distill.beta >= 0, f"distill_beta must be >= 0, got {config.distill.beta}")
  check(config.distill.teacher_views >= 0,
        f"teacher_views must be >= 0, got {config.distill.teacher_views}")


def _check_distribute(config: Any) -> None:
  check(not (config.distribute.sync_batchnorm and any(
      name.startswith(PRESET_PREFIX)
      for name in (config.model.backbone, config.model.student_backbone))),
        "--sync_batchnorm applies to the built-in ResNets; a keras_hub backbone keeps its own "
        "BatchNorm layers")
  check(config.distribute.strategy in STRATEGIES, f"unknown strategy "
        f"{config.distribute.strategy!r}; valid: {', '.join(STRATEGIES)}")
  check(config.distribute.mixed_precision in MIXED_PRECISION,
        f"unknown mixed_precision {config.distribute.mixed_precision!r}; valid: bfloat16, float16")
  check(config.distribute.cpu_devices >= 0,
        f"cpu_devices must be >= 0, got {config.distribute.cpu_devices}")
  check(config.distribute.checkpoint_every_steps >= 0,
        f"checkpoint_every_steps must be >= 0, got {config.distribute.checkpoint_every_steps}")
  check(config.distribute.strategy != "tpu" or bool(config.distribute.tpu),
        "--strategy=tpu needs --tpu=ADDRESS (or 'local')")


def _check_output(config: Any) -> None:
  check(config.output.log_every_steps > 0,
        f"log_every_steps must be positive, got {config.output.log_every_steps}")
  check(config.output.eval_every_epochs >= 0,
        f"eval_every_epochs must be >= 0, got {config.output.eval_every_epochs}")
  check(len(config.output.profile_batches) in (0, 2) and
        list(config.output.profile_batches) == sorted(config.output.profile_batches) and
        all(b >= 0 for b in config.output.profile_batches),
        f"profile_batches must be FIRST,LAST steps, got {config.output.profile_batches}")
  check(config.output.top_k >= 1, f"top_k must be >= 1, got {config.output.top_k}")
  check(config.data.max_image_pixels >= 1,
        f"max_image_pixels must be >= 1, got {config.data.max_image_pixels}")
  check(config.output.max_request_images >= 1,
        f"max_request_images must be >= 1, got {config.output.max_request_images}")


def _check_long_tail(config: Any) -> None:
  check(config.long_tail.loss != "ldam" or config.model.head == "cosine",
        "--loss=ldam needs --head=cosine (its margins are in cosine units)")
  check(config.long_tail.loss in LOSSES,
        f"unknown loss {config.long_tail.loss!r}; valid: {', '.join(LOSSES)}")
  check(config.long_tail.focal_gamma >= 0,
        f"focal_gamma must be >= 0, got {config.long_tail.focal_gamma}")
  check(0 <= config.long_tail.class_balanced_beta < 1,
        f"class_balanced_beta must be in [0, 1), got {config.long_tail.class_balanced_beta}")
  check(config.long_tail.ldam_max_margin >= 0,
        f"ldam_max_margin must be >= 0, got {config.long_tail.ldam_max_margin}")
  check(config.long_tail.ldam_scale > 0,
        f"ldam_scale must be positive, got {config.long_tail.ldam_scale}")
  check(0 <= config.long_tail.class_balanced_focal_beta < 1, "class_balanced_focal_beta "
        f"must be in [0, 1), got {config.long_tail.class_balanced_focal_beta}")
  check(config.long_tail.class_balanced_focal_gamma >= 0, "class_balanced_focal_gamma "
        f"must be >= 0, got {config.long_tail.class_balanced_focal_gamma}")
  check(str(config.long_tail.posthoc_tau) == POSTHOC_TAU_ON_VAL or _non_negative_number(
      config.long_tail.posthoc_tau), f"posthoc_tau must be a number >= 0 or "
        f"{POSTHOC_TAU_ON_VAL}, got {config.long_tail.posthoc_tau!r}")
  check(config.long_tail.tau is None or config.long_tail.tau >= 0,
        f"tau must be >= 0, got {config.long_tail.tau}")
  check(config.long_tail.decoupled_batchnorm in DECOUPLED_BATCHNORM,
        f"unknown decoupled_batchnorm {config.long_tail.decoupled_batchnorm!r}; "
        f"valid: {', '.join(DECOUPLED_BATCHNORM)}")
  check(config.long_tail.ncm_features in NCM_FEATURES, f"unknown ncm_features "
        f"{config.long_tail.ncm_features!r}; valid: {', '.join(NCM_FEATURES)}")
  check(config.long_tail.ncm_distance in NCM_DISTANCES, f"unknown ncm_distance "
        f"{config.long_tail.ncm_distance!r}; valid: {', '.join(NCM_DISTANCES)}")


def _check_stage(config: Any) -> None:
  """What the stage's registry entry needs is given; a setting only other stages read is not."""
  stage = config.stage_entry
  if stage.needs == stage_registry.NEEDS_BACKBONE_RUN:
    check(bool(config.long_tail.backbone_from),
          f"--stage={config.stage} needs --backbone_from=RUN_DIR (a finished "
          f"{' or '.join(stage_registry.backbone_source_stages())} run)")
  if stage.needs == stage_registry.NEEDS_TEACHERS:
    cached = bool(config.distill.teacher_features)
    check(bool(config.distill.teachers) or cached,
          f"--stage={config.stage} needs --teachers=RUN_DIR|keras_hub:PRESET[,...]"
          + (" or --teacher_features=DIR" if "teacher_features" in stage.settings else ""))
    check(not (cached and config.distill.teachers),
          "--teacher_features replaces --teachers (the cache names its teachers); give one")
  if config.stage == "teacher_features":
    check(config.distill.teacher_views >= 1,
          "--stage=teacher_features needs --teacher_views=M, the views cached per image "
          "(e.g. 10)")
  if stage.needs == stage_registry.NEEDS_TEACHER_SPECS:
    check(bool(config.distill.teacher_specs),
          f"--stage={config.stage} needs --teacher_specs=augmentation:seed[,...]")
    names = [teacher_run_name(spec) for spec in config.distill.teacher_specs]
    check(len(set(names)) == len(names),
          f"--teacher_specs repeats a teacher: {','.join(config.distill.teacher_specs)}")
  for flag, value, default in _flag_values(config):
    readers = stage_registry.stages_reading(flag)
    if (readers and config.stage not in readers
        and flag not in stage_registry.SHARED_RECIPE_SETTINGS):
      check(value == default, f"--{flag}={_shown(value)} applies to "
            f"--stage={' / '.join(readers)}, not {config.stage}")


def _flag_values(config: Any) -> Iterator[tuple[str, Any, Any]]:
  """(flag, value, default) of every setting a flag sets."""
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value):
      for inner in dataclasses.fields(value):
        if inner.metadata.get("flag"):
          yield inner.metadata["flag"], getattr(value, inner.name), inner.default
    elif field.metadata.get("flag"):
      yield field.metadata["flag"], value, field.default


def _shown(value: Any) -> str:
  return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _non_negative_number(value) -> bool:
  try:
    return float(value) >= 0
  except (TypeError, ValueError):
    return False
