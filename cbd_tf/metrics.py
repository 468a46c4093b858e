"""Top-1 accuracy overall, by shot group (many / medium / few) and per class."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from cbd_tf.data import long_tail


def shot_group_accuracy(predictions: np.ndarray, labels: np.ndarray,
                        train_counts: np.ndarray) -> dict:
  """Metrics of predicted vs true labels; a group or class without test images gives None.

  Group accuracy is the mean of its classes' accuracies, as in OLTR / Decoupling / CBD;
  on a balanced test set that equals the accuracy over the group's images.
  """
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  train_counts = np.asarray(train_counts)
  num_classes = len(train_counts)
  correct = predictions == labels
  per_class = []
  for class_id in range(num_classes):
    mask = labels == class_id
    per_class.append(float(correct[mask].mean()) if mask.any() else None)
  groups = long_tail.shot_group_of_classes(train_counts)
  result = {"top1": float(correct.mean()) if len(labels) else None}
  for group in long_tail.SHOT_GROUPS:
    values = [a for a, g in zip(per_class, groups) if g == group and a is not None]
    result[group] = float(np.mean(values)) if values else None
  result["per_class"] = per_class
  result["num_test"] = int(len(labels))
  result["num_classes_by_group"] = {g: int(np.sum(groups == g)) for g in long_tail.SHOT_GROUPS}
  return result


def evaluate_model(model, dataset, train_counts: np.ndarray) -> dict:
  """Runs `model` (images -> logits) over a dataset of (images, labels) batches."""
  predictions, labels = [], []
  for images, batch_labels in dataset:
    predictions.append(np.argmax(model(images, training=False), axis=-1))
    labels.append(np.asarray(batch_labels))
  return shot_group_accuracy(np.concatenate(predictions), np.concatenate(labels), train_counts)


def format_table(rows: Mapping[str, Mapping]) -> str:
  """Rows of metrics as an aligned text table, accuracies in percent; None prints as '-'."""
  columns = ("top1",) + long_tail.SHOT_GROUPS
  name_width = max(len("run"), *(len(name) for name in rows))
  lines = [f"{'run':<{name_width}}  " + "  ".join(f"{c:>7}" for c in columns)]
  for name, metrics in rows.items():
    lines.append(f"{name:<{name_width}}  " + "  ".join(
        f"{_percent(metrics.get(c)):>7}" for c in columns))
  return "\n".join(lines)


def _percent(value) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return f"{100 * value:.1f}"
