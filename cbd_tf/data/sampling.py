"""Which training example comes next: infinite, seeded streams drawn by a sampling policy.

Policies say how likely each class is (examples within a class are equally likely):
  instance        p_c = n_c / N (every example equally likely)
  class_balanced  p_c = 1 / C
  sqrt            p_c proportional to sqrt(n_c)
  progressive     p_c(t) = (1 - t) * n_c / N + t / C (Kang et al. 2020), t = `progress`
                  in [0, 1]: a float, or a tf.Variable read each time a block is drawn

Methods say how the stream is made (`--sampling_method`). Each reaches the policy's class
distribution exactly in expectation:

  index      what training uses (`auto`): in-graph blocks of 4,096 draws (class, then
             example in the class), every example drawn independently; needs random access.
             At 8,142 classes (tools/bench_sampling.py, 2 shared CPU cores): one argsort,
             < 1 s setup, ~0.5M/s, ~40 MB.
  resample   the paper configs' stream: the reference's over/under-sampling, floor(r) +
             Bernoulli copies of each record in a row (r = p_c / (n_c / N)), spread by a
             1,000-record shuffle buffer, so tail images repeat inside a batch (12.5% of a
             128-batch at ImageNet-LT's counts). Over a split it is a function of the
             position (positional_resample.py, ~0.4-1M/s); what differs from the reference
             is said there.
  per_class, rejection
             reference methods, in stream_sampling.py with their costs: 50x (per_class,
             after ~1 minute of setup) to 1,600x (rejection) fewer draws per second.

Positions and resuming. `sample_examples` gives (index, example_seed) pairs. With `index`
both are functions of the example's position P in the stream: block P // 4,096 is drawn
by stateless ops seeded by (seed, block number); `instance` reads pass P // N at P % N
through a stateless permutation keyed by (seed, pass number), so each pass still visits
every example once; example_seed(P) = stateless_fold_in((seed, 4), P), as the reference's
deterministic_data.py folds each example's position into its data rng. `resample` locates
P among its passes (positional_resample.py). A stream started at P (a resumed run)
therefore builds in constant time (resample: plus C binomial draws, ~0.1 us each, per
pass before P) and equals
the uninterrupted stream from P on. per_class and rejection are not functions of the
position: they reach P by skipping, which takes time linear in P.

Sources without random access (TFRecord-backed TFDS data read in file order) use the
stream methods through `sample_stream` (`resample` there is the reference's tf.data ops:
copies by flat_map, a keep filter, tf.data's shuffle buffer): pass (example, label) pairs
with the image still encoded (tfds.decode.SkipDecoding) and decode after sampling, so
rejected records are read and parsed but never decoded. In training every source has
random access. There `rejection` runs over the split in a fresh stateless permutation
each pass, and so does `resample`: the reference instead reads its TFDS files in a
shuffled order each epoch, the records of each file in their stored order.

`progress` for progressive sampling is read when a block of 4,096 classes is drawn (index,
per_class), when a pass's copies are drawn (resample over a split), or per record
(rejection, resample over a stream); draws already made (a block, a pass, the prefetch
buffer, a shuffle buffer) keep the value they were drawn with. In training,
`progress_tracker` makes it and the callback that moves it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import positional_resample, stream_sampling

POLICIES = ("instance", "class_balanced", "sqrt", "progressive")
METHODS = config_lib.SAMPLING_METHODS
STREAM_METHODS = stream_sampling.STREAM_METHODS
_BLOCK_SIZE = 4096
# Second word of the stateless seed of each random stream drawn from one seed.
_CLASSES, _WITHIN_CLASS, _PASSES, _EXAMPLE_SEEDS = 1, 2, 3, 4


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


def sample_examples(labels, policy: str = "class_balanced", seed: int = 0,
                    num_classes: int | None = None, start: int = 0, progress=None,
                    method: str = "auto") -> tf.data.Dataset:
  """Infinite dataset of (index int64, example_seed int64[2]) from example position `start`.

  `index` points into `labels`; `example_seed` is the stateless seed of that example's
  random preprocessing. With `method` index (auto) or resample both are functions of the
  position (module docstring): any `start` builds in constant time and yields what the
  stream started at 0 yields from position `start` on. per_class and rejection skip
  `start` elements.
  Arguments as sample_indices.
  """
  return _sample(labels, policy, method, seed, num_classes, progress, start, with_seeds=True)


def sample_indices(labels, policy: str = "class_balanced", method: str = "index", seed: int = 0,
                   num_classes: int | None = None, progress=None,
                   start: int = 0) -> tf.data.Dataset:
  """Infinite dataset of int64 indices into `labels` (1-D ints in [0, C)) drawn by `policy`.

  `num_classes` defaults to max(labels) + 1; pass it so an empty last class is caught.
  `method` is one of METHODS (module docstring); `auto` picks `index`, since `labels` is an
  array and the caller fetches example i itself. The stream methods run over an
  instance-sampled stream of (index, label), so nothing is decoded for rejected records.
  `progress` is t for `progressive`: a float in [0, 1] or a tf.Variable. `start`: the
  position to begin at, as in sample_examples.
  """
  return _sample(labels, policy, method, seed, num_classes, progress, start, with_seeds=False)


def example_seeds(seed: int, positions) -> tf.Tensor:
  """The int64 [..., 2] stateless seeds of the examples at `positions`:
  stateless_fold_in((seed, 4), position), computed for many positions at once."""
  positions = tf.convert_to_tensor(positions, tf.int64)
  folded = tf.random.stateless_uniform([], tf.constant([seed, _EXAMPLE_SEEDS], tf.int64),
                                       minval=None, maxval=None, dtype=tf.int64)
  return tf.stack([tf.fill(tf.shape(positions), folded), positions], axis=-1)


def sample_stream(examples: tf.data.Dataset, class_counts, policy: str = "class_balanced",
                  method: str = "auto", seed: int = 0, progress=None) -> tf.data.Dataset:
  """Infinite dataset of (example, label) drawn by `policy` from a source without random access.

  `examples` yields (example, label) pairs, shuffled as well as the source allows (file
  shuffling plus a buffer); it is repeated here. `class_counts` are the source's training
  counts, known in advance (TFDS metadata or one counting pass). Keep images encoded in
  `examples` and decode after this: the stream methods read every record but keep only some.
  `method="auto"` picks `rejection` when it reads at most stream_sampling.MAX_REJECTION_READS
  records per example kept (never true at ImageNet-LT or iNaturalist imbalance), else
  `resample`.
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
  """What `auto` picks for a stream under `policy` (stream_sampling.auto_method)."""
  worst_progress = 1.0 if policy == "progressive" else 0.0
  return stream_sampling.auto_method(records_per_example(class_counts, policy, worst_progress))


