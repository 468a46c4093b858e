"""`--sampling_method=resample` over a split with random access, as a function of the
stream position: a resumed run starts at any position without replaying the stream.

The reference (input_pipeline.py oversample_classes + undersampling_filter, then
deterministic_data's 1,000-record shuffle buffer) gives each record it reads
floor(r) + Bernoulli(r - floor(r)) copies in a row, r = p_c / (n_c / N) (r < 1: one copy
kept with probability r, the same law), then shuffles the copies through the buffer. Here:

  pass k      a stateless permutation of the N records keyed by (seed, pass k), as the
              `instance` passes of sampling.py.
  copies      per class, how many of its n_c records get the extra copy in pass k is drawn
              as Binomial(n_c, r_c - floor(r_c)) (stateless, keyed by (seed, k)), and which
              ones as those with the smallest of a stateless uniform key per record (keyed
              by (seed, k)): a uniformly random subset of that size, which is the joint law
              of the reference's independent Bernoulli draws. A pass's length
              is then a sum over C classes, so a position is located by summing pass
              lengths, C numbers per pass (not N records per pass), then a cumulative sum
              inside the one pass that holds it.
  the buffer  a record copy at position j of the expanded stream leaves at key j + D, D
              geometric with mean 1,000, as a record waits in a full 1,000-slot buffer that
              emits a uniformly chosen slot per step; copies come out in key order (ties
              by j). D is capped at 16,384 (probability < 1e-7), so the order at a position
              depends only on the 16,384 positions before it: a stream started at P runs
              four windows of 4,096 before P and emits from P on.

What differs from the reference: it reads the TFDS files in a shuffled order with the
records of each file in stored order, where each pass here is a fresh permutation of all
records; its random draws are stateful float32 ops and its buffer holds exactly 1,000
records, where here the draws are stateless (float64 ratios) and the number of copies
waiting varies around 1,000 (the delay of each copy has the buffer's law). The statistics
that matter downstream (runs of copies, the share of a 128-batch repeating an image, class
counts over a window) match tf.data's buffer over the same copies: tests/data/
test_positional_resample.py measures both.

`progressive`: t is read once per pass, when the pass's copies are drawn (Kang et al. move
t per epoch). A stream resumed at P locates P with the t it reads at build time for every
earlier pass, so with a moving t the resumed stream is the one that value would have drawn.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cbd_tf.data import stream_sampling

SHUFFLE_BUFFER = stream_sampling.RESAMPLE_SHUFFLE_BUFFER
WINDOW = 4096
# Delays are capped at _WARMUP_WINDOWS * WINDOW = 16,384: 0.999 ** 16,384 < 1e-7.
_WARMUP_WINDOWS = 4
MAX_DELAY = _WARMUP_WINDOWS * WINDOW
# Second word of the stateless seeds: _PASSES is sampling.py's (the same pass order as
# `instance`); sampling.py uses 1-4, teacher_views.py 5-6.
_PASSES, _EXTRAS, _WHICH_EXTRA, _DELAYS = 3, 8, 9, 10


def resampled_indices(labels: np.ndarray, counts: np.ndarray, seed: int, class_ratios,
                      start: int = 0) -> tf.data.Dataset:
  """Infinite int64 indices into `labels`, from stream position `start`.

  `class_ratios()` gives r_c = p_c / (n_c / N) as a float64 [C] tensor; it is called once
  per pass (progressive reads t there) and once to locate `start`.
  """
  plan = PassPlan(labels, counts, seed, class_ratios)
  first_window = int(start) // WINDOW
  warmup_window = max(0, first_window - _WARMUP_WINDOWS)
  first_pass, offset = plan.locate(warmup_window * WINDOW)

  def pass_indices(pass_number):
    skip = tf.where(pass_number == first_pass, tf.constant(offset, tf.int64),
                    tf.constant(0, tf.int64))
    return plan.expanded(pass_number)[skip:]

  # rebatch slices the passes into windows: unbatch().batch() costs ~1 us per element.
  expanded = (tf.data.Dataset.counter(first_pass).map(_plain(pass_indices))
              .rebatch(WINDOW, drop_remainder=True))
  windows = tf.data.Dataset.zip(tf.data.Dataset.counter(warmup_window), expanded)
  empty = tf.zeros([0], tf.int64)
  delays = _delay_reader(seed)

  def shuffle_window(waiting, window):
    """Copies still waiting + this window's -> (those still waiting, (output position of
    the first copy out, the copies out in key order))."""
    window_number, indices = window
    waiting_indices, waiting_keys = waiting
    keys = window_number * WINDOW + tf.range(WINDOW, dtype=tf.int64) + delays(window_number)
    all_indices = tf.concat([waiting_indices, indices], 0)
    all_keys = tf.concat([waiting_keys, keys], 0)
    order = tf.argsort(all_keys, stable=True)  # waiting copies come first: ties by position
    all_indices, all_keys = tf.gather(all_indices, order), tf.gather(all_keys, order)
    leaving = tf.reduce_sum(tf.cast(all_keys < (window_number + 1) * WINDOW, tf.int32))
    # Every copy with a key below window * W has left: the position of this window's first.
    first_position = window_number * WINDOW - tf.size(waiting_indices, out_type=tf.int64)
    return ((all_indices[leaving:], all_keys[leaving:]),
            (window_number, first_position, all_indices[:leaving]))

  def from_start(window_number, first_position, indices):
    skip = tf.clip_by_value(int(start) - first_position, 0, tf.size(indices, tf.int64))
    return indices[skip:]

  shuffled = windows.scan((empty, empty), _plain(shuffle_window))
  # The warm-up windows only fill the waiting copies: their positions are not yet known.
  shuffled = shuffled.filter(lambda window_number, *_: window_number >= first_window)
  return shuffled.map(_plain(from_start)).unbatch()


class PassPlan:
  """Each pass's permutation and copy counts, stateless in (seed, pass)."""

  def __init__(self, labels, counts, seed, class_ratios):
    self.num_records = len(labels)
    self.num_classes = len(counts)
    self.seed = seed
    self.class_ratios = class_ratios
    self.labels = tf.constant(labels, tf.int64)
    self.counts = tf.constant(counts, tf.int64)

  def extras(self, pass_number):
    """(copies every record of class c gets, how many of class c's records get one more)."""
    ratios = self.class_ratios()
    whole = tf.floor(ratios)
    extra = tf.random.stateless_binomial(
        [self.num_classes], _seed(self.seed, _EXTRAS, pass_number),
        counts=tf.cast(self.counts, tf.float64), probs=ratios - whole, output_dtype=tf.int64)
    return tf.cast(whole, tf.int64), extra

  def length(self, pass_number):
    whole, extra = self.extras(pass_number)
    return tf.reduce_sum(whole * self.counts + extra)

  def expanded(self, pass_number):
    """The pass's records in its order, each repeated by its copy count."""
    whole, extra = self.extras(pass_number)
    # Which of a class's records get the extra copy: the `extra` with the smallest uniform
    # keys, found by one sort by class + key (a per-class RandomIndexShuffle costs ~60x).
    keys = tf.random.stateless_uniform([self.num_records], _seed(self.seed, _WHICH_EXTRA,
                                                                  pass_number), dtype=tf.float64)
    by_class_then_key = tf.argsort(tf.cast(self.labels, tf.float64) + keys)
    # Made here from C counts, not held as N-long constants: tf.data copies its functions'
    # constants when it rewrites the graph, which costs seconds at 437k records.
    sorted_classes = tf.repeat(tf.range(self.num_classes, dtype=tf.int64), self.counts)
    rank_in_class = (tf.range(self.num_records, dtype=tf.int64) -
                     tf.gather(tf.cumsum(self.counts, exclusive=True), sorted_classes))
    sorted_copies = (tf.gather(whole, sorted_classes) +
                     tf.cast(rank_in_class < tf.gather(extra, sorted_classes), tf.int64))
    copies = tf.scatter_nd(by_class_then_key[:, None], sorted_copies, [self.num_records])
    order = tf.raw_ops.RandomIndexShuffle(
        index=tf.range(self.num_records, dtype=tf.int64),
        seed=tf.stack([tf.constant(self.seed, tf.int64), tf.constant(_PASSES, tf.int64),
                       pass_number]),
        max_index=tf.constant(self.num_records - 1, tf.int64), rounds=4)
    return tf.repeat(order, tf.gather(copies, order))

  def locate(self, position: int) -> tuple[int, int]:
    """(pass, offset in its expanded records) of expanded-stream `position`: pass lengths
    summed until they pass it, C numbers per pass."""

    def find(position):
      def unfinished(pass_number, before, length):
        return before + length <= position

      def next_pass(pass_number, before, length):
        return pass_number + 1, before + length, self.length(pass_number + 1)
      zero = tf.constant(0, tf.int64)
      pass_number, before, _ = tf.while_loop(unfinished, next_pass,
                                             (zero, zero, self.length(zero)))
      return pass_number, position - before
    # Run as a graph (a one-element dataset): an eager loop costs ~1 ms per pass.
    found = tf.data.Dataset.from_tensors(tf.constant(position, tf.int64)).map(_plain(find))
    pass_number, offset = found.get_single_element()
    return int(pass_number), int(offset)


def _delay_reader(seed):
  """window -> the WINDOW copies' delays: geometric, P(D >= d) = (1 - 1/B) ** d, capped."""
  log_stay = float(np.log1p(-1.0 / SHUFFLE_BUFFER))

  def delays(window_number):
    uniform = tf.random.stateless_uniform([WINDOW], _seed(seed, _DELAYS, window_number),
                                          dtype=tf.float64)
    delay = tf.floor(tf.math.log1p(-uniform) / log_stay)  # log1p(-u) > -inf: u < 1
    return tf.cast(tf.minimum(delay, MAX_DELAY), tf.int64)
  return delays


def _seed(seed, stream, number):
  return tf.random.experimental.stateless_fold_in(
      tf.constant([seed, stream], tf.int64), tf.cast(number, tf.int64))


def _plain(function):
  # Plain TF ops: autograph's conversion would take most of the build time.
  return tf.autograph.experimental.do_not_convert(function)
