"""Per-example preprocessing, as the official CBD input_pipeline.py does it.

Training: a crop window from `stateless_sample_distorted_bounding_box` (area
crop_min_area..1, the op's default aspect range [0.75, 1.33] and 100 attempts), one
bilinear resize without antialiasing, a random flip, then optional RandAugment and
SimCLR colour jitter. Evaluation: short side resized to image_size / eval_crop_fraction
(bilinear, no antialiasing), centre crop. Outputs are float32 RGB in [0, 1]: no mean/std
normalisation, as the official.

Speed: a JPEG is decoded only inside its training crop window (`decode_and_crop_jpeg`);
other formats and in-memory arrays are decoded whole, then cropped with the same window
(same image size and seed -> same window). Images stay uint8 until the one resize, and
the division by 255 comes after the resize and crop, on the small image.

Randomness is stateless: every example carries its own seed, so a seed gives the same
image whatever the parallelism, and a resumed run replays it. The example seed is split
as the official splits its per-example key (train_seeds).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import image_header, randaugment

# simclr color_jitter(strength=1.0, impl="simclrv2"), applied with p = 0.8, then
# grayscale with p = 0.2 (the official random_color_jitter).
JITTER_STRENGTH = 1.0
JITTER_PROBABILITY = 0.8
GRAYSCALE_PROBABILITY = 0.2


def decode_image(contents: tf.Tensor,
                 max_pixels=config_lib.DataConfig.max_image_pixels) -> tf.Tensor:
  """Encoded JPEG (incl. CMYK), PNG (8/16-bit, gray, RGBA), GIF (its first frame, decoded
  alone), BMP or still WebP -> uint8 (H, W, 3). Raises InvalidArgumentError on a corrupt,
  truncated or non-image file, and before decoding on one declaring more than `max_pixels`
  pixels (image_header.checked)."""
  def jpeg():
    shape = tf.io.extract_jpeg_shape(contents)
    with tf.control_dependencies([image_header.check_pixels(shape[0], shape[1], max_pixels)]):
      return tf.io.decode_jpeg(contents, channels=3)

  def other_format(contents):
    return tf.io.decode_image(image_header.checked(contents, max_pixels), channels=3,
                              dtype=tf.uint8, expand_animations=False)

  image = tf.cond(tf.io.is_jpeg(contents), jpeg,
                  lambda: _not_inlined(other_format)(contents))
  image.set_shape([None, None, 3])
  return image


def _not_inlined(function):
  """In a graph, `function` as one call node: ops of a tf.cond branch not taken still cost
  the executor per example (the header checks' ~100: ~55 us per JPEG, measured with
  tools/profile_input.py)."""
  if tf.executing_eagerly():
    return function
  return tf.function(function, autograph=False, experimental_attributes={"_noinline": True})


class TrainSeeds(NamedTuple):
  """An example's seed split as the official train_preprocess splits its key:
  rng, rng_crop, rng_flip = stateless_split(rng, 3); `rest` seeds RandAugment and jitter."""
  rest: tf.Tensor
  crop: tf.Tensor
  flip: tf.Tensor


def train_seeds(example_seed: tf.Tensor) -> TrainSeeds:
  return TrainSeeds(*tf.unstack(tf.random.experimental.stateless_split(example_seed, num=3)))


def crop_window(image_shape: tf.Tensor, crop_seed: tf.Tensor,
                data: config_lib.DataConfig) -> tuple[tf.Tensor, tf.Tensor]:
  """(begin, size) of the training crop of an image of shape (H, W, C): the official call."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape, tf.zeros([0, 0, 4], tf.float32), seed=crop_seed,
      area_range=(data.crop_min_area, 1.0), min_object_covered=0,
      use_image_if_no_bounding_boxes=True)
  return begin, size


def crop(image: tf.Tensor, crop_seed: tf.Tensor, data: config_lib.DataConfig) -> tf.Tensor:
  """uint8 (H, W, C) -> its training crop window, still uint8."""
  _check_uint8(image)
  begin, size = crop_window(tf.shape(image), crop_seed, data)
  return tf.slice(image, begin, size)


