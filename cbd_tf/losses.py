"""Losses of both stages. Each returns the mean over its batch (one replica's batch)."""

from __future__ import annotations

import keras
import tensorflow as tf


def cross_entropy_loss(labels, logits):
  """Mean softmax cross-entropy of integer labels against logits."""
  return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
      labels, tf.cast(logits, tf.float32), from_logits=True))


def feature_distillation_loss(student_features, teacher_features):
  """Mean over the batch of 1 - cos(student, teacher); both are L2-normalised here."""
  student = tf.math.l2_normalize(tf.cast(student_features, tf.float32), axis=-1)
  teacher = tf.math.l2_normalize(tf.cast(teacher_features, tf.float32), axis=-1)
  return tf.reduce_mean(1.0 - tf.reduce_sum(student * teacher, axis=-1))


def cbd_weights(alpha: float, beta: float) -> tuple[float, float]:
  """The weights of cross-entropy and of the distillation term in CBD's loss,
  (1 - alpha) * CE + alpha * beta * (1 - cos), as CBDDistiller's step weighs them."""
  return 1.0 - alpha, alpha * beta


def weight_decay_loss(weights, weight_decay):
  """The official explicit L2 term: `weight_decay * 0.5 * tf.nn.l2_loss(all weights)`.

  tf.nn.l2_loss already halves, so this is 0.25 * wd * sum(w^2) (gradient 0.5 * wd * w):
  `--weight_decay=5e-4` means what the paper's ImageNet-LT config means.
  """
  if not weight_decay or not weights:
    return tf.constant(0.0)
  return weight_decay * 0.5 * tf.add_n([tf.nn.l2_loss(tf.cast(w, tf.float32)) for w in weights])
