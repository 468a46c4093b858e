"""--stage=teacher_features: the --teachers' feature of each of --teacher_views=M views of every
training image, as a CBD student forms it (each teacher's embedding L2-normalised,
concatenated, normalised), cached in float16 in --workdir (data/teacher_cache.py) for
`--stage=student --teacher_features=WORKDIR`. Shard by shard: a killed pass resumes at the
first missing shard. Views are built by the student's own training pipeline from their seeds
(data/teacher_views.py); teachers run under the strategy, each replica its slice of a batch.
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from cbd_tf import config as config_lib
from cbd_tf import distiller, distribute, run_dir, run_files, teachers
from cbd_tf.data import pipeline, source_cache, sources, teacher_cache, teacher_views

PROGRESS_SECONDS = 10.0


def check(config: config_lib.Config, source: sources.Source) -> None:
  teachers.check_teachers(config.distill.teachers, source.num_classes, config.data.image_size,
                          student_dir=config.workdir)


def run(config: config_lib.Config, source: sources.Source,
        strategy: tf.distribute.Strategy | None = None) -> dict:
  """Caches what is missing; returns (and writes to teacher_features.json) {images, views,
  dim, bytes, images_cached_now, images_per_second, unreadable_images}."""
  strategy = strategy or tf.distribute.get_strategy()
  chief = distribute.is_chief(strategy)
  count, seed, directory = config.distill.teacher_views, config.seed, config.workdir
  with strategy.scope():
    frozen = teachers.load_teachers(config.distill.teachers, directory, chief)
  names = teachers.teacher_metric_names(config.distill.teachers)
  widths = [int(teacher.embedding_dim) for teacher in frozen]
  made = teacher_cache.made_from(
      config.data, source.train, count, seed,
      [{"teacher": spec, "name": name, "dim": width, "weights_sha256": teachers.weights_sha256(t)}
       for spec, name, width, t in zip(config.distill.teachers, names, widths, frozen)])
  existing = teacher_cache.read_metadata(directory)
  differ = existing and teacher_cache.differences(existing["made_from"], made)
  if differ:
    raise ValueError(f"{directory} holds features made otherwise: {'; '.join(differ)}; "
                     f"cache them in another --workdir")
  unreadable = set(existing["unreadable_images"]) if existing else set()
  # A resumed cache keeps the shard size it began with.
  per_shard = existing["images_per_shard"] if existing else teacher_cache.IMAGES_PER_SHARD
  if chief:
    os.makedirs(directory, exist_ok=True)
    config.save(os.path.join(directory, run_dir.CONFIG))
    teacher_cache.write_metadata(directory, made, sum(widths), widths, per_shard,
                                 sorted(unreadable))
  num_images = len(source.train)
  missing = teacher_cache.missing_shards(directory, num_images, per_shard)
  features_of = _features_function(frozen, strategy)
  progress = _Progress(num_images, count, num_images - sum(
      len(_shard_images(shard, num_images, per_shard)) for shard in missing))
  for shard in missing:
    images = _shard_images(shard, num_images, per_shard)
    rows, lost = _shard_rows(images, count, seed, sum(widths), source, config, strategy,
                             features_of)
    unreadable |= lost
    if chief:
      teacher_cache.write_shard(directory, shard, rows)
      teacher_cache.write_metadata(directory, made, sum(widths), widths, per_shard,
                                   sorted(unreadable))
    progress.update(len(images), len(lost))
  progress.update(0, 0, last=True)
  distribute.barrier(strategy)
  if unreadable:
    logging.warning("teacher features: %d training images could not be read; their rows are "
                    "0 (listed in %s)", len(unreadable),
                    os.path.join(directory, teacher_cache.METADATA))
  result = {"images": num_images, "views": count, "dim": sum(widths),
            "bytes": num_images * count * sum(widths) * 2,
            "images_cached_now": progress.cached_now,
            "images_per_second": round(progress.rate(), 2),
            "unreadable_images": len(unreadable)}
  if chief:
    run_files.write_json(os.path.join(directory, run_dir.TEACHER_FEATURES_RECORD), result)
  return result


def _shard_images(shard: int, num_images: int, per_shard: int) -> range:
  return range(shard * per_shard, min((shard + 1) * per_shard, num_images))


def _features_function(frozen: list, strategy: tf.distribute.Strategy):
  """(images, keys) of a distributed batch -> (features, keys) of the whole batch."""

  @tf.function
  def features_of(images, keys):
    features, keys = strategy.run(
        lambda x, k: (distiller.teacher_features(frozen, x), k), args=(images, keys))
    return strategy.gather(features, axis=0), strategy.gather(keys, axis=0)
  return features_of


def _shard_rows(images: range, count: int, seed: int, dim: int,
                source: sources.Source, config: config_lib.Config,
                strategy: tf.distribute.Strategy, features_of) -> tuple[np.ndarray, set]:
  """The float16 rows of `images`' views, and the images that could not be read. The
  pipeline skips an unreadable file, which can shift a batch's tail into the dropped
  remainder: views missing after a pass are tried again alone, until none comes back."""
  batch, first = config.data.batch_size, images.start * count
  rows = np.zeros((len(images) * count, dim), np.float16)
  pending = np.arange(first, images.stop * count, dtype=np.int64)
  while len(pending):
    views = teacher_views.views_of(pending, count, seed, pad_to=batch)
    batches = pipeline.train_batches(views, source.train, config.data, batch).map(
        lambda images, labels, keys: (images, keys)).prefetch(tf.data.AUTOTUNE)
    received = []
    for images, keys in strategy.experimental_distribute_dataset(batches):
      features, keys = features_of(images, keys)
      keys = keys.numpy()
      rows[keys - first] = features.numpy().astype(np.float16)
      received.append(keys)
    left = np.setdiff1d(pending, np.concatenate(received) if received else [])
    if len(left) == len(pending):
      return rows, {int(image) for image in np.unique(left // count)}
    pending = left
  return rows, set()


class _Progress:
  """Logs images cached of all, images/s and time left every PROGRESS_SECONDS."""

  def __init__(self, total: int, views: int, done: int):
    self.total, self.views, self.done, self.unreadable = total, views, done, 0
    self.cached_now = 0
    self.start = self.last_log = time.monotonic()

  def rate(self) -> float:
    return self.cached_now / max(time.monotonic() - self.start, 1e-9)

  def update(self, images: int, unreadable: int, last: bool = False) -> None:
    self.done += images
    self.cached_now += images
    self.unreadable += unreadable
    now = time.monotonic()
    if not last and now - self.last_log < PROGRESS_SECONDS:
      return
    self.last_log = now
    rate = self.rate()
    left = (f", {source_cache.duration_text((self.total - self.done) / rate)} left"
            if not last and rate > 0 else "")
    logging.info("teacher features: %s of %s images x %d views (%.0f%%), %.1f images/s%s, "
                 "%d unreadable", f"{self.done:,}", f"{self.total:,}", self.views,
                 100 * self.done / self.total, rate, left, self.unreadable)
