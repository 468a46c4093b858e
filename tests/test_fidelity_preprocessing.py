"""Preprocessing against the official CBD definitions, written out with the TF ops they use.

Official: google-research class_balanced_distillation/input_pipeline.py
(decode_and_random_resized_crop, train_preprocess, resize_small, central_crop,
eval_preprocess, random_color_jitter) and simclr tf2/data_util.py (color_jitter with
impl="simclrv2", random_order=True; random_apply; to_grayscale).
"""

import colorsys
import io
import itertools
import threading

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import augment, pipeline, sources

SIZE = 24
DATA = config_lib.DataConfig(image_size=SIZE, crop_min_area=0.05, batch_size=4)
JITTER = config_lib.DataConfig(image_size=SIZE, augmentation="jitter", batch_size=4)
SEEDS = [tf.constant([seed, 11], tf.int64) for seed in range(8)]


def structured_image(height, width, seed=0):
  """Smooth colour gradients plus blocks: a shifted window changes the pixels a lot."""
  rows, columns = np.mgrid[0:height, 0:width]
  rng = np.random.default_rng(seed)
  image = np.stack([rows * 255 / height, columns * 255 / width,
                    (rows + columns) * 127 / (height + width)], axis=-1)
  image += 60 * ((rows // 8 + columns // 8) % 2)[..., None] * rng.uniform(0.5, 1, 3)
  return np.clip(image, 0, 255).astype(np.uint8)


def jpeg_bytes(image, quality=90):
  return tf.io.encode_jpeg(tf.constant(image), quality=quality)


# --- the official definitions ---------------------------------------------------------

def official_train(contents, rng, size, area_min=0.05):
  """train_preprocess without jitter: decode_and_random_resized_crop + stateless flip."""
  _, rng_crop, rng_flip = tf.unstack(tf.random.experimental.stateless_split(rng, 3))
  shape = tf.io.extract_jpeg_shape(contents)
  begin, window, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4], tf.float32), seed=rng_crop, area_range=(area_min, 1.0),
      min_object_covered=0, use_image_if_no_bounding_boxes=True)
  top, left, _ = tf.unstack(begin)
  height, width, _ = tf.unstack(window)
  image = tf.image.decode_and_crop_jpeg(contents, [top, left, height, width], channels=3)
  image = tf.cast(image, tf.float32) / 255.0
  image = tf.image.resize(image, (size, size))
  return tf.image.stateless_random_flip_left_right(image, rng_flip), (begin, window)


def official_eval(image, short_side, size):
  """eval_preprocess: float / 255, resize_small(short_side), central_crop(size)."""
  image = tf.cast(image, tf.float32) / 255.0
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  ratio = tf.cast(short_side, tf.float32) / tf.cast(tf.minimum(height, width), tf.float32)
  height = tf.cast(tf.round(tf.cast(height, tf.float32) * ratio), tf.int32)
  width = tf.cast(tf.round(tf.cast(width, tf.float32) * ratio), tf.int32)
  image = tf.image.resize(image, [height, width], antialias=False)
  top, left = (tf.shape(image)[0] - size) // 2, (tf.shape(image)[1] - size) // 2
  return tf.image.crop_to_bounding_box(image, top, left, size, size)


# --- training crop ----------------------------------------------------------------------

def test_train_equals_official_jpeg_crop_eagerly_and_in_tf_data():
  contents = jpeg_bytes(structured_image(60, 84))
  expected = [official_train(contents, seed, SIZE)[0].numpy() for seed in SEEDS]
  eager = [augment.preprocess_train(contents, seed, DATA).numpy() for seed in SEEDS]
  in_data = list(tf.data.Dataset.from_tensor_slices(tf.stack(SEEDS)).map(
      lambda seed: augment.preprocess_train(contents, seed, DATA)).as_numpy_iterator())
  for want, got, got_in_data in zip(expected, eager, in_data):
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got_in_data, want, atol=1e-5)
  windows = {tuple(np.concatenate([w.numpy() for w in official_train(contents, s, SIZE)[1]]))
             for s in SEEDS}
  assert len(windows) == len(SEEDS)  # the seeds do draw different windows


