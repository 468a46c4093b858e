"""Classifiers from text: a CLIP or SigLIP preset's text embedding of a prompt for each
class name, as the class weights of the cosine head (CLIP's zero-shot classifier).

  prompts       --class_prompt with {} standing for the class name ("a photo of a {}."), or
                imagenet80: CLIP's 80 ImageNet templates (prompt_templates.py)
  class weight  the L2-normalised text embedding of the class's prompt; for several
                templates, the mean of the normalised embeddings, normalised again (CLIP's
                notebook, `zeroshot_classifier`)
  logits        exp(logit_scale) * cos(image embedding, class weight): exactly CLIP's and
                SigLIP's image-text logits when the head's scale is the preset's, since the
                image embedding of a KerasHubBackbone is CLIP's projected image embedding
                (SigLIP's pooled one). SigLIP adds a logit_bias, the same for every class:
                it changes no ranking and no softmax, so the head leaves it out.

Text goes through the preset's own preprocessor (tokenizer, lower-casing, padding to its
sequence length) and `get_text_embeddings`, as KerasHub computes them.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from cbd_tf import errors
from cbd_tf.config import IMAGENET_PROMPT_ENSEMBLE
from cbd_tf.models import heads, keras_hub_backbone
from cbd_tf.models.classifier import Classifier
from cbd_tf.models.prompt_templates import IMAGENET_TEMPLATES

DEFAULT_PROMPT = "a photo of a {}."
# Prompts a call of the text encoder takes at once.
BATCH_SIZE = 256


@dataclasses.dataclass(frozen=True)
class TextHead:
  """The class weights a preset's text side gives, and its logit scale."""
  weights: np.ndarray  # (classes, embedding width), unit rows
  scale: float  # exp(logit_scale): CLIP's image-text logit scale (about 100 when trained)
  bias: float = 0.0  # SigLIP's logit_bias (CLIP has none); not part of the head (docstring)


def prompt_templates(class_prompt: str) -> tuple[str, ...]:
  """The templates --class_prompt names: itself, or CLIP's 80 for imagenet80."""
  if class_prompt == IMAGENET_PROMPT_ENSEMBLE:
    return IMAGENET_TEMPLATES
  if class_prompt.count("{}") != 1:
    raise ValueError(f"a class prompt holds {{}} once (where the class name goes) or is "
                     f"{IMAGENET_PROMPT_ENSEMBLE}, got {class_prompt!r}")
  return (class_prompt,)


def _text_families() -> dict:
  """{backbone class: its preprocessor class} of the presets with a text side."""
  import keras_hub  # pylint: disable=import-outside-toplevel  (seconds; only when used)
  return {keras_hub.models.CLIPBackbone: keras_hub.models.CLIPPreprocessor,
          keras_hub.models.SigLIPBackbone: keras_hub.models.SigLIPPreprocessor}


def check_text_preset(preset: str) -> None:
  """ValueError naming a preset that is not CLIP or SigLIP, read from its config alone."""
  keras_hub_backbone.check_preset(preset)
  from keras_hub.src.utils import preset_utils  # pylint: disable=import-outside-toplevel
  try:
    backbone_class = preset_utils.get_preset_loader(preset).check_backbone_class()
  except Exception as error:  # pylint: disable=broad-except  (network, cache, format)
    raise errors.PresetUnavailable(f"could not read keras_hub preset {preset!r}: "
                                   f"{_first_line(error)}") from error
  if not issubclass(backbone_class, tuple(_text_families())):
    raise ValueError(_no_text(preset, backbone_class.__name__))


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _no_text(preset: str, kind: str) -> str:
  return (f"keras_hub preset {preset!r} is a {kind}, not CLIP or SigLIP: it has no text "
          "encoder for a classifier from text (--head_init=text, --stage=zero_shot)")


def load_text_model(preset: str):
  """(backbone, preprocessor) of a CLIP or SigLIP preset, its weights loaded; ValueError
  naming a preset without a text side."""
  import keras_hub  # pylint: disable=import-outside-toplevel
  keras_hub_backbone.check_preset(preset)
  try:
    backbone = keras_hub.models.Backbone.from_preset(preset)
  except Exception as error:  # pylint: disable=broad-except  (network, cache, format)
    raise errors.PresetUnavailable(f"could not load keras_hub preset {preset!r}: "
                                   f"{_first_line(error)}") from error
  preprocessors = [preprocessor for family, preprocessor in _text_families().items()
                   if isinstance(backbone, family)]
  if not preprocessors:
    raise ValueError(_no_text(preset, type(backbone).__name__))
  try:
    # Text only: SigLIP's preprocessor would also run its image converter on no images.
    preprocessor = preprocessors[0].from_preset(preset, image_converter=None)
  except Exception as error:  # pylint: disable=broad-except
    raise errors.PresetUnavailable(f"keras_hub preset {preset!r} has no usable tokenizer / "
                                   f"preprocessor for its text encoder: {_first_line(error)}"
                                   ) from error
  return backbone, preprocessor


