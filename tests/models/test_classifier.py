import subprocess
import sys

import numpy as np
import pytest
import keras

from cbd_tf.models import heads, resnet
from cbd_tf.models.classifier import Classifier
from tests import helpers


@pytest.mark.parametrize("name, size, width", [
    ("resnet8", 16, 64), ("resnet20", 16, 64), ("resnet18", 32, 512), ("resnet34", 64, 512),
    pytest.param("resnet50", 32, 2048, marks=pytest.mark.slow),  # seconds to build
])
def test_backbones_give_pooled_embeddings(name, size, width):
  backbone = resnet.build_backbone(name, size)
  features = backbone(np.zeros((2, size, size, 3), np.float32))
  assert features.shape == (2, width)


@pytest.mark.parametrize("name, size", [("resnet8", 16),
                                        pytest.param("resnet50", 32, marks=pytest.mark.slow)])
def test_sync_batchnorm_reaches_every_batchnorm(name, size):
  def batch_norms(model):
    found = []
    for layer in model.layers:
      found += batch_norms(layer) if isinstance(layer, keras.Model) else [layer]
    return [l for l in found if isinstance(l, keras.layers.BatchNormalization)]
  synced = batch_norms(resnet.build_backbone(name, size, sync_batchnorm=True))
  assert synced and all(layer.synchronized for layer in synced)
  assert not any(layer.synchronized for layer in batch_norms(resnet.build_backbone(name, size)))


def test_every_registered_backbone_is_a_resnet_and_unknown_lists_valid():
  assert {"resnet8", "resnet20", "resnet32", "resnet18", "resnet34", "resnet50", "resnet101",
          "resnet152"} <= set(resnet.BACKBONES)
  with pytest.raises(ValueError, match="unknown backbone 'vgg16'; valid: resnet8, "):
    resnet.build_backbone("vgg16", 32)


def test_cosine_classifier_is_scaled_cosine():
  head = heads.CosineClassifier(3, scale=20.0)
  features = np.array([[3.0, 4.0], [-1.0, 0.0]], np.float32)
  logits = head(features).numpy()
  kernel = head.kernel.numpy()
  expected = 20 * (features / np.linalg.norm(features, axis=1, keepdims=True)) @ (
      kernel / np.linalg.norm(kernel, axis=0, keepdims=True))
  np.testing.assert_allclose(logits, expected, rtol=1e-5)
  assert np.abs(logits).max() <= 20.0 + 1e-4


def test_student_embedding_is_projected_and_non_negative():
  student = helpers.tiny_classifier(projection_dim=96)
  images, _ = helpers.tiny_batch()
  logits, features = student.call_with_features(images)
  assert logits.shape == (8, 4) and features.shape == (8, 96)
  assert float(np.min(features)) >= 0.0
  assert student.embedding_dim == 96 and helpers.tiny_classifier().embedding_dim == 64


def test_config_and_keras_file_round_trip(tmp_path):
  model = helpers.tiny_classifier(projection_dim=32)
  clone = Classifier.from_config(model.get_config())
  assert clone.get_config() == model.get_config()
  images, _ = helpers.tiny_batch()
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  np.testing.assert_allclose(loaded(images).numpy(), model(images).numpy(), atol=1e-6)


@pytest.mark.slow
def test_saved_model_file_loads_after_a_bare_import(tmp_path):
  # A fresh process: `import cbd_tf` registers nothing, cbd_tf.load_model does.
  model = helpers.tiny_classifier()
  images, _ = helpers.tiny_batch()
  path = str(tmp_path / "model.keras")
  model.save(path)
  np.save(tmp_path / "images.npy", images)
  np.save(tmp_path / "expected.npy", model(images).numpy())
  code = ("import sys, numpy as np, cbd_tf; d = sys.argv[1]; "
          "m = cbd_tf.load_model(d + '/model.keras'); "
          "np.testing.assert_allclose(m(np.load(d + '/images.npy')).numpy(), "
          "np.load(d + '/expected.npy'), atol=1e-6); print(type(m).__name__)")
  result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().endswith("Classifier")


def test_teacher_train_step_logs_terms_and_learns():
  model = helpers.tiny_classifier()
  model.compile(keras.optimizers.SGD(0.05, momentum=0.9), weight_decay=5e-4)
  images, labels = helpers.tiny_batch()
  history = model.fit(images, labels, batch_size=8, epochs=15, verbose=0).history
  assert {"loss", "loss_ce", "loss_weight_decay", "accuracy"} <= set(history)
  np.testing.assert_allclose(history["loss"][0],
                             history["loss_ce"][0] + history["loss_weight_decay"][0], rtol=1e-5)
  assert history["loss_ce"][-1] < history["loss_ce"][0]
