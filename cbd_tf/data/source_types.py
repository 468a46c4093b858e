"""What a data source hands the pipeline: labelled splits, class names, skipped files.

A split holds either decoded uint8 images in memory (small sets: mnist, cifar) or
paths of encoded image files (everything else). Labels are always in memory: the
sampler draws indices from them, and only the examples it draws are read and decoded.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray | None  # uint8 (N, H, W, C), or None when `paths` is set
  labels: np.ndarray  # int64 (N,)
  # Encoded image files (JPEG, PNG, GIF, BMP, WebP), decoded per example by the pipeline.
  paths: np.ndarray | None = None

  def __post_init__(self):
    if (self.images is None) == (self.paths is None):
      raise ValueError("a Split holds exactly one of images or paths")

  @classmethod
  def from_files(cls, paths, labels) -> "Split":
    return cls(None, np.asarray(labels, dtype=np.int64), np.asarray(paths, dtype=object))

  @property
  def is_encoded(self) -> bool:
    return self.paths is not None

  def select(self, keep: np.ndarray) -> "Split":
    """The examples at indices `keep` (sorted ints)."""
    if self.is_encoded:
      return Split.from_files(self.paths[keep], self.labels[keep])
    return Split(self.images[keep], self.labels[keep])

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Source:
  name: str
  train: Split
  test: Split
  class_names: tuple[str, ...]
  # Files left out because they did not decode, as "split<TAB>path<TAB>reason".
  skipped_files: tuple[str, ...] = ()
  # A labelled split apart from the test split (ImageNet-LT validation, Places-LT val):
  # periodic evaluation and model selection use it, so the test split is seen once.
  val: Split | None = None

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def train_counts(self) -> np.ndarray:
    return np.bincount(self.train.labels, minlength=self.num_classes)

  @property
  def num_skipped(self) -> int:
    return len(self.skipped_files)


def check_labels(labels: np.ndarray, num_classes: int, where: str,
                 line_numbers: np.ndarray | None = None) -> None:
  """Raises ValueError naming the first label outside [0, num_classes): by its line of the
  list file `where` if `line_numbers` are given, else by its index."""
  labels = np.asarray(labels)
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if not len(bad):
    return
  first = int(bad[0])
  at = (f"{where}:{int(line_numbers[first])}: label" if line_numbers is not None
        else f"{where}: example {first} has label")
  raise ValueError(f"{at} {int(labels[first])} is outside [0, {num_classes}) "
                   f"({len(bad)} such labels)")