def _normalised(rows: np.ndarray) -> np.ndarray:
  return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def text_embeddings(backbone, preprocessor, prompts: Sequence[str]) -> np.ndarray:
  """(len(prompts), width) float32: KerasHub's get_text_embeddings of the tokenised
  prompts, not normalised."""
  parts = []
  for start in range(0, len(prompts), BATCH_SIZE):
    tokens = preprocessor({"prompts": list(prompts[start:start + BATCH_SIZE]), "images": None})
    parts.append(np.asarray(backbone.get_text_embeddings(tokens["token_ids"]), np.float32))
  return np.concatenate(parts)


def logit_scale_and_bias(backbone) -> tuple[float, float]:
  """exp(logit_scale) and the logit bias (SigLIP's; 0 for CLIP) of a CLIP / SigLIP backbone."""
  head = backbone.clip_head if hasattr(backbone, "clip_head") else backbone.siglip_head
  bias = float(np.asarray(head.logit_bias)) if hasattr(head, "logit_bias") else 0.0
  return float(np.exp(np.asarray(head.logit_scale, np.float64))), bias


def text_head(preset: str, class_names: Sequence[str],
              class_prompt: str = DEFAULT_PROMPT) -> TextHead:
  """The class weights of `class_names` under `class_prompt` (module docstring) and the
  preset's logit scale. `preset`: a KerasHub preset name or directory (no keras_hub:)."""
  templates = prompt_templates(class_prompt)
  if not class_names:
    raise ValueError("a classifier from text needs at least one class name")
  backbone, preprocessor = load_text_model(preset)
  total = 0.0
  for template in templates:
    # replace, not format: a class name or prompt may hold other braces.
    prompts = [template.replace("{}", name) for name in class_names]
    total = total + _normalised(text_embeddings(backbone, preprocessor, prompts))
  scale, bias = logit_scale_and_bias(backbone)
  return TextHead(_normalised(total / len(templates)).astype(np.float32), scale, bias)


def set_text_head(classifier: Classifier, weights: np.ndarray) -> None:
  """The cosine head's class weights (its (width, classes) kernel) set to `weights` (classes,
  width); ValueError if the head is not cosine or does not take them."""
  head = classifier.head
  if not isinstance(head, heads.CosineClassifier):
    raise ValueError(f"a classifier from text needs the cosine head, not "
                     f"{type(head).__name__} (--head=cosine)")
  classes, width = weights.shape
  if tuple(head.kernel.shape) != (width, classes):
    raise ValueError(f"the text embeddings give {classes} classes of width {width}; the head "
                     f"takes {head.kernel.shape[1]} of width {head.kernel.shape[0]} (a "
                     "projection or another backbone sits between the preset and the head)")
  head.kernel.assign(np.asarray(weights, np.float32).T)


def zero_shot_classifier(backbone: str, class_names: Sequence[str],
                         prompt: str = DEFAULT_PROMPT, image_size: int = 224) -> Classifier:
  """CLIP's zero-shot classifier for `class_names` from `backbone` = keras_hub:PRESET, a CLIP
  or SigLIP preset: a Classifier (frozen backbone, cosine head) whose logits are
  exp(logit_scale) * cos(image embedding, text embedding of each class's prompt). `prompt`:
  a template with {}, or imagenet80. Images in [0, 1]; the preset's converter resizes them."""
  if not keras_hub_backbone.is_preset(backbone):
    raise ValueError(f"zero_shot_classifier needs keras_hub:PRESET (a CLIP or SigLIP preset), "
                     f"got {backbone!r}")
  text = text_head(keras_hub_backbone.preset_of(backbone), class_names, prompt)
  classifier = Classifier(backbone, len(class_names), image_size, cosine_scale=text.scale,
                          head="cosine", backbone_tuning="frozen")
  set_text_head(classifier, text.weights)
  return classifier
