"""Golden tests: the training objective against the official CBD code's definitions.

Each expected value is written out with the TF ops of google-research/google-research
`class_balanced_distillation/train.py` and `resnet.py` (CosineLayer), not with ours.
Backbone structure: test_fidelity_backbone.py; preprocessing: test_fidelity_preprocessing.py;
the distillation loss through the distiller's real step: test_fidelity_training.py.
"""

import numpy as np
import tensorflow as tf

from cbd_tf import losses
from tests import helpers


def official_weight_penalty(variables, weight_decay):
  # train.py: weight_l2 = tf.nn.l2_loss(concat of every trainable variable, flattened)
  flat = tf.concat([tf.reshape(v, (-1,)) for v in variables], axis=0)
  return weight_decay * 0.5 * tf.nn.l2_loss(flat)


def official_cosine_logits(features, kernel, sigma=20.0):
  # resnet.py CosineLayer.__call__
  x = tf.math.l2_normalize(features, 1)
  weights = tf.math.l2_normalize(kernel, 0)
  return sigma * tf.matmul(x, weights)


def test_weight_decay_equals_official_penalty_on_every_trainable_variable():
  model = helpers.tiny_classifier()
  ours = losses.weight_decay_loss(model.trainable_weights, 5e-4)
  official = official_weight_penalty(model.trainable_variables, 5e-4)
  np.testing.assert_allclose(float(ours), float(official), rtol=1e-6)
  # A quarter of wd * sum(w^2): what "0.5 * l2_loss" amounts to.
  total = sum(float(tf.reduce_sum(tf.square(v))) for v in model.trainable_variables)
  np.testing.assert_allclose(float(ours), 0.25 * 5e-4 * total, rtol=1e-5)


def test_train_step_loss_is_official_ce_plus_penalty():
  import keras  # pylint: disable=import-outside-toplevel
  model = helpers.tiny_classifier()
  images, labels = helpers.tiny_batch()
  before = [tf.identity(v) for v in model.trainable_variables]
  logits = model(images, training=True)  # same BN batch statistics as the step
  official_ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      logits=logits, labels=labels))
  expected = official_ce + official_weight_penalty(before, 2e-4)
  model.compile(keras.optimizers.SGD(0.0), weight_decay=2e-4)
  logs = model.train_on_batch(images, labels, return_dict=True)
  np.testing.assert_allclose(logs["loss_weight_decay"],
                             float(official_weight_penalty(before, 2e-4)), rtol=1e-5)
  np.testing.assert_allclose(logs["loss"], float(expected), rtol=1e-5)


def test_cosine_head_equals_official_cosine_layer():
  model = helpers.tiny_classifier(num_classes=5)
  features = tf.random.stateless_normal((3, model.embedding_dim), seed=(1, 2))
  np.testing.assert_allclose(model.head(features).numpy(),
                             official_cosine_logits(features, model.head.kernel).numpy(),
                             rtol=1e-5, atol=1e-5)
  # sigma is a constant, not a trained weight (official: tf.Variable(trainable=False)).
  assert [w.name for w in model.head.trainable_weights] == ["kernel"]
