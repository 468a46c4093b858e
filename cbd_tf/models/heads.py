"""Heads that sit on a backbone embedding.

  cosine  CosineClassifier: scale * cos(w_c, f), no bias (CBD, LDAM)
  linear  LinearClassifier: W f + b, as keras.layers.Dense (the Decoupling / logit
          adjustment / balanced softmax baselines)
  ncm     NCMClassifier: minus the distance to each class mean (Decoupling's NCM); written
          by --stage=ncm, not trained
"""

from __future__ import annotations

import keras
from keras import ops

from cbd_tf.config import HEADS, NCM_DISTANCES, NCM_FEATURES


class _WeightClassifier(keras.layers.Layer):
  """What the cosine and linear heads share: a (D, C) kernel, the decoupled variants'
  `norm_power` (tau) and optional per-class logit scales (LWS), float32 under mixed
  precision. Weights are created kernel, [bias], class_scale, the order saved weights keep."""

  def __init__(self, num_classes: int, norm_power: float | None, class_scales: bool,
               **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.norm_power = norm_power
    self.class_scales = class_scales

  def _build_kernel(self, input_shape):
    self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.num_classes),
                                  initializer="glorot_uniform")  # as the official CosineLayer

  def _build_class_scale(self):
    if self.class_scales:
      self.class_scale = self.add_weight(name="class_scale", shape=(self.num_classes,),
                                         initializer="ones")

  def _scaled(self, logits):
    return logits * self.class_scale if self.class_scales else logits

  def compute_output_shape(self, input_shape):
    return (*input_shape[:-1], self.num_classes)

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes,
            "norm_power": self.norm_power, "class_scales": self.class_scales}


@keras.saving.register_keras_serializable(package="cbd_tf")
class CosineClassifier(_WeightClassifier):
  """logits = scale * cos(w_c, f): both the feature and each class weight L2-normalised.

  Kept in float32 under mixed precision: the scaled cosine is sensitive to rounding.

  Decoupled variants (cbd_tf/decoupled.py): `norm_power` = tau divides each raw class weight
  by norm^tau instead of norm (tau-normalisation), relative to the mean norm so the overall
  logit scale stays `scale`; `class_scales` multiplies each class's logit by a learned scale
  (LWS). The head already divides by the norm, so the trained head is tau = 1 of the family
  w_c / |w_c|^tau (None means the same), and tau = 0 is the raw kernel on the L2-normalised
  feature: on this head the trained classifier is tau = 1, not tau = 0 as on Decoupling's
  linear head.
  """

  def __init__(self, num_classes: int, scale: float = 20.0, norm_power: float | None = 1.0,
               class_scales: bool = False, **kwargs):
    super().__init__(num_classes, norm_power, class_scales, **kwargs)
    self.scale = scale

  def build(self, input_shape):
    self._build_kernel(input_shape)
    self._build_class_scale()

  def call(self, features):
    features = ops.cast(features, "float32")
    features = features / ops.maximum(ops.norm(features, axis=-1, keepdims=True), 1e-12)
    norms = ops.maximum(ops.norm(self.kernel, axis=0, keepdims=True), 1e-12)
    logits = self.scale * ops.matmul(features, self.kernel / norms)
    if self.norm_power is not None and self.norm_power != 1.0:
      # w_c / |w_c|^tau = unit w_c * |w_c|^(1 - tau); the mean norm keeps the logit scale.
      logits = logits * (norms / ops.mean(norms)) ** (1.0 - self.norm_power)
    return self._scaled(logits)

  def get_config(self):
    return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="cbd_tf")
class LinearClassifier(_WeightClassifier):
  """logits = f W + b: keras.layers.Dense with its default glorot-uniform kernel and zero
  bias, kept in float32 like the cosine head.

  Decoupled variants, as classifier-balancing defines them on its DotProduct_Classifier
  (an nn.Linear): `norm_power` = tau gives tau_norm.py's logits f . (w_c / |w_c|^tau) with
  the bias dropped, so tau = 0 is the trained classifier without its bias; None is the
  trained layer itself, bias included. `class_scales` gives LWS (TauNormClassifier.py):
  (f W + b) * s_c.
  """

  def __init__(self, num_classes: int, norm_power: float | None = None,
               class_scales: bool = False, **kwargs):
    super().__init__(num_classes, norm_power, class_scales, **kwargs)

  def build(self, input_shape):
    self._build_kernel(input_shape)
    self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros")
    self._build_class_scale()

  def call(self, features):
    features = ops.cast(features, "float32")
    if self.norm_power is None:
      logits = ops.matmul(features, self.kernel) + self.bias
    else:
      norms = ops.maximum(ops.norm(self.kernel, axis=0, keepdims=True), 1e-12)
      logits = ops.matmul(features, self.kernel / norms ** self.norm_power)
    return self._scaled(logits)


