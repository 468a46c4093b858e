"""Data sets built from the bundled 5,000 MNIST digits (mnist_5k.npz, 500 a digit).

mnist_lt: the digits themselves, 10 classes, a long-tailed training split.

mnist_pairs_digits: a balanced pretraining task for mnist_pairs_lt (10 classes, the digit):
each digit of mnist_pairs_lt's training pool alone on the 32x32 canvas, once in the left
slot and once in the right, as the pairs place them. Its first 300 digits of each class
train (6,000 images), the other 50 test (1,000); no digit of mnist_pairs_lt's validation
or test images appears in it.

mnist_pairs_lt: 100 classes "00".."99", each image two real handwritten digits side by
side on a 32x32 canvas (tens left, units right), made to give a CPU-scale task with many
classes and a long tail. Each digit's 500 images are split once into pools of 350
train / 50 validation / 100 test digits, so no validation or test digit image is ever
seen in training. The label is the two-digit number; which labels form the head is a
fixed permutation of the profile's ranks, so head and tail do not follow the digits.
Training follows exponential_profile(200, 100, --imbalance_ratio) (rho 100: 4,311
images, 2 to 200 a class); validation and test have 20 images a class (2,000 each).

Every seed is fixed and independent of --seed: every run sees the same images.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from cbd_tf import config as config_lib
from cbd_tf.data import long_tail
from cbd_tf.data.source_types import Source, Split

MNIST_FILE = os.path.join(os.path.dirname(__file__), "mnist_5k.npz")
MNIST_TEST_PER_CLASS = 100
# Fixed so every run, whatever its --seed, trains and tests on the same images.
MNIST_SUBSET_SEED = 20210411

PAIRS_SEED = 20210414
# Per digit: its 500 bundled images split into disjoint pools.
PAIRS_POOL_SIZES = {"train": 350, "val": 50, "test": 100}
PAIRS_MAX_COUNT = 200  # training images of the head class
PAIRS_EVAL_PER_CLASS = 20  # validation and test images a class
PAIRS_NUM_CLASSES = 100
PAIRS_DIGIT_SIZE = 16
PAIRS_CANVAS_SIZE = 32
PAIRS_TOP_ROW = (PAIRS_CANVAS_SIZE - PAIRS_DIGIT_SIZE) // 2  # digits in rows 8..23
# Independent random streams, so e.g. --imbalance_ratio changes the training pairs only.
_POOLS, _CLASS_ORDER, _TRAIN_PAIRS, _VAL_PAIRS, _TEST_PAIRS = range(5)


def read_mnist() -> tuple[np.ndarray, np.ndarray]:
  """The bundled digits: uint8 (5000, 28, 28) and int64 (5000,) labels."""
  with np.load(MNIST_FILE) as arrays:
    return arrays["images"], arrays["labels"].astype(np.int64)


def load_mnist_lt(data: config_lib.DataConfig) -> Source:
  """Bundled MNIST subset: 100 test images a class, long-tailed training split from the rest."""
  images, labels = read_mnist()
  images = images[..., np.newaxis]
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


@dataclasses.dataclass(frozen=True)
class DigitPairs:
  """One split of mnist_pairs_lt as indices into the bundled digits."""
  left: np.ndarray  # int64 (N,): the tens digit's image
  right: np.ndarray  # int64 (N,): the units digit's image
  labels: np.ndarray  # int64 (N,): 10 * tens + units


def _rng(stream: int) -> np.random.Generator:
  return np.random.default_rng([PAIRS_SEED, stream])


def pairs_class_order() -> np.ndarray:
  """Label of each profile rank: rank 0 (200 images) is label order[0], and so on."""
  return _rng(_CLASS_ORDER).permutation(PAIRS_NUM_CLASSES)


def pairs_train_counts(imbalance_ratio: float) -> np.ndarray:
  """Training images of each label (indexed by label, not by rank)."""
  counts = np.zeros(PAIRS_NUM_CLASSES, dtype=np.int64)
  counts[pairs_class_order()] = long_tail.exponential_profile(
      PAIRS_MAX_COUNT, PAIRS_NUM_CLASSES, imbalance_ratio)
  return counts


def _digit_pools(labels: np.ndarray) -> dict[str, list[np.ndarray]]:
  """{split: [indices of digit 0, ..., digit 9]}, disjoint across splits."""
  rng = _rng(_POOLS)
  needed = sum(PAIRS_POOL_SIZES.values())
  pools = {name: [] for name in PAIRS_POOL_SIZES}
  for digit in range(10):
    members = rng.permutation(np.flatnonzero(labels == digit))
    if len(members) < needed:
      raise ValueError(f"{MNIST_FILE}: digit {digit} has {len(members)} images, "
                       f"mnist_pairs_lt needs {needed}")
    start = 0
    for name, size in PAIRS_POOL_SIZES.items():
      pools[name].append(members[start:start + size])
      start += size
  return pools


def _draw_pairs(pools: list[np.ndarray], counts: np.ndarray,
                rng: np.random.Generator) -> DigitPairs:
  """counts[label] pairs of each label, drawn from the digit pools. A digit image may
  recur across pairs, but no (left, right) pair repeats within a class."""
  left, right, labels = [], [], []
  for label, count in enumerate(counts):
    tens, units = pools[label // 10], pools[label % 10]
    # Distinct pairs: distinct cells of the len(tens) x len(units) grid of combinations.
    cells = rng.choice(len(tens) * len(units), size=int(count), replace=False)
    left.append(tens[cells // len(units)])
    right.append(units[cells % len(units)])
    labels.append(np.full(int(count), label, dtype=np.int64))
  return DigitPairs(*(np.concatenate(parts).astype(np.int64) for parts in (left, right, labels)))


def pairs_digit_indices(imbalance_ratio: float) -> dict[str, DigitPairs]:
  """{"train", "val", "test"}: which bundled digits make each mnist_pairs_lt image."""
  _, labels = read_mnist()
  pools = _digit_pools(labels)
  per_class = np.full(PAIRS_NUM_CLASSES, PAIRS_EVAL_PER_CLASS, dtype=np.int64)
  return {
      "train": _draw_pairs(pools["train"], pairs_train_counts(imbalance_ratio),
                           _rng(_TRAIN_PAIRS)),
      "val": _draw_pairs(pools["val"], per_class, _rng(_VAL_PAIRS)),
      "test": _draw_pairs(pools["test"], per_class, _rng(_TEST_PAIRS)),
  }


def area_resize_matrix(source_size: int, target_size: int) -> np.ndarray:
  """(target, source) box-filter weights: each output pixel is the mean of the input
  pixels it covers, partial pixels weighted by their overlap (area resampling)."""
  scale = source_size / target_size
  edges = np.arange(source_size + 1, dtype=np.float64)
  starts = np.arange(target_size)[:, np.newaxis] * scale
  overlap = (np.minimum(edges[1:], starts + scale) - np.maximum(edges[:-1], starts))
  return np.clip(overlap, 0.0, None) / scale


def shrink_digits(images: np.ndarray) -> np.ndarray:
  """uint8 (N, 28, 28) -> uint8 (N, 16, 16) by area resampling (deterministic numpy)."""
  weights = area_resize_matrix(images.shape[1], PAIRS_DIGIT_SIZE)
  small = weights @ images.astype(np.float64) @ weights.T
  return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def compose_pairs(small_digits: np.ndarray, pairs: DigitPairs) -> np.ndarray:
  """uint8 (N, 32, 32, 1): tens digit in columns 0..15, units in 16..31, rows 8..23."""
  images = np.zeros((len(pairs.labels), PAIRS_CANVAS_SIZE, PAIRS_CANVAS_SIZE, 1), np.uint8)
  rows = slice(PAIRS_TOP_ROW, PAIRS_TOP_ROW + PAIRS_DIGIT_SIZE)
  images[:, rows, :PAIRS_DIGIT_SIZE, 0] = small_digits[pairs.left]
  images[:, rows, PAIRS_DIGIT_SIZE:, 0] = small_digits[pairs.right]
  return images


PRETRAIN_TRAIN_PER_DIGIT = 300  # of each digit's 350 in the training pool; the rest test


def load_mnist_pairs_digits(data: config_lib.DataConfig) -> Source:  # pylint: disable=unused-argument
  """Single digits of mnist_pairs_lt's training pool in either slot (module docstring)."""
  digits, labels = read_mnist()
  small_digits = shrink_digits(digits)
  pool = _digit_pools(labels)["train"]
  splits = {}
  for name, part in (("train", slice(None, PRETRAIN_TRAIN_PER_DIGIT)),
                     ("test", slice(PRETRAIN_TRAIN_PER_DIGIT, None))):
    chosen = np.concatenate([members[part] for members in pool])
    blank = np.full(len(chosen), -1, dtype=np.int64)
    images = np.concatenate([
        _compose_with_blank(small_digits, chosen, blank),
        _compose_with_blank(small_digits, blank, chosen)])
    splits[name] = Split(images, np.tile(labels[chosen], 2))
  return Source(name="mnist_pairs_digits", train=splits["train"], test=splits["test"],
                class_names=tuple(str(digit) for digit in range(10)))


def _compose_with_blank(small_digits: np.ndarray, left: np.ndarray, right: np.ndarray
                        ) -> np.ndarray:
  """compose_pairs where index -1 leaves its slot empty."""
  padded = np.concatenate([small_digits, np.zeros_like(small_digits[:1])])
  return compose_pairs(padded, DigitPairs(left, right, np.zeros(len(left), np.int64)))


def load_mnist_pairs_lt(data: config_lib.DataConfig) -> Source:
  """Two-digit MNIST-LT: 100 classes, long-tailed training, balanced validation and test."""
  small_digits = shrink_digits(read_mnist()[0])
  splits = {name: Split(compose_pairs(small_digits, pairs), pairs.labels)
            for name, pairs in pairs_digit_indices(data.imbalance_ratio).items()}
  return Source(
      name="mnist_pairs_lt",
      train=splits["train"],
      test=splits["test"],
      val=splits["val"],
      class_names=tuple(f"{label:02d}" for label in range(PAIRS_NUM_CLASSES)),
  )
