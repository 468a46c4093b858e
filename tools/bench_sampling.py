"""Benchmark of the sampling methods on ImageNet-LT-like and iNaturalist-2018-like counts.

  python tools/bench_sampling.py                  # full tables, ~5 minutes on 2 cores
  python tools/bench_sampling.py --tiny           # seconds; what the test suite runs
  python tools/bench_sampling.py --methods index --profiles inaturalist_2018
  python tools/bench_sampling.py --methods index --start_step 10000000   # a resumed run
  python tools/bench_sampling.py --methods resample,resample_stream        # before / after

`resample_stream` is `resample` through sample_stream (a source without random access):
the tf.data implementation `resample` used over a split before positional_resample.py.

One markdown row per (method, class profile). Each row is measured in a fresh subprocess
so the memory numbers are clean (--tiny runs them in-process). Columns:
  setup s      sample_indices() until the first batch of 128 comes out (at --start_step:
               constant for index and resample, linear in the step for the others,
               which skip to it)
  indices/s    steady-state rate, batches of 128, for --seconds
  peak RSS MB  growth of the peak resident set over the process after importing TF
  reads/ex     records the method reads per index it emits (random access: 1)
  dup / ideal  share of a 128-batch that repeats an index already in it, against the
               expected share for independent draws from the same target
  chi2 p       chi-square p-value of the class frequencies against the target (classes
               pooled into bins expecting >= 20 draws); `resample` draws are not
               independent, so its p-value reads low even though its mean is right
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# name: (classes, most, fewest, total examples)
PROFILES = {
    "imagenet_lt": (1000, 1280, 5, 115_846),
    "inaturalist_2018": (8142, 1000, 2, 437_513),
}
TINY_PROFILES = {"tiny": (100, 200, 2, None)}
# resample_stream: `resample` over a source without random access (sampling.sample_stream):
# the reference's tf.data ops, which `resample` over a split replaced (positional_resample.py).
METHODS = ("index", "per_class", "rejection", "resample", "resample_stream")
BATCH = 128
MIN_EXPECTED_PER_BIN = 20


def class_counts(num_classes: int, most: int, fewest: int, total: int | None) -> np.ndarray:
  """long_tail.exponential_profile from `most` to `fewest`, its exponent warped
  (i/(C-1))^gamma so the counts sum to `total`; the last few units go to the head."""
  from cbd_tf.data import long_tail  # pylint: disable=import-outside-toplevel
  counts = long_tail.exponential_profile(most, num_classes, most / fewest)
  if total is None:
    return counts
  position = np.arange(num_classes) / (num_classes - 1)
  low, high = 0.05, 1.0  # gamma < 1 falls faster: real long-tailed sets have fewer mid-shots

  def warped(gamma):
    return np.maximum(np.floor(most * (most / fewest) ** (-position ** gamma) + 1e-9),
                      fewest).astype(np.int64)
  for _ in range(60):
    middle = (low + high) / 2
    low, high = (middle, high) if warped(middle).sum() < total else (low, middle)
  counts = warped(low)
  shortfall = total - counts.sum()
  if shortfall < 0 or shortfall > num_classes:
    raise ValueError(f"profile cannot reach {total} examples (got {counts.sum()})")
  counts[1:1 + shortfall] += 1  # class 0 stays at `most`; still non-increasing
  return counts


def rss_and_peak_mb() -> tuple[float, float]:
  with open("/proc/self/status") as status:
    fields = dict(line.split(":", 1) for line in status)
  return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak_rss() -> None:
  try:  # Linux: "5" resets VmHWM to the current RSS, so the peak measures only what follows
    with open("/proc/self/clear_refs", "w") as clear:
      clear.write("5")
  except OSError:
    pass


def ideal_duplicate_rate(counts, probabilities, batch=BATCH) -> float:
  per_example = probabilities / np.maximum(counts, 1)
  expected_unique = np.sum(counts * (1 - (1 - per_example) ** batch))
  return 1 - expected_unique / batch


def duplicate_rate(batches) -> float:
  return float(np.mean([1 - len(np.unique(b)) / len(b) for b in batches]))


def binned_chi_square_p(class_ids, probabilities) -> float:
  from scipy import stats  # pylint: disable=import-outside-toplevel
  observed = np.bincount(class_ids, minlength=len(probabilities))
  expected = probabilities * len(class_ids)
  bins = np.zeros(len(expected), np.int64)
  current, mass = 0, 0.0
  for class_id, value in enumerate(expected):
    bins[class_id] = current
    mass += value
    if mass >= MIN_EXPECTED_PER_BIN:
      current, mass = current + 1, 0.0
  if mass and current:  # fold a short last bin into the one before
    bins[bins == current] = current - 1
  pooled_observed = np.bincount(bins, weights=observed)
  pooled_expected = np.bincount(bins, weights=expected)
  if len(pooled_expected) < 2:
    return float("nan")
  return float(stats.chisquare(pooled_observed, pooled_expected).pvalue)


def records_read_per_example(counts, labels, policy, method, progress, emitted):
  """Counts the records a stream method pulls from its source between two marks, so the
  shuffle buffer's initial fill does not count."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from cbd_tf.data import sampling  # pylint: disable=import-outside-toplevel
  if method in ("index", "per_class", "resample"):
    return 1.0
  method = "resample" if method == "resample_stream" else method
  reads = tf.Variable(0, dtype=tf.int64)
  label_tensor = tf.constant(labels)

  def read(index):
    with tf.control_dependencies([reads.assign_add(1)]):
      return tf.identity(index), tf.gather(label_tensor, index)
  source = tf.data.Dataset.range(len(labels)).shuffle(len(labels), seed=1).map(read)
  stream = iter(sampling.sample_stream(source, counts, policy, method, seed=0,
                                       progress=progress).batch(BATCH))
  warmup = max(1, emitted // (2 * BATCH))
  for _ in range(warmup):
    next(stream)
  start = int(reads.numpy())
  measured = max(1, emitted // BATCH)
  for _ in range(measured):
    next(stream)
  return (int(reads.numpy()) - start) / (measured * BATCH)


def shuffled_passes_resampled(labels, counts, policy, progress, start):
  """Indices of sample_stream's `resample` over the split in a fresh order each pass."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from cbd_tf.data import sampling  # pylint: disable=import-outside-toplevel
  label_tensor = tf.constant(labels)
  source = tf.data.Dataset.range(len(labels)).shuffle(len(labels), seed=1).map(
      lambda index: (index, tf.gather(label_tensor, index)))
  stream = sampling.sample_stream(source, counts, policy, "resample", seed=0, progress=progress)
  return stream.map(lambda index, label: index).skip(start)


def measure(method: str, profile: str, policy: str, progress, seconds: float,
            tiny: bool, start_step: int = 0) -> dict:
  from cbd_tf.data import sampling  # pylint: disable=import-outside-toplevel
  counts = class_counts(*(TINY_PROFILES if tiny else PROFILES)[profile])
  labels = np.repeat(np.arange(len(counts)), counts)
  probabilities = sampling.class_probabilities(counts, policy, progress or 0.0)
  reset_peak_rss()
  rss_before, _ = rss_and_peak_mb()
  start = time.perf_counter()
  if method == "resample_stream":
    dataset = shuffled_passes_resampled(labels, counts, policy, progress, start_step * BATCH)
  else:
    dataset = sampling.sample_indices(labels, policy, method=method, seed=0,
                                      num_classes=len(counts), progress=progress,
                                      start=start_step * BATCH)
  stream = iter(dataset.batch(BATCH).prefetch(2))  # as the training pipeline consumes it
  batches = [next(stream).numpy()]
  setup = time.perf_counter() - start
  start = time.perf_counter()
  while time.perf_counter() - start < seconds and len(batches) < 40_000:
    batches.append(next(stream).numpy())
  rate = (len(batches) - 1) * BATCH / (time.perf_counter() - start)
  _, peak = rss_and_peak_mb()
  indices = np.concatenate(batches)
  emitted_for_reads = min(len(indices), 2_000 if tiny else 20_000)
  return {
      "method": method, "profile": profile, "classes": len(counts),
      "examples": int(counts.sum()), "setup_s": setup, "indices_per_s": rate,
      "peak_rss_mb": peak - rss_before,
      "reads_per_example": records_read_per_example(counts, labels, policy, method, progress,
                                                     emitted_for_reads),
      "duplicate_rate": duplicate_rate(batches[1:] or batches),
      "ideal_duplicate_rate": ideal_duplicate_rate(counts, probabilities),
      "chi2_p": binned_chi_square_p(labels[indices], probabilities),
      "draws": len(indices),
  }


def format_table(rows) -> str:
  lines = ["| method | profile | setup s | indices/s | peak RSS MB | reads/ex | dup / ideal "
           "(128-batch) | chi2 p | draws |",
           "|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    if "error" in row:
      lines.append(f"| {row['method']} | {row['profile']} | failed: {row['error']} |"
                   " | | | | | |")
      continue
    lines.append(
        f"| {row['method']} | {row['profile']} ({row['classes']:,} classes, "
        f"{row['examples']:,} ex.) | {row['setup_s']:.2f} | {row['indices_per_s']:,.0f} | "
        f"{row['peak_rss_mb']:.0f} | {row['reads_per_example']:.1f} | "
        f"{row['duplicate_rate']:.4f} / {row['ideal_duplicate_rate']:.4f} | "
        f"{row['chi2_p']:.3g} | {row['draws']:,} |")
  return "\n".join(lines)


def run_in_subprocess(method, profile, args) -> dict:
  command = [sys.executable, os.path.abspath(__file__), "--worker", "--methods", method,
             "--profiles", profile, "--policy", args.policy, "--seconds", str(args.seconds),
             "--start_step", str(args.start_step)]
  if args.progress is not None:
    command += ["--progress", str(args.progress)]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  try:
    result = subprocess.run(command, capture_output=True, text=True, env=env,
                            timeout=args.timeout, check=False)
  except subprocess.TimeoutExpired:
    return {"method": method, "profile": profile, "error": f"over {args.timeout:.0f} s"}
  lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
  if result.returncode or not lines:
    return {"method": method, "profile": profile,
            "error": f"exit {result.returncode}: {result.stderr.strip()[-300:]}"}
  return json.loads(lines[-1])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="a small profile, in-process, fast")
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--profiles", default=None, help=f"comma list of {', '.join(PROFILES)}")
  parser.add_argument("--policy", default="class_balanced")
  parser.add_argument("--progress", type=float, default=None, help="t for --policy progressive")
  parser.add_argument("--seconds", type=float, default=None, help="steady-state time per row")
  parser.add_argument("--timeout", type=float, default=900.0, help="per subprocess")
  parser.add_argument("--start_step", type=int, default=0,
                      help="start the stream at this step of 128, as a resumed run does")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  profiles = TINY_PROFILES if args.tiny else PROFILES
  chosen_profiles = args.profiles.split(",") if args.profiles else list(profiles)
  methods = args.methods.split(",")
  for name in chosen_profiles:
    if name not in profiles:
      parser.error(f"unknown profile {name!r}; valid: {', '.join(profiles)}")
  for name in methods:
    if name not in METHODS:
      parser.error(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
  if args.seconds is None:
    args.seconds = 0.5 if args.tiny else 5.0
  if args.worker or args.tiny:
    rows = [measure(m, p, args.policy, args.progress, args.seconds, args.tiny, args.start_step)
            for p in chosen_profiles for m in methods]
    if args.worker:
      print(json.dumps(rows[0]))
      return 0
  else:
    rows = []
    for profile in chosen_profiles:
      for method in methods:
        rows.append(run_in_subprocess(method, profile, args))
        print(f"measured {method} on {profile}", file=sys.stderr, flush=True)
  print(f"sampling policy: {args.policy}" +
        (f", progress {args.progress}" if args.progress is not None else "") +
        (f", from step {args.start_step:,}" if args.start_step else ""))
  print(format_table(rows))
  return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
