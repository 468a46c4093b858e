"""Reading cached teacher features as a student does: a synthetic cache (random float16 rows
in the cache's own format), read in random batches through the tf.data map a student's
pipeline uses (teacher_cache.FeatureReader), against the training step it feeds. Prints rows/s,
the cache's size on disk and the process's resident memory before and after reading as many
rows as the cache holds (the cache is read, not held: memory should not grow with it).

  python tools/bench_teacher_features.py                       # 20,000 images, M 10, 4,096 dims
  python tools/bench_teacher_features.py --tiny                # seconds
  python tools/bench_teacher_features.py --images 100000 --dim 2048
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resident_mb() -> float:
  """Current resident memory of this process, MB (Linux /proc)."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_cache(directory: str, images: int, views: int, dim: int) -> None:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from cbd_tf.data import teacher_cache  # pylint: disable=import-outside-toplevel
  per_shard = teacher_cache.IMAGES_PER_SHARD
  rng = np.random.default_rng(0)
  for shard in range(teacher_cache.shard_count(images, per_shard)):
    rows = min(per_shard, images - shard * per_shard) * views
    teacher_cache.write_shard(directory, shard,
                              rng.standard_normal((rows, dim), np.float32).astype(np.float16))
  teacher_cache.write_metadata(directory, {"num_images": images, "views": views,
                                           "view_seed": 0, "teachers": []},
                               dim, [dim], per_shard)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=20_000)
  parser.add_argument("--views", type=int, default=10)
  parser.add_argument("--dim", type=int, default=4096)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--tiny", action="store_true", help="2,000 images, 4 views, 512 dims")
  args = parser.parse_args(argv)
  if args.tiny:
    args.images, args.views, args.dim = 2_000, 4, 512
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from cbd_tf.data import teacher_cache  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as directory:
    start = time.perf_counter()
    write_cache(directory, args.images, args.views, args.dim)
    written = time.perf_counter() - start
    size = sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))
    reader = teacher_cache.FeatureReader(directory)
    total = args.images * args.views
    batches = -(-total // args.batch)
    keys = tf.data.Dataset.random(seed=0).map(lambda bits: bits % total).batch(args.batch)
    features = keys.map(reader, num_parallel_calls=tf.data.AUTOTUNE).take(batches)
    before = resident_mb()
    start = time.perf_counter()
    checksum = 0.0
    for batch in features.prefetch(tf.data.AUTOTUNE):
      checksum += float(tf.reduce_sum(tf.cast(batch[:, 0], tf.float32)))
    seconds = time.perf_counter() - start
    after = resident_mb()
  print(f"| cache | {args.images:,} images x {args.views} views x {args.dim} dims, float16 | "
        f"{size / 2**30:.2f} GB on disk, {args.dim * 2:,} bytes per image per view, written "
        f"in {written:.1f} s |")
  print(f"| read | {batches:,} random batches of {args.batch} ({batches * args.batch:,} rows) | "
        f"{batches * args.batch / seconds:,.0f} rows/s, {batches / seconds:,.0f} batches/s |")
  print(f"| memory | resident before / after reading | {before:,.0f} MB / {after:,.0f} MB "
        f"(peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB) |")
  print(f"checksum {checksum:.3f}" if np.isfinite(checksum) else "checksum not finite")
  return 0


if __name__ == "__main__":
  sys.exit(main())
