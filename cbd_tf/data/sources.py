"""Where examples come from: each data set name maps to a loader returning a `Source`.

A `Source` holds decoded uint8 images (N, H, W, C) and int64 labels for the training
and test splits, plus class names. Class counts always come from the training labels.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np

from cbd_tf import config as config_lib
from cbd_tf.data import long_tail

MNIST_FILE = os.path.join(os.path.dirname(__file__), "mnist_5k.npz")
MNIST_TEST_PER_CLASS = 100
# Fixed so every run, whatever its --seed, trains and tests on the same images.
MNIST_SUBSET_SEED = 20210411


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # uint8, (N, H, W, C)
  labels: np.ndarray  # int64, (N,)

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Source:
  name: str
  train: Split
  test: Split
  class_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def train_counts(self) -> np.ndarray:
    return np.bincount(self.train.labels, minlength=self.num_classes)


def load_mnist_lt(data: config_lib.DataConfig) -> Source:
  """Bundled MNIST subset: 100 test images a class, long-tailed training split from the rest."""
  with np.load(MNIST_FILE) as arrays:
    images = arrays["images"][..., np.newaxis]
    labels = arrays["labels"].astype(np.int64)
  rng = np.random.default_rng(MNIST_SUBSET_SEED)
  test_index = np.sort(np.concatenate([
      rng.choice(np.flatnonzero(labels == c), MNIST_TEST_PER_CLASS, replace=False)
      for c in range(10)]))
  pool = np.setdiff1d(np.arange(len(labels)), test_index)
  max_count = int(np.bincount(labels[pool]).min())
  counts = long_tail.exponential_profile(max_count, 10, data.imbalance_ratio)
  train_index = pool[long_tail.long_tail_subset(labels[pool], counts, MNIST_SUBSET_SEED)]
  return Source(
      name="mnist_lt",
      train=Split(images[train_index], labels[train_index]),
      test=Split(images[test_index], labels[test_index]),
      class_names=tuple(str(digit) for digit in range(10)),
  )


SOURCES: dict[str, Callable[[config_lib.DataConfig], Source]] = {
    "mnist_lt": load_mnist_lt,
}


def check_dataset_name(name: str) -> None:
  if name not in SOURCES:
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(SOURCES))}")


def load_source(data: config_lib.DataConfig) -> Source:
  check_dataset_name(data.dataset)
  return SOURCES[data.dataset](data)
