"""mnist_pairs_lt: two bundled digits an image, 100 classes, fixed long tail; one smoke run."""

import dataclasses
import os

import numpy as np
import pytest

from cbd_tf import config as config_lib
from cbd_tf import training
from cbd_tf.data import long_tail, mnist_sources, sources
from tests import helpers
from tests.fakes import smoke_config


@pytest.fixture(scope="module")
def source():
  return sources.load_source(config_lib.DataConfig(dataset="mnist_pairs_lt", imbalance_ratio=100))


def test_two_loads_are_equal_and_shaped(source):
  again = mnist_sources.load_mnist_pairs_lt(config_lib.DataConfig(imbalance_ratio=100))
  for name in ("train", "val", "test"):
    split, other = getattr(source, name), getattr(again, name)
    np.testing.assert_array_equal(split.images, other.images)
    np.testing.assert_array_equal(split.labels, other.labels)
    assert split.images.shape == (len(split), 32, 32, 1) and split.images.dtype == np.uint8
    assert split.labels.dtype == np.int64
    # Digits in rows 8..23 only; the rest of the canvas is black.
    assert split.images[:, :8].max() == 0 and split.images[:, 24:].max() == 0
  assert source.class_names == tuple(f"{label:02d}" for label in range(100))


def test_counts_follow_the_profile_and_evaluation_is_balanced(source):
  order = mnist_sources.pairs_class_order()
  np.testing.assert_array_equal(source.train_counts[order],
                                long_tail.exponential_profile(200, 100, 100))
  counts = source.train_counts
  assert (counts.sum(), counts.min(), counts.max()) == (4311, 2, 200)
  groups = long_tail.shot_group_of_classes(counts)
  assert [int((groups == g).sum()) for g in long_tail.SHOT_GROUPS] == [15, 35, 50]
  np.testing.assert_array_equal(np.bincount(source.test.labels, minlength=100), [20] * 100)
  np.testing.assert_array_equal(np.bincount(source.val.labels, minlength=100), [20] * 100)


def test_images_are_the_named_digits_and_splits_share_none(source):
  digits, digit_labels = mnist_sources.read_mnist()
  small = mnist_sources.shrink_digits(digits)
  indices = mnist_sources.pairs_digit_indices(100)
  for name, pairs in indices.items():
    split = getattr(source, name)
    np.testing.assert_array_equal(split.labels, pairs.labels)
    np.testing.assert_array_equal(10 * digit_labels[pairs.left] + digit_labels[pairs.right],
                                  pairs.labels)
    np.testing.assert_array_equal(split.images[:, 8:24, :16, 0], small[pairs.left])
    np.testing.assert_array_equal(split.images[:, 8:24, 16:, 0], small[pairs.right])
    # No (left, right) pair repeats within a class.
    assert len(set(zip(pairs.labels, pairs.left, pairs.right))) == len(pairs.labels)
  used = {name: set(np.concatenate([p.left, p.right]).tolist()) for name, p in indices.items()}
  assert not used["train"] & used["test"] and not used["train"] & used["val"]
  assert not used["val"] & used["test"]


def test_head_classes_do_not_follow_the_digits():
  order = mnist_sources.pairs_class_order()
  assert sorted(order.tolist()) == list(range(100))
  assert not np.array_equal(order, np.arange(100))
  # The 15 many-shot labels span several tens digits, not just "00".."14".
  assert len(set((order[:15] // 10).tolist())) >= 4


def test_imbalance_ratio_changes_training_only(source):
  flatter = sources.load_source(config_lib.DataConfig(dataset="mnist_pairs_lt",
                                                      imbalance_ratio=10))
  counts = flatter.train_counts
  assert (counts.sum(), counts.min(), counts.max()) == (7801, 20, 200)
  # The same labels stay head and tail.
  np.testing.assert_array_equal(counts[mnist_sources.pairs_class_order()],
                                long_tail.exponential_profile(200, 100, 10))
  np.testing.assert_array_equal(flatter.test.images, source.test.images)
  np.testing.assert_array_equal(flatter.val.images, source.val.images)


def test_area_resize_averages_covered_pixels():
  weights = mnist_sources.area_resize_matrix(28, 16)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0)
  # Output pixel 0 covers input pixels 0 and three quarters of pixel 1 (28 / 16 = 1.75).
  np.testing.assert_allclose(weights[0, :3], [1 / 1.75, 0.75 / 1.75, 0.0])
  stripes = np.zeros((1, 28, 28), np.uint8)
  stripes[:, :, :14] = 255
  small = mnist_sources.shrink_digits(stripes)
  assert small[0, :, :8].min() == 255 and small[0, :, 8:].max() == 0


def test_config_header_names_its_command():
  with open(os.path.join(helpers.ROOT, "configs", "mnist_pairs.flags")) as f:
    text = f.read()
  assert "python -m cbd_tf.train --flagfile=configs/mnist_pairs.flags" in text
  assert "--dataset=mnist_pairs_lt" in text and "--nohorizontal_flip" in text


@pytest.mark.slow
def test_pipeline_trains_teacher_and_student_for_two_steps(tmp_path, source):
  config = smoke_config(tmp_path, dataset="mnist_pairs_lt").replace(
      data={"image_size": 32, "crop_min_area": 0.85, "horizontal_flip": False,
            "eval_crop_fraction": 1.0},
      optimizer={"steps_per_epoch": 2})
  # 2 of each class's 20 evaluation images: the final evaluations dominate a smoke run.
  every_tenth = np.arange(0, 2000, 10)
  smaller = dataclasses.replace(source, test=source.test.select(every_tenth),
                                val=source.val.select(every_tenth))
  results = training.run(config, smaller)
  assert set(results) == {"vanilla_1", "student"}
  student = results["student"]
  assert len(student["per_class"]) == 100
  assert student["num_test"] == 200 and student["val"]["num_val"] == 200
