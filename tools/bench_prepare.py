"""Images/s of the one-time work before training: the image check and the export to the cache.

  python tools/bench_prepare.py          # 500 JPEGs, 100,000 tiny files; ~4 min
  python tools/bench_prepare.py --tiny   # seconds; what the test suite runs

Needs the package installed (pip install -r requirements.txt), as every tool. Both
passes run once per data set and cache directory (cbd_tf/data/source_cache.py); the
files are written to a temporary directory under --work_dir and removed afterwards.
Rows:
  image check, first run   source_cache.drop_broken (what --validate_images runs) into an
                           empty cache over --jpegs ImageNet-sized JPEGs: random crops of
                           250-500 px a side, quality 90, of the photograph matplotlib ships
  (same), 8x8 PNG          the same over --tiny_files 8x8 PNGs, 1,000 per folder and one
                           empty file per folder: the cost per file apart from decoding
  image check, cache hit   drop_broken again over those files, unchanged; target < 1 s at
                           100,000 files
  one os.stat per file     for comparison: what a key over every file's size and mtime
                           would add to each hit
  export to cache          tfds_sources.load_tfrecord over TFRecords of the JPEGs as
                           tf.train.Examples (train: all of them --export_repeats times,
                           test: every 10th once) into an empty cache: the pass TFDS and
                           TFRecord sets make once; repeats keep its fixed start-up cost
                           (two pipelines, two label files) from hiding the rate
Columns: files; seconds, wall clock, median of --rounds; images/s = files / seconds, on
all cores; CPU ms per file, the process's CPU time (all threads) / files, median: the
work done, which other jobs on a shared machine do not change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import source_cache, tfds_sources
from cbd_tf.data.source_types import Split

FILES_PER_FOLDER = 1000
TARGET_HIT_SECONDS = 1.0


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
  parser.add_argument("--jpegs", type=int, default=500)
  parser.add_argument("--tiny_files", type=int, default=100_000)
  parser.add_argument("--export_repeats", type=int, default=4)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--work_dir", default=tempfile.gettempdir())
  args = parser.parse_args(argv)
  if args.tiny:
    args.jpegs, args.tiny_files, args.export_repeats, args.rounds = 20, 2000, 1, 1
  for name in ("jpegs", "tiny_files", "export_repeats", "rounds"):
    if getattr(args, name) < 1:
      raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
  return args


def write_jpegs(directory: str, count: int, seed: int = 0) -> list[str]:
  """ImageNet-sized JPEGs: random crops, 250-500 px a side, of matplotlib's photograph."""
  import matplotlib.cbook  # pylint: disable=import-outside-toplevel
  with open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb") as f:
    photo = tf.io.decode_jpeg(f.read(), channels=3).numpy()
  rng = np.random.default_rng(seed)
  os.makedirs(directory, exist_ok=True)
  paths = []
  for index in range(count):
    height, width = (min(int(rng.integers(250, 501)), side) for side in photo.shape[:2])
    top = int(rng.integers(0, photo.shape[0] - height + 1))
    left = int(rng.integers(0, photo.shape[1] - width + 1))
    crop = photo[top:top + height, left:left + width]
    paths.append(os.path.join(directory, f"{index:06d}.jpg"))
    tf.io.write_file(paths[-1], tf.io.encode_jpeg(crop, quality=90))
  return paths


def write_tiny_files(directory: str, count: int) -> tuple[list[str], int]:
  """(paths, number broken): 8x8 PNGs in folders of FILES_PER_FOLDER, the first of each
  folder an empty file, so the check has something to find."""
  rng = np.random.default_rng(0)
  contents = [tf.io.encode_png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).numpy()
              for _ in range(16)]
  paths = []
  for index in range(count):
    folder, position = divmod(index, FILES_PER_FOLDER)
    if position == 0:
      os.makedirs(os.path.join(directory, f"{folder:05d}"))
    paths.append(os.path.join(directory, f"{folder:05d}", f"{position:05d}.png"))
    with open(paths[-1], "wb") as f:
      f.write(b"" if position == 0 else contents[index % len(contents)])
  return paths, (count + FILES_PER_FOLDER - 1) // FILES_PER_FOLDER


def write_tfrecord(path: str, image_paths: list[str]) -> str:
  with tf.io.TFRecordWriter(path) as writer:
    for index, image_path in enumerate(image_paths):
      with open(image_path, "rb") as f:
        feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f.read()])),
                   "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 10]))}
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                   .SerializeToString())
  return path


