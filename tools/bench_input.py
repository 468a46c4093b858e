"""Images/s of cbd_tf's input preprocessing against the official CBD pipeline, both built
in this process and measured interleaved.

  python -m tools.bench_input                    # 384 generated JPEGs, ~3 minutes on 2 cores
  python -m tools.bench_input --tiny             # seconds; what the test suite runs
  python -m tools.bench_input --data_dir=DIR     # your own JPEGs (searched recursively)

Images: random crops of the photograph matplotlib ships (grace_hopper.jpg), resized to
ImageNet-typical sides (250-500 px) and saved as JPEG quality 90.

Rows:
  1 thread   everything in one thread, each batch of 16 made when pulled (sequential maps,
             a private tf.data threadpool of one thread, nothing computed ahead), the two
             pipelines pulled a batch each in turn so both see the same machine load:
             cbd_tf's pipeline.train_batches / eval_batches against the official ops
             (input_pipeline.py: extract_jpeg_shape -> stateless_sample_distorted_bounding_box
             -> decode_and_crop_jpeg -> float -> bilinear resize -> flip; eval: decode ->
             float -> short side to 256 -> centre crop 224). "+ jitter" adds simclr's colour
             jitter to both; "+ RandAugment" has no official counterpart, so its reference
             is cbd_tf's plain training path and its ratio is the cost. Each run reads
             the images PER_CORE_PASSES times. "noise floor" pulls the official
             pipeline against a second copy of itself the same way: its ratio would be 1.00
             on a quiet machine, so its spread is how far the other ratios move by chance.
  all cores  build_train_dataset (with the drop counter training passes) /
             build_eval_dataset against the official ops in a plain
             tf.data pipeline (map with AUTOTUNE, batch, prefetch), measured one after the
             other, in alternating order from repeat to repeat.
Each number is the median of --repeats runs; the ratio is the median of the runs' ratios,
and the next column lists them, which shows how much the machine's load moved them. The
last two columns are the same ratio in images per second of this process's CPU time,
which other processes' load hardly moves (all cores: both pipelines use both cores, so it
compares the work each does, not how well it spreads).
Run with -m from the project root (tools/ is not part of the installed package).
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import tempfile
import time
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import pipeline, source_types

# Each one-thread measurement reads the images this many times (end to end: 12): on a
# shared machine a pass of 384 images is too short to average out other processes' load.
PER_CORE_PASSES = 4

# The official training path reads JPEG only (extract_jpeg_shape, decode_and_crop_jpeg).
IMAGE_EXTENSIONS = (".jpg", ".jpeg")


def generate_images(directory: str, num_images: int, min_side: int, max_side: int,
                    seed: int = 0) -> list[str]:
  """Random crops of matplotlib's sample photograph, resized, saved as JPEG quality 90."""
  from matplotlib import cbook  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  photo = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
  rng = np.random.default_rng(seed)
  paths = []
  for number in range(num_images):
    crop_width = int(rng.integers(photo.width // 2, photo.width + 1))
    crop_height = int(rng.integers(photo.height // 2, photo.height + 1))
    left = int(rng.integers(0, photo.width - crop_width + 1))
    top = int(rng.integers(0, photo.height - crop_height + 1))
    size = (int(rng.integers(min_side, max_side + 1)), int(rng.integers(min_side, max_side + 1)))
    image = photo.crop((left, top, left + crop_width, top + crop_height)).resize(
        size, Image.Resampling.BILINEAR)
    path = os.path.join(directory, f"{number:05d}.jpg")
    image.save(path, "JPEG", quality=90)
    paths.append(path)
  return paths


def find_images(data_dir: str, num_images: int) -> list[str]:
  paths = sorted(path for path in glob.glob(os.path.join(data_dir, "**", "*"), recursive=True)
                 if path.lower().endswith(IMAGE_EXTENSIONS))
  if not paths:
    raise ValueError(f"--data_dir {data_dir} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
  return paths[:num_images]


# The official preprocessing, written out with the ops class_balanced_distillation/
# input_pipeline.py and simclr tf2/data_util.py use.

def official_train(contents, seed, size, jitter=False):
  _, crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  shape = tf.io.extract_jpeg_shape(contents)
  begin, window, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4], tf.float32), seed=crop_seed, area_range=(0.05, 1.0),
      min_object_covered=0, use_image_if_no_bounding_boxes=True)
  image = tf.image.decode_and_crop_jpeg(
      contents, tf.stack([begin[0], begin[1], window[0], window[1]]), channels=3)
  image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (size, size))
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if jitter:
    image = tf.clip_by_value(official_color_jitter(image), 0.0, 1.0)
  return image


def official_color_jitter(image):
  """simclr random_apply(color_jitter(strength 1, simclrv2), 0.8), then grayscale at 0.2."""

  def random_apply(function, probability, x):
    return tf.cond(tf.random.uniform([]) < probability, lambda: function(x), lambda: x)

  def jitter(x):
    def transform(index, x):
      return tf.switch_case(index, [
          lambda: x * tf.random.uniform([], 0.2, 1.8),
          lambda: tf.image.random_contrast(x, 0.2, 1.8),
          lambda: tf.image.random_saturation(x, 0.2, 1.8),
          lambda: tf.image.random_hue(x, 0.2)])
    order = tf.random.shuffle(tf.range(4))
    for position in range(4):
      x = tf.clip_by_value(transform(order[position], x), 0.0, 1.0)
    return x

  image = random_apply(jitter, 0.8, image)
  return random_apply(lambda x: tf.tile(tf.image.rgb_to_grayscale(x), [1, 1, 3]), 0.2, image)


def official_eval(contents, size, short_side):
  image = tf.cast(tf.io.decode_image(contents, channels=3, expand_animations=False),
                  tf.float32) / 255.0
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  ratio = tf.cast(short_side, tf.float32) / tf.cast(tf.minimum(height, width), tf.float32)
  new_height = tf.cast(tf.round(tf.cast(height, tf.float32) * ratio), tf.int32)
  new_width = tf.cast(tf.round(tf.cast(width, tf.float32) * ratio), tf.int32)
  image = tf.image.resize(image, [new_height, new_width], antialias=False)
  return tf.image.crop_to_bounding_box(image, (new_height - size) // 2,
                                       (new_width - size) // 2, size, size)


def one_thread(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Everything in one thread and nothing computed ahead: each batch is made when pulled
  (sequential maps, no map-and-batch fusion, no injected prefetch, no autotuning)."""
  options = tf.data.Options()
  options.threading.private_threadpool_size = 1
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = False
  optimization = options.experimental_optimization
  optimization.inject_prefetch = False
  optimization.map_parallelization = False
  optimization.map_and_batch_fusion = False
  return dataset.with_options(options)


def examples_with_seeds(count: int, num_files: int) -> tf.data.Dataset:
  """(index, example seed) for `count` examples cycling through the files."""
  indices = tf.data.Dataset.range(count).map(lambda i: i % num_files)
  return tf.data.Dataset.zip(indices, tf.data.Dataset.random(seed=1).batch(2))


class Rate(NamedTuple):
  """Images per second of wall time, and per second of this process's CPU time: other
  processes' load slows the first, hardly the second (one pipeline works at a time)."""
  wall: float
  cpu: float


def interleaved_rates(reference: tf.data.Dataset, ours: tf.data.Dataset, num_batches: int,
                      batch_size: int) -> tuple[Rate, Rate]:
  """Rates of two one-thread pipelines pulled one batch each in turn (after an untimed
  batch each), so both see the same machine load."""
  iterators = [iter(reference), iter(ours)]
  for iterator in iterators:
    next(iterator)
  elapsed, spent = [0.0, 0.0], [0.0, 0.0]
  for step in range(num_batches):
    for which in ((0, 1) if step % 2 == 0 else (1, 0)):
      start, start_cpu = time.perf_counter(), time.process_time()
      next(iterators[which])
      elapsed[which] += time.perf_counter() - start
      spent[which] += time.process_time() - start_cpu
  images = num_batches * batch_size
  return (Rate(images / elapsed[0], images / spent[0]),
          Rate(images / elapsed[1], images / spent[1]))


def alternating(reference, ours):
  """measure() -> (reference(), ours()), run in alternating order from call to call, so a
  drift in machine load does not favour one side."""
  calls = []

  def measure():
    calls.append(None)
    if len(calls) % 2:
      return reference(), ours()
    ours_rate = ours()
    return reference(), ours_rate
  return measure


def rate_per_batch(dataset: tf.data.Dataset, num_batches: int, batch_size: int) -> Rate:
  """Over `num_batches` batches after one untimed batch (setup, tracing)."""
  iterator = iter(dataset)
  next(iterator)
  start, start_cpu = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    next(iterator)
  images = num_batches * batch_size
  return Rate(images / (time.perf_counter() - start), images / (time.process_time() - start_cpu))


def rate_whole_pass(build) -> Rate:
  """Over one pass of `build()` after its first batch (setup, tracing), as rate_per_batch:
  a one-time cost that a short pass would otherwise count as much as its images."""
  iterator = iter(build())
  next(iterator)
  start, start_cpu = time.perf_counter(), time.process_time()
  images = sum(int(tf.shape(labels)[0]) for _, labels in iterator)
  return Rate(images / (time.perf_counter() - start), images / (time.process_time() - start_cpu))


def benchmarks(paths: list[str], data: config_lib.DataConfig, e2e_images: int):
  """name -> (threads, reference label, measure() -> (reference img/s, cbd_tf img/s)).

  One function longer than the rest: each measurement is a closure over the same paths,
  labels and batch sizes, and the table at the end names them side by side."""
  size, short_side = data.image_size, round(data.image_size / data.eval_crop_fraction)
  labels = np.arange(len(paths)) % 10
  split = source_types.Split.from_files(paths, labels)
  path_constant, label_constant = tf.constant(paths), tf.constant(labels)
  count = len(paths)

  def read(index):
    return tf.io.read_file(tf.gather(path_constant, index))

  def official_train_example(index, seed, jitter=False):
    # The official train_preprocess returns the image and the example's label.
    return (official_train(read(index % count), seed, size, jitter),
            tf.gather(label_constant, index % count))

  def official_eval_example(index):
    return (official_eval(read(index % count), size, short_side),
            tf.gather(label_constant, index % count))

  per_core_batch = min(16, count)
  per_core_batches = PER_CORE_PASSES * count // per_core_batch

  def examples():
    return examples_with_seeds((per_core_batches + 1) * per_core_batch, count)

  def official_train_batches(jitter=False):
    return examples().map(
        lambda index, seed: official_train_example(index, seed, jitter)).batch(per_core_batch)

  def train_pair(reference_jitter, config, reference_config=None):
    """One thread each: the official ops (or cbd_tf with `reference_config`) against cbd_tf."""
    if reference_config is None:
      reference = official_train_batches(reference_jitter)
    else:
      reference = pipeline.train_batches(examples(), split, reference_config, per_core_batch,
                                         num_parallel_calls=None)
    ours = pipeline.train_batches(examples(), split, config, per_core_batch,
                                  num_parallel_calls=None)
    return interleaved_rates(one_thread(reference), one_thread(ours), per_core_batches,
                             per_core_batch)

  def noise_floor():
    return interleaved_rates(one_thread(official_train_batches()),
                             one_thread(official_train_batches()), per_core_batches,
                             per_core_batch)

  def eval_pair():
    copies = PER_CORE_PASSES + 1  # the untimed batch and PER_CORE_PASSES passes
    long_split = source_types.Split.from_files(paths * copies, np.tile(labels, copies))
    reference = tf.data.Dataset.range(copies * count).map(official_eval_example)
    eval_data = config_lib.DataConfig(**{**data.__dict__, "eval_batch_size": per_core_batch})
    ours = pipeline.eval_batches(long_split, eval_data, num_parallel_calls=None)
    return interleaved_rates(one_thread(reference.batch(per_core_batch)), one_thread(ours),
                             per_core_batches, per_core_batch)

  num_batches = max(2, -(-e2e_images // data.batch_size))
  e2e_split = source_types.Split.from_files(
      paths * -(-e2e_images // count), np.tile(labels, -(-e2e_images // count)))

  def ours_train_end_to_end():
    with tf.device("/cpu:0"):  # as training counts the files skipped
      dropped = tf.Variable(0, dtype=tf.int64, trainable=False)
    dataset = pipeline.build_train_dataset(split, data, "instance", 0, 10, drop_counter=dropped)
    return rate_per_batch(dataset, num_batches, data.batch_size)

  def reference_train_end_to_end():
    files = tf.data.Dataset.range(count).shuffle(count, seed=0).repeat()
    dataset = tf.data.Dataset.zip(files, tf.data.Dataset.random(seed=1).batch(2)).map(
        official_train_example, tf.data.AUTOTUNE)
    dataset = dataset.batch(data.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return rate_per_batch(dataset, num_batches, data.batch_size)

  def ours_eval_end_to_end():
    return rate_whole_pass(lambda: pipeline.build_eval_dataset(e2e_split, data))

  def reference_eval_end_to_end():
    def build():
      return tf.data.Dataset.range(len(e2e_split)).map(
          official_eval_example, tf.data.AUTOTUNE).batch(data.eval_batch_size).prefetch(
              tf.data.AUTOTUNE)
    return rate_whole_pass(build)

  jitter = config_lib.DataConfig(**{**data.__dict__, "augmentation": "jitter"})
  randaugment = config_lib.DataConfig(**{**data.__dict__, "randaugment": True})
  cores = f"all ({os.cpu_count()})"
  return {
      "train": ("1", "official", lambda: train_pair(False, data)),
      "noise floor": ("1", "official (both columns)", noise_floor),
      "eval": ("1", "official", eval_pair),
      "train + jitter": ("1", "official + simclr jitter", lambda: train_pair(True, jitter)),
      "train + RandAugment": ("1", "cbd_tf train",
                              lambda: train_pair(False, randaugment, reference_config=data)),
      "train end to end": (cores, "official, tf.data",
                           alternating(reference_train_end_to_end, ours_train_end_to_end)),
      "eval end to end": (cores, "official, tf.data",
                          alternating(reference_eval_end_to_end, ours_eval_end_to_end)),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=384)
  parser.add_argument("--data_dir", default="", help="your own images instead of generated ones")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
  args = parser.parse_args(argv)
  min_side, max_side, batch_size = 250, 500, 128
  if args.tiny:
    args.num_images, args.repeats, args.image_size = 12, 1, 32
    min_side, max_side, batch_size = 40, 80, 8
  if args.num_images < 1 or args.repeats < 1:
    parser.error("--num_images and --repeats must be >= 1")
  data = config_lib.DataConfig(image_size=args.image_size, batch_size=batch_size,
                               eval_batch_size=2 * batch_size)
  with tempfile.TemporaryDirectory() as directory:
    if args.data_dir:
      try:
        paths = find_images(args.data_dir, args.num_images)
      except ValueError as error:
        parser.error(str(error))
    else:
      paths = generate_images(directory, args.num_images, min_side, max_side)
    rows = benchmarks(paths, data, e2e_images=12 * len(paths))
    rates = {name: ([], []) for name in rows}
    for _ in range(args.repeats):
      for name, (_, _, measure) in rows.items():
        reference, ours = measure()
        rates[name][0].append(reference)
        rates[name][1].append(ours)
  source = args.data_dir or f"generated JPEGs q90, sides {min_side}-{max_side} px"
  print(f"{len(paths)} images ({source}), output {args.image_size} px, "
        f"median of {args.repeats}, TensorFlow {tf.__version__}\n")
  print("| pipeline | threads | reference | reference img/s | cbd_tf img/s | cbd_tf / reference "
        "| each run | in CPU time | each run |")
  print("|---|---|---|---|---|---|---|---|---|")
  for name, (threads, label, _) in rows.items():
    reference, ours = (statistics.median(rate.wall for rate in values)
                       for values in rates[name])
    ratios = [o.wall / r.wall for r, o in zip(*rates[name])]
    cpu_ratios = [o.cpu / r.cpu for r, o in zip(*rates[name])]
    print(f"| {name} | {threads} | {label} | {reference:.0f} | {ours:.0f} | "
          f"{statistics.median(ratios):.2f}x | {' '.join(f'{r:.2f}' for r in ratios)} | "
          f"{statistics.median(cpu_ratios):.2f}x | {' '.join(f'{r:.2f}' for r in cpu_ratios)} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
