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


def build_backbone(backbone, image_size: int, sync_batchnorm: bool = False) -> keras.layers.Layer:
  """`backbone`: a name, a serialized backbone (a Classifier's config of a keras_hub one) or
  a layer, returned as it is. Presets load their pretrained weights."""
  if isinstance(backbone, keras.layers.Layer):
    return backbone
  if isinstance(backbone, dict):
    return keras.saving.deserialize_keras_object(backbone)
  if keras_hub_backbone.is_preset(backbone):
    return keras_hub_backbone.KerasHubBackbone.from_preset(keras_hub_backbone.preset_of(backbone))
  return resnet.build_backbone(backbone, image_size, sync_batchnorm)


def backbone_name(backbone: keras.layers.Layer, given) -> str:
  """The name a config or log shows for a backbone built from `given`."""
  if isinstance(backbone, keras_hub_backbone.KerasHubBackbone):
    return keras_hub_backbone.PREFIX + backbone.preset
  return given if isinstance(given, str) else backbone.name
