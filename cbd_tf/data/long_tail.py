"""Long-tailed class-count profiles and the many / medium / few shot groups."""

from __future__ import annotations

import numpy as np

# Shot groups by number of *training* images (Liu et al. OLTR; used by the CBD paper).
MANY_SHOT_MIN = 101  # many: > 100
FEW_SHOT_MAX = 19  # few: < 20; medium: 20-100
SHOT_GROUPS = ("many", "medium", "few")


def exponential_profile(max_count: int, num_classes: int, imbalance_ratio: float) -> np.ndarray:
  """n_i = floor(max_count * rho^(-i / (C - 1))): class 0 is the head, class C-1 the tail."""
  if num_classes == 1:
    return np.array([max_count], dtype=np.int64)
  exponents = np.arange(num_classes) / (num_classes - 1)
  counts = np.floor(max_count * imbalance_ratio ** (-exponents) + 1e-9).astype(np.int64)
  return np.maximum(counts, 1)


def long_tail_subset(labels: np.ndarray, counts: np.ndarray, seed: int) -> np.ndarray:
  """Sorted indices keeping counts[c] examples of class c, picked with a fixed seed."""
  rng = np.random.default_rng(seed)
  keep = []
  for class_id, count in enumerate(counts):
    members = np.flatnonzero(labels == class_id)
    if len(members) < count:
      raise ValueError(f"class {class_id} has {len(members)} examples, profile asks for {count}")
    keep.append(rng.choice(members, size=int(count), replace=False))
  return np.sort(np.concatenate(keep))


def shot_group_of_classes(train_counts: np.ndarray) -> np.ndarray:
  """'many' / 'medium' / 'few' for each class, from its training-image count."""
  counts = np.asarray(train_counts)
  return np.where(counts >= MANY_SHOT_MIN, "many",
                  np.where(counts <= FEW_SHOT_MAX, "few", "medium"))
