"""The TensorFlow side of each stage stage_registry.py declares, one module a stage:

  teacher   a fresh classifier (CBD stage one; the loss-level baselines)
  student   a fresh classifier whose projection is as wide as the teachers' concatenated
            embeddings, fitted inside a CBDDistiller
  crt, lws  a head fitted on --backbone_from's frozen backbone (decoupled.py)
  tau_norm, ncm
            a head built on --backbone_from's backbone, not fitted
  pipeline  the teachers, then the student (run, not build)

training.train_stage runs any of them with one generic loop: it calls the module's
`build(config, source) -> Built` inside the strategy scope, after seeding; `check(config,
source)` before any work (ValueError if a run the stage builds on is unfinished or does not fit
the data); `callbacks(built, source, log_dir, save_dir)` for the stage's own callbacks (a
ShotGroupEvaluation among them replaces the periodic one; a BestValidationEpoch's choice goes
to selection.json).
"""

from __future__ import annotations

import dataclasses
import importlib
import types

import keras

from cbd_tf import config as config_lib
from cbd_tf import stage_registry
from cbd_tf.data import teacher_views
from cbd_tf.models.classifier import Classifier


@dataclasses.dataclass
class Built:
  """What a stage's build returns."""
  classifier: Classifier  # what is saved, exported and evaluated
  # The config the run saves and trains with: what the stage resolved written in (a
  # student's projection width, a decoupled stage's head and chosen tau).
  config: config_lib.Config
  # What fit() runs: the classifier itself, or a model around it that computes its own loss
  # (a student's CBDDistiller).
  fit_model: keras.Model | None = None
  selection: dict = dataclasses.field(default_factory=dict)  # chosen on the val split
  # --teacher_views: each example one of its image's fixed views, with its cached teacher
  # feature if the views say where to read them.
  views: teacher_views.Views | None = None

  def __post_init__(self):
    if self.fit_model is None:
      self.fit_model = self.classifier

  @property
  def compiles_loss(self) -> bool:
    """Whether fit() compiles --loss: the classifier does; a model around it has its own."""
    return self.fit_model is self.classifier


def stage_module(name: str) -> types.ModuleType:
  """The module of stage `name` (its registry entry's `module`)."""
  return importlib.import_module(stage_registry.get_stage(name).module)


def check_stage(config: config_lib.Config, source) -> None:
  """The stage's own check before any work: a student's teachers, a decoupled backbone run."""
  check = getattr(stage_module(config.stage), "check", None)
  if check is not None:
    check(config, source)


def stage_callbacks(built: Built, source, log_dir: str,
                    save_dir: str) -> list[keras.callbacks.Callback]:
  build_callbacks = getattr(stage_module(built.config.stage), "callbacks", None)
  return build_callbacks(built, source, log_dir, save_dir) if build_callbacks else []
