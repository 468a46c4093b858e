"""`resample` over a split (positional_resample.py): the reference's copy law, the reference
buffer's statistics, and a start at any position in constant time."""

import time

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from cbd_tf.data import positional_resample, sampling
from tools import bench_sampling

SEED = 3
MIN_P_VALUE = 1e-4
BATCH = 128
# 100 classes, 200 down to 2 examples (4,311): copies in runs of up to 22.
TINY_COUNTS = bench_sampling.class_counts(*bench_sampling.TINY_PROFILES["tiny"])
TINY_LABELS = np.repeat(np.arange(len(TINY_COUNTS)), TINY_COUNTS)


def class_balanced_ratios(counts):
  ratios = sampling.class_probabilities(counts, "class_balanced") / (counts / counts.sum())
  return tf.constant(ratios, tf.float64)


def resampled(labels, start=0, count=BATCH):
  dataset = sampling.sample_indices(labels, "class_balanced", method="resample", seed=SEED,
                                    start=start)
  return next(iter(dataset.batch(count))).numpy()


def test_copies_per_pass_follow_the_reference_law():
  """floor(r) + Bernoulli(r - floor(r)) copies of every record, independently: per class the
  extras are Binomial(n_c, frac), and each record of a class is as likely to get one."""
  counts = np.array([50, 13, 7, 3])
  labels = np.repeat(np.arange(4), counts)
  ratios = class_balanced_ratios(counts)
  plan = positional_resample.PassPlan(labels, counts, SEED, lambda: ratios)
  whole = np.floor(ratios.numpy()).astype(int)
  fraction = ratios.numpy() - whole
  passes = 400
  copies = np.stack([np.bincount(plan.expanded(tf.constant(k, tf.int64)).numpy(),
                                 minlength=len(labels)) for k in range(passes)])
  lengths = [int(plan.length(tf.constant(k, tf.int64))) for k in range(passes)]
  np.testing.assert_array_equal(copies.sum(axis=1), lengths)
  extra = copies - whole[labels]
  assert set(np.unique(extra)) == {0, 1}
  for class_id, count in enumerate(counts):
    members = extra[:, labels == class_id]
    binomial = stats.binomtest(int(members.sum()), passes * count, fraction[class_id])
    assert binomial.pvalue > MIN_P_VALUE, (class_id, members.mean(), fraction[class_id])
    uniform = stats.chisquare(members.sum(axis=0))
    assert uniform.pvalue > MIN_P_VALUE, (class_id, members.sum(axis=0))


def test_each_pass_is_a_fresh_order_with_runs_of_copies():
  counts = np.array([50, 13, 7, 3])
  labels = np.repeat(np.arange(4), counts)
  ratios = class_balanced_ratios(counts)
  plan = positional_resample.PassPlan(labels, counts, SEED, lambda: ratios)
  first, second = (plan.expanded(tf.constant(k, tf.int64)).numpy() for k in (0, 1))
  # Copies in a row, as the reference's flat_map; records in pass order.
  starts = np.flatnonzero(np.diff(first, prepend=-1))
  runs = np.diff(np.append(starts, len(first)))
  records = first[starts]
  assert len(np.unique(records)) == len(records)  # each record's copies in one run
  whole = np.floor(ratios.numpy()).astype(int)[labels[records]]
  assert np.all((runs == np.maximum(whole, 1)) | (runs == whole + 1))
  assert runs.max() >= 6  # the 3-record class: r = 73 / (4 * 3) ~ 6.1
  assert not np.array_equal(first[:20], second[:20])


@pytest.mark.slow
def test_statistics_match_the_reference_buffer(monkeypatch):
  """Against the reference's tf.data ops (sample_stream's resample: copies in a row, then a
  1,000-record shuffle buffer) over the same counts: the share of a 128-batch repeating an
  index, how often an index came back within 1 / 16 / 128 / 1,024 positions, and the
  dispersion of class counts over windows of 1,280. Each statistic is compared per block of
  2,048 draws; a difference over 4 standard errors fails. The same check tells a 700-record
  buffer and independent draws apart, so it can fail. (The reference's tf.data ops draw
  from the global seed too, which earlier tests in the process may set: the test holds
  whichever stream they draw, as it did alone and in the suite.)"""
  draws = 65_536
  source = tf.data.Dataset.range(len(TINY_LABELS)).shuffle(len(TINY_LABELS), seed=1).map(
      lambda index: (index, tf.gather(tf.constant(TINY_LABELS), index)))
  reference = sampling.sample_stream(source, TINY_COUNTS, "class_balanced", "resample",
                                     seed=SEED).map(lambda index, label: index)
  reference = next(iter(reference.batch(draws))).numpy()
  ours = resampled(TINY_LABELS, count=draws)
  # Skip the first 4,096: the reference's buffer starts full of the first records.
  reference_stats, our_stats = block_statistics(reference[4096:]), block_statistics(ours[4096:])
  for name, z in z_scores(reference_stats, our_stats).items():
    assert abs(z) < 4, (name, z, reference_stats[name].mean(), our_stats[name].mean())

  monkeypatch.setattr(positional_resample, "SHUFFLE_BUFFER", 700)
  smaller_buffer = block_statistics(resampled(TINY_LABELS, count=draws)[4096:])
  assert abs(z_scores(reference_stats, smaller_buffer)["dup128"]) > 4
  independent = sampling.sample_indices(TINY_LABELS, "class_balanced", seed=SEED)
  independent = block_statistics(next(iter(independent.batch(draws))).numpy()[4096:])
  differences = z_scores(reference_stats, independent)
  # Runs of copies show in these; an index coming back at the next position or within
  # 1,024 is about as rare or as common with independent draws at these counts.
  for name in ("dup128", "back<=16", "back<=128", "dispersion"):
    assert abs(differences[name]) > 4, differences


