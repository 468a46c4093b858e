"""Classifier: backbone (+ projection for CBD students) + head; stage-one train_step."""

from __future__ import annotations

import keras
import tensorflow as tf

from cbd_tf import losses
from cbd_tf.models import heads, resnet


def replica_count() -> int:
  return tf.distribute.get_strategy().num_replicas_in_sync


def step_logs(metrics) -> dict:
  """Metric results as a train_step returns them. Across workers Keras 3.15 reduces them
  along axis 0 and fails on scalars, so there they get a length-1 axis."""
  multi_worker = isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)
  return {m.name: tf.reshape(m.result(), [1]) if multi_worker else m.result() for m in metrics}


def build_optimizer_for(model: keras.Model) -> None:
  """Stands in for Keras' `_maybe_symbolic_build`, which probes the first batch with a
  strategy.reduce that fails across workers (MultiWorkerMirroredStrategy, Keras 3.15).
  Our models are built in __init__ and compile no Keras losses or metrics, so only the
  optimiser is left to build."""
  if model.optimizer is not None and not model.optimizer.built:
    with model.distribute_strategy.scope():
      model.optimizer.build(model.trainable_variables)


@keras.saving.register_keras_serializable(package="cbd_tf")
class Classifier(keras.Model):
  """Images in [0, 1] of shape (N, S, S, 3) -> logits (N, C).

  `embed` gives the feature the head sees: the backbone's pooled embedding, or, with
  `projection_dim` > 0 (a CBD student), that embedding after Dense + ReLU. `head` is
  cosine (CBD's), linear (Dense with bias) or ncm (written by --stage=ncm); see
  cbd_tf/models/heads.py for what `head_norm_power` (tau-norm; None: the head as trained)
  and `class_scales` (LWS) do to each.
  """

  def __init__(self, backbone: str, num_classes: int, image_size: int,
               cosine_scale: float = 20.0, projection_dim: int = 0,
               sync_batchnorm: bool = False, head_norm_power: float | None = None,
               class_scales: bool = False, head: str = "cosine", ncm_features: str = "cl2n",
               ncm_distance: str = "euclidean", **kwargs):
    super().__init__(**kwargs)
    self.backbone_name = backbone
    self.num_classes = num_classes
    self.image_size = image_size
    self.cosine_scale = cosine_scale
    self.projection_dim = projection_dim
    self.sync_batchnorm = sync_batchnorm
    self.head_norm_power = head_norm_power
    self.class_scales = class_scales
    self.head_kind = head
    self.ncm_features = ncm_features
    self.ncm_distance = ncm_distance
    self.backbone = resnet.build_backbone(backbone, image_size, sync_batchnorm)
    self.projection = heads.ProjectionHead(projection_dim, name="projection") if projection_dim else None
    self.head = heads.build_head(head, num_classes, cosine_scale, norm_power=head_norm_power,
                                 class_scales=class_scales, ncm_features=ncm_features,
                                 ncm_distance=ncm_distance)
    self.weight_decay = 0.0
    self.loss_fn = losses.cross_entropy_loss
    self.loss_metric = keras.metrics.Mean(name="loss")
    self.loss_ce_metric = keras.metrics.Mean(name="loss_ce")
    self.loss_wd_metric = keras.metrics.Mean(name="loss_weight_decay")
    self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    # Built now, so layers used only in train_step exist before an optimiser sees them.
    self.build((None, image_size, image_size, 3))

  @property
  def embedding_dim(self) -> int:
    return self.projection_dim or self.backbone.output_shape[-1]

  def build(self, input_shape):
    width = self.backbone.output_shape[-1]
    if self.projection is not None:
      self.projection.build((None, width))
      width = self.projection_dim
    self.head.build((None, width))
    self.built = True

  def embed(self, images, training=False):
    features = self.backbone(images, training=training)
    if self.projection is not None:
      features = self.projection(features, training=training)
    return features

  def call_with_features(self, images, training=False):
    features = self.embed(images, training=training)
    return self.head(features), features

  def call(self, images, training=False):
    return self.head(self.embed(images, training=training))

  def compile(self, optimizer="sgd", loss=None, weight_decay: float = 0.0, metrics=None,
              **kwargs):
    """`loss(labels, logits)` -> batch mean (default cross-entropy); `weight_decay` is the L2
    coefficient of the official term wd * 0.5 * tf.nn.l2_loss(w) = 0.25 * wd * sum(w^2)."""
    self.loss_fn = loss or losses.cross_entropy_loss
    self.weight_decay = weight_decay
    super().compile(optimizer=optimizer, **kwargs)

  @property
  def metrics(self):
    return [self.loss_metric, self.loss_ce_metric, self.loss_wd_metric, self.accuracy_metric]

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    build_optimizer_for(self)

  def train_step(self, data):
    images, labels = data[0], data[1]
    with tf.GradientTape() as tape:
      logits = self(images, training=True)
      ce = self.loss_fn(labels, logits)
      weight_decay = losses.weight_decay_loss(self.trainable_weights, self.weight_decay)
      total = ce + weight_decay
      # Replica gradients are summed, so each replica's batch mean is divided by their count.
      scaled = self.optimizer.scale_loss(total / replica_count())
    gradients = tape.gradient(scaled, self.trainable_weights)
    self.optimizer.apply(gradients, self.trainable_weights)
    self.loss_metric.update_state(total)
    self.loss_ce_metric.update_state(ce)
    self.loss_wd_metric.update_state(weight_decay)
    self.accuracy_metric.update_state(labels, logits)
    return step_logs(self.metrics)

  def test_step(self, data):
    images, labels = data[0], data[1]
    logits = self(images, training=False)
    ce = self.loss_fn(labels, logits)
    self.loss_metric.update_state(ce)
    self.loss_ce_metric.update_state(ce)
    self.accuracy_metric.update_state(labels, logits)
    return {m.name: m.result() for m in (self.loss_metric, self.loss_ce_metric,
                                         self.accuracy_metric)}

  def get_config(self):
    return {"name": self.name, "trainable": self.trainable, "backbone": self.backbone_name,
            "num_classes": self.num_classes, "image_size": self.image_size,
            "cosine_scale": self.cosine_scale, "projection_dim": self.projection_dim,
            "sync_batchnorm": self.sync_batchnorm, "head_norm_power": self.head_norm_power,
            "class_scales": self.class_scales, "head": self.head_kind,
            "ncm_features": self.ncm_features, "ncm_distance": self.ncm_distance}

  @classmethod
  def from_config(cls, config):
    return cls(**config)
