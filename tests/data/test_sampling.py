import numpy as np
import pytest
from scipy import stats

from cbd_tf.data import sampling

# Long-tailed labels: 7 classes, 300 down to 2 examples.
COUNTS = np.array([300, 120, 50, 20, 8, 4, 2])
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)
NUM_DRAWS = 60_000
# A fixed seed keeps the test deterministic; at this p-value threshold a correct sampler
# would fail for fewer than 1 in 10,000 seeds.
MIN_P_VALUE = 1e-4


def draw(policy, seed=0, count=NUM_DRAWS, labels=LABELS):
  dataset = sampling.sample_indices(labels, policy, seed=seed).take(count).batch(count)
  return next(iter(dataset)).numpy()


@pytest.mark.parametrize("policy", ["class_balanced", "sqrt"])
def test_class_frequencies_match_target(policy):
  indices = draw(policy)
  observed = np.bincount(LABELS[indices], minlength=len(COUNTS))
  expected = sampling.class_probabilities(COUNTS, policy) * len(indices)
  assert stats.chisquare(observed, expected).pvalue > MIN_P_VALUE


@pytest.mark.parametrize("policy", ["class_balanced", "sqrt"])
def test_examples_uniform_within_class(policy):
  indices = draw(policy)
  for class_id in (0, 4):
    members = np.flatnonzero(LABELS == class_id)
    picked = indices[np.isin(indices, members)]
    observed = np.bincount(picked - members[0], minlength=len(members))
    assert stats.chisquare(observed).pvalue > MIN_P_VALUE


def test_instance_sampling_visits_every_example_once_per_pass():
  indices = draw("instance", count=3 * len(LABELS))
  for one_pass in np.split(indices, 3):
    np.testing.assert_array_equal(np.sort(one_pass), np.arange(len(LABELS)))
  assert not np.array_equal(indices[:len(LABELS)], indices[len(LABELS):2 * len(LABELS)])


@pytest.mark.parametrize("policy", sampling.POLICIES)
def test_same_seed_same_stream(policy):
  np.testing.assert_array_equal(draw(policy, seed=5, count=5000), draw(policy, seed=5, count=5000))
  assert not np.array_equal(draw(policy, seed=5, count=5000), draw(policy, seed=6, count=5000))


@pytest.mark.parametrize("policy", ["class_balanced", "sqrt"])
def test_empty_class_is_an_error_naming_it(policy):
  labels = np.array([0, 0, 2, 2])
  with pytest.raises(ValueError, match="class 1 has no training examples"):
    sampling.sample_indices(labels, policy)
  with pytest.raises(ValueError, match="class 3 has no training examples"):
    sampling.sample_indices(labels[:2].tolist() + [1, 2], policy, num_classes=4)


def test_instance_allows_empty_class_and_unknown_policy_lists_valid():
  assert len(draw("instance", count=4, labels=np.array([0, 0, 2, 2]))) == 4
  with pytest.raises(ValueError, match="valid: instance, class_balanced, sqrt"):
    sampling.sample_indices(LABELS, "balanced")
