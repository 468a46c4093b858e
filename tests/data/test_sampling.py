import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from cbd_tf import config as config_lib
from cbd_tf.data import sampling, stream_sampling

# Long-tailed labels: 7 classes, 300 down to 2 examples.
COUNTS = np.array([300, 120, 50, 20, 8, 4, 2])
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)
# Milder imbalance for the stream methods: rejection keeps ~1/3 of what it reads here,
# where it would keep 1/43 of COUNTS, and each record costs tens of microseconds.
STREAM_COUNTS = np.array([40, 20, 10, 6, 4])
STREAM_LABELS = np.repeat(np.arange(len(STREAM_COUNTS)), STREAM_COUNTS)
RANDOM_ACCESS_METHODS = ("index", "per_class")
STREAM_METHODS = ("rejection", "resample")
DRAWS = {"index": 60_000, "per_class": 20_000, "rejection": 4_000, "resample": 4_000}
PROGRESS = 0.3
# A fixed seed keeps the test deterministic; at this p-value threshold a correct sampler
# would fail for fewer than 1 in 10,000 seeds.
MIN_P_VALUE = 1e-4


def progress_for(policy):
  return PROGRESS if policy == "progressive" else None


def draw(policy, seed=0, count=60_000, labels=LABELS, method="index", progress=None):
  dataset = sampling.sample_indices(labels, policy, method=method, seed=seed,
                                    progress=progress if progress is not None
                                    else progress_for(policy))
  return next(iter(dataset.take(count).batch(count))).numpy()


def labels_for(method):
  return (LABELS, COUNTS) if method in RANDOM_ACCESS_METHODS else (STREAM_LABELS, STREAM_COUNTS)


def assert_matches_target(class_ids, counts, policy, progress=PROGRESS):
  observed = np.bincount(class_ids, minlength=len(counts))
  expected = sampling.class_probabilities(counts, policy, progress) * len(class_ids)
  assert stats.chisquare(observed, expected).pvalue > MIN_P_VALUE, (observed, expected)


@pytest.mark.parametrize("method", RANDOM_ACCESS_METHODS + STREAM_METHODS)
@pytest.mark.parametrize("policy", sampling.POLICIES)
def test_class_frequencies_match_target(policy, method):
  labels, counts = labels_for(method)
  indices = draw(policy, count=DRAWS[method], labels=labels, method=method)
  assert_matches_target(labels[indices], counts, policy)


@pytest.mark.parametrize("method", RANDOM_ACCESS_METHODS)
@pytest.mark.parametrize("policy", ["class_balanced", "sqrt"])
def test_examples_uniform_within_class(policy, method):
  indices = draw(policy, count=DRAWS[method], method=method)
  for class_id in (0, 4):
    members = np.flatnonzero(LABELS == class_id)
    picked = indices[np.isin(indices, members)]
    observed = np.bincount(picked - members[0], minlength=len(members))
    assert stats.chisquare(observed).pvalue > MIN_P_VALUE


