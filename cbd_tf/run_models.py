"""A run's classifier: built from its config, rebuilt and loaded from a finished run, and
a keras_hub backbone's architecture kept in the run so it rebuilds with no network."""

from __future__ import annotations

import os

import keras

from cbd_tf import config as config_lib
from cbd_tf import run_checks, run_files
from cbd_tf.models import keras_hub_backbone
from cbd_tf.models.classifier import Classifier
from cbd_tf.run_dir import BACKBONE_ARCHITECTURE, CONFIG, FINAL_WEIGHTS, PRETRAINED_BACKBONE


def build_classifier(config: config_lib.Config, num_classes: int,
                     directory: str | None = None) -> Classifier:
  """The classifier `config` describes, untrained. The head is the stage's evaluation head
  if its registry entry names one (ncm: the class means; its model.head names the head its
  backbone was trained with), else model.head. A keras_hub backbone is rebuilt
  from `directory`'s backbone.json if there is one (no network), else from its preset."""
  backbone = config.model.backbone
  architecture = os.path.join(directory or "", BACKBONE_ARCHITECTURE)
  if keras_hub_backbone.is_preset(backbone) and directory and os.path.exists(architecture):
    backbone = run_files.read_json(architecture)
  return Classifier(backbone, num_classes, config.data.image_size,
                    backbone_tuning=config.model.backbone_tuning,
                    adapter_rank=config.model.adapter_rank,
                    cosine_scale=config.model.cosine_scale,
                    projection_dim=config.model.projection_dim,
                    head_norm_power=config.model.head_norm_power,
                    class_scales=config.model.class_scales,
                    sync_batchnorm=config.distribute.sync_batchnorm,
                    head=config.stage_entry.evaluation_head or config.model.head,
                    ncm_features=config.long_tail.ncm_features,
                    ncm_distance=config.long_tail.ncm_distance)


def write_backbone_architecture(classifier: Classifier, directory: str) -> None:
  """backbone.json for a keras_hub backbone, unless keep_pretrained_backbone wrote it;
  nothing for a built-in one (its name is enough)."""
  path = os.path.join(directory, BACKBONE_ARCHITECTURE)
  if (isinstance(classifier.backbone, keras_hub_backbone.KerasHubBackbone)
      and not os.path.exists(path)):
    run_files.write_json(path, keras.saving.serialize_keras_object(classifier.backbone))


def keep_pretrained_backbone(backbone: keras.layers.Layer, directory: str) -> None:
  os.makedirs(directory, exist_ok=True)
  run_files.save_layer(backbone, os.path.join(directory, BACKBONE_ARCHITECTURE),
                       os.path.join(directory, PRETRAINED_BACKBONE))


def load_classifier(directory: str) -> tuple[Classifier, config_lib.Config]:
  """The trained classifier of a finished run, and that run's config."""
  run_checks.check_trained(directory)
  config = config_lib.Config.load(os.path.join(directory, CONFIG))
  class_names, _ = run_files.read_classes(directory)
  model = build_classifier(config, len(class_names), directory)
  weights = os.path.join(directory, FINAL_WEIGHTS)
  try:
    model.load_weights(weights)
  except (OSError, KeyError, RuntimeError, ValueError):
    run_files.check_weights_file(weights)  # errors.DamagedFile naming it, if it is damaged
    raise
  return model, config