def decode_and_crop(contents: tf.Tensor, crop_seed: tf.Tensor,
                    data: config_lib.DataConfig) -> tf.Tensor:
  """Encoded image -> uint8 (h, w, 3) training crop. A JPEG is decoded inside the window
  only; other formats are decoded whole, then cropped with the same window."""

  def jpeg():
    shape = tf.io.extract_jpeg_shape(contents)
    with tf.control_dependencies([
        image_header.check_pixels(shape[0], shape[1], data.max_image_pixels)]):
      shape = tf.identity(shape)
    begin, size = crop_window(shape, crop_seed, data)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    return tf.image.decode_and_crop_jpeg(contents, window, channels=3)

  def other_format(contents, crop_seed):
    return crop(decode_image(contents, data.max_image_pixels), crop_seed, data)

  image = tf.cond(tf.io.is_jpeg(contents), jpeg,
                  lambda: _not_inlined(other_format)(contents, crop_seed))
  image.set_shape([None, None, 3])
  return image


def resize_and_flip(image: tf.Tensor, flip_seed: tf.Tensor,
                    data: config_lib.DataConfig) -> tf.Tensor:
  """uint8 crop (h, w, 1|3|4) -> float32 (S, S, 3) in [0, 1], resized and randomly flipped:
  with decode_and_crop, the official decode_and_random_resized_crop + flip."""
  _check_uint8(image)
  size = data.image_size
  # No clip, as the official: bilinear interpolation keeps [0, 255] (to the last float bit).
  image = _to_rgb(_resize(image, [size, size]) / 255.0)
  if data.horizontal_flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return image


def has_augmentation(data: config_lib.DataConfig) -> bool:
  """Whether augment_image does anything for this config."""
  return data.randaugment or data.augmentation == "jitter"


def augment_image(image: tf.Tensor, rest_seed: tf.Tensor,
                  data: config_lib.DataConfig) -> tf.Tensor:
  """RandAugment and the official colour jitter, as the config asks, on the resized image."""
  if data.randaugment:
    image = randaugment.rand_augment(image, tf.random.experimental.stateless_fold_in(
        rest_seed, 1), data.randaugment_num_ops, data.randaugment_magnitude)
  if data.augmentation == "jitter":
    image = color_distortion(image, tf.random.experimental.stateless_fold_in(rest_seed, 2))
    image = tf.clip_by_value(image, 0.0, 1.0)
  return image


def preprocess_train(image: tf.Tensor, example_seed: tf.Tensor,
                     data: config_lib.DataConfig) -> tf.Tensor:
  """Encoded bytes (scalar string) or uint8 (H, W, C) image -> float32 (S, S, 3) in [0, 1]:
  what pipeline.train_batches runs on each training example (on image files in two maps,
  decode_and_crop, then resize_and_flip and augment_image, so a broken file is skipped
  between them)."""
  seeds = train_seeds(example_seed)
  return augment_image(crop_resize_flip(image, seeds, data), seeds.rest, data)


def crop_resize_flip(image: tf.Tensor, seeds: TrainSeeds,
                     data: config_lib.DataConfig) -> tf.Tensor:
  """The random resized crop (decoding only the window of encoded bytes) and flip."""
  if image.dtype == tf.string:
    cropped = decode_and_crop(image, seeds.crop, data)
  else:
    cropped = crop(image, seeds.crop, data)
  return resize_and_flip(cropped, seeds.flip, data)


def preprocess_eval(image: tf.Tensor, data: config_lib.DataConfig) -> tf.Tensor:
  """uint8 (H, W, 1|3|4) -> float32 (S, S, 3) in [0, 1]: the official resize_small +
  central_crop, with the division by 255 after the crop."""
  size = data.image_size
  resized, height, width = _resize_short_side(image, round(size / data.eval_crop_fraction))
  image = tf.slice(resized, tf.stack([(height - size) // 2, (width - size) // 2, 0]),
                   [size, size, -1])
  return _to_rgb(image / 255.0)  # no clip, as the official (see resize_and_flip)


# LIFT's test-time ensemble (trainer.py, tte_mode "fivecrop"): Resize(resolution + expand),
# expand 24 (configs/model/clip_vit_b16.yaml), then torchvision's FiveCrop.
TEST_TIME_EXPAND = 24


def preprocess_eval_crops(image: tf.Tensor, data: config_lib.DataConfig) -> tf.Tensor:
  """uint8 (H, W, 1|3|4) -> float32 (5, S, S, 3) in [0, 1]: the short side resized to
  image_size + 24 (bilinear without antialiasing, as preprocess_eval), then FiveCrop's
  top-left, top-right, bottom-left, bottom-right and centre (top = round((h - S) / 2))."""
  size = data.image_size
  resized, height, width = _resize_short_side(image, size + TEST_TIME_EXPAND)
  bottom, right = height - size, width - size
  centre = (tf.cast(tf.round((height - size) / 2), tf.int32),
            tf.cast(tf.round((width - size) / 2), tf.int32))
  corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), centre]
  return tf.stack([_to_rgb(tf.slice(resized, tf.stack([top, left, 0]), [size, size, -1]) / 255.0)
                   for top, left in corners])


