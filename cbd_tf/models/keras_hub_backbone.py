"""Backbones from KerasHub presets: `keras_hub:PRESET`, PRESET a preset name
(`resnet_50_imagenet`, `dinov2_base`, `clip_vit_base_patch16`, ...) or a local preset
directory written by `save_to_preset`.

cbd_tf's images are in [0, 1]; KerasHub's image converters take pixel values in 0-255 (a
ResNet converter holds the ImageNet mean/std as scale and offset), so the images go in
times 255, through the preset's own converter (which also resizes to its image size), the
backbone, then one pooling to a vector per image, as KerasHub's own classifiers pool:

  feature map (ResNet, EfficientNet, ...)     average   (ImageClassifier's default "avg")
  token sequence (ViT, DINOv2, DINOv3, DeiT)  class     (ViTImageClassifier's "token": x[:, 0])
  CLIP                                        the image embedding: the class token after the
                                              encoder's final norm, then vision_projection
                                              (CLIPBackbone.get_vision_embeddings)
  SigLIP                                      the vision encoder's attention-pooled output
                                              (SigLIPBackbone.get_vision_embeddings)

`tuning` (adapters.py) says what of the image model trains: every weight, none, its biases,
or LoRA / AdaptFormer adapters this backbone holds. Only the image side of CLIP / SigLIP is
kept, so their text encoders are neither trained,
decayed nor saved. `get_config` holds the serialized converter and image model, so a
`.keras` file or a run directory rebuilds the architecture with no network and no cache.
"""

from __future__ import annotations

import os

import keras

from cbd_tf import errors
from cbd_tf.config import ADAPTER_TUNINGS
from cbd_tf.config import PRESET_PREFIX as PREFIX
from cbd_tf.models import adapters

POOLINGS = ("average", "class_token", "pooled")


def is_preset(name) -> bool:
  return isinstance(name, str) and name.startswith(PREFIX)


def preset_of(name: str) -> str:
  return name[len(PREFIX):]


def _keras_hub():
  # Imported on use: it takes seconds, and the built-in backbones do not need it.
  import keras_hub  # pylint: disable=import-outside-toplevel
  return keras_hub


def check_preset(preset: str) -> None:
  """ValueError naming a preset that cannot be found and where it was looked for."""
  if not preset:
    raise ValueError("empty keras_hub preset: use keras_hub:NAME or keras_hub:DIRECTORY")
  if os.path.isdir(preset):
    # What from_preset reads; save_to_preset writes both (the backbone's and the converter's).
    from keras_hub.src.utils import preset_utils  # pylint: disable=import-outside-toplevel
    for name in (preset_utils.CONFIG_FILE, preset_utils.IMAGE_CONVERTER_CONFIG_FILE):
      if not os.path.exists(os.path.join(preset, name)):
        raise ValueError(f"keras_hub preset directory {preset!r} has no {name} (write one "
                         "with save_to_preset on a backbone and its image converter)")
    return
  if "://" in preset:  # kaggle://, hf://, gs://: KerasHub resolves the handle itself
    return
  if os.sep in preset or preset.startswith("."):
    raise ValueError(f"keras_hub preset {preset!r} not found: no such directory")
  presets = _keras_hub().models.Backbone.presets
  if preset not in presets:
    raise ValueError(f"keras_hub preset {preset!r} not found: no directory {preset!r} here "
                     f"({os.getcwd()}) and not among KerasHub's {len(presets)} preset names "
                     "(keras_hub.models.Backbone.presets)")


def _where(preset: str) -> str:
  if os.path.isdir(preset):
    return f"directory {os.path.abspath(preset)}"
  handle = getattr(_keras_hub().models.Backbone, "presets", {}).get(preset, {}).get(
      "kaggle_handle", preset)
  cache = os.environ.get("KAGGLEHUB_CACHE", os.path.expanduser("~/.cache/kagglehub"))
  return f"{handle} (download cache {cache})"


def _image_part(backbone) -> tuple[keras.Model, keras.layers.Layer | None, str]:
  """(image model, projection or None, pooling) of a KerasHub backbone."""
  keras_hub = _keras_hub()
  if isinstance(backbone, keras_hub.models.CLIPBackbone):
    return backbone.vision_encoder, backbone.vision_projection, "class_token"
  if isinstance(backbone, keras_hub.models.SigLIPBackbone):
    return backbone.vision_encoder, None, "pooled"
  rank = len(backbone.output_shape) if not isinstance(backbone.output, dict) else 0
  pooling = {4: "average", 3: "class_token", 2: "pooled"}.get(rank)
  if pooling is None:
    raise ValueError(f"{type(backbone).__name__} gives {backbone.output_shape!r}, not a feature "
                     "map, a token sequence or one vector per image: not an image backbone")
  return backbone, None, pooling


