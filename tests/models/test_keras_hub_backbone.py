"""Backbones from KerasHub presets, on small presets the tests write with save_to_preset:
the embedding is KerasHub's own (its converter, backbone and its classifiers' pooling),
.keras files rebuild offline, freezing and the backbone learning rate do what they say."""

import os

import keras
import numpy as np
import pytest

from cbd_tf.models import backbones
from cbd_tf.models.classifier import Classifier
from tests import fakes

IMAGE_SIZE = 16


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
  root = tmp_path_factory.mktemp("presets")
  return {family: fakes.write_keras_hub_preset(root / family, family, IMAGE_SIZE)
          for family in fakes.PRESET_FAMILIES}


def pooled_by(classifier, inputs):
  """What a KerasHub classifier task's head receives (its own pooling of its backbone's
  output): the task run with an identity head (kernel I, bias 0, no dropout)."""
  width = classifier.output_dense.kernel.shape[0]
  classifier.output_dense.set_weights([np.eye(width), np.zeros(width)])
  return classifier(inputs)


def keras_hub_embedding(preset, family, images):
  """By KerasHub's own routes: from_preset, the converter on 0-255 pixels, then
  ResNetImageClassifier's average pooling, ViTImageClassifier's class token (DINOv2's
  sequence through it too), or CLIPBackbone's / SigLIPBackbone's get_vision_embeddings."""
  import keras_hub  # pylint: disable=import-outside-toplevel
  backbone = keras_hub.models.Backbone.from_preset(preset)
  pixels = keras_hub.layers.ImageConverter.from_preset(preset)(images * 255.0)
  width = backbone.output_shape[-1]
  if family == "resnet":
    return pooled_by(keras_hub.models.ResNetImageClassifier(backbone, width), pixels)
  if family == "dinov2":
    return pooled_by(keras_hub.models.ViTImageClassifier(backbone, width), {"images": pixels})
  if family == "vit":
    return pooled_by(keras_hub.models.ViTImageClassifier(backbone, width), pixels)
  return backbone.get_vision_embeddings(pixels)


@pytest.mark.parametrize("family", fakes.PRESET_FAMILIES)
def test_embedding_is_keras_hubs_own(presets, family):
  # 20 px images: the preset's converter resizes them to its 16 px, as it would a teacher's.
  images = np.random.default_rng(0).uniform(size=(3, 20, 20, 3)).astype(np.float32)
  model = Classifier(f"keras_hub:{presets[family]}", num_classes=5, image_size=IMAGE_SIZE)
  expected = np.asarray(keras_hub_embedding(presets[family], family, images))
  np.testing.assert_allclose(np.asarray(model.embed(images)), expected, rtol=1e-5, atol=1e-6)
  assert model.embedding_dim == expected.shape[-1]
  assert model(images).shape == (3, 5)


def test_clip_keeps_only_its_image_side(presets):
  model = Classifier(f"keras_hub:{presets['clip']}", num_classes=5, image_size=IMAGE_SIZE)
  names = [v.path for v in model.backbone.trainable_weights]
  assert names and not any("text" in name or "token_embedding" in name for name in names)
  assert any("vision_projection" in name for name in names)


@pytest.mark.parametrize("family", fakes.PRESET_FAMILIES)
def test_keras_file_reloads_without_the_preset(presets, family, tmp_path):
  images = np.random.default_rng(1).uniform(size=(2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  model = Classifier(f"keras_hub:{presets[family]}", num_classes=5, image_size=IMAGE_SIZE)
  path = str(tmp_path / "model.keras")
  model.save(path)
  moved = str(tmp_path / "moved")
  os.rename(presets[family], moved)
  try:
    reloaded = keras.models.load_model(path)
  finally:
    os.rename(moved, presets[family])
  np.testing.assert_array_equal(np.asarray(reloaded(images)), np.asarray(model(images)))
  assert reloaded.backbone_name == model.backbone_name == f"keras_hub:{presets[family]}"


def test_missing_preset_names_it_and_where_it_looked(tmp_path):
  missing = str(tmp_path / "no_such_preset")
  with pytest.raises(ValueError, match=r"keras_hub preset '.*no_such_preset' not found: no such "
                                       r"directory"):
    backbones.check_backbone_name(f"keras_hub:{missing}")
  with pytest.raises(ValueError, match=r"'resnet_51_imagenet' not found: no directory "
                                       r"'resnet_51_imagenet' here .* preset names"):
    backbones.check_backbone_name("keras_hub:resnet_51_imagenet")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match=r"directory '.*empty' has no config.json"):
    Classifier(f"keras_hub:{tmp_path / 'empty'}", num_classes=5, image_size=IMAGE_SIZE)


def test_unknown_builtin_backbone_lists_presets_too():
  with pytest.raises(ValueError, match=r"unknown backbone 'vgg16'; valid: resnet8.*keras_hub:PRESET"):
    backbones.check_backbone_name("vgg16")


def fit_steps(model, steps=2, seed=0, **compile_args):
  images, labels = (np.random.default_rng(seed).uniform(size=(8, IMAGE_SIZE, IMAGE_SIZE, 3))
                    .astype(np.float32), np.arange(8) % 5)
  model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9), weight_decay=5e-4,
                **compile_args)
  model.fit(images, labels, batch_size=8, epochs=steps, verbose=0)


