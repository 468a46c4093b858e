"""Batched tf.data pipelines for training and evaluation."""

from __future__ import annotations

import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import augment, sampling, sources


def build_train_dataset(split: sources.Split, data: config_lib.DataConfig, policy: str,
                        seed: int, num_classes: int,
                        input_context: tf.distribute.InputContext | None = None
                        ) -> tf.data.Dataset:
  """Infinite per-replica batches of (image, label), examples drawn by `policy`.

  Every input pipeline walks the same seeded index stream and keeps its own shard, so
  the global batch holds the same examples however many replicas share it.
  """
  batch_size = data.batch_size
  indices = sampling.sample_indices(split.labels, policy, seed=seed, num_classes=num_classes)
  example_seeds = tf.data.Dataset.random(seed=seed + 1).batch(2)
  examples = tf.data.Dataset.zip(indices, example_seeds)
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(data.batch_size)
    examples = examples.shard(input_context.num_input_pipelines,
                              input_context.input_pipeline_id)
  images = tf.constant(split.images)
  labels = tf.constant(split.labels, tf.int64)

  def load(index, example_seed):
    image = augment.preprocess_train(tf.gather(images, index), example_seed, data)
    return image, tf.gather(labels, index)

  return (examples.map(load, num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch_size, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))


def build_eval_dataset(split: sources.Split, data: config_lib.DataConfig) -> tf.data.Dataset:
  """One pass over `split` in order, preprocessed for evaluation, in batches."""
  dataset = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
  return (dataset.map(lambda image, label: (augment.preprocess_eval(image, data), label),
                      num_parallel_calls=tf.data.AUTOTUNE)
          .batch(data.eval_batch_size)
          .prefetch(tf.data.AUTOTUNE))