def test_crop_window_is_the_official_call_on_imagenet_sized_shapes():
  # Cheap (no decode), so many seeds: the op's default aspect range [0.75, 1.33] and
  # default attempts differ from e.g. (3/4, 4/3) for about a third of the seeds.
  for shape in ([375, 500, 3], [500, 333, 3]):
    for number in range(64):
      rng = tf.constant([number, 2], tf.int64)
      begin, size = augment.crop_window(tf.constant(shape), rng, DATA)
      official_begin, official_size, _ = tf.image.stateless_sample_distorted_bounding_box(
          tf.constant(shape), tf.zeros([0, 0, 4], tf.float32), seed=rng, area_range=(0.05, 1.0),
          min_object_covered=0, use_image_if_no_bounding_boxes=True)
      np.testing.assert_array_equal(begin.numpy(), official_begin.numpy())
      np.testing.assert_array_equal(size.numpy(), official_size.numpy())


def test_png_jpeg_and_in_memory_images_get_the_same_crop_window():
  pixels = structured_image(60, 84, seed=1)
  png = tf.io.encode_png(tf.constant(pixels))
  jpeg = jpeg_bytes(pixels, quality=100)
  for seed in SEEDS:
    crop_seed = augment.train_seeds(seed).crop
    from_png = augment.decode_and_crop(png, crop_seed, DATA).numpy()
    from_jpeg = augment.decode_and_crop(jpeg, crop_seed, DATA).numpy()
    in_memory = augment.crop(tf.constant(pixels), crop_seed, DATA).numpy()
    np.testing.assert_array_equal(from_png, in_memory)  # PNG is lossless
    assert from_jpeg.shape == from_png.shape
    # JPEG is lossy, so only close; a window shifted by even a few pixels is far off.
    assert np.abs(from_jpeg.astype(float) - from_png).mean() < 3.0
    begin, size = augment.crop_window(tf.shape(pixels), crop_seed, DATA)
    top, left = begin.numpy()[:2]
    height, width = size.numpy()[:2]
    np.testing.assert_array_equal(in_memory, pixels[top:top + height, left:left + width])


def test_gray_cmyk_and_rgba_inputs_become_rgb():
  image_module = pytest.importorskip("PIL.Image")
  encoded = {}
  for mode, fmt in (("L", "JPEG"), ("CMYK", "JPEG"), ("L", "PNG"), ("RGBA", "PNG")):
    buffer = io.BytesIO()
    image_module.new(mode, (40, 30), 120 if mode == "L" else (10, 200, 30, 90)).save(buffer, fmt)
    encoded[mode + fmt] = tf.constant(buffer.getvalue())
  for name, contents in encoded.items():
    crop = augment.decode_and_crop(contents, SEEDS[0], DATA)  # any seed works as a crop seed
    assert crop.shape[-1] == 3, name
    assert augment.preprocess_train(contents, SEEDS[0], DATA).shape == (SIZE, SIZE, 3), name
  gray = tf.fill([30, 40, 1], tf.constant(255, tf.uint8))
  rgba = tf.fill([30, 40, 4], tf.constant(51, tf.uint8))
  for image in (gray, rgba):
    assert augment.preprocess_train(image, SEEDS[0], DATA).shape == (SIZE, SIZE, 3)
    assert augment.preprocess_eval(image, DATA).shape == (SIZE, SIZE, 3)
  np.testing.assert_allclose(augment.preprocess_eval(rgba, DATA).numpy(), 0.2, atol=1e-6)
  np.testing.assert_allclose(augment.preprocess_eval(gray, DATA).numpy(), 1.0, atol=1e-6)


# --- evaluation -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(300, 400), (257, 256), (500, 333), (224, 224), (120, 90)])
def test_eval_equals_official_resize_small_and_central_crop(shape):
  data = config_lib.DataConfig(image_size=224, eval_crop_fraction=224 / 256)
  rng = np.random.default_rng(sum(shape))
  image = rng.integers(0, 256, size=shape + (3,), dtype=np.uint8)  # noise: the worst case
  expected = official_eval(tf.constant(image), 256, 224).numpy()
  got = augment.preprocess_eval(tf.constant(image), data).numpy()
  np.testing.assert_allclose(got, expected, atol=1e-5)


