"""The reference sampling methods as tf.data streams: per_class, rejection, resample.
Training draws with `index` or, in the paper configs, `resample` over the split
(positional_resample.py, a function of the position); sampling.sample_indices /
sample_examples reach per_class and rejection here through --sampling_method, and
sampling.sample_stream reaches rejection and resample here for sources without random
access. Numbers from tools/bench_sampling.py at 8,142 classes, 2 shared CPU cores:

  method     source needs   reads/example  cost
  per_class  random access  1              one shuffled, repeated dataset per class, picked
                                           by the in-graph class stream through
                                           choose_from_datasets: ~1 minute setup (Python
                                           builds 3 dataset ops per class), ~10k/s, ~250 MB.
                                           No repeat of an example inside a class's pass.
  rejection  a stream       ~1/acceptance  Dataset.rejection_resample, initial distribution
                            (23 ImageNet-   given: ~300/s, every record zips in a C-long
                            LT, 27 iNat)    acceptance vector. progressive: our own O(1) filter.
  resample   a stream       1              the reference's ops: floor(r) + Bernoulli copies
                                           of each record in a row by flat_map, r < 1 kept
                                           with probability r by a filter, r = p_c / (n_c /
                                           N); then tf.data's 1,000-record shuffle buffer.
                                           ~6k/s (tools/bench_sampling.py's resample_stream).

`resample` repeats every tail record r times in a row (r = 23 for a 5-image ImageNet-LT
class, 27 for a 2-image iNaturalist class), and the shuffle buffer only spreads those
copies over about a buffer's length: measured, 12.5% (ImageNet-LT-like) / 15.2%
(iNaturalist-like) of a 128-batch repeats an image already in it, against 0.3% / 0.1% for
independent draws, and class counts over a short window are lumpy.

None of these is a function of the position, so a stream resumed here reaches its step by
skipping, in time linear in the step. `progress` (progressive) is read per block of
classes (per_class) or per record (rejection, resample); resample's shuffle buffer keeps
the value its records were drawn with.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

RESAMPLE_SHUFFLE_BUFFER = 1000  # the reference's config.shuffle_buffer_size
# What sampling.sample_stream takes: sources without random access.
STREAM_METHODS = ("auto", "rejection", "resample")
# Above this many records read per example kept, `auto` on a stream prefers `resample`.
MAX_REJECTION_READS = 4.0


def auto_method(records_per_example: float) -> str:
  """What `auto` picks for a stream: `rejection` (exact, independent draws) unless it reads
  more than MAX_REJECTION_READS records per example kept, then `resample` (one read each)."""
  return "rejection" if records_per_example <= MAX_REJECTION_READS else "resample"


def resampled(records, counts, method: str, seed: int, target=None,
              read_progress=None) -> tf.data.Dataset:
  """An instance-distributed (example, label) stream redrawn by `method` (rejection or
  resample) to class probabilities `target`, or, `target` None, to progressive's p_c(t),
  t read by `read_progress()`."""
  if method not in STREAM_METHODS[1:]:
    raise ValueError(f"unknown stream method {method!r}; valid: {', '.join(STREAM_METHODS[1:])}")
  ratio = ratio_reader(counts, target, read_progress)
  if method == "rejection":
    return rejection(records, counts, target, seed, ratio)
  return resample(records, seed, ratio)


def per_class_datasets(by_class, counts, classes_of_block, seed) -> tf.data.Dataset:
  """One shuffled, repeated dataset per class, picked by the in-graph class stream.

  choose_from_datasets costs O(1) per element where sample_from_datasets draws from C
  weights per element. Building C datasets costs a few ms each in Python (eager dataset
  ops). tf.data's default graph rewrites, run when the iterator is made, grow faster than
  linearly with the graph: ~60 s at 4,000 classes, ~0.05 s with them off.
  """
  starts = np.cumsum(counts) - counts
  datasets = []
  for class_id, (start, count) in enumerate(zip(starts, counts)):
    members = tf.data.Dataset.from_tensor_slices(by_class[start:start + count])
    if count:  # an empty class (instance policy only) has probability 0 and is never chosen
      shuffle_seed = (seed * 1_000_003 + class_id) % (2**31 - 1)
      members = members.shuffle(int(count), seed=shuffle_seed).repeat()
    datasets.append(members)
  choices = tf.data.Dataset.counter().map(classes_of_block).unbatch()
  chosen = tf.data.Dataset.choose_from_datasets(datasets, choices)
  options = tf.data.Options()
  options.experimental_optimization.apply_default_optimizations = False
  return chosen.with_options(options)


def ratio_reader(counts, target, read_progress):
  """label -> p_c / (n_c / N) as float64. `target` holds p_c; for progressive
  (`read_progress` given) p_c moves and t is read per call."""
  instance = counts / counts.sum()
  if read_progress is None:
    ratio = np.divide(target, instance, out=np.zeros(len(counts)), where=counts > 0)
    ratio_tensor = tf.constant(ratio, tf.float64)
    return lambda label: tf.gather(ratio_tensor, label)
  # p_c(t) / b_c = (1 - t) + t * N / (C * n_c): O(1) per record, no C-vector per record.
  uniform_ratio = tf.constant(np.divide(1.0 / len(counts), instance, out=np.zeros(len(counts)),
                                        where=counts > 0), tf.float64)

  def ratio(label):
    progress = read_progress()
    return (1 - progress) + progress * tf.gather(uniform_ratio, label)
  return ratio


def class_ratios(counts, target, read_progress):
  """() -> every class's p_c / (n_c / N) as a float64 [C] tensor; for progressive
  (`read_progress` given) t is read per call."""
  instance = counts / counts.sum()
  if read_progress is None:
    ratio = tf.constant(np.divide(target, instance, out=np.zeros(len(counts)),
                                  where=counts > 0), tf.float64)
    return lambda: ratio
  uniform_ratio = tf.constant(np.divide(1.0 / len(counts), instance, out=np.zeros(len(counts)),
                                        where=counts > 0), tf.float64)

  def ratios():
    progress = read_progress()
    return (1 - progress) + progress * uniform_ratio
  return ratios


def rejection(records, counts, target, seed, ratio) -> tf.data.Dataset:
  """Keeps each (example, label) record with probability ratio / max ratio.

  `target` (p_c) set: tf.data's rejection_resample, which also mixes in the raw stream
  where that is exact. `target` None (progressive): it freezes its target when built, so a
  moving target is filtered here, accepting with p_c(t) / b_c over its largest value,
  which is the smallest class's.
  """
  if target is not None:
    resampled = records.rejection_resample(
        lambda example, label: tf.cast(label, tf.int32),
        target_dist=np.asarray(target, np.float32),
        initial_dist=(counts / counts.sum()).astype(np.float32), seed=seed)
    return resampled.map(lambda class_id, record: record)
  smallest = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))

  def keep(record, uniform):
    return uniform * ratio(tf.constant(smallest, tf.int64)) < ratio(tf.cast(record[1], tf.int64))
  zipped = tf.data.Dataset.zip(records, uniforms(seed))
  return zipped.filter(keep).map(lambda record, uniform: record)


def resample(records, seed, ratio) -> tf.data.Dataset:
  """The reference's ops (input_pipeline.py oversample_classes, then undersampling_filter,
  then deterministic_data's shuffle buffer): r >= 1 gives floor(r) + Bernoulli(r - floor(r))
  copies of a record in a row, r < 1 keeps it with probability r, then a 1,000-record
  shuffle buffer. What differs: the records come in whatever order `records` has (the
  reference: its TFDS files in a shuffled order, each file's records in stored order), and
  the uniforms are seeded float64 (Dataset.random) against its float32 tf.random.uniform,
  the ratio without its `tiny` in the denominator."""
  def copies(record, uniform):
    r = ratio(tf.cast(record[1], tf.int64))
    whole = tf.floor(r)
    extra = tf.cast(uniform <= tf.maximum(r, 1.0) - whole, tf.int64)
    return record, tf.cast(whole, tf.int64) + extra

  def repeat(record, count):
    return tf.data.Dataset.from_tensors(record).repeat(count)

  def keep(record, uniform):
    return uniform <= tf.minimum(ratio(tf.cast(record[1], tf.int64)), 1.0)

  repeated = tf.data.Dataset.zip(records, uniforms(seed)).map(copies).flat_map(repeat)
  kept = tf.data.Dataset.zip(repeated, uniforms(seed + 1)).filter(keep)
  return kept.map(lambda record, uniform: record).shuffle(
      RESAMPLE_SHUFFLE_BUFFER, seed=seed)


def uniforms(seed: int) -> tf.data.Dataset:
  """Seeded float64 uniforms in [0, 1), one per element (Dataset.random gives 32 bits)."""
  return tf.data.Dataset.random(seed=seed).map(
      lambda bits: tf.cast(bits % 2**32, tf.float64) / 2.0**32)
