"""Heads that sit on a backbone embedding."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cbd_tf")
class CosineClassifier(keras.layers.Layer):
  """logits = scale * cos(w_c, f): both the feature and each class weight L2-normalised.

  Kept in float32 under mixed precision: the scaled cosine is sensitive to rounding.
  """

  def __init__(self, num_classes: int, scale: float = 20.0, **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.scale = scale

  def build(self, input_shape):
    self.kernel = self.add_weight(
        name="kernel", shape=(input_shape[-1], self.num_classes),
        initializer=keras.initializers.RandomNormal(stddev=0.01))

  def call(self, features):
    features = ops.cast(features, "float32")
    features = features / ops.maximum(ops.norm(features, axis=-1, keepdims=True), 1e-12)
    kernel = self.kernel / ops.maximum(ops.norm(self.kernel, axis=0, keepdims=True), 1e-12)
    return self.scale * ops.matmul(features, kernel)

  def compute_output_shape(self, input_shape):
    return (*input_shape[:-1], self.num_classes)

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes, "scale": self.scale}


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
