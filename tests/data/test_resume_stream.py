"""A resumed run's training stream: built at any step in constant time, equal to the
uninterrupted stream from that step on."""

import time

import numpy as np
import pytest
import tensorflow as tf

from cbd_tf.data import sampling
from tools import bench_sampling

BATCH = 128
LATE_STEP = 10_000_000
SEED = 7
# Far above the < 1 s measured on an idle 2-core machine: CI machines are loaded.
MAX_BUILD_SECONDS = 10.0
SMALL_LABELS = np.repeat(np.arange(5), [40, 20, 10, 6, 4])


@pytest.fixture(scope="module")
def inaturalist_labels():
  counts = bench_sampling.class_counts(*bench_sampling.PROFILES["inaturalist_2018"])
  return np.repeat(np.arange(len(counts)), counts)


def batches(labels, policy, step, count, batch=BATCH, method="auto", progress=None):
  """`count` batches of (indices, seeds) of the stream started at global step `step`."""
  stream = iter(sampling.sample_examples(labels, policy, SEED, start=step * batch,
                                         progress=progress, method=method).batch(batch))
  return [tuple(part.numpy() for part in next(stream)) for _ in range(count)]


def fold_in_seeds(positions):
  """The documented per-example seed, stateless_fold_in((seed, 4), position), one at a time."""
  key = tf.constant([SEED, 4], tf.int64)
  return np.stack([tf.random.experimental.stateless_fold_in(key, tf.constant(p, tf.int64))
                   .numpy() for p in positions])


@pytest.mark.parametrize("policy", ["instance", "class_balanced"])
def test_resume_at_step_ten_million_is_fast_and_equal(inaturalist_labels, policy):
  start = time.perf_counter()
  (indices, seeds), = batches(inaturalist_labels, policy, LATE_STEP, 1)
  elapsed = time.perf_counter() - start
  print(f"{policy}: build + first batch at step {LATE_STEP:,} took {elapsed:.3f} s")
  assert elapsed < MAX_BUILD_SECONDS

  # The same batch as the 4th of a stream started 3 steps earlier (mid-block start).
  earlier_indices, earlier_seeds = batches(inaturalist_labels, policy, LATE_STEP - 3, 4)[3]
  np.testing.assert_array_equal(indices, earlier_indices)
  np.testing.assert_array_equal(seeds, earlier_seeds)
  # And in a stream started 5,000 examples earlier, a start in the block before.
  position = LATE_STEP * BATCH
  stream = iter(sampling.sample_examples(inaturalist_labels, policy, SEED,
                                         start=position - 5000).batch(5000 + BATCH))
  from_before = next(stream)[0].numpy()[5000:]
  np.testing.assert_array_equal(indices, from_before)

  np.testing.assert_array_equal(seeds, fold_in_seeds(position + np.arange(BATCH)))
  assert indices.min() >= 0 and indices.max() < len(inaturalist_labels)
  assert len(np.unique(indices)) > BATCH * 0.95  # draws, not one repeated index


def test_instance_pass_at_step_ten_million_is_a_permutation(inaturalist_labels):
  """The pass holding step 10,000,000 visits every example once, and the resumed batch
  is that pass's slice at the position's offset."""
  num_examples = len(inaturalist_labels)
  position = LATE_STEP * BATCH
  pass_start = position // num_examples * num_examples
  stream = iter(sampling.sample_indices(inaturalist_labels, "instance", seed=SEED,
                                        start=pass_start).batch(num_examples))
  one_pass = next(stream).numpy()
  np.testing.assert_array_equal(np.sort(one_pass), np.arange(num_examples))
  (indices, _), = batches(inaturalist_labels, "instance", LATE_STEP, 1)
  offset = position - pass_start
  expected = np.concatenate([one_pass, next(stream).numpy()])[offset:offset + BATCH]
  np.testing.assert_array_equal(indices, expected)


@pytest.mark.parametrize("method", ["index", "per_class", "rejection", "resample"])
@pytest.mark.parametrize("policy", sampling.POLICIES)
def test_resumed_stream_equals_uninterrupted_at_a_small_step(policy, method):
  progress = 0.4 if policy == "progressive" else None
  uninterrupted = batches(SMALL_LABELS, policy, 0, 6, batch=8, method=method,
                          progress=progress)
  resumed = batches(SMALL_LABELS, policy, 3, 3, batch=8, method=method, progress=progress)
  for (indices, seeds), (expected_indices, expected_seeds) in zip(resumed, uninterrupted[3:]):
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(seeds, expected_seeds)
  np.testing.assert_array_equal(resumed[0][1], fold_in_seeds(range(24, 32)))


def test_progressive_resume_reads_the_variable_when_blocks_are_drawn():
  progress = tf.Variable(1.0, dtype=tf.float64)
  (indices, _), = batches(SMALL_LABELS, "progressive", LATE_STEP, 1, progress=progress)
  fixed, = batches(SMALL_LABELS, "progressive", LATE_STEP, 1, progress=1.0)
  np.testing.assert_array_equal(indices, fixed[0])


def test_negative_start_is_an_error():
  with pytest.raises(ValueError, match="start must be >= 0, got -1"):
    sampling.sample_examples(SMALL_LABELS, start=-1)
