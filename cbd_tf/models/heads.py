"""Heads that sit on a backbone embedding."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cbd_tf")
class CosineClassifier(keras.layers.Layer):
  """logits = scale * cos(w_c, f): both the feature and each class weight L2-normalised.

  Kept in float32 under mixed precision: the scaled cosine is sensitive to rounding.

  Decoupled variants (cbd_tf/decoupled.py): `norm_power` = tau divides each raw class weight
  by norm^tau instead of norm (tau-normalisation; 1 is the cosine head), relative to the mean
  norm so the overall logit scale stays `scale`; `class_scales` multiplies each class's logit
  by a learned scale (LWS).
  """

  def __init__(self, num_classes: int, scale: float = 20.0, norm_power: float = 1.0,
               class_scales: bool = False, **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.scale = scale
    self.norm_power = norm_power
    self.class_scales = class_scales

  def build(self, input_shape):
    self.kernel = self.add_weight(
        name="kernel", shape=(input_shape[-1], self.num_classes),
        initializer="glorot_uniform")  # as the official CosineLayer
    if self.class_scales:
      self.class_scale = self.add_weight(name="class_scale", shape=(self.num_classes,),
                                         initializer="ones")

  def call(self, features):
    features = ops.cast(features, "float32")
    features = features / ops.maximum(ops.norm(features, axis=-1, keepdims=True), 1e-12)
    norms = ops.maximum(ops.norm(self.kernel, axis=0, keepdims=True), 1e-12)
    logits = self.scale * ops.matmul(features, self.kernel / norms)
    if self.norm_power != 1.0:
      # w_c / |w_c|^tau = unit w_c * |w_c|^(1 - tau); the mean norm keeps the logit scale.
      logits = logits * (norms / ops.mean(norms)) ** (1.0 - self.norm_power)
    if self.class_scales:
      logits = logits * self.class_scale
    return logits

  def compute_output_shape(self, input_shape):
    return (*input_shape[:-1], self.num_classes)

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes, "scale": self.scale,
            "norm_power": self.norm_power, "class_scales": self.class_scales}


@keras.saving.register_keras_serializable(package="cbd_tf")
class ProjectionHead(keras.layers.Layer):
  """Dense to the teachers' concatenated width, then ReLU (the CBD student's projection)."""

  def __init__(self, units: int, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.dense = keras.layers.Dense(units, name="dense")

  def build(self, input_shape):
    self.dense.build(input_shape)

  def call(self, features):
    return ops.relu(self.dense(features))

  def compute_output_shape(self, input_shape):
    return (*input_shape[:-1], self.units)

  def get_config(self):
    return {**super().get_config(), "units": self.units}
