"""Classifiers from text (cbd_tf/models/text_classifier.py), on the small CLIP and SigLIP
presets the tests write with their own tokenizers: the head's rows are KerasHub's own text
embeddings of the prompts, the 80-template ensemble is CLIP's average, and the zero-shot
logits are the ones KerasHub's CLIP / SigLIP head computes from the same images and
prompts. Everything expected is computed here from keras_hub directly."""

import os

import keras
import numpy as np
import pytest

from cbd_tf.models import text_classifier
from cbd_tf.models.classifier import Classifier
from tests import fakes

IMAGE_SIZE = 16
NAMES = ("cat", "dog", "eel")
TEXT_FAMILIES = ("clip", "siglip")


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
  root = tmp_path_factory.mktemp("text_presets")
  return {family: fakes.write_keras_hub_preset(root / family, family, IMAGE_SIZE, seed=3)
          for family in (*TEXT_FAMILIES, "resnet")}


def keras_hub_model(preset, family):
  """KerasHub's backbone and preprocessor of the preset (its image converter included)."""
  import keras_hub  # pylint: disable=import-outside-toplevel
  preprocessor = {"clip": keras_hub.models.CLIPPreprocessor,
                  "siglip": keras_hub.models.SigLIPPreprocessor}[family].from_preset(preset)
  return keras_hub.models.Backbone.from_preset(preset), preprocessor


def token_ids(preprocessor, prompts):
  # The preprocessor's own call, with images as it expects them beside the prompts.
  images = np.zeros((len(prompts), IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
  return preprocessor({"prompts": list(prompts), "images": images})["token_ids"]


def unit(rows):
  rows = np.asarray(rows, np.float64)
  return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def keras_hub_text_weights(preset, family, templates):
  """CLIP's notebook: per template the normalised text embeddings, averaged, normalised."""
  backbone, preprocessor = keras_hub_model(preset, family)
  per_template = [unit(backbone.get_text_embeddings(token_ids(
      preprocessor, [template.format(name) for name in NAMES]))) for template in templates]
  return unit(np.mean(per_template, axis=0))


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_head_rows_are_keras_hubs_text_embeddings_of_the_prompts(presets, family):
  text = text_classifier.text_head(presets[family], NAMES, "a photo of a {}.")
  expected = keras_hub_text_weights(presets[family], family, ["a photo of a {}."])
  np.testing.assert_allclose(text.weights, expected, rtol=1e-5, atol=1e-6)
  backbone, _ = keras_hub_model(presets[family], family)
  head = backbone.clip_head if family == "clip" else backbone.siglip_head
  assert text.scale == pytest.approx(float(np.exp(head.logit_scale.numpy())), rel=1e-6)
  assert text.bias == (0.0 if family == "clip" else pytest.approx(float(head.logit_bias.numpy())))


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_imagenet80_averages_clips_80_normalised_template_embeddings(presets, family):
  templates = text_classifier.prompt_templates("imagenet80")
  assert len(templates) == len(set(templates)) == 80
  assert (templates[0], templates[-1]) == ("a bad photo of a {}.", "a tattoo of the {}.")
  text = text_classifier.text_head(presets[family], NAMES, "imagenet80")
  expected = keras_hub_text_weights(presets[family], family, templates)
  np.testing.assert_allclose(text.weights, expected, rtol=1e-5, atol=1e-6)
  single = text_classifier.text_head(presets[family], NAMES, templates[0]).weights
  assert not np.allclose(text.weights, single, atol=1e-3)  # the ensemble is not one template


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_zero_shot_logits_are_keras_hubs_image_text_logits(presets, family):
  # 20 px images: the preset's converter resizes them to its 16 px.
  images = np.random.default_rng(1).uniform(size=(4, 20, 20, 3)).astype(np.float32)
  model = text_classifier.zero_shot_classifier(f"keras_hub:{presets[family]}", NAMES,
                                               image_size=IMAGE_SIZE)
  import keras_hub  # pylint: disable=import-outside-toplevel
  backbone, preprocessor = keras_hub_model(presets[family], family)
  pixels = keras_hub.layers.ImageConverter.from_preset(presets[family])(images * 255.0)
  tokens = token_ids(preprocessor, [f"a photo of a {name}." for name in NAMES])
  # KerasHub's own head: exp(logit_scale) * cos (+ SigLIP's bias, the same for every class).
  own = np.asarray(backbone({"images": pixels, "token_ids": tokens})["vision_logits"])
  head = backbone.clip_head if family == "clip" else backbone.siglip_head
  bias = float(head.logit_bias.numpy()) if family == "siglip" else 0.0
  logits = model.predict(images, verbose=0)
  np.testing.assert_allclose(logits, own - bias, rtol=1e-4, atol=1e-5)
  # Written out: the scale times the cosine of the image and text embeddings.
  cosine = unit(backbone.get_vision_embeddings(pixels)) @ unit(
      backbone.get_text_embeddings(tokens)).T
  np.testing.assert_allclose(logits, np.exp(head.logit_scale.numpy()) * cosine,
                             rtol=1e-4, atol=1e-5)
  assert model.backbone_tuning == "frozen" and model.head_kind == "cosine"


def test_set_text_head_refuses_a_head_that_cannot_take_the_embeddings(presets):
  weights = text_classifier.text_head(presets["clip"], NAMES).weights
  linear = Classifier(f"keras_hub:{presets['clip']}", 3, IMAGE_SIZE, head="linear")
  with pytest.raises(ValueError, match="^a classifier from text needs the cosine head, not "
                                       "LinearClassifier"):
    text_classifier.set_text_head(linear, weights)
  projected = Classifier(f"keras_hub:{presets['clip']}", 3, IMAGE_SIZE, projection_dim=8)
  with pytest.raises(ValueError, match="^the text embeddings give 3 classes of width 12; the "
                                       "head takes 3 of width 8"):
    text_classifier.set_text_head(projected, weights)
  model = Classifier(f"keras_hub:{presets['clip']}", 3, IMAGE_SIZE)
  text_classifier.set_text_head(model, weights)
  np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.head.kernel), weights.T)


def test_a_preset_without_a_text_side_and_bad_prompts_are_refused_in_one_line(presets,
                                                                             tmp_path):
  message = (f"^keras_hub preset '{presets['resnet']}' is a ResNetBackbone, not CLIP or "
             r"SigLIP: it has no text encoder for a classifier from text \(--head_init=text, "
             r"--stage=zero_shot\)$")
  with pytest.raises(ValueError, match=message):
    text_classifier.check_text_preset(presets["resnet"])
  with pytest.raises(ValueError, match=message):
    text_classifier.text_head(presets["resnet"], NAMES)
  text_classifier.check_text_preset(presets["siglip"])
  # A CLIP preset saved without its tokenizer (backbone and converter only).
  bare = fakes.write_keras_hub_preset(tmp_path / "bare", "clip", IMAGE_SIZE)
  for name in ("tokenizer.json", "preprocessor.json"):
    os.remove(os.path.join(bare, name))
  with pytest.raises(ValueError, match=f"^keras_hub preset '{bare}' has no usable tokenizer / "
                                       "preprocessor for its text encoder: "):
    text_classifier.text_head(bare, NAMES)
  with pytest.raises(ValueError, match="^a class prompt holds {} once"):
    text_classifier.prompt_templates("a photo")
  with pytest.raises(ValueError, match="^zero_shot_classifier needs keras_hub:PRESET"):
    text_classifier.zero_shot_classifier("resnet8", NAMES)
