"""Which training example comes next: infinite, seeded streams drawn by a sampling policy.

Policies say how likely each class is (examples within a class are equally likely):
  instance        p_c = n_c / N (every example equally likely)
  class_balanced  p_c = 1 / C
  sqrt            p_c proportional to sqrt(n_c)
  progressive     p_c(t) = (1 - t) * n_c / N + t / C (Kang et al. 2020), t = `progress`
                  in [0, 1]: a float, or a tf.Variable read each time a block is drawn

Methods say how the stream is made. Each reaches the policy's class distribution exactly
in expectation; they differ in cost and in what the source must offer (numbers from
tools/bench_sampling.py at 8,142 classes, 2 shared CPU cores):

  method     source needs   reads/example  cost
  index      random access  1              one argsort; in-graph blocks of 4,096 draws
                                           (class, then example). < 1 s setup, ~0.5M/s,
                                           ~40 MB. What `auto` picks for arrays.
  per_class  random access  1              one shuffled, repeated dataset per class, picked
                                           by the in-graph class stream through
                                           choose_from_datasets: ~1 minute setup (Python
                                           builds 3 dataset ops per class), ~10k/s, ~250 MB.
                                           No repeat of an example inside a class's pass.
  rejection  a stream       ~1/acceptance  Dataset.rejection_resample, initial distribution
                            (23 ImageNet-   given: ~300/s, every record zips in a C-long
                            LT, 27 iNat)    acceptance vector. progressive: our own O(1) filter.
  resample   a stream       1              the reference: floor(r) + Bernoulli copies of each
                                           record in a row, or kept with probability r,
                                           r = p_c / (n_c / N); then a 1,000-record shuffle
                                           buffer. ~4k/s.

`resample` repeats every tail record r times in a row (r = 23 for a 5-image ImageNet-LT
class, 27 for a 2-image iNaturalist class), and the shuffle buffer only spreads those
copies over about a buffer's length: 12-15% of a 128-batch repeats an image already in it,
against 0.1-0.3% for independent draws, and class counts over a short window are lumpy.
It is here to reproduce the reference, not as a default.

Sources without random access (TFRecord-backed TFDS data read in file order) use the
stream methods through `sample_stream`: pass (example, label) pairs with the image still
encoded (tfds.decode.SkipDecoding) and decode after sampling, so rejected records are read
and parsed but never decoded. `index` and `per_class` need random access (an array of
labels plus a way to fetch example i, e.g. images in memory or an ArrayRecord source).

`progress` for progressive sampling is read when a block of 4,096 classes is drawn (index,
per_class) or per record (rejection, resample); draws already made (a block, the prefetch
buffer, resample's shuffle buffer) keep the value they were drawn with.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

POLICIES = ("instance", "class_balanced", "sqrt", "progressive")
METHODS = ("auto", "index", "per_class", "rejection", "resample")
STREAM_METHODS = ("auto", "rejection", "resample")
RESAMPLE_SHUFFLE_BUFFER = 1000  # the reference's config.shuffle_buffer_size
# Above this many records read per example kept, `auto` on a stream prefers `resample`.
MAX_REJECTION_READS = 4.0
_BLOCK_SIZE = 4096


def check_policy(policy: str) -> None:
  if policy not in POLICIES:
    raise ValueError(f"unknown sampling {policy!r}; valid: {', '.join(POLICIES)}")


def check_method(method: str, valid=METHODS) -> None:
  if method not in valid:
    raise ValueError(f"unknown sampling method {method!r}; valid: {', '.join(valid)}")


def class_probabilities(class_counts, policy: str, progress: float = 0.0) -> np.ndarray:
  """Probability of drawing each class under `policy` (`progress` only for progressive)."""
  check_policy(policy)
  counts = np.asarray(class_counts, dtype=np.float64)
  instance = counts / counts.sum()
  if policy == "instance":
    return instance
  empty = np.flatnonzero(counts == 0)
  if len(empty):
    raise ValueError(f"sampling {policy!r}: class {int(empty[0])} has no training examples "
                     f"({len(empty)} empty classes in all)")
  if policy == "progressive":
    progress = _check_progress_value(progress)
    return (1 - progress) * instance + progress / len(counts)
  weights = np.ones_like(counts) if policy == "class_balanced" else np.sqrt(counts)
  return weights / weights.sum()


def records_per_example(class_counts, policy: str, progress: float = 0.0) -> float:
  """Records a rejection sampler reads per example it keeps (1 / acceptance rate)."""
  counts = np.asarray(class_counts, dtype=np.float64)
  instance = counts / counts.sum()
  ratio = np.divide(class_probabilities(counts, policy, progress), instance,
                    out=np.zeros_like(counts), where=counts > 0)
  return float(ratio.max())


def sample_indices(labels, policy: str = "class_balanced", method: str = "index", seed: int = 0,
                   num_classes: int | None = None, progress=None) -> tf.data.Dataset:
  """Infinite dataset of int64 indices into `labels` (1-D ints in [0, C)) drawn by `policy`.

  `num_classes` defaults to max(labels) + 1; pass it so an empty last class is caught.
  `method` is one of METHODS (module docstring); `auto` picks `index`, since `labels` is an
  array and the caller fetches example i itself. The stream methods run over an
  instance-sampled stream of (index, label), so nothing is decoded for rejected records.
  `progress` is t for `progressive`: a float in [0, 1] or a tf.Variable.
  """
  check_policy(policy)
  check_method(method)
  labels = np.asarray(labels, dtype=np.int64)
  if labels.ndim != 1 or len(labels) == 0:
    raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
  if labels.min() < 0:
    raise ValueError(f"labels must be >= 0, got {labels.min()}")
  counts = np.bincount(labels, minlength=num_classes or 0)
  if num_classes is not None and len(counts) > num_classes:
    raise ValueError(f"label {labels.max()} is outside [0, {num_classes})")
  class_probabilities(counts, policy)  # raises on an empty class the policy would draw
  read_progress = _progress_reader(policy, progress)
  method = "index" if method == "auto" else method
  if method == "index" and policy == "instance":
    return _shuffled_passes(len(labels), seed)
  if method in ("index", "per_class"):
    by_class = np.argsort(labels, kind="stable")
    classes = _class_blocks(counts, policy, seed, read_progress)
    if method == "index":
      return _class_then_example(by_class, counts, classes, seed)
    return _per_class_datasets(by_class, counts, classes, seed)
  label_tensor = tf.constant(labels)
  records = _shuffled_passes(len(labels), seed).map(
      lambda index: (index, tf.gather(label_tensor, index)))
  kept = _stream(records, counts, policy, method, seed, read_progress)
  return kept.map(lambda index, label: index)


def sample_stream(examples: tf.data.Dataset, class_counts, policy: str = "class_balanced",
                  method: str = "auto", seed: int = 0, progress=None) -> tf.data.Dataset:
  """Infinite dataset of (example, label) drawn by `policy` from a source without random access.

  `examples` yields (example, label) pairs, shuffled as well as the source allows (file
  shuffling plus a buffer); it is repeated here. `class_counts` are the source's training
  counts, known in advance (TFDS metadata or one counting pass). Keep images encoded in
  `examples` and decode after this: the stream methods read every record but keep only some.
  `method="auto"` picks `rejection` when it reads at most MAX_REJECTION_READS records per
  example kept (never true at ImageNet-LT or iNaturalist imbalance), else `resample`.
  tf.data's rejection_resample iterates `examples` twice: it mixes the raw stream in.
  """
  check_policy(policy)
  check_method(method, STREAM_METHODS)
  counts = np.asarray(class_counts, dtype=np.int64)
  class_probabilities(counts, policy)
  read_progress = _progress_reader(policy, progress)
  if method == "auto":
    method = stream_method(counts, policy)
  return _stream(examples.repeat(), counts, policy, method, seed, read_progress)


def stream_method(class_counts, policy: str) -> str:
  """What `auto` picks for a stream: `rejection` (exact, independent draws) unless it reads
  more than MAX_REJECTION_READS records per example kept, then `resample` (one read each)."""
  worst_progress = 1.0 if policy == "progressive" else 0.0
  reads = records_per_example(class_counts, policy, worst_progress)
  return "rejection" if reads <= MAX_REJECTION_READS else "resample"


def _check_progress_value(progress) -> float:
  value = float(progress)
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"progress must be in [0, 1], got {value}")
  return value


def _progress_reader(policy: str, progress):
  """A function giving t as a float64 tensor when called inside the stream, or None."""
  if policy != "progressive":
    return None
  if progress is None:
    raise ValueError("sampling 'progressive' needs progress: a float in [0, 1] or a "
                     "tf.Variable the training loop updates")
  if isinstance(progress, tf.Variable):
    # Read when a block is drawn, so a callback's assign() reaches the stream.
    return lambda: tf.clip_by_value(tf.cast(progress.read_value(), tf.float64), 0.0, 1.0)
  value = _check_progress_value(progress)
  return lambda: tf.constant(value, tf.float64)


def _class_probability_tensor(counts, policy, read_progress):
  """Class probabilities as an in-graph float64 vector (progressive reads t now)."""
  if policy == "progressive":
    instance = tf.constant(counts / counts.sum(), tf.float64)
    progress = read_progress()
    return (1 - progress) * instance + progress / len(counts)
  return tf.constant(class_probabilities(counts, policy), tf.float64)


def _block_seeds(seed, block_number, num):
  return tf.unstack(tf.random.experimental.stateless_split(
      tf.stack([tf.constant(seed, tf.int64), block_number]), num=num))


def _class_blocks(counts, policy, seed, read_progress):
  """block_number -> _BLOCK_SIZE classes drawn by the policy, by stateless random ops."""
  num_classes = len(counts)

  def classes(block_number):
    class_seed, _ = _block_seeds(seed, block_number, 2)
    if policy == "class_balanced":
      return tf.random.stateless_uniform(
          [_BLOCK_SIZE], class_seed, minval=0, maxval=num_classes, dtype=tf.int64)
    # Inverse CDF: O(log C) per draw where a categorical would be O(C).
    cumulative = tf.cumsum(_class_probability_tensor(counts, policy, read_progress))
    uniforms = tf.random.stateless_uniform([_BLOCK_SIZE], class_seed, dtype=tf.float64)
    drawn = tf.searchsorted(cumulative, uniforms * cumulative[-1], side="right",
                            out_type=tf.int64)
    return tf.minimum(drawn, num_classes - 1)
  return classes


def _shuffled_passes(num_examples: int, seed: int) -> tf.data.Dataset:
  def one_pass(pass_number):
    return tf.data.Dataset.from_tensor_slices(tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64),
                                                               pass_number])))
  return tf.data.Dataset.counter().flat_map(one_pass)


def _class_then_example(by_class, counts, classes_of_block, seed):
  by_class = tf.constant(by_class, tf.int64)
  starts = tf.constant(np.cumsum(counts) - counts, tf.int64)
  counts_tensor = tf.constant(counts, tf.int64)

  def block(block_number):
    _, example_seed = _block_seeds(seed, block_number, 2)
    classes = classes_of_block(block_number)
    class_counts = tf.gather(counts_tensor, classes)
    within = tf.cast(tf.random.stateless_uniform([_BLOCK_SIZE], example_seed, dtype=tf.float64)
                     * tf.cast(class_counts, tf.float64), tf.int64)
    within = tf.minimum(within, class_counts - 1)
    return tf.gather(by_class, tf.gather(starts, classes) + within)

  return tf.data.Dataset.counter().map(block).unbatch()


def _per_class_datasets(by_class, counts, classes_of_block, seed):
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


def _uniforms(seed: int) -> tf.data.Dataset:
  """Seeded float64 uniforms in [0, 1), one per element (Dataset.random gives 32 bits)."""
  return tf.data.Dataset.random(seed=seed).map(
      lambda bits: tf.cast(bits % 2**32, tf.float64) / 2.0**32)


def _ratio_reader(counts, policy, read_progress):
  """label -> p_c / (n_c / N) as float64, t read per call for progressive."""
  instance = counts / counts.sum()
  if policy != "progressive":
    ratio = np.divide(class_probabilities(counts, policy), instance,
                      out=np.zeros(len(counts)), where=counts > 0)
    ratio_tensor = tf.constant(ratio, tf.float64)
    return lambda label: tf.gather(ratio_tensor, label)
  # p_c(t) / b_c = (1 - t) + t * N / (C * n_c): O(1) per record, no C-vector per record.
  uniform_ratio = tf.constant(np.divide(1.0 / len(counts), instance, out=np.zeros(len(counts)),
                                        where=counts > 0), tf.float64)

  def ratio(label):
    progress = read_progress()
    return (1 - progress) + progress * tf.gather(uniform_ratio, label)
  return ratio


def _stream(records, counts, policy, method, seed, read_progress):
  """(example, label) stream, instance-distributed -> the policy's distribution."""
  if policy == "instance":
    return records
  ratio = _ratio_reader(counts, policy, read_progress)
  if method == "rejection":
    return _rejection(records, counts, policy, seed, ratio)
  return _resample(records, seed, ratio)


