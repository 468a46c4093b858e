"""What each part of cbd_tf's JPEG training map costs: one-thread images per CPU-second of
pipeline.train_batches with one part taken out at a time, each pulled in turn with the
official ops (tools/bench_input.py's), so both see the same machine load. CPU time of this
process, not wall time: other processes' load hardly moves it.

  python -m tools.profile_input              # 384 generated JPEGs, ~1 minute on 2 cores
  python -m tools.profile_input --tiny       # seconds

Rows, each against the official ops in the same run:
  as training runs it   train_batches with a drop counter (training always counts): read,
                        seeds, format check, pixel limit, window, decode_and_crop_jpeg in
                        one map, ignore_errors, resize and flip in a second map, batch, the
                        counting scan
  one map               the same with resize and flip in the first map (cbd_tf before
                        issue 28), so ignore_errors sits between the map and the batch
  - drop counting       without enumerate + the scan that counts skipped files
  - ignore_errors       also without the error skipping
  - pixel limit         also without the --max_image_pixels check
  - format branch       also without the tf.cond on is_jpeg (JPEG branch only): what is
                        left is the official map
The parts are taken out by replacing the functions that add them, here only.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import augment, image_header, pipeline, source_types
from tools import bench_input


def jpeg_only_decode_and_crop(contents, crop_seed, data):
  shape = tf.io.extract_jpeg_shape(contents)
  with tf.control_dependencies([image_header.check_pixels(shape[0], shape[1],
                                                          data.max_image_pixels)]):
    shape = tf.identity(shape)
  begin, size = augment.crop_window(shape, crop_seed, data)
  image = tf.image.decode_and_crop_jpeg(
      contents, tf.stack([begin[0], begin[1], size[0], size[1]]), channels=3)
  image.set_shape([None, None, 3])
  return image


# name -> (drop counting, patches applied while the pipeline is built)
VARIANTS = {
    "as training runs it": (True, ()),
    "one map": (True, ()),
    "- drop counting": (False, ()),
    "- ignore_errors": (False, ("ignore_errors",)),
    "- pixel limit": (False, ("ignore_errors", "pixel_limit")),
    "- format branch": (False, ("ignore_errors", "pixel_limit", "format_branch")),
}


def patched(names):
  stack = contextlib.ExitStack()
  if "ignore_errors" in names:
    stack.enter_context(mock.patch.object(tf.data.Dataset, "ignore_errors",
                                          lambda self, log_warning=False: self))
  if "pixel_limit" in names:
    stack.enter_context(mock.patch.object(image_header, "check_pixels",
                                          lambda *args, **kwargs: tf.no_op()))
  if "format_branch" in names:
    stack.enter_context(mock.patch.object(augment, "decode_and_crop",
                                          jpeg_only_decode_and_crop))
  return stack


def one_map_batches(examples, split, data, batch_size, dropped):
  """pipeline.train_batches as it was with resize and flip in the first map (no
  augmentation): one thread, counting the files skipped."""
  paths = tf.constant(split.paths.astype(str))
  labels = tf.constant(split.labels, tf.int64)

  def read(position, example):
    index, example_seed = example
    image = augment.crop_resize_flip(tf.io.read_file(tf.gather(paths, index)),
                                     augment.train_seeds(example_seed), data)
    return {"image": image, "label": tf.gather(labels, index), "position": position}
  batches = examples.enumerate().map(read).ignore_errors(log_warning=True).batch(
      batch_size, drop_remainder=True)
  return pipeline._count_dropped(batches, dropped).map(  # pylint: disable=protected-access
      lambda batch: (batch["image"], batch["label"]))


def measure(paths, data, name, batch_size, num_batches):
  counting, patches = VARIANTS[name]
  labels = np.arange(len(paths)) % 10
  split = source_types.Split.from_files(paths, labels)
  path_constant, label_constant = tf.constant(paths), tf.constant(labels)
  count = len(paths)

  def examples():
    return bench_input.examples_with_seeds((num_batches + 1) * batch_size, count)

  def official(index, seed):
    contents = tf.io.read_file(tf.gather(path_constant, index % count))
    return (bench_input.official_train(contents, seed, data.image_size),
            tf.gather(label_constant, index % count))

  reference = examples().map(official).batch(batch_size)
  with tf.device("/cpu:0"):
    dropped = tf.Variable(0, dtype=tf.int64) if counting else None
  if name == "one map":
    ours = one_map_batches(examples(), split, data, batch_size, dropped)
  else:
    with patched(patches):
      ours = pipeline.train_batches(examples(), split, data, batch_size,
                                    num_parallel_calls=None, drop_counter=dropped)
  reference_rate, our_rate = bench_input.interleaved_rates(
      bench_input.one_thread(reference), bench_input.one_thread(ours), num_batches, batch_size)
  return reference_rate.cpu, our_rate.cpu


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=384)
  parser.add_argument("--passes", type=int, default=8, help="reads of the images per run")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tiny", action="store_true")
  args = parser.parse_args(argv)
  min_side, max_side, size, batch_size = 250, 500, 224, 16
  if args.tiny:
    args.num_images, args.passes, args.repeats = 12, 2, 1
    min_side, max_side, size, batch_size = 40, 80, 32, 4
  data = config_lib.DataConfig(image_size=size, batch_size=batch_size)
  num_batches = args.passes * args.num_images // batch_size
  rates = {name: [] for name in VARIANTS}
  with tempfile.TemporaryDirectory() as directory:
    paths = bench_input.generate_images(directory, args.num_images, min_side, max_side)
    for _ in range(args.repeats):
      for name in VARIANTS:
        rates[name].append(measure(paths, data, name, batch_size, num_batches))
  print(f"{len(paths)} generated JPEGs q90, sides {min_side}-{max_side} px, output {size} px, "
        f"1 thread, {args.passes} passes per run, median of {args.repeats}, "
        f"TensorFlow {tf.__version__}\n")
  print("| cbd_tf training map | official img/CPU-s | cbd_tf img/CPU-s | cbd_tf / official | "
        "CPU us per image over official | each run |")
  print("|---|---|---|---|---|---|")
  for name, runs in rates.items():
    reference = statistics.median(r for r, _ in runs)
    ours = statistics.median(o for _, o in runs)
    ratios = [o / r for r, o in runs]
    extra = statistics.median(1e6 / o - 1e6 / r for r, o in runs)
    print(f"| {name} | {reference:.0f} | {ours:.0f} | {statistics.median(ratios):.2f}x | "
          f"{extra:+.0f} | {' '.join(f'{r:.2f}' for r in ratios)} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