@keras.saving.register_keras_serializable(package="cbd_tf")
class NCMClassifier(keras.layers.Layer):
  """Nearest class mean, as classifier-balancing's KNNClassifier: logits = -distance.

  `features` transforms the embedding f before comparing it with the class means:
    cl2n  (f - mean) / |f - mean|, mean the average training embedding (upstream default)
    l2n   f / |f|
    raw   f
  and `centroids` hold the class means of the transformed training embeddings.
  `distance`:
    euclidean  logits = -|x - c|^2 (upstream's l2_similarity, its default)
    cosine     logits = scale * cos(x, c). Upstream's 'cos' is x . c / dim with c not
               re-normalised; this is the cosine itself (with features=l2n: the class means
               of unit embeddings as a cosine classifier's weights).
  Centroids and mean are weights (not trained), so the head saves and reloads with the model.
  """

  def __init__(self, num_classes: int, features: str = "cl2n", distance: str = "euclidean",
               scale: float = 20.0, **kwargs):
    if features not in NCM_FEATURES:
      raise ValueError(f"unknown ncm_features {features!r}; valid: {', '.join(NCM_FEATURES)}")
    if distance not in NCM_DISTANCES:
      raise ValueError(f"unknown ncm_distance {distance!r}; valid: {', '.join(NCM_DISTANCES)}")
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.features = features
    self.distance = distance
    self.scale = scale

  def build(self, input_shape):
    self.centroids = self.add_weight(name="centroids", shape=(self.num_classes, input_shape[-1]),
                                     initializer="zeros", trainable=False)
    self.feature_mean = self.add_weight(name="feature_mean", shape=(input_shape[-1],),
                                        initializer="zeros", trainable=False)

  def transform(self, features):
    """The embedding as the class means see it (`features` mode)."""
    features = ops.cast(features, "float32")
    if self.features == "cl2n":
      features = features - self.feature_mean
    if self.features in ("cl2n", "l2n"):
      features = features / ops.maximum(ops.norm(features, axis=-1, keepdims=True), 1e-12)
    return features

  def call(self, features):
    features = self.transform(features)
    if self.distance == "cosine":
      unit = features / ops.maximum(ops.norm(features, axis=-1, keepdims=True), 1e-12)
      centroids = self.centroids / ops.maximum(
          ops.norm(self.centroids, axis=-1, keepdims=True), 1e-12)
      return self.scale * ops.matmul(unit, ops.transpose(centroids))
    squared = (ops.sum(features ** 2, axis=-1, keepdims=True)
               + ops.sum(self.centroids ** 2, axis=-1)[None, :]
               - 2.0 * ops.matmul(features, ops.transpose(self.centroids)))
    return -squared

  def compute_output_shape(self, input_shape):
    return (*input_shape[:-1], self.num_classes)

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes, "features": self.features,
            "distance": self.distance, "scale": self.scale}


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


def build_head(kind: str, num_classes: int, cosine_scale: float = 20.0,
               norm_power: float | None = None, class_scales: bool = False,
               ncm_features: str = "cl2n", ncm_distance: str = "euclidean",
               name: str = "head") -> keras.layers.Layer:
  """The classifier head `kind` names (HEADS, or ncm)."""
  if kind == "cosine":
    return CosineClassifier(num_classes, cosine_scale, norm_power=norm_power,
                            class_scales=class_scales, name=name)
  if kind == "linear":
    return LinearClassifier(num_classes, norm_power=norm_power, class_scales=class_scales,
                            name=name)
  if kind == "ncm":
    return NCMClassifier(num_classes, ncm_features, ncm_distance, scale=cosine_scale, name=name)
  raise ValueError(f"unknown head {kind!r}; valid: {', '.join(HEADS)} (ncm: --stage=ncm)")
