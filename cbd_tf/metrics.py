"""Top-1 accuracy overall, by shot group (many / medium / few) and per class; calibration."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from cbd_tf.data import long_tail


ECE_BINS = 15


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray,
                               num_bins: int = ECE_BINS) -> float:
  """sum over equal-width confidence bins (lo, hi] of |bin| / n * |accuracy - mean confidence|
  (Guo et al. 2017); confidence is the top softmax probability."""
  confidences = np.asarray(confidences, np.float64)
  correct = np.asarray(correct, np.float64)
  if not len(confidences):
    return float("nan")
  bins = np.clip(np.ceil(confidences * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
  error = 0.0
  for b in np.unique(bins):
    members = bins == b
    error += members.sum() * abs(correct[members].mean() - confidences[members].mean())
  return float(error / len(confidences))


def shot_group_accuracy(predictions: np.ndarray, labels: np.ndarray,
                        train_counts: np.ndarray, confidences: np.ndarray | None = None) -> dict:
  """Metrics of predicted vs true labels; a group or class without test images gives None.

  Group accuracy is the mean of its classes' accuracies, as in OLTR / Decoupling / CBD;
  on a balanced test set that equals the accuracy over the group's images. With the top
  softmax probability of each prediction as `confidences`, also `ece` (15 bins).
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
  if confidences is not None:
    result["ece"] = expected_calibration_error(confidences, correct) if len(labels) else None
  return result


def _predictions(logits) -> tuple[np.ndarray, np.ndarray]:
  """(argmax predictions, top softmax probabilities) of (N, C) logits."""
  logits = np.asarray(logits, np.float64)
  probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
  probabilities /= probabilities.sum(axis=-1, keepdims=True)
  return logits.argmax(axis=-1), probabilities.max(axis=-1)


def logits_accuracy(logits: np.ndarray, labels: np.ndarray, train_counts: np.ndarray) -> dict:
  """shot_group_accuracy of (N, C) logits: argmax predictions, top softmax probabilities."""
  predictions, confidences = _predictions(logits)
  return shot_group_accuracy(predictions, labels, train_counts, confidences)


def evaluate_model(model, dataset, train_counts: np.ndarray) -> dict:
  """Runs `model` (images -> logits) over a dataset of (images, labels) batches, keeping a
  prediction and a confidence per image (not every logit: 8,142 classes on iNaturalist)."""
  predictions, confidences, labels = [], [], []
  for images, batch_labels in dataset:
    batch_predictions, batch_confidences = _predictions(model(images, training=False))
    predictions.append(batch_predictions)
    confidences.append(batch_confidences)
    labels.append(np.asarray(batch_labels))
  return shot_group_accuracy(np.concatenate(predictions), np.concatenate(labels), train_counts,
                             np.concatenate(confidences))


def table_cells(rows: Mapping[str, Mapping]) -> list[list[str]]:
  """Header and one row per run: accuracies in percent, None as '-'; an ece column
  (also in percent) when some row has it."""
  columns = ("top1",) + long_tail.SHOT_GROUPS
  if any("ece" in metrics for metrics in rows.values()):
    columns += ("ece",)
  return [["run", *columns]] + [[name, *(_percent(metrics.get(c)) for c in columns)]
                                for name, metrics in rows.items()]


def format_table(rows: Mapping[str, Mapping]) -> str:
  """Rows of metrics as an aligned text table (see table_cells)."""
  cells = table_cells(rows)
  name_width = max(len(row[0]) for row in cells)
  return "\n".join(f"{row[0]:<{name_width}}  " + "  ".join(f"{c:>7}" for c in row[1:])
                   for row in cells)


def _percent(value) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return f"{100 * value:.1f}"


# tau_norm.py's sweep, 0, 0.1, ..., 2: tau-norm's and --posthoc_tau=val's candidates.
TAU_SWEEP = tuple(round(0.1 * step, 1) for step in range(21))


def mean_class_accuracy(result: dict) -> float:
  """Mean accuracy over the classes present in the split (-1 if none)."""
  values = [a for a in result["per_class"] if a is not None]
  return float(np.mean(values)) if values else -1.0


def best_tau(sweep: dict) -> float:
  """The tau with the highest mean per-class accuracy (balanced accuracy); ties -> smaller tau."""
  return max(sorted(sweep), key=lambda tau: mean_class_accuracy(sweep[tau]))
