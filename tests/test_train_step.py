"""The train-step base on a one-layer model: the loss is the weighted sum of the terms plus
the official weight decay, logged-only terms stay out of the gradient, names are checked."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from cbd_tf import train_step


class TwoTerms(train_step.TrainStepModel):
  """Logits of a Dense layer; loss = 0.25 * CE + 2 * mean(logits^2), plus half the CE logged
  only."""

  def __init__(self, names=("ce", "square", "ce_half")):
    super().__init__(term_names=("ce", "square", "ce_half"))
    self.names = names
    self.dense = keras.layers.Dense(3)
    self.dense.build((None, 4))
    self.built = True

  def call(self, inputs, training=False):
    return self.dense(inputs)

  def loss_terms(self, images, labels, targets):
    logits = self(images, training=True)
    ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    terms = [train_step.Term(ce, 0.25), train_step.Term(tf.reduce_mean(tf.square(logits)), 2.0),
             train_step.Term(0.5 * ce, None)]
    return logits, dict(zip(self.names, terms))


def batch():
  rng = np.random.default_rng(0)
  return rng.normal(size=(6, 4)).astype(np.float32), np.array([0, 1, 2, 0, 1, 2])


def test_step_descends_the_weighted_sum_plus_weight_decay():
  model = TwoTerms()
  inputs, labels = batch()
  before = [tf.identity(w) for w in model.trainable_weights]
  with tf.GradientTape() as tape:
    logits = model(inputs)
    ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    square = tf.reduce_mean(tf.square(logits))
    decay = 1e-2 * 0.5 * tf.add_n([tf.nn.l2_loss(w) for w in model.trainable_weights])
    expected = 0.25 * ce + 2.0 * square + decay
  gradients = tape.gradient(expected, model.trainable_weights)
  model.compile(keras.optimizers.SGD(0.1), weight_decay=1e-2)
  logs = model.train_on_batch(inputs, labels, return_dict=True)
  np.testing.assert_allclose(logs["loss"], float(expected), rtol=1e-6)
  np.testing.assert_allclose(logs["loss_ce"], float(ce), rtol=1e-6)
  np.testing.assert_allclose(logs["loss_square"], float(square), rtol=1e-6)
  np.testing.assert_allclose(logs["loss_ce_half"], 0.5 * float(ce), rtol=1e-6)
  np.testing.assert_allclose(logs["loss_weight_decay"], float(decay), rtol=1e-6)
  for weight, old, gradient in zip(model.trainable_weights, before, gradients):
    np.testing.assert_allclose(weight.numpy(), (old - 0.1 * gradient).numpy(), atol=1e-6)
  assert [m.name for m in model.metrics] == ["loss", "loss_ce", "loss_square", "loss_ce_half",
                                             "loss_weight_decay", "accuracy"]


def test_terms_must_match_the_declared_names():
  model = TwoTerms(names=("ce", "ce_half", "square"))
  model.compile(keras.optimizers.SGD(0.1))
  with pytest.raises(ValueError, match="loss_terms gave ce, ce_half, square; expected ce, "
                                       "square, ce_half"):
    model.train_on_batch(*batch())
  with pytest.raises(ValueError, match="loss term names repeat: a, a"):
    train_step.TrainStepModel(term_names=("a", "a"))
  with pytest.raises(ValueError, match="no loss term has a weight: a"):
    train_step.weighted_sum({"a": train_step.Term(tf.constant(1.0), None)})