def block_statistics(indices, block=2048, window=1280):
  blocks = indices[:len(indices) // block * block].reshape(-1, block)
  result = {"dup128": np.array([np.mean([1 - len(np.unique(b)) / BATCH
                                         for b in one.reshape(-1, BATCH)]) for one in blocks])}
  last_seen, back = {}, np.full(len(indices), np.iinfo(np.int64).max)
  for position, index in enumerate(indices):
    if index in last_seen:
      back[position] = position - last_seen[index]
    last_seen[index] = position
  for horizon in (1, 16, 128, 1024):
    result[f"back<={horizon}"] = (back[:blocks.size] <= horizon).reshape(-1, block).mean(1)
  expected = sampling.class_probabilities(TINY_COUNTS, "class_balanced") * window
  windows = indices[:len(indices) // window * window].reshape(-1, window)
  result["dispersion"] = np.array([
      np.sum((np.bincount(TINY_LABELS[w], minlength=len(TINY_COUNTS)) - expected) ** 2 /
             expected) / len(TINY_COUNTS) for w in windows])
  return result


def z_scores(first, second):
  return {name: (second[name].mean() - first[name].mean()) /
          np.sqrt(first[name].var() / len(first[name]) + second[name].var() / len(second[name]))
          for name in first}


@pytest.fixture(scope="module")
def imagenet_lt_labels():
  counts = bench_sampling.class_counts(*bench_sampling.PROFILES["imagenet_lt"])
  return np.repeat(np.arange(len(counts)), counts)


def test_started_at_any_position_equals_the_uninterrupted_stream(imagenet_lt_labels):
  """Starts inside the first window, at window edges, past the warm-up, across a pass."""
  uninterrupted = resampled(imagenet_lt_labels, count=130_000)
  for start in (1, 4095, 4096, 20_000, 115_800):
    np.testing.assert_array_equal(resampled(imagenet_lt_labels, start, 1000),
                                  uninterrupted[start:start + 1000], err_msg=str(start))


def test_start_at_position_1e8_is_as_fast_and_equal(imagenet_lt_labels):
  position = 10**8
  started = time.perf_counter()
  resampled(imagenet_lt_labels, 0)
  at_zero = time.perf_counter() - started
  started = time.perf_counter()
  late = resampled(imagenet_lt_labels, position)
  at_late = time.perf_counter() - started
  print(f"build + first batch: {at_zero:.2f} s at 0, {at_late:.2f} s at {position:,}")
  # Locating the pass sums 863 passes of 1,000 classes: ~0.1 s on 2 idle cores.
  assert at_late < 2 * at_zero + 1.0
  earlier = resampled(imagenet_lt_labels, position - 5000, 5000 + BATCH)[5000:]
  np.testing.assert_array_equal(late, earlier)
  assert late.min() >= 0 and late.max() < len(imagenet_lt_labels)


def test_progressive_resumed_with_a_variable_uses_its_value_for_earlier_passes():
  """A resumed progressive stream locates its start with the t read at build time: the
  stream a fixed t would draw from that position."""
  counts = np.array([300, 120, 50, 20, 8])
  labels = np.repeat(np.arange(len(counts)), counts)
  start = 50_003
  moving = resampled_progressive(labels, tf.Variable(0.3, dtype=tf.float64), start, 500)
  fixed = resampled_progressive(labels, 0.3, start, 500)
  np.testing.assert_array_equal(moving, fixed)
  assert not np.array_equal(moving, resampled_progressive(labels, 0.6, start, 500))


def resampled_progressive(labels, progress, start, count):
  dataset = sampling.sample_indices(labels, "progressive", method="resample", seed=SEED,
                                    progress=progress, start=start)
  return next(iter(dataset.batch(count))).numpy()