def test_freeze_backbone_keeps_every_backbone_weight_bit_identical(presets):
  model = Classifier(f"keras_hub:{presets['resnet']}", num_classes=5, image_size=IMAGE_SIZE,
                     freeze_backbone=True)
  before = [v.numpy() for v in model.backbone.weights]  # BatchNorm statistics included
  assert any("moving_mean" in v.path for v in model.backbone.weights)
  head_before = model.head.kernel.numpy()
  fit_steps(model)
  for variable, value in zip(model.backbone.weights, before):
    np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)
  assert not np.array_equal(model.head.kernel.numpy(), head_before)
  assert not model.backbone.trainable_weights


def first_step_changes(preset, multiplier):
  keras.utils.set_random_seed(0)
  model = Classifier(f"keras_hub:{preset}", num_classes=5, image_size=IMAGE_SIZE)
  before = [v.numpy() for v in model.trainable_weights]
  fit_steps(model, steps=1, backbone_learning_rate_multiplier=multiplier)
  backbone = {id(v) for v in model.backbone.trainable_weights}
  return [(id(v) in backbone, v.numpy() - b) for v, b in zip(model.trainable_weights, before)]


def test_backbone_learning_rate_multiplier_scales_only_the_backbone_step(presets):
  # One SGD step from the same start: the backbone moves `multiplier` times as far, the
  # head as far. (Dropout-free preset, so both runs see the same forward pass.)
  full, scaled = (first_step_changes(presets["dinov2"], m) for m in (1.0, 0.1))
  assert sum(in_backbone for in_backbone, _ in full) > 0
  for (in_backbone, change), (_, scaled_change) in zip(full, scaled):
    np.testing.assert_allclose(scaled_change, change * (0.1 if in_backbone else 1.0),
                               rtol=1e-3, atol=1e-7)


def test_keras_api_distils_a_preset_teacher_and_a_trained_one_into_a_small_student(presets):
  import cbd_tf  # pylint: disable=import-outside-toplevel
  images, labels = (np.random.default_rng(2).uniform(size=(16, IMAGE_SIZE, IMAGE_SIZE, 3))
                    .astype(np.float32), np.arange(16) % 5)
  trained = cbd_tf.Classifier(f"keras_hub:{presets['resnet']}", num_classes=5,
                              image_size=IMAGE_SIZE)
  trained.compile(keras.optimizers.SGD(0.1, momentum=0.9), weight_decay=5e-4,
                  backbone_learning_rate_multiplier=0.1)
  trained.fit(images, labels, batch_size=8, epochs=1, verbose=0)
  foundation = cbd_tf.load_teachers([f"keras_hub:{presets['dinov2']}"])[0]
  teacher_before = [v.numpy() for v in foundation.backbone.weights]
  student = cbd_tf.Classifier("resnet8", num_classes=5, image_size=IMAGE_SIZE,
                              projection_dim=foundation.embedding_dim + trained.embedding_dim)
  distiller = cbd_tf.CBDDistiller(student, teachers=[foundation, trained])
  distiller.compile(keras.optimizers.SGD(0.1, momentum=0.9), weight_decay=5e-4)
  history = distiller.fit(images, labels, batch_size=8, epochs=1, verbose=0)
  assert np.isfinite(history.history["loss_distill"][-1])
  for variable, value in zip(foundation.backbone.weights, teacher_before):
    np.testing.assert_array_equal(variable.numpy(), value)
  assert len(distiller.trainable_weights) == len(student.trainable_weights)
