"""Batched tf.data pipelines for training and evaluation.

Examples are read and decoded per example *after* the sampler picks their index, so
examples the sampler never draws cost nothing, whether the split holds decoded images
or image files.
"""

from __future__ import annotations

import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import augment, sampling, sources


def build_train_dataset(split: sources.Split, data: config_lib.DataConfig, policy: str,
                        seed: int, num_classes: int,
                        input_context: tf.distribute.InputContext | None = None,
                        start_step: int = 0, progress=None) -> tf.data.Dataset:
  """Infinite per-replica batches of (image, label), examples drawn by `policy`.

  Every input pipeline walks the same seeded index stream and keeps its own shard, so
  the global batch holds the same examples however many replicas share it. The stream
  is a pure function of the seed and the position, so `start_step` (a resumed run)
  begins exactly where global step `start_step` would have. `progress` (a tf.Variable
  in [0, 1]) drives the `progressive` policy.
  """
  batch_size = data.batch_size
  indices = sampling.sample_indices(split.labels, policy, method="auto", seed=seed,
                                    num_classes=num_classes, progress=progress)
  example_seeds = tf.data.Dataset.random(seed=seed + 1).batch(2)
  examples = tf.data.Dataset.zip(indices, example_seeds).skip(start_step * data.batch_size)
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(data.batch_size)
    examples = examples.shard(input_context.num_input_pipelines,
                              input_context.input_pipeline_id)
  image_at = _image_reader(split)
  labels = tf.constant(split.labels, tf.int64)

  def load(index, example_seed):
    image = augment.preprocess_train(image_at(index), example_seed, data)
    return image, tf.gather(labels, index)

  dataset = examples.map(load, num_parallel_calls=tf.data.AUTOTUNE)
  if split.is_encoded:
    # sources.load_source checks every file before training; this only catches a file
    # broken since then (logged by tf.data), so it never stops a run.
    dataset = dataset.ignore_errors(log_warning=True)
  return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def build_eval_dataset(split: sources.Split, data: config_lib.DataConfig) -> tf.data.Dataset:
  """One pass over `split` in order, preprocessed for evaluation, in batches."""
  image_at = _image_reader(split)
  dataset = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(split), dtype=tf.int64), split.labels)).map(
          lambda index, label: (augment.preprocess_eval(image_at(index), data), label),
          num_parallel_calls=tf.data.AUTOTUNE)
  if split.is_encoded:
    dataset = dataset.ignore_errors(log_warning=True)
  return dataset.batch(data.eval_batch_size).prefetch(tf.data.AUTOTUNE)


def _image_reader(split: sources.Split):
  """index -> uint8 image (H, W, C): a gather from memory, or read + decode of one file."""
  if split.is_encoded:
    paths = tf.constant(split.paths.astype(str))
    return lambda index: augment.decode_image(tf.io.read_file(tf.gather(paths, index)))
  images = tf.constant(split.images)
  return lambda index: tf.gather(images, index)
