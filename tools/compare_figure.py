"""tools/compare.py's summary over seeds and its figure (accuracy by shot group, ECE)."""

from __future__ import annotations

import numpy as np

COLUMNS = ("top1", "many", "medium", "few", "ece")


def summarise(rows: dict[str, list[dict]], columns: tuple[str, ...]) -> dict:
  """{method: {column: {"mean", "std", "values"}}}, accuracies and ECE in percent."""
  summary = {}
  for method, results in rows.items():
    summary[method] = {}
    for column in columns:
      values = [100 * r[column] for r in results if r.get(column) is not None]
      summary[method][column] = {
          "mean": float(np.mean(values)) if values else None,
          "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
          "values": values}
  return summary


def plot(summary: dict, path: str, title: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  methods = list(summary)
  positions = np.arange(len(methods))
  figure, (accuracy_axis, ece_axis) = plt.subplots(
      2, 1, figsize=(13, 8), dpi=110, sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
  width = 0.2
  colours = {"top1": "#333333", "many": "#4c78a8", "medium": "#f58518", "few": "#e45756"}
  for offset, column in enumerate(("top1", "many", "medium", "few")):
    means = [summary[m][column]["mean"] or 0.0 for m in methods]
    spreads = [summary[m][column]["std"] for m in methods]
    accuracy_axis.bar(positions + (offset - 1.5) * width, means, width, yerr=spreads,
                      capsize=2, color=colours[column], label=column)
  accuracy_axis.set_ylabel("test accuracy (%)")
  accuracy_axis.set_ylim(0, 105)
  accuracy_axis.legend(ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=9,
                       frameon=False)
  accuracy_axis.grid(axis="y", alpha=0.3)
  accuracy_axis.set_title(f"{title}\n(bars: mean over seeds; whiskers: one standard deviation)",
                          pad=26)
  ece_axis.bar(positions, [summary[m]["ece"]["mean"] or 0.0 for m in methods], 0.5,
               yerr=[summary[m]["ece"]["std"] for m in methods], capsize=2, color="#72b7b2")
  ece_axis.set_ylabel("ECE, 15 bins (%)\nlower is better")
  ece_axis.grid(axis="y", alpha=0.3)
  ece_axis.set_xticks(positions, methods, rotation=30, ha="right", fontsize=9)
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)