def progress_tracker(policy: str, start_step: int, total_steps: int
                     ) -> tuple[tf.Variable | None, list[keras.callbacks.Callback]]:
  """`progressive`'s t as a variable at start_step / total_steps, and the callback that moves
  it with training; (None, []) for the other policies. Pass the variable to the input
  pipeline as `progress`. Call outside any strategy scope: the input pipelines read it on
  the host."""
  check_policy(policy)
  if policy != "progressive":
    return None, []
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps}")
  progress = tf.Variable(start_step / total_steps, trainable=False, dtype=tf.float32)
  return progress, [SamplingProgress(progress, total_steps)]


class SamplingProgress(keras.callbacks.Callback):
  """Sets the `progressive` sampler's t = step / total steps before every step."""

  def __init__(self, progress: tf.Variable, total_steps: int):
    super().__init__()
    self.progress = progress
    self.total_steps = total_steps

  def on_train_batch_begin(self, batch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    self.progress.assign(min(step / self.total_steps, 1.0))


def _sample(labels, policy, method, seed, num_classes, progress, start, with_seeds):
  check_policy(policy)
  check_method(method)
  if int(start) < 0:
    raise ValueError(f"start must be >= 0, got {start}")
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
  if method == "index":
    indices_of_block = _index_blocks(labels, counts, policy, seed, read_progress)

    def block(block_number):
      indices = indices_of_block(block_number)
      if not with_seeds:
        return indices
      return indices, example_seeds(seed, _positions(block_number))
    return _from_position(block, start)
  if method == "resample":
    indices = _resampled(labels, counts, policy, seed, read_progress, start)
  else:
    indices = _stream_indices(labels, counts, policy, method, seed, read_progress).skip(start)
  if not with_seeds:
    return indices
  seeds = _from_position(lambda block_number: example_seeds(seed, _positions(block_number)),
                         start)
  return tf.data.Dataset.zip(indices, seeds)


def _positions(block_number):
  return block_number * _BLOCK_SIZE + tf.range(_BLOCK_SIZE, dtype=tf.int64)


def _from_position(block, start: int) -> tf.data.Dataset:
  """block(block_number) -> a block of _BLOCK_SIZE elements; the elements from `start` on."""
  first_block, offset = divmod(int(start), _BLOCK_SIZE)
  # Plain TF ops, Python branches on Python values only: autograph's conversion of the
  # call tree would take most of the build time.
  block = tf.autograph.experimental.do_not_convert(block)
  blocks = tf.data.Dataset.counter(first_block).map(block)
  # Blocks before `start` are never drawn; skipping into the first costs < one block.
  return blocks.unbatch().skip(offset)


def _block_seed(seed, stream, block_number):
  return tf.random.experimental.stateless_fold_in(
      tf.constant([seed, stream], tf.int64), tf.cast(block_number, tf.int64))


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


def _class_blocks(counts, policy, seed, read_progress):
  """block_number -> _BLOCK_SIZE classes drawn by the policy, by stateless random ops."""
  num_classes = len(counts)

  def classes(block_number):
    class_seed = _block_seed(seed, _CLASSES, block_number)
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


def _index_blocks(labels, counts, policy, seed, read_progress):
  """block_number -> the indices at positions [block * B, (block + 1) * B) of the stream."""
  if policy == "instance":
    return _shuffled_pass_blocks(len(labels), seed)
  by_class = tf.constant(np.argsort(labels, kind="stable"), tf.int64)
  starts = tf.constant(np.cumsum(counts) - counts, tf.int64)
  counts_tensor = tf.constant(counts, tf.int64)
  classes_of_block = _class_blocks(counts, policy, seed, read_progress)

  def block(block_number):
    classes = classes_of_block(block_number)
    class_counts = tf.gather(counts_tensor, classes)
    uniforms = tf.random.stateless_uniform(
        [_BLOCK_SIZE], _block_seed(seed, _WITHIN_CLASS, block_number), dtype=tf.float64)
    within = tf.cast(uniforms * tf.cast(class_counts, tf.float64), tf.int64)
    within = tf.minimum(within, class_counts - 1)
    return tf.gather(by_class, tf.gather(starts, classes) + within)
  return block


def _shuffled_pass_blocks(num_examples: int, seed: int):
  """block_number -> indices of shuffled passes over [0, num_examples): position P is
  entry P % N of pass P // N, whose permutation is keyed by (seed, pass number)."""
  def block(block_number):
    positions = _positions(block_number)
    pass_seeds = tf.stack([tf.fill([_BLOCK_SIZE], tf.constant(seed, tf.int64)),
                           tf.fill([_BLOCK_SIZE], tf.constant(_PASSES, tf.int64)),
                           positions // num_examples], axis=1)
    # The raw op: tf.random.experimental.index_shuffle pads an [n, 2] seed along the wrong
    # axis (TF 2.21). rounds=4 as that wrapper.
    return tf.raw_ops.RandomIndexShuffle(
        index=positions % num_examples, seed=pass_seeds,
        max_index=tf.constant(num_examples - 1, tf.int64), rounds=4)
  return block


def _resampled(labels, counts, policy, seed, read_progress, start):
  """`resample` from position `start`, in constant time (positional_resample.py)."""
  if policy == "instance":  # every ratio is 1: the shuffled passes themselves
    return _from_position(_shuffled_pass_blocks(len(labels), seed), start)
  target = None if policy == "progressive" else class_probabilities(counts, policy)
  return positional_resample.resampled_indices(
      labels, counts, seed, stream_sampling.class_ratios(counts, target, read_progress), start)


def _stream_indices(labels, counts, policy, method, seed, read_progress):
  """Indices drawn by per_class or rejection, from position 0."""
  if method == "per_class":
    return stream_sampling.per_class_datasets(
        np.argsort(labels, kind="stable"), counts,
        _class_blocks(counts, policy, seed, read_progress), seed)
  label_tensor = tf.constant(labels)
  pass_blocks = _shuffled_pass_blocks(len(labels), seed)

  def records(block_number):
    indices = pass_blocks(block_number)
    return indices, tf.gather(label_tensor, indices)
  # The split in a fresh permutation each pass (the reference shuffles only its file order).
  kept = _stream(_from_position(records, 0), counts, policy, method, seed, read_progress)
  return kept.map(lambda index, label: index)


def _stream(records, counts, policy, method, seed, read_progress):
  """(example, label) stream, instance-distributed -> the policy's distribution."""
  if policy == "instance":
    return records
  target = None if policy == "progressive" else class_probabilities(counts, policy)
  return stream_sampling.resampled(records, counts, method, seed, target, read_progress)