def timed(function) -> tuple[float, float, object]:
  """(wall seconds, process CPU seconds, result) of one call."""
  wall, cpu = time.perf_counter(), time.process_time()
  result = function()
  return time.perf_counter() - wall, time.process_time() - cpu, result


def check(paths: list[str], cache: str) -> tuple[Split, list[str]]:
  return source_cache.drop_broken(Split.from_files(paths, np.zeros(len(paths))), "train", cache)


def stat_every_file(paths: list[str]) -> None:
  for path in paths:
    os.stat(path)


def row(name: str, files: int, timings: list[tuple[float, float]]) -> str:
  seconds = statistics.median(wall for wall, _ in timings)
  cpu_ms = 1000 * statistics.median(cpu for _, cpu in timings) / files
  return f"| {name} | {files} | {seconds:.3f} | {files / seconds:.0f} | {cpu_ms:.4f} |"


def measure(args: argparse.Namespace, work: str) -> list[str]:
  jpegs = write_jpegs(os.path.join(work, "jpegs"), args.jpegs)
  tiny, tiny_broken = write_tiny_files(os.path.join(work, "tiny"), args.tiny_files)
  train_records = write_tfrecord(os.path.join(work, "train.tfrecord"),
                                 jpegs * args.export_repeats)
  test_records = write_tfrecord(os.path.join(work, "test.tfrecord"), jpegs[::10])
  exported = len(jpegs) * args.export_repeats + len(jpegs[::10])
  fresh = iter(os.path.join(work, f"cache_{index}") for index in range(10 ** 6))
  timings = {name: [] for name in ("check", "tiny check", "hit", "stat", "export")}

  check(jpegs[:8], next(fresh))  # builds TensorFlow's first tf.data pipeline, untimed
  for _ in range(args.rounds):
    wall, cpu, (kept, _) = timed(lambda: check(jpegs, next(fresh)))
    timings["check"].append((wall, cpu))
    if len(kept) != len(jpegs):
      raise RuntimeError(f"the check dropped {len(jpegs) - len(kept)} good JPEGs")
    data = config_lib.DataConfig(dataset="tfrecord", tfrecord_train=train_records,
                                 tfrecord_test=test_records, cache_dir=next(fresh))
    wall, cpu, source = timed(lambda: tfds_sources.load_tfrecord(data))  # pylint: disable=cell-var-from-loop
    timings["export"].append((wall, cpu))
    if len(source.train) + len(source.test) != exported:
      raise RuntimeError("the export lost images")

  tiny_cache = next(fresh)
  wall, cpu, (_, skipped) = timed(lambda: check(tiny, tiny_cache))
  timings["tiny check"].append((wall, cpu))
  for _ in range(max(args.rounds, 5)):
    wall, cpu, (_, skipped_again) = timed(lambda: check(tiny, tiny_cache))
    timings["hit"].append((wall, cpu))
    if len(skipped) != tiny_broken or skipped_again != skipped:
      raise RuntimeError(f"expected {tiny_broken} broken tiny files, found {len(skipped)} "
                         f"then {len(skipped_again)}")
    wall, cpu, _ = timed(lambda: stat_every_file(tiny))
    timings["stat"].append((wall, cpu))

  hit_seconds = statistics.median(wall for wall, _ in timings["hit"])
  return [
      f"{os.cpu_count()} CPU cores; {args.rounds} round(s); cache hit target "
      f"< {TARGET_HIT_SECONDS:g} s at 100,000 files: {hit_seconds:.3f} s at {len(tiny)}",
      "",
      "| step | files | seconds | images/s | CPU ms per file |",
      "|---|---|---|---|---|",
      row("image check, first run (JPEG 250-500 px)", len(jpegs), timings["check"]),
      row("image check, first run (8x8 PNG)", len(tiny), timings["tiny check"]),
      row("image check, cache hit (8x8 PNG)", len(tiny), timings["hit"]),
      row("one os.stat per file, for comparison", len(tiny), timings["stat"]),
      row("export to cache (TFRecord of JPEGs)", exported, timings["export"]),
  ]


def main(argv=None) -> None:
  args = parse_args(argv)
  with tempfile.TemporaryDirectory(prefix="bench_prepare_", dir=args.work_dir) as work:
    print("\n".join(measure(args, work)))


if __name__ == "__main__":
  main()
