"""CBDDistiller: a class-balanced student trained against frozen teachers (CBD stage two)."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from cbd_tf import losses
from cbd_tf.models.classifier import (Classifier, build_optimizer_for, replica_count,
                                     step_logs)


class _FrozenTeachers:
  """A plain holder: Keras and tf.train.Checkpoint do not track it, so teacher weights
  stay out of the student's checkpoints, saved weights and exports."""

  def __init__(self, models: Sequence[keras.Model]):
    self.models = tuple(models)


def teacher_features(teachers: Sequence[keras.Model], images) -> tf.Tensor:
  """Each teacher's L2-normalised embedding, concatenated once, L2-normalised again."""
  parts = [tf.math.l2_normalize(tf.cast(t.embed(images, training=False), tf.float32), axis=-1)
           for t in teachers]
  return tf.math.l2_normalize(tf.concat(parts, axis=-1), axis=-1)


def teacher_feature_dim(teachers: Sequence[keras.Model]) -> int:
  return sum(int(t.embedding_dim) for t in teachers)


class CBDDistiller(keras.Model):
  """Wraps a student `Classifier` (with a projection head as wide as the teachers'
  concatenated embeddings) and a list of trained teachers with an `embed` method.

  Per batch: loss = (1 - alpha) * CE(labels, student logits)
                    + alpha * beta * mean(1 - cos(student feature, teacher feature)),
  plus the explicit weight decay of the student. Teachers run with training=False
  outside the gradient tape and are never updated; calling the distiller calls the student.
  """

  def __init__(self, student: Classifier, teachers: Sequence[keras.Model], alpha: float = 0.4,
               beta: float = 100.0, **kwargs):
    super().__init__(**kwargs)
    if not teachers:
      raise ValueError("CBDDistiller needs at least one teacher")
    width = teacher_feature_dim(teachers)
    if student.embedding_dim != width:
      raise ValueError(f"student feature width {student.embedding_dim} != concatenated teacher "
                       f"width {width}; build the student with projection_dim={width}")
    for teacher in teachers:
      teacher.trainable = False
    self.student = student
    self._frozen = _FrozenTeachers(teachers)
    self.alpha = alpha
    self.beta = beta
    self.weight_decay = 0.0
    self.loss_metric = keras.metrics.Mean(name="loss")
    self.loss_ce_metric = keras.metrics.Mean(name="loss_ce")
    self.loss_distill_metric = keras.metrics.Mean(name="loss_distill")
    self.loss_wd_metric = keras.metrics.Mean(name="loss_weight_decay")
    self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    self.built = True

  @property
  def teachers(self) -> tuple[keras.Model, ...]:
    return self._frozen.models

  def call(self, images, training=False):
    return self.student(images, training=training)

  def compile(self, optimizer="sgd", weight_decay: float = 0.0, **kwargs):
    self.weight_decay = weight_decay
    super().compile(optimizer=optimizer, **kwargs)

  @property
  def metrics(self):
    return [self.loss_metric, self.loss_ce_metric, self.loss_distill_metric,
            self.loss_wd_metric, self.accuracy_metric]

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    build_optimizer_for(self)

  def train_step(self, data):
    images, labels = data[0], data[1]
    targets = tf.stop_gradient(teacher_features(self.teachers, images))
    weights = self.student.trainable_weights
    with tf.GradientTape() as tape:
      logits, features = self.student.call_with_features(images, training=True)
      cbd, ce, distill = losses.cbd_loss_terms(labels, logits, features, targets,
                                               self.alpha, self.beta)
      weight_decay = losses.weight_decay_loss(weights, self.weight_decay)
      total = cbd + weight_decay
      # Replica gradients are summed, so each replica's batch mean is divided by their count.
      scaled = self.optimizer.scale_loss(total / replica_count())
    gradients = tape.gradient(scaled, weights)
    self.optimizer.apply(gradients, weights)
    self.loss_metric.update_state(total)
    self.loss_ce_metric.update_state(ce)
    self.loss_distill_metric.update_state(distill)
    self.loss_wd_metric.update_state(weight_decay)
    self.accuracy_metric.update_state(labels, logits)
    return step_logs(self.metrics)

  def test_step(self, data):
    images, labels = data[0], data[1]
    logits = self.student(images, training=False)
    ce = losses.cross_entropy_loss(labels, logits)
    self.loss_ce_metric.update_state(ce)
    self.accuracy_metric.update_state(labels, logits)
    return {m.name: m.result() for m in (self.loss_ce_metric, self.accuracy_metric)}
