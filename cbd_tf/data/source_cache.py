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
import tempfile
from typing import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from cbd_tf import config as config_lib
from cbd_tf.data import augment
from cbd_tf.data.source_types import Split, check_labels

SKIPPED_FILES = "skipped_files.txt"
_FILES_PER_DIRECTORY = 1000


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
    labels = np.load(labels_file)
    return Split.from_files([_exported_path(directory, i) for i in range(len(labels))], labels)
  logging.info("%s: exporting encoded images once to %s", where, directory)
  labels = []
  for index, (image, label) in enumerate(records().prefetch(tf.data.AUTOTUNE).as_numpy_iterator()):
    path = _exported_path(directory, index)
    if index % _FILES_PER_DIRECTORY == 0:
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


def drop_broken(split: Split, split_name: str, directory: str) -> tuple[Split, list[str]]:
  """`split` without the files that fail to decode, and "split<TAB>path<TAB>reason" lines.

  Decodes every file once (the same decode the pipeline uses); the result is cached under
  a key of the paths, labels, sizes and modification times.
  """
  if not split.is_encoded:
    return split, []
  record = os.path.join(directory, f"checked_{split_name}_{_files_key(split)}.txt")
  if os.path.exists(record):
    with open(record) as f:
      lines = [line.rstrip("\n") for line in f if line.strip()]
    broken = {int(line.split("\t", 1)[0]): line.split("\t", 2)[2] for line in lines}
  else:
    broken = _find_broken(split.paths)
    os.makedirs(directory, exist_ok=True)
    with open(record + ".tmp", "w") as f:
      for index, reason in sorted(broken.items()):
        f.write(f"{index}\t{split.paths[index]}\t{reason}\n")
    os.replace(record + ".tmp", record)
  skipped = [f"{split_name}\t{split.paths[index]}\t{reason}"
             for index, reason in sorted(broken.items())]
  for line in skipped:
    logging.warning("skipping unreadable image: %s", line.replace("\t", ": ", 1))
  keep = np.setdiff1d(np.arange(len(split)), np.fromiter(broken, dtype=np.int64))
  return split.select(keep), skipped


def _files_key(split: Split) -> str:
  stats = []
  for path in split.paths:
    try:
      stat = os.stat(path)
      stats.append((stat.st_size, stat.st_mtime_ns))
    except OSError:
      stats.append((-1, -1))
  return key_of(list(split.paths), split.labels.tolist(), stats)


def _find_broken(paths: np.ndarray) -> dict[int, str]:
  """{index: reason} of the files that do not decode; the good ones pass in parallel."""
  def decodes(index, path):
    image = augment.decode_image(tf.io.read_file(path))
    with tf.control_dependencies([tf.debugging.assert_positive(tf.size(image))]):
      return tf.identity(index)

  dataset = (tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths.astype(str)))
             .map(decodes, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
             .ignore_errors().batch(1024))
  good = np.zeros(len(paths), dtype=bool)
  for indices in dataset.as_numpy_iterator():
    good[indices] = True
  return {int(index): _decode_error(paths[index]) for index in np.flatnonzero(~good)}


def _decode_error(path: str) -> str:
  """Why `path` does not decode, in one line (decoded again eagerly, for the message)."""
  try:
    augment.decode_image(tf.io.read_file(path))
  except (tf.errors.OpError, ValueError) as error:
    message = getattr(error, "message", str(error))
    return " ".join(message.split("\n")[0].split())[:200]
  return "failed to decode"


def write_skipped(directory: str, skipped: list[str]) -> str:
  """The list of skipped files of this run's data, one per line; returns its path."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, SKIPPED_FILES)
  with open(path, "w") as f:
    f.writelines(line + "\n" for line in skipped)
  return path
