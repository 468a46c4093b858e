"""RandAugment (Cubuk et al. 2020) with stateless per-example seeds.

keras.layers.RandAugment draws from a stateful seed generator, which under a parallel
tf.data map makes the draw depend on thread timing; this version takes the example's
seed like the rest of augment.py, so a run replays exactly.

Images are float32 (H, W, 3) in [0, 1]. Each of `num_ops` rounds picks one operation
uniformly; `magnitude` in [0, 10] sets its strength (sign random where it has one).
Equalize is left out (no cheap in-graph histogram equalisation per image).
"""

from __future__ import annotations

import math

import tensorflow as tf

OPERATIONS = ("identity", "auto_contrast", "rotate", "solarize", "color", "posterize",
              "contrast", "brightness", "sharpness", "shear_x", "shear_y",
              "translate_x", "translate_y")
MAX_MAGNITUDE = 10.0
_FILL = 0.5  # Grey where a geometric operation leaves the image.


def rand_augment(image: tf.Tensor, seed: tf.Tensor, num_ops: int = 2,
                 magnitude: float = 9.0) -> tf.Tensor:
  level = magnitude / MAX_MAGNITUDE
  for round_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num=num_ops)):
    op_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(round_seed, num=2))
    op_index = tf.random.stateless_uniform([], op_seed, 0, len(OPERATIONS), dtype=tf.int32)
    sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
    branches = [_branch(name, image, level * sign, level) for name in OPERATIONS]
    image = tf.clip_by_value(tf.switch_case(op_index, branches), 0.0, 1.0)
    image.set_shape([None, None, 3])
  return image


def _branch(name, image, signed_level, level):
  factor = 1.0 + 0.9 * signed_level  # enhancement factor in [0.1, 1.9]
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  return {
      "identity": lambda: image,
      "auto_contrast": lambda: _auto_contrast(image),
      "rotate": lambda: _rotate(image, signed_level * 30.0 * math.pi / 180.0),
      "solarize": lambda: tf.where(image < 1.0 - level, image, 1.0 - image),
      "color": lambda: _blend(tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image)),
                              image, factor),
      "posterize": lambda: _posterize(image, 8 - int(round(level * 4))),
      "contrast": lambda: _blend(tf.reduce_mean(tf.image.rgb_to_grayscale(image)), image, factor),
      "brightness": lambda: _blend(tf.zeros_like(image), image, factor),
      "sharpness": lambda: _blend(_smooth(image), image, factor),
      "shear_x": lambda: _transform(image, [1.0, signed_level * 0.3, 0.0, 0.0, 1.0, 0.0]),
      "shear_y": lambda: _transform(image, [1.0, 0.0, 0.0, signed_level * 0.3, 1.0, 0.0]),
      "translate_x": lambda: _transform(image, [1.0, 0.0, -signed_level * 0.3 * width,
                                                0.0, 1.0, 0.0]),
      "translate_y": lambda: _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0,
                                                -signed_level * 0.3 * height]),
  }[name]


def _blend(base, image, factor):
  return base + factor * (image - base)


def _auto_contrast(image):
  low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
  high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
  return tf.where(high > low, (image - low) / tf.maximum(high - low, 1e-6), image)


def _posterize(image, bits):
  levels = 2.0 ** bits
  return tf.floor(image * (levels - 1) + 0.5) / (levels - 1)


def _smooth(image):
  # PIL's SMOOTH kernel, as in ImageEnhance.Sharpness.
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
  smoothed = tf.nn.depthwise_conv2d(image[tf.newaxis], kernel, [1, 1, 1, 1], "SAME")[0]
  return smoothed


def _rotate(image, angle):
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
  cos, sin = tf.cos(angle), tf.sin(angle)
  return _transform(image, [cos, sin, centre_x - cos * centre_x - sin * centre_y,
                            -sin, cos, centre_y + sin * centre_x - cos * centre_y])


def _transform(image, affine):
  """Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2)."""
  transform = tf.cast(tf.stack(affine + [0.0, 0.0]), tf.float32)[tf.newaxis]
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[tf.newaxis], transforms=transform, output_shape=tf.shape(image)[:2],
      fill_value=_FILL, interpolation="BILINEAR", fill_mode="CONSTANT")[0]
