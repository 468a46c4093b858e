"""One-time passes over a data set, cached under `DataConfig.cache_dir`.

  export_encoded    streams (encoded image, label) records from TFDS or TFRecord files
                    once, writing each image's bytes to its own file and the labels to
                    labels.npy: the sampler then gets random access without a decode.
  drop_broken       decodes every image file once (in parallel, in tf.data) and leaves
                    out those that fail, so the sampler never draws a broken file.

Both results are cached by a key of what was read, so a second run (or
`cbd_tf.evaluate`) reads labels.npy / the list of broken files instead of the data.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from typing import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from cbd_tf import config as config_lib
from cbd_tf.data import augment
from cbd_tf.data.source_types import Split, check_labels

SKIPPED_FILES = "skipped_files.txt"
_FILES_PER_DIRECTORY = 1000
_EXPORT_BATCH = 256


def cache_dir(data: config_lib.DataConfig) -> str:
  """The configured cache directory; the system temp directory when none is set."""
  return data.cache_dir or os.path.join(tempfile.gettempdir(), "cbd_tf_cache")


def key_of(*parts) -> str:
  digest = hashlib.sha1()
  for part in parts:
    digest.update(repr(part).encode())
    digest.update(b"\0")
  return digest.hexdigest()[:16]


def is_exported(directory: str) -> bool:
  return os.path.exists(os.path.join(directory, "labels.npy"))


def export_encoded(records: Callable[[], tf.data.Dataset], directory: str, num_classes: int,
                   where: str) -> Split:
  """Split of image files exported from `records()`, a dataset of (encoded bytes, int label).

  Costs one sequential read of the records and a copy of their bytes on disk; labels.npy
  is written last, so an interrupted export starts again rather than being half used.
  """
  labels_file = os.path.join(directory, "labels.npy")
  if is_exported(directory):
    try:
      labels = np.load(labels_file)
      return Split.from_files([_exported_path(directory, i) for i in range(len(labels))], labels)
    except (ValueError, EOFError, OSError) as error:  # a cache: made again, not a user error
      logging.warning("%s is damaged (%s); exporting the images again", labels_file, error)
      os.remove(labels_file)
  logging.info("%s: exporting encoded images once to %s", where, directory)
  labels = []
  # In batches: handing Python one record at a time cost more than writing its file.
  batches = records().batch(_EXPORT_BATCH).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  for images, batch_labels in batches:
    for image, label in zip(images, batch_labels):
      path = _exported_path(directory, len(labels))
      if len(labels) % _FILES_PER_DIRECTORY == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "wb") as f:
        f.write(image)
      labels.append(int(label))
  if not labels:
    raise ValueError(f"{where}: no examples")
  labels = np.asarray(labels, dtype=np.int64)
  check_labels(labels, num_classes, where)
  temporary = os.path.join(directory, "partial.labels.npy")
  np.save(temporary, labels)
  os.replace(temporary, labels_file)
  return Split.from_files([_exported_path(directory, i) for i in range(len(labels))], labels)


def _exported_path(directory: str, index: int) -> str:
  return os.path.join(directory, f"{index // _FILES_PER_DIRECTORY:05d}", f"{index:08d}")


def drop_broken(split: Split, split_name: str, directory: str,
                max_pixels: int = config_lib.DataConfig.max_image_pixels,
                progress_seconds: float = 10.0) -> tuple[Split, list[str]]:
  """`split` without the files that fail to decode, and "split<TAB>path<TAB>reason" lines.

  The first call decodes every file once (the decode the pipeline uses, in tf.data on all
  cores: a file declaring more than `max_pixels` pixels is refused before decoding, a GIF
  decoded to its first frame), logging its progress every `progress_seconds`, and records
  the broken ones in `directory`, under a key of the limit, the ordered paths and the inode
  and modification time of each directory that holds them. A later call with
  the same key reads that record instead: one stat per directory, not one per file, since
  per-file stats are what made a cache hit slow on network file systems (100,000 files
  in 100 directories: see tools/bench_prepare.py for both costs).

  A cached check starts again when a path is added to or removed from the split, or when
  a file is added, removed, renamed or replaced by a rename in one of those directories
  (the way tar, rsync and most downloaders write). A broken file edited in place (its
  size or mtime, recorded with it, differ) is decoded again alone. Not noticed: a good
  file rewritten in place into a broken one, or a change behind a symlink; the training
  pipeline still drops such a file when it fails to decode, with a warning. Labels are
  not in the key, so relabelling a split does not decode it again.
  """
  if not split.is_encoded:
    return split, []
  paths = split.paths
  record = os.path.join(directory,
                        f"checked_{split_name}_{_files_key(paths, max_pixels)}.tsv")
  broken = _read_record(record)
  if broken is None:
    logging.info("checking %d %s image files once (cached in %s)", len(paths), split_name,
                 directory)
    broken = {index: (_file_state(paths[index]), reason) for index, reason in
              _find_broken(paths, max_pixels, split_name, progress_seconds).items()}
    _write_record(record, paths, broken)
  elif _recheck_changed(paths, broken, max_pixels):
    _write_record(record, paths, broken)
  skipped = [f"{split_name}\t{paths[index]}\t{reason}"
             for index, (_, reason) in sorted(broken.items())]
  for line in skipped:
    logging.warning("skipping unreadable image: %s", line.replace("\t", ": ", 1))
  keep = np.ones(len(split), dtype=bool)
  keep[list(broken)] = False
  return split.select(np.flatnonzero(keep)), skipped


# Part of the record's key: records of an older layout or decoder are never read.
_RECORD_LAYOUT = 3


def _files_key(paths: np.ndarray, max_pixels: int) -> str:
  # Each path up to its last separator ("" for the working directory): cheaper than dirname.
  directories = sorted({path[:path.rfind(os.sep) + 1] or os.curdir for path in paths})
  return key_of(_RECORD_LAYOUT, max_pixels, paths.tolist(),
                [(directory, _directory_state(directory)) for directory in directories])


def _directory_state(directory: str) -> tuple[int, int]:
  """(inode, mtime): a file added, removed or renamed in the folder changes it."""
  return _stat(directory, "st_ino")


def _file_state(path: str) -> tuple[int, int]:
  return _stat(path, "st_size")


def _stat(path: str, first_field: str) -> tuple[int, int]:
  """(stat.<first_field>, mtime in ns), or (-1, -1) for a path that cannot be read."""
  try:
    stat = os.stat(path)
  except OSError:
    return -1, -1
  return getattr(stat, first_field), stat.st_mtime_ns


def _read_record(record: str) -> dict[int, tuple[tuple[int, int], str]] | None:
  """{index: ((size, mtime_ns), reason)} of the broken files; None when there is no record."""
  if not os.path.exists(record):
    return None
  broken = {}
  with open(record, errors="replace") as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:  # index, size, mtime, path, reason: the path may hold tabs, the reason never does.
          index, size, mtime, _ = line.split("\t", 3)
          broken[int(index)] = ((int(size), int(mtime)), line.rstrip("\n").rsplit("\t", 1)[1])
        except ValueError:  # a cache: checked again, not a user error
          logging.warning("%s is damaged (line %d); checking the images again", record, number)
          return None
  return broken


def _write_record(record: str, paths: np.ndarray, broken: dict) -> None:
  """Written whole, then renamed: an interrupted run leaves no half record."""
  os.makedirs(os.path.dirname(record), exist_ok=True)
  with open(record + ".tmp", "w") as f:
    for index, ((size, mtime), reason) in sorted(broken.items()):
      f.write(f"{index}\t{size}\t{mtime}\t{paths[index]}\t{reason}\n")
  os.replace(record + ".tmp", record)


def _recheck_changed(paths: np.ndarray, broken: dict, max_pixels: int) -> bool:
  """Decodes again the broken files changed in place since their check; True if any were."""
  changed = False
  for index, (state, _) in list(broken.items()):
    now = _file_state(paths[index])
    if now != state:
      changed = True
      reason = _decode_error(paths[index], max_pixels)
      if reason is None:
        del broken[index]
      else:
        broken[index] = (now, reason)
  return changed


def _find_broken(paths: np.ndarray, max_pixels: int, split_name: str,
                 progress_seconds: float) -> dict[int, str]:
  """{index: reason} of the files that do not decode; the good ones pass in parallel, in
  order, so the highest index seen tells how far the check is."""
  def decodes(index, path):
    image = augment.decode_image(tf.io.read_file(path), max_pixels)
    with tf.control_dependencies([tf.debugging.assert_positive(tf.size(image))]):
      return tf.identity(index)

  dataset = (tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths.astype(str)))
             .map(decodes, num_parallel_calls=tf.data.AUTOTUNE)
             .ignore_errors().batch(256))
  good = np.zeros(len(paths), dtype=bool)
  progress = _CheckProgress(len(paths), split_name, progress_seconds)
  for indices in dataset.as_numpy_iterator():
    good[indices] = True
    progress.update(int(indices[-1]) + 1, len(indices))
  progress.update(len(paths), 0, last=True)
  # A file that failed here but decodes when tried again alone had a read error: still out.
  return {int(index): _decode_error(paths[index], max_pixels) or "failed to read once"
          for index in np.flatnonzero(~good)}


class _CheckProgress:
  """Logs the image check's progress every `seconds`, as Keras' progress bar shows
  training's: files done of all, files/s, time left, files skipped so far."""

  def __init__(self, total: int, split_name: str, seconds: float):
    self.total, self.split_name, self.seconds = total, split_name, seconds
    self.start = self.last_log = time.monotonic()
    self.good = 0

  def update(self, done: int, good: int, last: bool = False) -> None:
    self.good += good
    now = time.monotonic()
    if not last and now - self.last_log < self.seconds:
      return
    self.last_log = now
    rate = done / max(now - self.start, 1e-9)
    left = f", {duration_text((self.total - done) / rate)} left" if not last and rate > 0 else ""
    logging.info("checked %s of %s %s image files (%.0f%%), %.0f files/s%s, %s skipped",
                 f"{done:,}", f"{self.total:,}", self.split_name, 100 * done / self.total,
                 rate, left, f"{done - self.good:,}")


def duration_text(seconds: float) -> str:
  """1h02m03s or 2m03s: a time left, as progress lines show it."""
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _decode_error(path: str, max_pixels: int) -> str | None:
  """Why `path` does not decode, in one line; None when it decodes (tried eagerly)."""
  try:
    image = augment.decode_image(tf.io.read_file(path), max_pixels)
  except (tf.errors.OpError, ValueError) as error:
    message = getattr(error, "message", str(error)).split("\n")[0]
    # Eager op errors wrap the reason: "{{function_node ...}} reason [Op:DecodeImage] name:";
    # the header checks' (tf.debugging.Assert) end "Summarized data: b'reason'".
    checked = re.search(r"Summarized data: b'(.*)'", message)
    message = checked.group(1) if checked else re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", message)
    return " ".join(message.split())[:200] or "failed to decode"
  return None if int(tf.size(image)) > 0 else "empty image"


def write_skipped(directory: str, skipped: list[str]) -> str:
  """The list of skipped files of this run's data, one per line; returns its path."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, SKIPPED_FILES)
  with open(path, "w") as f:
    f.writelines(line + "\n" for line in skipped)
  return path
