"""Where examples come from: each data set name maps to a loader returning a `Source`.

  mnist_lt, mnist_pairs_lt         bundled MNIST digits, in memory (mnist_sources)
  cifar10_lt, cifar100_lt          TFDS, decoded in memory, long-tailed with a fixed seed
  imagenet_lt, inaturalist2017/18  TFDS, exported once to image files (tfds_sources)
  tfrecord                         users' TFRecord files, exported the same way
  file_list, places_lt             OLTR-style 'relative/path label' lists (file_sources)
  image_folder                     train/<class>/*, test/ and/or val/ (file_sources)

A source may have a validation split besides its test split (ImageNet-LT, Places-LT,
file lists and image folders with both): periodic evaluation uses it, and the test split
is evaluated once, at the end of training.

Splits of image files are checked once before training: a file that does not decode is
left out with a warning, listed in <cache_dir>/skipped_files.txt and counted in
`Source.skipped_files` (which the run writes to metrics.json). Class counts always come
from the training labels actually read.
"""

from __future__ import annotations

import functools
from typing import Callable

from absl import logging

from cbd_tf import config as config_lib
from cbd_tf.data import file_sources, source_cache, tfds_sources
# MNIST_FILE and load_mnist_lt are re-exported: callers name them through this module.
from cbd_tf.data.mnist_sources import (  # pylint: disable=unused-import
    MNIST_FILE, load_mnist_lt, load_mnist_pairs_digits, load_mnist_pairs_lt)
from cbd_tf.data.source_types import Source, Split  # pylint: disable=unused-import

# The demo set first: error messages list names in this order.
SOURCES: dict[str, Callable[[config_lib.DataConfig], Source]] = {
    "mnist_lt": load_mnist_lt,
    "mnist_pairs_lt": load_mnist_pairs_lt,
    "mnist_pairs_digits": load_mnist_pairs_digits,
    "imagenet_lt": functools.partial(tfds_sources.load_streamed, "imagenet_lt"),
    "inaturalist2017": functools.partial(tfds_sources.load_streamed, "inaturalist2017"),
    "inaturalist2018": functools.partial(tfds_sources.load_streamed, "inaturalist2018"),
    "places_lt": file_sources.load_places_lt,
    "cifar10_lt": functools.partial(tfds_sources.load_cifar_lt, "cifar10_lt"),
    "cifar100_lt": functools.partial(tfds_sources.load_cifar_lt, "cifar100_lt"),
    "file_list": file_sources.load_file_list,
    "image_folder": file_sources.load_image_folder,
    "tfrecord": tfds_sources.load_tfrecord,
}


def check_dataset_name(name: str) -> None:
  if name not in SOURCES:
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(SOURCES)}")


def load_source(data: config_lib.DataConfig) -> Source:
  """The named data set; raises ValueError (one line, naming file and line) on bad data."""
  check_dataset_name(data.dataset)
  source = SOURCES[data.dataset](data)
  if not (source.train.is_encoded and data.validate_images):
    return source
  directory = source_cache.cache_dir(data)
  splits = {"train": source.train, "test": source.test, "val": source.val}
  checked, skipped, counts = {}, [], []
  for name, split in splits.items():
    if split is None:
      continue
    checked[name], skipped_here = source_cache.drop_broken(split, name, directory,
                                                             data.max_image_pixels)
    skipped += skipped_here
    counts.append(f"{len(skipped_here)} {name}")
  listing = source_cache.write_skipped(directory, skipped)
  if skipped:
    logging.warning("%s: skipped %d unreadable image files (%s), listed in %s",
                    data.dataset, len(skipped), ", ".join(counts), listing)
  for name, split in checked.items():
    if len(split) == 0:
      raise ValueError(f"{data.dataset}: no readable images in the {name} split; see {listing}")
  return Source(name=source.name, train=checked["train"], test=checked["test"],
                val=checked.get("val"), class_names=source.class_names,
                skipped_files=tuple(skipped))
