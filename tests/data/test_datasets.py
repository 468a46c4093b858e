"""The Keras API's dataset builders (cbd_tf/data/datasets.py). The README's Keras snippet,
which uses them, runs as written in tests/test_docs.py."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import cbd_tf
from tests import fakes


def test_training_dataset_draws_by_the_policy():
  data = cbd_tf.load_data("mnist_lt")
  counts = np.bincount(data.train.labels, minlength=10)
  for policy, expected in (("instance", counts / counts.sum()),
                           ("class_balanced", np.full(10, 0.1))):
    # Seeded: the same draws every run; at p > 1e-4 a correct sampler fails for fewer than
    # 1 seed in 10,000.
    batches = cbd_tf.training_dataset(data.train, policy, image_size=16, batch_size=100,
                                      seed=3).take(20)
    labels, shapes = [], set()
    for images, batch_labels in batches:
      shapes.add(tuple(images.shape))
      assert 0.0 <= float(np.min(images)) and float(np.max(images)) <= 1.0
      labels.append(batch_labels.numpy())
    observed = np.bincount(np.concatenate(labels), minlength=10)
    assert shapes == {(100, 16, 16, 3)}
    assert scipy.stats.chisquare(observed, expected * observed.sum()).pvalue > 1e-4, policy


def test_evaluation_dataset_is_one_ordered_pass(tmp_path):
  paths = [fakes.write_file(tmp_path / f"{i}.png", fakes.image_bytes("png", seed=i, size=(20, 30)))
           for i in range(5)]
  split = cbd_tf.from_files(paths, [3, 1, 4, 1, 5])
  batches = list(cbd_tf.evaluation_dataset(split, image_size=16, batch_size=2))
  assert [tuple(images.shape) for images, _ in batches] == [(2, 16, 16, 3)] * 2 + [(1, 16, 16, 3)]
  assert np.concatenate([labels for _, labels in batches]).tolist() == [3, 1, 4, 1, 5]
  # Each image is its own file's (so stays with its label): the official eval_preprocess,
  # [0, 1], short side to round(16 / 0.875) = 18 (bilinear, no antialias), centre 16 x 16.
  images = np.concatenate([images for images, _ in batches])
  for path, image in zip(paths, images):
    with open(path, "rb") as f:
      pixels = tf.cast(tf.io.decode_png(f.read(), channels=3), tf.float32) / 255.0
    resized = tf.image.resize(pixels, [18, 27], antialias=False)  # 20 x 30 times 18 / 20
    np.testing.assert_allclose(image, resized[1:17, 5:21], atol=1e-5, err_msg=path)
  arrays = cbd_tf.from_arrays(np.zeros((3, 8, 8, 1), np.uint8), [0, 1, 1])
  assert len(list(cbd_tf.training_dataset(arrays, image_size=8, batch_size=3).take(2))) == 2


def test_bad_input_names_the_problem():
  with pytest.raises(ValueError, match=r"images must be uint8 \(N, H, W, 1 or 3\), got float32"):
    cbd_tf.from_arrays(np.zeros((2, 4, 4, 3), np.float32), [0, 1])
  split = cbd_tf.from_arrays(np.zeros((2, 4, 4, 3), np.uint8), [0, 1])
  with pytest.raises(ValueError, match=r"unknown data settings \['crop_size'\]"):
    cbd_tf.training_dataset(split, image_size=8, crop_size=3)
  with pytest.raises(ValueError, match="unknown sampling 'balanced'; valid: instance, "):
    cbd_tf.training_dataset(split, "balanced", image_size=8)
