"""Batched tf.data pipelines for training and evaluation.

Examples are read and decoded per example *after* the sampler picks their index, so
examples the sampler never draws cost nothing, whether the split holds decoded images
or image files.
"""

from __future__ import annotations

import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import augment, sampling, sources, teacher_views


def build_train_dataset(split: sources.Split, data: config_lib.DataConfig, policy: str,
                        seed: int, num_classes: int,
                        input_context: tf.distribute.InputContext | None = None,
                        start_step: int = 0, progress=None,
                        drop_counter: tf.Variable | None = None,
                        views: teacher_views.Views | None = None) -> tf.data.Dataset:
  """Infinite per-replica batches of (image, label), examples drawn by `policy`; with `views`,
  each example is one of its image's views, and batches are (image, label, teacher feature)
  if `views.features` reads a cache of them.

  Every input pipeline walks the same seeded index stream and keeps its own shard, so
  the global batch holds the same examples however many replicas share it. The stream
  is a pure function of the seed and the position, so `start_step` (a resumed run)
  begins exactly where global step `start_step` would have. `progress` (a tf.Variable
  in [0, 1]) drives the `progressive` policy. `drop_counter` (an int64 tf.Variable made on
  the host, outside any strategy scope) gains one for every image file that failed to
  read or decode; training skips it.
  """
  batch_size = data.batch_size
  # (index, example_seed) from global example position start_step * batch: constant time
  # for data.sampling_method index (auto); the other methods skip to it.
  examples = sampling.sample_examples(
      split.labels, policy, seed, num_classes, start=start_step * data.batch_size,
      progress=progress, method=data.sampling_method)
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(data.batch_size)
    examples = examples.shard(input_context.num_input_pipelines,
                              input_context.input_pipeline_id)
  if views is None:
    return train_batches(examples, split, data, batch_size,
                         drop_counter=drop_counter).prefetch(tf.data.AUTOTUNE)
  batches = train_batches(teacher_views.pick_views(examples, views), split, data, batch_size,
                          drop_counter=drop_counter)
  if views.features is None:  # live teachers on the chosen views
    batches = batches.map(lambda images, labels, keys: (images, labels))
  else:
    batches = batches.map(lambda images, labels, keys: (images, labels, views.features(keys)),
                          num_parallel_calls=tf.data.AUTOTUNE)
  return batches.prefetch(tf.data.AUTOTUNE)


def build_eval_dataset(split: sources.Split, data: config_lib.DataConfig,
                       test_time_crops: int = 1) -> tf.data.Dataset:
  """One pass over `split` in order, preprocessed for evaluation, in batches: images
  (N, S, S, 3), or with `test_time_crops` 5 each image's five crops, (N, 5, S, S, 3)."""
  return eval_batches(split, data, test_time_crops=test_time_crops).prefetch(tf.data.AUTOTUNE)


