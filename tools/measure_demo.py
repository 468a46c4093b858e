"""Runs the demo pipeline over several seeds and prints a mean / spread table (README).

Beside the teachers and the CBD student it trains, per seed, a classifier with
class-balanced sampling and no distillation, to separate the two halves of CBD.

  python tools/measure_demo.py --seeds=0,1,2 --workdir=runs/demo_seeds
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ("top1", "many", "medium", "few")


def train(flagfile: str, workdir: str, seed: int, *extra: str) -> float:
  start = time.time()
  command = [sys.executable, "-m", "cbd_tf.train", f"--flagfile={flagfile}",
             f"--workdir={workdir}", f"--seed={seed}", *extra]
  subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
  return time.time() - start


def read_metrics(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--workdir", default="runs/demo_seeds")
  parser.add_argument("--flagfile", default="configs/demo.flags")
  args = parser.parse_args()
  rows: dict[str, list[dict]] = {}
  for seed in (int(s) for s in args.seeds.split(",")):
    workdir = os.path.abspath(os.path.join(args.workdir, f"seed_{seed}"))
    seconds = train(args.flagfile, workdir, seed)
    print(f"seed {seed}: pipeline {seconds:.0f} s", flush=True)
    baseline_dir = os.path.join(workdir, "class_balanced_no_distillation")
    train(args.flagfile, baseline_dir, seed, "--stage=teacher", "--sampling=class_balanced")
    for name, metrics in read_metrics(os.path.join(workdir, "comparison.json")).items():
      rows.setdefault(f"teacher {name}" if name != "student" else "CBD student", []).append(metrics)
    rows.setdefault("class-balanced, no distillation", []).append(
        read_metrics(os.path.join(baseline_dir, "metrics.json")))
  print(f"\n| run (top-1 %, mean ± std over seeds {args.seeds}) | " + " | ".join(COLUMNS) + " |")
  print("|---|" + "---|" * len(COLUMNS))
  for name, results in rows.items():
    cells = []
    for column in COLUMNS:
      values = 100 * np.array([r[column] for r in results], dtype=np.float64)
      cells.append(f"{values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0:.1f}")
    print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
