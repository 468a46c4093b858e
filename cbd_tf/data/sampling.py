"""Which training example comes next: infinite, seeded streams of indices.

Policies say how likely each example is:
  instance        every example equally likely (shuffled passes, no repeats in a pass)
  class_balanced  every class equally likely, then every example of that class
  sqrt            class probability proportional to sqrt(n_c)

The sampler is index-level and in-graph: draw a block of classes, then one example of
each drawn class, by stateless random ops. Setup is one argsort over the labels and the
stream never touches image data, so only the examples it emits are gathered and decoded.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

POLICIES = ("instance", "class_balanced", "sqrt")
_BLOCK_SIZE = 4096


def check_policy(policy: str) -> None:
  if policy not in POLICIES:
    raise ValueError(f"unknown sampling {policy!r}; valid: {', '.join(POLICIES)}")


def class_probabilities(class_counts: np.ndarray, policy: str) -> np.ndarray:
  """Probability of drawing each class under `policy`."""
  check_policy(policy)
  counts = np.asarray(class_counts, dtype=np.float64)
  if policy == "instance":
    return counts / counts.sum()
  empty = np.flatnonzero(counts == 0)
  if len(empty):
    raise ValueError(f"sampling {policy!r}: class {int(empty[0])} has no training examples "
                     f"({len(empty)} empty classes in all)")
  weights = np.ones_like(counts) if policy == "class_balanced" else np.sqrt(counts)
  return weights / weights.sum()


def sample_indices(labels, policy: str = "class_balanced", seed: int = 0,
                   num_classes: int | None = None) -> tf.data.Dataset:
  """Infinite dataset of int64 indices into `labels` (1-D ints in [0, C)) drawn by `policy`.

  `num_classes` defaults to max(labels) + 1; pass it so an empty last class is caught.
  """
  check_policy(policy)
  labels = np.asarray(labels, dtype=np.int64)
  if labels.ndim != 1 or len(labels) == 0:
    raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
  if labels.min() < 0:
    raise ValueError(f"labels must be >= 0, got {labels.min()}")
  if policy == "instance":
    return _shuffled_passes(len(labels), seed)
  counts = np.bincount(labels, minlength=num_classes or 0)
  if num_classes is not None and len(counts) > num_classes:
    raise ValueError(f"label {labels.max()} is outside [0, {num_classes})")
  probabilities = class_probabilities(counts, policy)
  return _class_then_example(labels, counts, probabilities, policy == "class_balanced", seed)


def _shuffled_passes(num_examples: int, seed: int) -> tf.data.Dataset:
  def one_pass(pass_number):
    return tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64),
                                                               pass_number])))
  return tf.data.Dataset.counter().flat_map(one_pass)


def _class_then_example(labels, counts, probabilities, uniform_classes, seed):
  by_class = tf.constant(np.argsort(labels, kind="stable"), tf.int64)
  starts = tf.constant(np.cumsum(counts) - counts, tf.int64)
  counts_tensor = tf.constant(counts, tf.int64)
  log_probabilities = tf.constant(np.log(probabilities)[np.newaxis], tf.float32)
  num_classes = len(counts)

  def block(block_number):
    class_seed, example_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.stack([tf.constant(seed, tf.int64), block_number]), num=2))
    if uniform_classes:
      classes = tf.random.stateless_uniform(
          [_BLOCK_SIZE], class_seed, minval=0, maxval=num_classes, dtype=tf.int64)
    else:
      classes = tf.random.stateless_categorical(
          log_probabilities, _BLOCK_SIZE, class_seed, dtype=tf.int64)[0]
    class_counts = tf.gather(counts_tensor, classes)
    within = tf.cast(tf.random.stateless_uniform([_BLOCK_SIZE], example_seed, dtype=tf.float64)
                     * tf.cast(class_counts, tf.float64), tf.int64)
    within = tf.minimum(within, class_counts - 1)
    return tf.gather(by_class, tf.gather(starts, classes) + within)

  return tf.data.Dataset.counter().map(block).unbatch()
