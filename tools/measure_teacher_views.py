"""Cached teacher features against live teachers, measured on the bundled mnist_pairs_lt: per
seed the mnist_pairs pipeline (two ResNet-8 teachers, then a CBD_ENS student distilled from
them live), then for each M a feature cache of the same teachers (--stage=teacher_features
--teacher_views=M) and a student trained from it. Prints top-1 and few-shot per row, each
caching pass's images/s and the cache's disk per image per view, and times a step.

  python tools/measure_teacher_views.py --seeds=0,1,2 --views=1,4,16 --workdir=runs/views
  python tools/measure_teacher_views.py --tiny      # seconds: 1 seed, M = 2, 2 steps

Every run is `python -m cbd_tf.train --flagfile=configs/mnist_pairs.flags ...` (--epochs
overrides the flagfile's 40); finished runs and caches are reused.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure_tuning import read_json  # pylint: disable=wrong-import-position  (beside this file)
import measure_tuning  # pylint: disable=wrong-import-position

FLAGFILE = "--flagfile=configs/mnist_pairs.flags"
CACHE_RECORD = "teacher_features.json"  # what --stage=teacher_features writes at its end


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/views")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--views", default="1,4,16")
  parser.add_argument("--epochs", type=int, default=0, help="0: the flagfile's")
  parser.add_argument("--tiny", action="store_true")
  args = parser.parse_args(argv)
  seeds = [int(seed) for seed in args.seeds.split(",")]
  views = [int(m) for m in args.views.split(",")]
  extra = [f"--epochs={args.epochs}"] if args.epochs else []
  if args.tiny:
    seeds, views = [0], [2]
    extra = ["--epochs=1", "--steps_per_epoch=2", "--eval_every_epochs=0", "--warmup_epochs=0"]
  rows = {"live teachers": [], **{f"cached, M = {m}": [] for m in views}}
  steps = {row: [] for row in rows}
  caching = {m: [] for m in views}
  for seed in seeds:
    pipeline = os.path.abspath(os.path.join(args.workdir, f"seed_{seed}"))
    # The log's last step time is the student's (the teachers train first).
    steps["live teachers"].append(train(pipeline, "student/metrics.json", f"--seed={seed}",
                                        *extra))
    rows["live teachers"].append(read_json(os.path.join(pipeline, "student", "metrics.json")))
    teachers = ",".join(os.path.join(pipeline, "teachers", name)
                        for name in ("vanilla_1", "vanilla_2"))
    for m in views:
      cache = os.path.join(args.workdir, f"features_{seed}_m{m}")
      train(cache, CACHE_RECORD, "--stage=teacher_features", f"--teachers={teachers}",
            f"--teacher_views={m}", "--seed=0", *extra)
      caching[m].append(read_json(os.path.join(cache, CACHE_RECORD)))
      student = os.path.join(args.workdir, f"student_{seed}_m{m}")
      steps[f"cached, M = {m}"].append(train(
          student, "metrics.json", "--stage=student", f"--teacher_features={cache}",
          f"--seed={seed}", *extra))
      rows[f"cached, M = {m}"].append(read_json(os.path.join(student, "metrics.json")))
  print(f"mnist_pairs_lt, seeds {','.join(map(str, seeds))}: CBD_ENS students (two ResNet-8 "
        "teachers)")
  print("| teacher features | top-1 (mean ± std over seeds) | few | s / step (last epoch) |")
  print("|---|---:|---:|---:|")
  for row, results in rows.items():
    top1 = 100 * np.array([r["top1"] for r in results])
    few = 100 * np.array([r["few"] if r["few"] is not None else np.nan for r in results])
    step = np.mean([t for t in steps[row] if t is not None] or [np.nan])
    spread = (lambda values: np.nanstd(values, ddof=1)) if len(seeds) > 1 else np.nanstd
    print(f"| {row} | {top1.mean():.1f} ± {spread(top1):.1f} | {np.nanmean(few):.1f} ± "
          f"{spread(few):.1f} | {step:.3f} |")
  print("\n| M | caching pass, images/s (mean over seeds) | views/s | disk per image per view |")
  print("|---:|---:|---:|---:|")
  for m, results in caching.items():
    rate = np.mean([r["images_per_second"] for r in results])
    print(f"| {m} | {rate:,.0f} | {rate * m:,.0f} | "
          f"{results[0]['bytes'] // (results[0]['images'] * m):,} bytes |", flush=True)


def train(workdir: str, done: str, *flags: str) -> float | None:
  """The mnist_pairs flagfile with `flags`, unless `workdir`/`done` exists: s / step."""
  return measure_tuning.train(workdir, FLAGFILE, *flags, done=done)


if __name__ == "__main__":
  main()