def _rejection(records, counts, policy, seed, ratio):
  if policy != "progressive":
    # tf.data's own resampler; it also mixes in the raw stream where that is exact.
    resampled = records.rejection_resample(
        lambda example, label: tf.cast(label, tf.int32),
        target_dist=class_probabilities(counts, policy).astype(np.float32),
        initial_dist=(counts / counts.sum()).astype(np.float32), seed=seed)
    return resampled.map(lambda class_id, record: record)
  # rejection_resample freezes its target when built, so a moving target is filtered here:
  # accept with p_c(t) / b_c divided by its largest value, which is the smallest class's.
  smallest = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))

  def keep(record, uniform):
    return uniform * ratio(tf.constant(smallest, tf.int64)) < ratio(tf.cast(record[1], tf.int64))
  zipped = tf.data.Dataset.zip(records, _uniforms(seed))
  return zipped.filter(keep).map(lambda record, uniform: record)


def _resample(records, seed, ratio):
  """The reference: oversample r >= 1 by floor(r) + Bernoulli(r - floor(r)) copies in a row,
  undersample r < 1 by keeping each copy with probability r, then a shuffle buffer."""
  def copies(record, uniform):
    r = ratio(tf.cast(record[1], tf.int64))
    whole = tf.floor(r)
    extra = tf.cast(uniform <= tf.maximum(r, 1.0) - whole, tf.int64)
    return record, tf.cast(whole, tf.int64) + extra

  def repeat(record, count):
    return tf.data.Dataset.from_tensors(record).repeat(count)

  def keep(record, uniform):
    return uniform <= tf.minimum(ratio(tf.cast(record[1], tf.int64)), 1.0)

  repeated = tf.data.Dataset.zip(records, _uniforms(seed)).map(copies).flat_map(repeat)
  kept = tf.data.Dataset.zip(repeated, _uniforms(seed + 1)).filter(keep)
  return kept.map(lambda record, uniform: record).shuffle(
      RESAMPLE_SHUFFLE_BUFFER, seed=seed)