def train_batches(examples: tf.data.Dataset, split: sources.Split, data: config_lib.DataConfig,
                  batch_size: int, num_parallel_calls: int | None = tf.data.AUTOTUNE,
                  drop_counter: tf.Variable | None = None) -> tf.data.Dataset:
  """(index, example_seed[, key]) elements -> batches of (images, labels[, keys]), remainder
  dropped; a key (teacher_views.py: which view of its image) travels with its example.

  Image files: one map reads the file and decodes its crop window (a JPEG only inside the
  window); ignore_errors follows it, so a file broken since sources.load_source checked it
  is skipped, logged and counted in `drop_counter`. A second map resizes and flips the crop,
  then applies RandAugment and colour jitter if asked: resizing and flipping cannot fail,
  and an error in the augmentations stops the run instead of silently emptying the stream.
  tf.data fuses that map with the batch (map_and_batch_fusion), which a ignore_errors
  between the map and the batch would rule out: on 2 cores that fusion is worth more than
  the second map costs (docs/input_speed.md). Each seed travels with its example, so a
  skipped file does not shift the seeds of the others.
  """
  labels = tf.constant(split.labels, tf.int64)
  if not split.is_encoded:
    images = tf.constant(split.images)

    def load(index, example_seed, *key):  # cannot fail to read: one map
      return (augment.preprocess_train(tf.gather(images, index), example_seed, data),
              tf.gather(labels, index), *key)
    dataset = examples.map(load, num_parallel_calls=num_parallel_calls)
    return dataset.batch(batch_size, drop_remainder=True)

  paths = tf.constant(split.paths.astype(str))
  counting = drop_counter is not None
  augmenting = augment.has_augmentation(data)

  def read(index, example_seed, *key, position=None):
    seeds = augment.train_seeds(example_seed)
    crop = augment.decode_and_crop(tf.io.read_file(tf.gather(paths, index)), seeds.crop, data)
    example = {"crop": crop, "flip_seed": seeds.flip, "label": tf.gather(labels, index)}
    if augmenting:
      example["rest_seed"] = seeds.rest
    if key:
      example["key"] = key[0]
    if position is not None:
      example["position"] = position
    return example

  if counting:
    examples = examples.enumerate().map(
        lambda position, example: read(*example, position=position),
        num_parallel_calls=num_parallel_calls)
  else:
    examples = examples.map(read, num_parallel_calls=num_parallel_calls)
  dataset = examples.ignore_errors(log_warning=True).map(
      _finisher(data, augmenting), num_parallel_calls=num_parallel_calls)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  if counting:
    dataset = _count_dropped(dataset, drop_counter)
  return dataset.map(lambda batch: (batch["image"], batch["label"],
                                    *([batch["key"]] if "key" in batch else [])))


def _finisher(data: config_lib.DataConfig, augmenting: bool):
  """An example with its decoded crop -> with its image: resized, flipped, and RandAugment
  and jitter applied as the config asks."""

  def finish(example):
    example = dict(example)
    image = augment.resize_and_flip(example.pop("crop"), example.pop("flip_seed"), data)
    if augmenting:
      image = augment.augment_image(image, example.pop("rest_seed"), data)
    example["image"] = image
    return example
  return finish


def eval_batches(split: sources.Split, data: config_lib.DataConfig,
                 num_parallel_calls: int | None = tf.data.AUTOTUNE,
                 test_time_crops: int = 1) -> tf.data.Dataset:
  """`split` in order, as batches of (images, labels). Image files: read and decode in
  one map under ignore_errors (an unreadable file is skipped and logged), then resize and
  crop in a second map, fused with the batching, whose errors are raised."""
  labels = tf.constant(split.labels, tf.int64)

  transform = augment.preprocess_eval_crops if test_time_crops > 1 else augment.preprocess_eval

  def preprocess(image, index):
    return transform(image, data), tf.gather(labels, index)

  indices = tf.data.Dataset.range(len(split))
  if split.is_encoded:
    paths = tf.constant(split.paths.astype(str))
    images = indices.map(
        lambda index: (augment.decode_image(tf.io.read_file(tf.gather(paths, index)),
                                           data.max_image_pixels), index),
        num_parallel_calls=num_parallel_calls).ignore_errors(log_warning=True)
    dataset = images.map(preprocess, num_parallel_calls=num_parallel_calls)
  else:
    in_memory = tf.constant(split.images)
    dataset = indices.map(lambda index: preprocess(tf.gather(in_memory, index), index),
                          num_parallel_calls=num_parallel_calls)
  return dataset.batch(data.eval_batch_size)


def _count_dropped(batches: tf.data.Dataset, drop_counter: tf.Variable) -> tf.data.Dataset:
  """Batches with their stream positions -> without them, adding to `drop_counter` the
  stream positions missing: dropped so far = highest position seen + 1 - examples kept,
  right even if examples arrive out of order. Examples dropped after the last one kept are
  not counted; in an endless training stream that is at most the read-ahead."""

  def count(highest, batch):
    batch = dict(batch)
    positions = batch.pop("position")
    new_highest = tf.maximum(highest, tf.reduce_max(positions))
    kept = tf.size(positions, out_type=tf.int64)
    increase = tf.cast(new_highest - highest - kept, drop_counter.dtype)
    with tf.control_dependencies([drop_counter.assign_add(increase)]):
      return new_highest, tf.nest.map_structure(tf.identity, batch)

  return batches.scan(tf.constant(-1, tf.int64), count)
