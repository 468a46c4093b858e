"""Classifier: backbone (+ projection for CBD students) + head, trained by the shared
train step (cbd_tf/train_step.py) on cross-entropy or a long-tail loss."""

from __future__ import annotations

import warnings

import keras

from cbd_tf import losses, train_step
from cbd_tf.models import adapters, backbones, heads, keras_hub_backbone


@keras.saving.register_keras_serializable(package="cbd_tf")
class Classifier(train_step.TrainStepModel):
  """Images in [0, 1] of shape (N, S, S, 3) -> logits (N, C).

  `backbone` is a built-in name (resnet50, resnet32, ...) or `keras_hub:PRESET`, a KerasHub
  preset name or directory, whose pretrained weights it starts from (keras_hub_backbone.py).
  `backbone_tuning` says what of the backbone trains (cbd_tf/models/adapters.py): full, frozen,
  bias (BitFit), lora or adaptformer (LIFT's adapters, rank `adapter_rank`, 0: LIFT's rule).
  In every mode but full the backbone runs in inference mode and every pretrained weight and
  BatchNorm statistic stays as it is. `freeze_backbone=True` is `backbone_tuning="frozen"`.

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
               ncm_distance: str = "euclidean", backbone_tuning: str = "full",
               adapter_rank: int = 0, freeze_backbone: bool = False, **kwargs):
    super().__init__(term_names=("ce",), **kwargs)
    if freeze_backbone:
      if backbone_tuning not in ("full", "frozen"):
        raise ValueError(f"freeze_backbone=True and backbone_tuning={backbone_tuning!r}: "
                         "freeze_backbone means backbone_tuning='frozen'")
      backbone_tuning = "frozen"
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
    self.backbone = backbones.build_backbone(backbone, image_size, sync_batchnorm,
                                             backbone_tuning, adapter_rank, num_classes)
    self.backbone_name = backbones.backbone_name(self.backbone, backbone)
    self.backbone_tuning = backbone_tuning
    if not self.backbone.built:
      self.backbone.build((None, image_size, image_size, 3))
    if not isinstance(self.backbone, keras_hub_backbone.KerasHubBackbone):
      adapters.tune(self.backbone, backbone_tuning, name=self.backbone_name)
    self.adapter_rank = getattr(self.backbone, "adapter_rank", 0)
    self.backbone_dim = int(self.backbone.compute_output_shape(
        (None, image_size, image_size, 3))[-1])
    self.projection = (heads.ProjectionHead(projection_dim, name="projection")
                       if projection_dim else None)
    self.head = heads.build_head(head, num_classes, cosine_scale, norm_power=head_norm_power,
                                 class_scales=class_scales, ncm_features=ncm_features,
                                 ncm_distance=ncm_distance)
    self.loss_fn = losses.cross_entropy_loss
    # Built now, so layers used only in train_step exist before an optimiser sees them.
    self.build((None, image_size, image_size, 3))

  @property
  def embedding_dim(self) -> int:
    return self.projection_dim or self.backbone_dim

  @property
  def backbone_variables(self) -> list:
    return self.backbone.trainable_weights

  def trained_weight_counts(self) -> dict[str, int]:
    """Scalars that train: {"backbone": its trained weights and adapters, "total": all}."""
    def count(variables):
      return sum(int(keras.ops.size(variable)) for variable in variables)
    return {"backbone": count(self.backbone.trainable_weights),
            "total": count(self.trainable_weights)}

  def build(self, input_shape):
    width = self.backbone_dim
    if self.projection is not None:
      self.projection.build((None, width))
      width = self.projection_dim
    self.head.build((None, width))
    self.built = True

  def embed(self, images, training=False):
    features = self.backbone(images, training=training and self.backbone_tuning == "full")
    if self.projection is not None:
      features = self.projection(features, training=training)
    return features

  def call_with_features(self, images, training=False):
    features = self.embed(images, training=training)
    return self.head(features), features

  def call(self, images, training=False):
    return self.head(self.embed(images, training=training))

  def as_functional(self) -> keras.Model:
    """A functional view of this classifier, sharing its layers and weights: images ->
    logits, the feature the head sees exposed as layer "embedding" (a teacher's pooled
    embedding, a student's projected one). Keras reads an intermediate output only from a
    functional model (`get_layer(name).output`), e.g. keras.distillation.Distiller with
    cbd_tf.CBDFeatureDistillation."""
    images = keras.Input((self.image_size, self.image_size, 3), name="images")
    # A backbone tuned other than in full always runs in inference mode (as `embed`).
    features = (self.backbone(images) if self.backbone_tuning == "full"
                else self.backbone(images, training=False))
    if self.projection is not None:
      features = self.projection(features)
    features = keras.layers.Identity(name="embedding")(features)
    return keras.Model(images, self.head(features), name=f"{self.name}_functional")

  def compile(self, optimizer="sgd", loss=None, weight_decay: float = 0.0, metrics=None,
              **kwargs):
    """`loss(labels, logits)` -> batch mean (default cross-entropy); `weight_decay` is the L2
    coefficient of the official term wd * 0.5 * tf.nn.l2_loss(w) = 0.25 * wd * sum(w^2).
    Logs loss, loss_ce (the value of `loss`), loss_weight_decay and accuracy; `metrics` is
    accepted for Keras' signature and not used."""
    self.loss_fn = loss or losses.cross_entropy_loss
    super().compile(optimizer=optimizer, weight_decay=weight_decay, **kwargs)

  def get_compile_config(self):
    """The optimizer and settings of compile(). A `loss` other than cross-entropy (a
    long_tail_losses closure) is not serializable: a reloaded model is compiled with
    cross-entropy, with a warning; compile it again with the loss to train on."""
    config = super().get_compile_config()
    if config is not None:
      config["custom_loss"] = self.loss_fn is not losses.cross_entropy_loss
    return config

  def compile_from_config(self, config):
    config = dict(config)
    if config.pop("custom_loss", False):
      warnings.warn("this model was compiled with a custom loss, which a .keras file cannot "
                    "hold: reloaded with cross-entropy; call compile(loss=...) to train with it")
    super().compile_from_config(config)

  def loss_terms(self, images, labels, targets):
    logits = self(images, training=True)
    return logits, {"ce": train_step.Term(self.loss_fn(labels, logits))}

  def evaluation_loss(self, labels, logits):
    return self.loss_fn(labels, logits)

  def get_config(self):
    # A keras_hub backbone travels serialized, so a .keras file rebuilds it offline.
    backbone = (keras.saving.serialize_keras_object(self.backbone)
                if isinstance(self.backbone, keras_hub_backbone.KerasHubBackbone)
                else self.backbone_name)
    return {"name": self.name, "trainable": self.trainable, "backbone": backbone,
            "backbone_tuning": self.backbone_tuning, "adapter_rank": self.adapter_rank,
            "num_classes": self.num_classes, "image_size": self.image_size,
            "cosine_scale": self.cosine_scale, "projection_dim": self.projection_dim,
            "sync_batchnorm": self.sync_batchnorm, "head_norm_power": self.head_norm_power,
            "class_scales": self.class_scales, "head": self.head_kind,
            "ncm_features": self.ncm_features, "ncm_distance": self.ncm_distance}

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def load_model(path: str, **kwargs) -> keras.Model:
  """keras.models.load_model for a saved cbd_tf model (`model.save("x.keras")`).

  Keras finds a saved class only once its module is imported; `import cbd_tf` imports
  none (so `import cbd_tf.config` stays free of TensorFlow), and this module registers the
  Classifier, its heads and backbones."""
  return keras.models.load_model(path, **kwargs)
