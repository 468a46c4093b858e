"""Per-example preprocessing: encoded bytes or uint8 image in, float32 RGB in [0, 1] out.

Training randomness is stateless: every example carries its own seed, so a given
seed gives the same crops whatever the parallelism, and a resumed run can replay it.
"""

from __future__ import annotations

import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import randaugment

# SimCLR colour distortion at strength 1.0.
JITTER_STRENGTH = 1.0
JITTER_PROBABILITY = 0.8
GRAYSCALE_PROBABILITY = 0.2


def decode_image(contents: tf.Tensor) -> tf.Tensor:
  """Encoded JPEG (incl. CMYK), PNG (8/16-bit, gray, RGBA), GIF (first frame), BMP or WebP
  -> uint8 (H, W, 3). Raises InvalidArgumentError on a corrupt, truncated or non-image file."""
  image = tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def to_float_rgb(image: tf.Tensor) -> tf.Tensor:
  """uint8 (H, W, 1|3|4) -> float32 (H, W, 3) in [0, 1]; grayscale is repeated, alpha dropped."""
  image = tf.image.convert_image_dtype(image, tf.float32)
  channels = tf.shape(image)[-1]
  image = tf.cond(channels == 1, lambda: tf.image.grayscale_to_rgb(image[..., :1]),
                  lambda: image[..., :3])
  image.set_shape([None, None, 3])
  return image


def preprocess_train(image: tf.Tensor, seed: tf.Tensor, data: config_lib.DataConfig) -> tf.Tensor:
  """Random resized crop + optional flip (+ colour jitter for 'jitter' teachers)."""
  crop_seed, flip_seed, jitter_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=3))
  image = to_float_rgb(image)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=crop_seed,
      min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
      area_range=(data.crop_min_area, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  image = tf.slice(image, begin, size)
  image = tf.image.resize(image, [data.image_size, data.image_size], antialias=True)
  if data.horizontal_flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if data.randaugment:
    # Folded in rather than split off, so runs without RandAugment keep their crops.
    image = randaugment.rand_augment(
        image, tf.random.experimental.stateless_fold_in(seed, 1),
        data.randaugment_num_ops, data.randaugment_magnitude)
  if data.augmentation == "jitter":
    image = color_distortion(image, jitter_seed)
  return tf.clip_by_value(image, 0.0, 1.0)


def preprocess_eval(image: tf.Tensor, data: config_lib.DataConfig) -> tf.Tensor:
  """Resize the short side to image_size / eval_crop_fraction, centre-crop image_size."""
  image = to_float_rgb(image)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  short_side = tf.round(data.image_size / data.eval_crop_fraction)
  new_shape = tf.cast(tf.round(shape * short_side / tf.reduce_min(shape)), tf.int32)
  new_shape = tf.maximum(new_shape, data.image_size)
  image = tf.image.resize(image, new_shape, antialias=True)
  offset = (new_shape - data.image_size) // 2
  image = tf.slice(image, [offset[0], offset[1], 0], [data.image_size, data.image_size, 3])
  return tf.clip_by_value(image, 0.0, 1.0)


def color_distortion(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """SimCLR colour distortion: jitter with p=0.8, then grayscale with p=0.2.

  Jitter applies brightness (multiplicative), contrast, saturation and hue in that fixed
  order (SimCLR also offers a random order; the fixed one keeps the graph small).
  """
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=6))
  strength = 0.8 * JITTER_STRENGTH

  def jitter(x):
    factor = tf.random.stateless_uniform([], seeds[0], max(0.0, 1.0 - strength), 1.0 + strength)
    x = x * factor
    x = tf.image.stateless_random_contrast(x, 1.0 - strength, 1.0 + strength, seeds[1])
    x = tf.image.stateless_random_saturation(x, 1.0 - strength, 1.0 + strength, seeds[2])
    x = tf.image.stateless_random_hue(x, 0.2 * JITTER_STRENGTH, seeds[3])
    return tf.clip_by_value(x, 0.0, 1.0)

  def gray(x):
    return tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 3])

  apply_jitter = tf.random.stateless_uniform([], seeds[4]) < JITTER_PROBABILITY
  image = tf.cond(apply_jitter, lambda: jitter(image), lambda: image)
  apply_gray = tf.random.stateless_uniform([], seeds[5]) < GRAYSCALE_PROBABILITY
  return tf.cond(apply_gray, lambda: gray(image), lambda: image)
