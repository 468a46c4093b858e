import numpy as np
import pytest

from cbd_tf import config as config_lib
from cbd_tf.data import long_tail, sources


@pytest.mark.parametrize("max_count, num_classes, rho, total, tail", [
    (5000, 10, 100, 12406, 50),  # CIFAR-10-LT
    (500, 100, 100, 10847, 5),  # CIFAR-100-LT
])
def test_exponential_profile_known_sizes(max_count, num_classes, rho, total, tail):
  counts = long_tail.exponential_profile(max_count, num_classes, rho)
  assert counts[0] == max_count and counts[-1] == tail and counts.sum() == total
  assert np.all(np.diff(counts) <= 0)


def test_subset_is_fixed_and_follows_profile():
  labels = np.repeat(np.arange(4), 10)
  counts = np.array([10, 5, 2, 1])
  first = long_tail.long_tail_subset(labels, counts, seed=3)
  np.testing.assert_array_equal(first, long_tail.long_tail_subset(labels, counts, seed=3))
  np.testing.assert_array_equal(np.bincount(labels[first]), counts)


def test_shot_groups_boundaries():
  groups = long_tail.shot_group_of_classes(np.array([101, 100, 20, 19, 1]))
  assert groups.tolist() == ["many", "medium", "medium", "few", "few"]


def test_mnist_lt_is_long_tailed_with_balanced_test():
  source = sources.load_source(config_lib.DataConfig(dataset="mnist_lt", imbalance_ratio=100))
  np.testing.assert_array_equal(source.train_counts, [400, 239, 143, 86, 51, 30, 18, 11, 6, 4])
  np.testing.assert_array_equal(np.bincount(source.test.labels), [100] * 10)
  assert source.train.images.shape[1:] == (28, 28, 1) and source.train.images.dtype == np.uint8
  # No test image is also a training image.
  train = {image.tobytes() for image in source.train.images}
  assert not any(image.tobytes() in train for image in source.test.images)
  again = sources.load_source(config_lib.DataConfig(dataset="mnist_lt"))
  np.testing.assert_array_equal(again.train.images, source.train.images)


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(ValueError, match="unknown dataset 'mnist'; valid: mnist_lt"):
    sources.check_dataset_name("mnist")