def _resize_short_side(image: tf.Tensor, short_side: int):
  """(float32 resized image in [0, 255], its height, its width)."""
  _check_uint8(image)
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  # The official resize_small's arithmetic, so the resized shape is the same.
  ratio = tf.cast(short_side, tf.float32) / tf.cast(tf.minimum(height, width), tf.float32)
  new_height = tf.cast(tf.round(tf.cast(height, tf.float32) * ratio), tf.int32)
  new_width = tf.cast(tf.round(tf.cast(width, tf.float32) * ratio), tf.int32)
  return _resize(image, tf.stack([new_height, new_width])), new_height, new_width


def color_distortion(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """The official random_color_jitter: simclr colour jitter with p = 0.8, then grayscale
  with p = 0.2. Float32 (H, W, 3) in [0, 1] in and out."""
  jitter_seed, apply_jitter_seed, apply_gray_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=3))
  apply_jitter = tf.random.stateless_uniform([], apply_jitter_seed) < JITTER_PROBABILITY
  image = tf.cond(apply_jitter, lambda: color_jitter(image, jitter_seed), lambda: image)
  apply_gray = tf.random.stateless_uniform([], apply_gray_seed) < GRAYSCALE_PROBABILITY
  return tf.cond(apply_gray, lambda: to_grayscale(image), lambda: image)


def color_jitter(image: tf.Tensor, seed: tf.Tensor,
                 strength: float = JITTER_STRENGTH) -> tf.Tensor:
  """simclr color_jitter(impl="simclrv2", random_order=True), stateless: brightness,
  contrast, saturation and hue in an order drawn from `seed`, clipped after each."""
  order, transforms = jitter_plan(seed, strength)
  for position in range(len(transforms)):
    branches = [lambda transform=transform, x=image: transform(x) for transform in transforms]
    image = tf.clip_by_value(tf.switch_case(order[position], branches), 0.0, 1.0)
    image.set_shape([None, None, 3])
  return image


def jitter_plan(seed: tf.Tensor, strength: float = JITTER_STRENGTH) -> tuple[tf.Tensor, list]:
  """(order, transforms) of color_jitter for `seed`.

  order: a random permutation of range(4) (simclr: tf.random.shuffle(tf.range(4))).
  transforms: [brightness, contrast, saturation, hue] as simclrv2 defines them, unclipped,
  each with its own seed, so a transform's draw does not depend on its place in the order.
  """
  order_seed, *seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=5))
  delta = 0.8 * strength

  def brightness(image):  # simclrv2: multiplicative
    return image * tf.random.stateless_uniform([], seeds[0], max(0.0, 1.0 - delta), 1.0 + delta)

  def contrast(image):
    return tf.image.stateless_random_contrast(image, 1.0 - delta, 1.0 + delta, seeds[1])

  def saturation(image):
    return tf.image.stateless_random_saturation(image, 1.0 - delta, 1.0 + delta, seeds[2])

  def hue(image):
    return tf.image.stateless_random_hue(image, 0.2 * strength, seeds[3])

  order = tf.random.experimental.stateless_shuffle(tf.range(4), order_seed)
  return order, [brightness, contrast, saturation, hue]


def to_grayscale(image: tf.Tensor) -> tf.Tensor:
  return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def _resize(image: tf.Tensor, size) -> tf.Tensor:
  """uint8 -> float32 in [0, 255], bilinear without antialiasing.

  Callers divide by 255 after the resize (and the crop), on the smaller image; bilinear is
  linear, so this equals the official divide-then-resize up to float rounding. The cast
  comes first because TF's bilinear kernel is about 1.5x slower on uint8 input than on
  float32 (measured, TF 2.21).
  """
  return tf.image.resize(tf.cast(image, tf.float32), size, antialias=False)


def _to_rgb(image: tf.Tensor) -> tf.Tensor:
  """(H, W, 1|2|3|4) -> (H, W, 3): grayscale repeated, alpha dropped."""
  channels = image.shape[-1]
  if channels is None:
    image = tf.cond(tf.shape(image)[-1] < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]),
                    lambda: image[..., :3])
  elif channels < 3:
    image = tf.tile(image[..., :1], [1, 1, 3])
  elif channels > 3:
    image = image[..., :3]
  image.set_shape([None, None, 3])
  return image


def _check_uint8(image: tf.Tensor) -> None:
  if image.dtype != tf.uint8:
    raise ValueError(f"expected a uint8 image, got {image.dtype.name}")