@keras.saving.register_keras_serializable(package="cbd_tf")
class KerasHubBackbone(keras.Model):
  """Images in [0, 1], (N, H, W, 3) of any size -> (N, D): the preset's converter, its
  image model and the family's pooling (module docstring). Build one with `from_preset`."""

  def __init__(self, converter, image_model, pooling: str, projection=None, preset: str = "",
               tuning: str = "full", adapter_rank: int = 0, num_classes: int = 0, **kwargs):
    super().__init__(**kwargs)
    if pooling not in POOLINGS:
      raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    deserialize = keras.saving.deserialize_keras_object
    self.converter = deserialize(converter) if isinstance(converter, dict) else converter
    self.image_model = deserialize(image_model) if isinstance(image_model, dict) else image_model
    self.projection = deserialize(projection) if isinstance(projection, dict) else projection
    self.pooling = pooling
    self.preset = preset
    self.tuning = tuning
    blocks = adapters.transformer_blocks(self.image_model)
    self.adapter_rank = (adapter_rank or adapters.default_rank(num_classes, len(blocks))
                         if tuning in ADAPTER_TUNINGS and blocks else 0)
    # Tracked here, so the adapters are saved and restored with the backbone.
    self.adapters = adapters.tune(self.image_model, tuning, self.adapter_rank,
                                  name=f"keras_hub:{preset}")
    if self.projection is not None and tuning != "full":
      self.projection.trainable = False
    # A fixed-size model (ViT-type) gets its size from the converter; give it one if the
    # preset's converter has none.
    height, width = self.image_model.input_shape[1:3] if not isinstance(
        self.image_model.input, dict) else self.image_model.input["images"].shape[1:3]
    if self.converter.image_size is None and height is not None:
      self.converter.image_size = (height, width)
    self.output_dim = int(self.compute_output_shape((None, height or 32, width or 32, 3))[-1])
    self.build((None, height, width, 3))

  @classmethod
  def from_preset(cls, preset: str, load_weights: bool = True,
                  **tuning) -> "KerasHubBackbone":
    """The preset's backbone (with its pretrained weights) and converter; `tuning`: tuning,
    adapter_rank, num_classes (__init__)."""
    check_preset(preset)
    keras_hub = _keras_hub()
    try:
      backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=load_weights)
      converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except Exception as error:  # pylint: disable=broad-except  (network, cache, format)
      first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
      raise errors.PresetUnavailable(f"could not load keras_hub preset {preset!r} from "
                                     f"{_where(preset)}: {first_line}") from error
    image_model, projection, pooling = _image_part(backbone)
    return cls(converter, image_model, pooling, projection=projection, preset=preset,
               name="keras_hub_backbone", **tuning)

  def build(self, input_shape):
    if self.projection is not None and not self.projection.built:
      self.projection.build(self.image_model.compute_output_shape(
          self._model_input((None, *(self.converter.image_size or input_shape[1:3]), 3)))[:1] +
          (self.image_model.output_shape[-1],))
    self.built = True

  def _model_input(self, images):
    if isinstance(self.image_model.input, dict):
      return {"images": images}
    return images

  def call(self, images, training=False):
    pixels = self.converter(images * 255.0)
    features = self.image_model(self._model_input(pixels), training=training)
    if self.pooling == "average":
      features = keras.ops.mean(features, axis=(1, 2))
    elif self.pooling == "class_token":
      features = features[:, 0]
    if self.projection is not None:
      features = self.projection(features)
    return features

  def compute_output_shape(self, input_shape):
    size = self.converter.image_size or input_shape[1:3]
    shape = self.image_model.compute_output_shape(
        self._model_input((input_shape[0], *size, input_shape[-1])))
    width = self.projection.units if self.projection is not None else shape[-1]
    return (input_shape[0], width)

  def get_config(self):
    serialize = keras.saving.serialize_keras_object
    return {**super().get_config(), "converter": serialize(self.converter),
            "image_model": serialize(self.image_model), "pooling": self.pooling,
            "projection": serialize(self.projection) if self.projection is not None else None,
            "preset": self.preset, "tuning": self.tuning, "adapter_rank": self.adapter_rank}


@keras.saving.register_keras_serializable(package="cbd_tf")
class PresetTeacher(keras.Model):
  """A frozen KerasHubBackbone with a teacher's interface (`embed`, `embedding_dim`); a Keras
  model, so a CBDDistiller saved whole carries it."""

  def __init__(self, backbone: KerasHubBackbone, **kwargs):
    super().__init__(**kwargs)
    if isinstance(backbone, dict):
      backbone = keras.saving.deserialize_keras_object(backbone)
    backbone.trainable = False
    self.backbone = backbone
    self.embedding_dim = backbone.output_dim
    self.trainable = False
    self.built = True

  def call(self, images, training=False):  # pylint: disable=unused-argument  (always frozen)
    return self.backbone(images, training=False)

  def embed(self, images, training=False):  # pylint: disable=unused-argument
    return self.backbone(images, training=False)

  def get_config(self):
    return {**super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone)}
