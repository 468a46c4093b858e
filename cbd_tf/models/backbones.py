"""Backbones by name: the built-in ResNets (resnet.py) or `keras_hub:PRESET`
(keras_hub_backbone.py). Each maps images in [0, 1], (N, S, S, 3), to one vector per image."""

from __future__ import annotations

import keras

from cbd_tf.models import keras_hub_backbone, resnet


def check_backbone_name(name: str) -> None:
  """ValueError naming an unknown built-in backbone or a preset that cannot be found."""
  if keras_hub_backbone.is_preset(name):
    keras_hub_backbone.check_preset(keras_hub_backbone.preset_of(name))
  elif name not in resnet.BACKBONES:
    raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(resnet.BACKBONES)}, or "
                     "keras_hub:PRESET (a KerasHub preset name or directory)")


def build_backbone(backbone, image_size: int, sync_batchnorm: bool = False,
                   tuning: str = "full", adapter_rank: int = 0,
                   num_classes: int = 0) -> keras.layers.Layer:
  """`backbone`: a name, a serialized backbone (a Classifier's config of a keras_hub one) or
  a layer, returned as it is. Presets load their pretrained weights. `tuning` (adapters.py)
  says what of a keras_hub backbone trains (`adapter_rank` 0: LIFT's rule for `num_classes`);
  the Classifier tunes the others once they are built."""
  if isinstance(backbone, keras.layers.Layer):
    return backbone
  tuned = {"tuning": tuning, "adapter_rank": adapter_rank, "num_classes": num_classes}
  if isinstance(backbone, dict):
    return keras.saving.deserialize_keras_object(
        {**backbone, "config": {**backbone["config"], **tuned}})
  if keras_hub_backbone.is_preset(backbone):
    return keras_hub_backbone.KerasHubBackbone.from_preset(
        keras_hub_backbone.preset_of(backbone), **tuned)
  return resnet.build_backbone(backbone, image_size, sync_batchnorm)  # tuned by Classifier


def backbone_name(backbone: keras.layers.Layer, given) -> str:
  """The name a config or log shows for a backbone built from `given`."""
  if isinstance(backbone, keras_hub_backbone.KerasHubBackbone):
    return keras_hub_backbone.PREFIX + backbone.preset
  return given if isinstance(given, str) else backbone.name
