"""report.png and report.md: per-class accuracy against training-image count.

Classes are sorted by training count (head left, tail right); the many / medium / few
bands are shaded, the count is drawn on a log axis behind the accuracies. With many
classes, each run is drawn as a running mean so the tail trend stays readable.
"""

from __future__ import annotations

import os
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from cbd_tf import metrics, run_dir  # pylint: disable=wrong-import-position
from cbd_tf.data import long_tail  # pylint: disable=wrong-import-position

_BAND_COLOURS = {"many": "#dbe9f6", "medium": "#fdf0d5", "few": "#f8dcdc"}
_MAX_CLASSES_AS_POINTS = 60


def write_report(directory: str, results: Mapping[str, Mapping], train_counts, title: str) -> None:
  """Writes report.png and report.md for one run or several runs on the same data."""
  train_counts = np.asarray(train_counts)
  _plot(os.path.join(directory, run_dir.REPORT_PNG), results, train_counts, title)
  lines = [f"# {title}", "", "Top-1 accuracy (%) on the test split; shot groups by training "
           "images per class: many > 100, medium 20-100, few < 20.", "",
           _markdown_table(results), "",
           "Classes per group: " + ", ".join(
               f"{g} {int(np.sum(long_tail.shot_group_of_classes(train_counts) == g))}"
               for g in long_tail.SHOT_GROUPS), "",
           f"![per-class accuracy]({run_dir.REPORT_PNG})", ""]
  with open(os.path.join(directory, run_dir.REPORT_MD), "w") as f:
    f.write("\n".join(lines))


def _markdown_table(results: Mapping[str, Mapping]) -> str:
  cells = metrics.table_cells(results)
  rule = "|" + "---|" * len(cells[0])
  return "\n".join(["| " + " | ".join(cells[0]) + " |", rule] +
                   ["| " + " | ".join(row) + " |" for row in cells[1:]])


def _plot(path: str, results: Mapping[str, Mapping], train_counts: np.ndarray, title: str):
  order = np.argsort(-train_counts, kind="stable")
  counts = train_counts[order]
  positions = np.arange(len(order))
  groups = long_tail.shot_group_of_classes(counts)
  figure, accuracy_axis = plt.subplots(figsize=(10, 5.5), dpi=110)
  count_axis = accuracy_axis.twinx()
  for group in long_tail.SHOT_GROUPS:
    members = positions[groups == group]
    if len(members):
      count_axis.axvspan(members[0] - 0.5, members[-1] + 0.5, color=_BAND_COLOURS[group],
                         zorder=0)
      accuracy_axis.text((members[0] + members[-1]) / 2, 1.04, group, ha="center",
                         fontsize=10, color="#444444")
  if len(counts) <= _MAX_CLASSES_AS_POINTS:
    count_axis.bar(positions, counts, width=0.8, color="#bbbbbb", alpha=0.5, zorder=1)
  else:  # one polygon, not thousands of bars (iNaturalist has 8,142 classes)
    count_axis.fill_between(positions, counts, step="mid", color="#bbbbbb", alpha=0.5, zorder=1)
  count_axis.set_yscale("log")
  count_axis.set_ylabel("training images per class (log scale, grey bars)")
  as_points = len(order) <= _MAX_CLASSES_AS_POINTS
  for name, result in results.items():
    per_class = np.array([np.nan if a is None else a for a in result["per_class"]], np.float64)
    values = per_class[order]
    label = f"{name} (top-1 {100 * result['top1']:.1f}%)"
    if as_points:
      accuracy_axis.plot(positions, values, marker="o", linewidth=1.5, label=label, zorder=3)
    else:
      accuracy_axis.plot(positions, _running_mean(values, max(len(values) // 50, 5)),
                         linewidth=1.5, label=label, zorder=3)
  accuracy_axis.set_zorder(count_axis.get_zorder() + 1)
  accuracy_axis.patch.set_visible(False)
  accuracy_axis.set_ylim(0, 1.08)
  accuracy_axis.set_xlim(-0.5, len(order) - 0.5)
  accuracy_axis.set_ylabel("per-class top-1 accuracy" + ("" if as_points else " (running mean)"))
  accuracy_axis.set_xlabel("classes, sorted by training images (head -> tail)" +
                           (": class (images)" if as_points else ""))
  if as_points:
    accuracy_axis.set_xticks(positions, [f"{c}\n({n})" for c, n in zip(order, counts)], fontsize=8)
  accuracy_axis.legend(loc="lower left", fontsize=9)
  accuracy_axis.set_title(title, pad=18)
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
  valid = ~np.isnan(values)
  kernel = np.ones(window)
  sums = np.convolve(np.where(valid, values, 0.0), kernel, mode="same")
  counts = np.convolve(valid.astype(np.float64), kernel, mode="same")
  return np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)
