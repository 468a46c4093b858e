"""The stage registry: what each stage builds and whether it trains. stages.train_stage
runs any entry with one generic loop.

  stage     builds (inside the strategy scope)                   fit() runs    trains
  teacher   a fresh classifier                                   Classifier    yes
  student   a fresh classifier whose projection is as wide as    CBDDistiller  yes
            the teachers' concatenated embeddings
  crt       decoupled.build_crt on --backbone_from's backbone    Classifier    yes
  lws       decoupled.build_lws                                  Classifier    yes
  tau_norm  decoupled.build_tau_norm (tau chosen on val)         -             no
  ncm       decoupled.build_ncm (class means of the train split) -             no

A student checks its teachers, a decoupled stage its backbone run, before any work.
cRT and LWS add BestValidationEpoch where the data set has a validation split. Post-hoc
stages (tau_norm, ncm) build no loss, optimiser or checkpoint.

A stage's default sampling and epochs are plain data in config.py (Config.sampling,
config.STAGE_EPOCHS), so a config reads without TensorFlow; each Stage reports them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras

import tensorflow as tf

from cbd_tf import callbacks, decoupled, distiller, distribute, long_tail_losses, pretrained
from cbd_tf import teachers
from cbd_tf import config as config_lib
from cbd_tf.data import pipeline, sources
from cbd_tf.models.classifier import Classifier


@dataclasses.dataclass
class Built:
  """What a stage's build returns."""
  classifier: Classifier  # what is saved, exported and evaluated
  # The config the run saves and trains with: what the stage resolved written in (a
  # student's projection width, a decoupled stage's head and chosen tau).
  config: config_lib.Config
  trainer: keras.Model | None = None  # what fit() runs; None: the classifier itself
  selection: dict = dataclasses.field(default_factory=dict)  # chosen on the val split

  @property
  def fitted(self) -> keras.Model:
    return self.trainer if self.trainer is not None else self.classifier


def _no_callbacks(built: Built, source: sources.Source, log_dir: str,
                  save_dir: str) -> list[keras.callbacks.Callback]:
  return []


def _no_check(config: config_lib.Config, source: sources.Source) -> None:
  pass


@dataclasses.dataclass(frozen=True)
class Stage:
  """One entry of STAGES."""
  name: str
  # (config, source) -> Built. Called inside the strategy scope, after seeding.
  build: Callable[[config_lib.Config, sources.Source], Built]
  trains: bool = True
  # (config, source) -> None: ValueError before any work if a run this stage builds on is
  # unfinished or does not fit the data (a student's teachers, a decoupled backbone run).
  check: Callable[[config_lib.Config, sources.Source], None] = _no_check
  # Compiles the --loss of long_tail_losses; the distiller computes CBD's loss itself.
  compiles_loss: bool = True
  # (built, source, log_dir, save_dir) -> the stage's own callbacks. A ShotGroupEvaluation
  # among them replaces the periodic one; a BestValidationEpoch's choice goes to selection.json.
  callbacks: Callable[..., list[keras.callbacks.Callback]] = _no_callbacks

  @property
  def default_sampling(self) -> str:
    return config_lib.Config(stage=self.name).sampling

  @property
  def default_epochs(self) -> int:
    return config_lib.Config(stage=self.name).epochs


def _check_teachers(config: config_lib.Config, source: sources.Source) -> None:
  teachers.check_teachers(config.distill.teachers, source.num_classes, config.data.image_size,
                          student_dir=config.workdir)


def _check_backbone_run(config: config_lib.Config, source: sources.Source) -> None:
  decoupled.check_backbone_run(config.long_tail.backbone_from, source.num_classes,
                               config.data.image_size)


def _check_tau_norm(config: config_lib.Config, source: sources.Source) -> None:
  _check_backbone_run(config, source)
  decoupled.check_tau_split(config, source)


def _writes() -> bool:
  return distribute.is_chief(tf.distribute.get_strategy())


def _build_teacher(config: config_lib.Config, source: sources.Source) -> Built:
  classifier = pretrained.build_starting_classifier(config, source.num_classes, _writes())
  classifier.weight_decay_exempt = long_tail_losses.prepare_head(
      classifier.head, config.long_tail, source.num_classes)
  return Built(classifier, config)


def _build_student(config: config_lib.Config, source: sources.Source) -> Built:
  frozen = teachers.load_teachers(config.distill.teachers, config.workdir, _writes())
  config = student_config(config, frozen)
  student = pretrained.build_starting_classifier(config, source.num_classes, _writes())
  return Built(student, config, trainer=distiller.CBDDistiller(
      student, frozen, config.distill.alpha, config.distill.beta,
      # TensorBoard: train/loss_distill_<teacher run name>, e.g. loss_distill_vanilla_1.
      teacher_names=distiller.teacher_run_names(config.distill.teachers)))


def student_config(config: config_lib.Config, frozen: list) -> config_lib.Config:
  """The student's config with its projection as wide as the teachers' concatenated
  embeddings: the one place the width is resolved, before the student is built."""
  return config.replace(model={"projection_dim": distiller.teacher_feature_dim(frozen)})


def _decoupled(build: Callable) -> Callable[[config_lib.Config, sources.Source], Built]:
  def build_stage(config: config_lib.Config, source: sources.Source) -> Built:
    classifier, config, selection = build(config, source)
    return Built(classifier, config, selection=selection)
  return build_stage


def _best_validation_epoch(built: Built, source: sources.Source, log_dir: str,
                           save_dir: str) -> list[keras.callbacks.Callback]:
  """cRT / LWS keep the epoch with the best validation top-1, as classifier-balancing."""
  if source.val is None:
    return []
  return [callbacks.BestValidationEpoch(
      built.classifier, pipeline.build_eval_dataset(source.val, built.config.data),
      source.train_counts, log_dir, save_dir)]


STAGES = {stage.name: stage for stage in (
    Stage("teacher", _build_teacher),
    Stage("student", _build_student, check=_check_teachers, compiles_loss=False),
    Stage("crt", _decoupled(decoupled.build_crt), check=_check_backbone_run,
          callbacks=_best_validation_epoch),
    Stage("lws", _decoupled(decoupled.build_lws), check=_check_backbone_run,
          callbacks=_best_validation_epoch),
    Stage("tau_norm", _decoupled(decoupled.build_tau_norm), check=_check_tau_norm,
          trains=False),
    Stage("ncm", _decoupled(decoupled.build_ncm), check=_check_backbone_run, trains=False),
)}


def get_stage(name: str) -> Stage:
  """The registry entry of stage `name`; ValueError listing the valid names."""
  if name not in STAGES:
    raise ValueError(f"unknown stage {name!r} for one run; valid: {', '.join(STAGES)}")
  return STAGES[name]
