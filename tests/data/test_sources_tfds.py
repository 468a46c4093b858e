"""TFDS-backed sources under tfds.testing.mock_data (offline).

The mock's own examples have uniform labels and `info.splits` is empty, so these tests
supply their own examples (a long-tailed label pattern) through `as_dataset_fn`.
"""

import numpy as np
import pytest

from cbd_tf import config as config_lib
from cbd_tf.data import sources, tfds_sources
from tests.fakes import mocked_tfds


def tfds_config(tmp_path, dataset, **changes):
  return config_lib.DataConfig(dataset=dataset, data_dir=str(tmp_path / "tfds"), image_size=16,
                               cache_dir=str(tmp_path / "cache"), **changes)


# The iNaturalist mocks hold thousands of classes: in the full suite only.
@pytest.mark.parametrize("dataset, num_classes", [
    ("imagenet_lt", 1000), pytest.param("inaturalist2017", 5089, marks=pytest.mark.slow),
    pytest.param("inaturalist2018", 8142, marks=pytest.mark.slow)])
def test_streamed_tfds_source_counts_come_from_labels_read(tmp_path, dataset, num_classes):
  # Checking thousands of images is covered once; the others skip it to save time.
  data = tfds_config(tmp_path, dataset, validate_images=dataset == "imagenet_lt")
  with mocked_tfds(test_labels=np.array([0, 5, 5])):
    source = sources.load_source(data)
  assert source.num_classes == num_classes == len(source.train_counts)
  assert source.train_counts[0] == 4 and source.train_counts[1] == 2
  assert source.train_counts.sum() == num_classes + 4 and source.train.is_encoded
  assert list(source.test.labels) == [0, 5, 5]
  # ImageNet-LT keeps its validation split apart; iNaturalist's validation is its test.
  assert (source.val is not None) == (dataset == "imagenet_lt")
  # The second load reads the exported labels, not TFDS (no mock active here).
  again = sources.load_source(data)
  np.testing.assert_array_equal(again.train_counts, source.train_counts)


def test_evaluation_splits_follow_the_official_protocol():
  assert tfds_sources.STREAMED_BUILDERS["inaturalist2018"][2:] == ("validation", None)
  assert tfds_sources.STREAMED_BUILDERS["imagenet_lt"][2:] == ("test", "validation")


def test_tfds_label_outside_classes_is_an_error(tmp_path):
  with mocked_tfds(train_labels=np.array([0, 1, 1000])):
    with pytest.raises(ValueError, match=r"TFDS imagenet_lt train: example 2 has label 1000 "
                                         r"is outside \[0, 1000\)"):
      sources.load_source(tfds_config(tmp_path, "imagenet_lt"))


@pytest.mark.parametrize("dataset, num_classes", [("cifar10_lt", 10), ("cifar100_lt", 100)])
def test_cifar_lt_long_tailed_train_untouched_test(tmp_path, dataset, num_classes):
  with mocked_tfds(per_class=20):
    source = sources.load_source(tfds_config(tmp_path, dataset, imbalance_ratio=10))
  assert source.train_counts[0] == 20 and source.train_counts[-1] == 2
  assert np.all(np.diff(source.train_counts) <= 0)
  assert len(source.test) == 20 * num_classes and source.train.images.shape[1:] == (32, 32, 3)
  with mocked_tfds(per_class=20):
    again = sources.load_source(tfds_config(tmp_path, dataset, imbalance_ratio=10))
  np.testing.assert_array_equal(again.train.labels, source.train.labels)  # fixed-seed subset


def test_missing_manual_dir_is_one_line_error(tmp_path):
  with pytest.raises(ValueError, match="TFDS imagenet_lt .*Manual directory .* does not exist"):
    sources.load_source(tfds_config(tmp_path, "imagenet_lt", manual_dir=str(tmp_path / "none")))