def test_eval_pipeline_and_serving_decode_match_official():
  pixels = structured_image(50, 70, seed=2)
  data = config_lib.DataConfig(image_size=SIZE, eval_crop_fraction=0.875, eval_batch_size=2)
  expected = official_eval(tf.constant(pixels), round(SIZE / 0.875), SIZE).numpy()
  split = sources.Split(pixels[None], np.zeros(1, np.int64))
  images, _ = next(iter(pipeline.build_eval_dataset(split, data)))
  np.testing.assert_allclose(images[0].numpy(), expected, atol=1e-5)
  png = tf.io.encode_png(tf.constant(pixels))
  served = augment.preprocess_eval(augment.decode_image(png), data)
  np.testing.assert_allclose(served.numpy(), expected, atol=1e-5)


# --- colour jitter ----------------------------------------------------------------------

def simclr_jitter_loop(image, perm, transforms, clip_each=True):
  """color_jitter_rand: perm = tf.random.shuffle(tf.range(4)); for i in range(4): apply
  transform perm[i] (brightness, contrast, saturation, hue), then clip."""
  for position in range(4):
    image = transforms[perm[position]](image)
    if clip_each:
      image = tf.clip_by_value(image, 0.0, 1.0)
  return image


def test_jitter_is_the_simclr_loop_in_some_order_clipped_after_each():
  image = tf.random.stateless_uniform([8, 8, 3], seed=[5, 5], minval=0.0, maxval=1.0)
  clipping_mattered = 0
  for number in range(24):
    seed = tf.constant([number, 3], tf.int64)
    transforms = augment.jitter_plan(seed)[1]  # their draws; each checked below
    got = augment.color_jitter(image, seed).numpy()
    matches = [perm for perm in itertools.permutations(range(4))
               if np.allclose(got, simclr_jitter_loop(image, perm, transforms), atol=1e-6)]
    assert matches, number
    unclipped = tf.clip_by_value(simclr_jitter_loop(image, matches[0], transforms, False), 0., 1.)
    clipping_mattered += not np.allclose(got, unclipped.numpy(), atol=1e-4)
  assert clipping_mattered >= 5