def test_per_class_draws_each_class_without_replacement_within_a_pass():
  indices = draw("class_balanced", count=4000, method="per_class")
  tail = indices[LABELS[indices] == 6]  # class 6 has 2 examples: passes alternate both
  pairs = tail[:len(tail) // 2 * 2].reshape(-1, 2)
  assert np.all(pairs[:, 0] != pairs[:, 1])


# The stream methods share one code path for every policy but instance and progressive.
@pytest.mark.parametrize("policy,method", [
    (policy, method) for method in RANDOM_ACCESS_METHODS + STREAM_METHODS
    for policy in sampling.POLICIES
    if method in RANDOM_ACCESS_METHODS or policy in ("class_balanced", "progressive")])
def test_same_seed_same_stream(policy, method):
  labels, _ = labels_for(method)
  count = 2000 if method in RANDOM_ACCESS_METHODS else 300
  first = draw(policy, seed=5, count=count, labels=labels, method=method)
  np.testing.assert_array_equal(first, draw(policy, seed=5, count=count, labels=labels,
                                            method=method))
  assert not np.array_equal(first, draw(policy, seed=6, count=count, labels=labels,
                                        method=method))


def test_auto_is_index_for_arrays():
  np.testing.assert_array_equal(draw("sqrt", count=5000, method="auto"),
                                draw("sqrt", count=5000, method="index"))


@pytest.mark.parametrize("method", sampling.METHODS)
@pytest.mark.parametrize("policy", ["class_balanced", "sqrt", "progressive"])
def test_empty_class_is_an_error_naming_it(policy, method):
  labels = np.array([0, 0, 2, 2])
  with pytest.raises(ValueError, match="class 1 has no training examples"):
    sampling.sample_indices(labels, policy, method=method, progress=progress_for(policy))
  with pytest.raises(ValueError, match="class 3 has no training examples"):
    sampling.sample_indices(labels[:2].tolist() + [1, 2], policy, method=method,
                            num_classes=4, progress=progress_for(policy))


@pytest.mark.parametrize("method", RANDOM_ACCESS_METHODS + STREAM_METHODS)
def test_instance_allows_empty_class(method):
  labels = np.array([0, 0, 2, 2])
  indices = draw("instance", count=400, labels=labels, method=method)
  np.testing.assert_array_equal(np.unique(indices), np.arange(4))


def test_bad_names_and_progress_are_errors_listing_valid_values():
  with pytest.raises(ValueError, match="valid: instance, class_balanced, sqrt, progressive"):
    sampling.sample_indices(LABELS, "balanced")
  with pytest.raises(ValueError, match="valid: auto, index, per_class, rejection, resample"):
    sampling.sample_indices(LABELS, method="rejct")
  with pytest.raises(ValueError, match="valid: auto, rejection, resample"):
    sampling.sample_stream(tf.data.Dataset.from_tensor_slices((LABELS, LABELS)), COUNTS,
                           method="index")
  with pytest.raises(ValueError, match="progressive' needs progress"):
    sampling.sample_indices(LABELS, "progressive")
  with pytest.raises(ValueError, match=r"progress must be in \[0, 1\], got 1.5"):
    sampling.sample_indices(LABELS, "progressive", progress=1.5)


@pytest.mark.parametrize("method", ["index", "resample"])
def test_progressive_reads_the_variable_as_it_moves(method):
  labels, counts = labels_for(method)
  progress = tf.Variable(0.0, dtype=tf.float64)
  stream = iter(sampling.sample_indices(labels, "progressive", method=method, seed=3,
                                        progress=progress).batch(500))
  early = np.concatenate([next(stream).numpy() for _ in range(4)])
  assert_matches_target(labels[early], counts, "instance")
  progress.assign(1.0)
  for _ in range(9):  # drain the block or shuffle buffer filled before the change
    next(stream)
  late = np.concatenate([next(stream).numpy() for _ in range(4)])
  assert_matches_target(labels[late], counts, "class_balanced")


def encoded_examples(labels, seed=0):
  """(bytes, label) records in a fixed shuffled order, like TFRecords read in file order."""
  order = np.random.default_rng(seed).permutation(len(labels))
  names = np.array([f"example-{i}" for i in order])
  return tf.data.Dataset.from_tensor_slices((names, labels[order]))


@pytest.mark.parametrize("method", STREAM_METHODS)
def test_sample_stream_keeps_pairs_and_reaches_target(method):
  stream = sampling.sample_stream(encoded_examples(STREAM_LABELS), STREAM_COUNTS,
                                  "class_balanced", method=method, seed=1)
  names, labels = next(iter(stream.take(4000).batch(4000)))
  indices = np.array([int(name.split(b"-")[1]) for name in names.numpy()])
  np.testing.assert_array_equal(STREAM_LABELS[indices], labels.numpy())
  assert_matches_target(labels.numpy(), STREAM_COUNTS, "class_balanced")


def test_sample_stream_auto_picks_by_records_read():
  assert sampling.stream_method(STREAM_COUNTS, "class_balanced") == "rejection"
  assert sampling.stream_method(COUNTS, "class_balanced") == "resample"
  assert sampling.stream_method(COUNTS, "instance") == "rejection"
  auto = sampling.sample_stream(encoded_examples(LABELS), COUNTS, seed=2)
  resample = sampling.sample_stream(encoded_examples(LABELS), COUNTS, method="resample", seed=2)
  first, second = (next(iter(s.take(500).batch(500)))[0].numpy() for s in (auto, resample))
  np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("method", sampling.METHODS)
def test_sample_examples_pairs_indices_with_per_position_seeds(method):
  labels, counts = labels_for(method)
  count = DRAWS.get(method, DRAWS["index"])
  dataset = sampling.sample_examples(labels, "class_balanced", seed=4, method=method)
  assert dataset.element_spec == (tf.TensorSpec([], tf.int64), tf.TensorSpec([2], tf.int64))
  indices, seeds = (part.numpy() for part in next(iter(dataset.take(count).batch(count))))
  assert_matches_target(labels[indices], counts, "class_balanced")
  # One seed per position, the same whichever method draws the indices.
  np.testing.assert_array_equal(seeds[:, 1], np.arange(count))
  assert len(np.unique(seeds[:, 0])) == 1
  if method != "index":
    np.testing.assert_array_equal(indices, draw("class_balanced", seed=4, count=count,
                                                labels=labels, method=method))


@pytest.mark.parametrize("ratio_value", [2.5, 0.4])
def test_resample_copies_each_record_floor_r_plus_bernoulli_times(ratio_value):
  """The reference (input_pipeline.py): oversample_classes gives floor(r) + [u <= max(r, 1)
  - floor(r)] copies, then undersampling_filter keeps each with [u <= min(r, 1)]."""
  records = tf.data.Dataset.from_tensor_slices(
      (tf.range(2000, dtype=tf.int64), tf.zeros([2000], tf.int64)))

  def ratio(label):
    return tf.fill(tf.shape(label), tf.constant(ratio_value, tf.float64))
  out = [int(index) for index, _ in stream_sampling.resample(records, 3, ratio)]
  copies = np.bincount(out, minlength=2000)
  whole = int(np.floor(ratio_value)) if ratio_value >= 1 else 0
  assert set(np.unique(copies)) <= {whole, whole + 1}
  extra_probability = ratio_value - whole
  test = stats.binomtest(int(np.sum(copies == whole + 1)), 2000, extra_probability)
  assert test.pvalue > MIN_P_VALUE


@pytest.mark.parametrize("method", ["index", "resample", "rejection"])
def test_training_split_in_a_fresh_shuffled_order_each_pass(method):
  # instance policy: the stream methods pass the shuffled split through unchanged.
  indices = draw("instance", count=3 * len(LABELS), method=method)
  passes = np.split(indices, 3)
  for one_pass in passes:
    np.testing.assert_array_equal(np.sort(one_pass), np.arange(len(LABELS)))
  assert not np.array_equal(passes[0], passes[1])


def test_config_rejects_unknown_sampling_method():
  bad = config_lib.Config(workdir="/tmp/x").replace(data={"sampling_method": "oversample"})
  with pytest.raises(ValueError, match="unknown sampling_method 'oversample'; valid: auto, "
                     "index, per_class, rejection, resample"):
    bad.validate()