def test_jitter_order_is_a_uniform_random_permutation(monkeypatch):
  # Marker transforms x / 5 + k / 5 in place of the colour ones: the output spells the order
  # they ran in (base-5 digits), so the order is read off the output, not off the plan.
  plan = augment.jitter_plan
  markers = [lambda x, k=k: x / 5 + k / 5 for k in range(4)]
  monkeypatch.setattr(augment, "jitter_plan", lambda seed, strength=1.0: (plan(seed)[0], markers))
  counts = dict.fromkeys(itertools.permutations(range(4)), 0)
  for number in range(240):
    out = augment.color_jitter(tf.zeros([1, 1, 3]), tf.constant([number, 3], tf.int64))
    value = round(float(out[0, 0, 0]) * 625)
    counts[tuple(value // 5 ** i % 5 for i in range(4))] += 1  # KeyError: not an order
  # tf.random.shuffle(tf.range(4)): each order with probability 1/24.
  assert scipy.stats.chisquare(list(counts.values())).pvalue > 1e-3, counts


def test_jitter_transform_ranges_are_simclr_v2():
  grey = tf.fill([2, 2, 3], 0.5)
  factors = np.array([float(augment.jitter_plan(tf.constant([n, 0], tf.int64))[1][0](grey)[0, 0, 0])
                      / 0.5 for n in range(60)])
  assert factors.min() >= 0.2 - 1e-6 and factors.max() <= 1.8 + 1e-6  # brightness 1 +- 0.8
  assert factors.min() < 0.6 and factors.max() > 1.4


def _hsv(image):
  return np.array([[colorsys.rgb_to_hsv(*pixel) for pixel in row] for row in image])


def official_contrast(image, factor):
  """tf.image.adjust_contrast (simclr: random_contrast, factor U[1 - c, 1 + c]): each channel
  (x - mean) * factor + mean, the mean over the image's pixels."""
  mean = image.mean(axis=(0, 1), keepdims=True)
  return (image - mean) * factor + mean


def official_saturation(image, factor):
  """tf.image.adjust_saturation (simclr: random_saturation): HSV saturation times factor,
  clipped to [0, 1]."""
  return np.array([[colorsys.hsv_to_rgb(h, min(max(s * factor, 0.0), 1.0), v)
                    for h, s, v in row] for row in _hsv(image)])


def official_hue(image, delta):
  """tf.image.adjust_hue (simclr: random_hue, delta U[-h, h]): HSV hue plus delta, mod 1."""
  return np.array([[colorsys.hsv_to_rgb((h + delta) % 1.0, s, v) for h, s, v in row]
                   for row in _hsv(image)])


def _recovered_factor(kind, image, output):
  """The factor (or hue delta) a transform drew, read off its output."""
  if kind == "contrast":
    centred = image - image.mean(axis=(0, 1), keepdims=True)
    return float(np.sum(centred * (output - image.mean(axis=(0, 1), keepdims=True)))
                 / np.sum(centred * centred))
  before, after = _hsv(image), _hsv(output)
  if kind == "saturation":
    unclipped = after[..., 1] < 0.999
    return float(np.median(after[..., 1][unclipped] / before[..., 1][unclipped]))
  return float(np.median((after[..., 0] - before[..., 0] + 0.5) % 1.0 - 0.5))


@pytest.mark.parametrize("kind, index, official, half_range", [
    ("contrast", 1, official_contrast, 0.8), ("saturation", 2, official_saturation, 0.8),
    ("hue", 3, official_hue, 0.2)])
def test_jitter_contrast_saturation_and_hue_are_simclrs(kind, index, official, half_range):
  # simclr color_jitter(strength=1.0, impl="simclrv2"): contrast and saturation 0.8,
  # hue 0.2; each a tf.image.adjust_* with a uniform factor (delta) in its range.
  image = np.random.default_rng(3).uniform(0.15, 0.85, size=(4, 5, 3)).astype(np.float32)
  draws = []
  for number in range(40):
    transform = augment.jitter_plan(tf.constant([number, 17], tf.int64))[1][index]
    output = transform(tf.constant(image)).numpy()
    factor = _recovered_factor(kind, image, output)
    np.testing.assert_allclose(output, official(image, factor), atol=2e-4)
    draws.append(factor if kind == "hue" else factor - 1.0)
  assert -half_range - 1e-3 <= min(draws) and max(draws) <= half_range + 1e-3
  uniform = scipy.stats.kstest(np.array(draws), "uniform", args=(-half_range, 2 * half_range))
  assert uniform.pvalue > 1e-3, draws


def test_jitter_and_grayscale_probabilities():
  num = 1500
  image = tf.constant([[[0.9, 0.2, 0.1], [0.1, 0.8, 0.3]], [[0.2, 0.3, 0.9], [0.5, 0.5, 0.1]]])
  gray_input = augment.to_grayscale(image)
  outputs = np.stack(list(tf.data.Dataset.range(num).map(
      lambda n: augment.color_distortion(image, tf.stack([n, tf.constant(7, tf.int64)])))
      .batch(500).as_numpy_iterator())).reshape(num, 2, 2, 3)
  is_gray = np.all(np.abs(outputs - outputs[..., :1]) < 1e-6, axis=(1, 2, 3))
  untouched = np.all(np.abs(outputs - image.numpy()) < 1e-6, axis=(1, 2, 3))
  gray_only = np.all(np.abs(outputs - gray_input.numpy()) < 1e-6, axis=(1, 2, 3))
  jittered = ~(untouched | gray_only)
  # The official random_color_jitter: random_apply(color_jitter, p=0.8), then
  # random_apply(to_grayscale, p=0.2).
  for observed, probability in ((is_gray.mean(), 0.2), (jittered.mean(), 0.8)):
    tolerance = 4 * np.sqrt(probability * (1 - probability) / num)
    assert abs(observed - probability) < tolerance, (observed, probability)


def test_outputs_are_float32_in_unit_range():
  contents = jpeg_bytes(structured_image(40, 56, seed=3))
  randaugment = config_lib.DataConfig(image_size=SIZE, randaugment=True)
  for data in (DATA, JITTER, randaugment):
    for seed in SEEDS:
      image = augment.preprocess_train(contents, seed, data)
      assert image.dtype == tf.float32 and image.shape == (SIZE, SIZE, 3)
      assert 0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 1.0
  image = augment.preprocess_eval(augment.decode_image(contents), DATA)
  assert image.dtype == tf.float32 and 0.0 <= float(tf.reduce_min(image))
  assert float(tf.reduce_max(image)) <= 1.0


# --- errors: decode failures are skipped and counted, augmentation failures are not -------

def write_jpeg_split(directory, count=6):
  paths = []
  for index in range(count):
    path = str(directory / f"{index}.jpg")
    tf.io.write_file(path, jpeg_bytes(structured_image(40, 56, seed=index)))
    paths.append(path)
  return sources.Split.from_files(paths, np.arange(count) % 3)


def examples_of(indices):
  seeds = tf.stack([tf.constant([index * 10 + 1, 5], tf.int64) for index in range(len(indices))])
  return tf.data.Dataset.from_tensor_slices((tf.constant(indices, tf.int64), seeds)), seeds


@pytest.mark.parametrize("data", [DATA, JITTER], ids=["plain", "jitter"])
def test_corrupt_file_is_dropped_and_counted_without_shifting_seeds(tmp_path, data):
  split = write_jpeg_split(tmp_path)
  with open(split.paths[2], "wb") as f:
    f.write(b"\xff\xd8\xff broken since the check")
  indices = [0, 1, 2, 3, 2, 4, 5, 1]
  examples, seeds = examples_of(indices)
  counter = tf.Variable(0, dtype=tf.int64)
  batches = list(pipeline.train_batches(examples, split, data, 3, drop_counter=counter))
  images = np.concatenate([batch[0].numpy() for batch in batches])
  labels = np.concatenate([batch[1].numpy() for batch in batches])
  assert len(images) == 6 and int(counter.numpy()) == 2
  survivors = [position for position, index in enumerate(indices) if index != 2]
  for image, label, position in zip(images, labels, survivors):
    index = indices[position]
    expected = augment.preprocess_train(tf.io.read_file(split.paths[index]), seeds[position], data)
    np.testing.assert_allclose(image, expected.numpy(), atol=1e-6)
    assert label == split.labels[index]


def broken_after(function):
  def broken(*args):
    image = function(*args)
    check = tf.debugging.assert_less(tf.reduce_max(image), -1.0, message="augmentation bug")
    with tf.control_dependencies([check]):
      return tf.identity(image)
  return broken


@pytest.mark.slow
def test_error_in_augmentation_is_raised_not_swallowed(tmp_path, monkeypatch):
  split = write_jpeg_split(tmp_path)
  monkeypatch.setattr(augment, "augment_image", broken_after(augment.augment_image))
  examples, _ = examples_of([0, 1, 2])
  with pytest.raises(tf.errors.InvalidArgumentError, match="augmentation bug"):
    list(pipeline.train_batches(examples, split, JITTER, 3))
  # The endless stream too: swallowing the error there would hang, so pull in a thread.
  outcome = []

  def pull():
    try:
      next(iter(pipeline.build_train_dataset(split, JITTER, "instance", 0, 3)))
      outcome.append("no error")
    except tf.errors.InvalidArgumentError as error:
      outcome.append(str(error))
  worker = threading.Thread(target=pull, daemon=True)
  worker.start()
  worker.join(timeout=120)
  assert outcome and "augmentation bug" in outcome[0], outcome or "hung: error swallowed"


def test_error_in_eval_preprocessing_is_raised_not_swallowed(tmp_path, monkeypatch):
  split = write_jpeg_split(tmp_path, count=3)
  monkeypatch.setattr(augment, "preprocess_eval", broken_after(augment.preprocess_eval))
  with pytest.raises(tf.errors.InvalidArgumentError, match="augmentation bug"):
    list(pipeline.build_eval_dataset(split, DATA))
