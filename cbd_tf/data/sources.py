"""Where examples come from: each data set name maps to a loader returning a `Source`.

  mnist_lt                         bundled, decoded in memory
  cifar10_lt, cifar100_lt          TFDS, decoded in memory, long-tailed with a fixed seed
  imagenet_lt, inaturalist2017/18  TFDS, exported once to image files (tfds_sources)
  tfrecord                         users' TFRecord files, exported the same way
  file_list, places_lt             OLTR-style 'relative/path label' lists (file_sources)
  image_folder                     train/<class>/*, test/ or val/ (file_sources)

Splits of image files are checked once before training: a file that does not decode is
left out with a warning, listed in <cache_dir>/skipped_files.txt and counted in
`Source.skipped_files` (which the run writes to metrics.json). Class counts always come
from the training labels actually read.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import numpy as np
from absl import logging

from cbd_tf import config as config_lib
from cbd_tf.data import file_sources, long_tail, source_cache, tfds_sources
from cbd_tf.data.source_types import Source, Split  # pylint: disable=unused-import

MNIST_FILE = os.path.join(os.path.dirname(__file__), "mnist_5k.npz")
MNIST_TEST_PER_CLASS = 100
# Fixed so every run, whatever its --seed, trains and tests on the same images.
MNIST_SUBSET_SEED = 20210411


def load_mnist_lt(data: config_lib.DataConfig) -> Source:
  """Bundled MNIST subset: 100 test images a class, long-tailed training split from the rest."""
  with np.load(MNIST_FILE) as arrays:
    images = arrays["images"][..., np.newaxis]
    labels = arrays["labels"].astype(np.int64)
  rng = np.random.default_rng(MNIST_SUBSET_SEED)
  test_index = np.sort(np.concatenate([
      rng.choice(np.flatnonzero(labels == c), MNIST_TEST_PER_CLASS, replace=False)
      for c in range(10)]))
  pool = np.setdiff1d(np.arange(len(labels)), test_index)
  max_count = int(np.bincount(labels[pool]).min())
  counts = long_tail.exponential_profile(max_count, 10, data.imbalance_ratio)
  train_index = pool[long_tail.long_tail_subset(labels[pool], counts, MNIST_SUBSET_SEED)]
  return Source(
      name="mnist_lt",
      train=Split(images[train_index], labels[train_index]),
      test=Split(images[test_index], labels[test_index]),
      class_names=tuple(str(digit) for digit in range(10)),
  )


# The demo set first: error messages list names in this order.
SOURCES: dict[str, Callable[[config_lib.DataConfig], Source]] = {
    "mnist_lt": load_mnist_lt,
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
  train, skipped_train = source_cache.drop_broken(source.train, "train", directory)
  test, skipped_test = source_cache.drop_broken(source.test, "test", directory)
  skipped = skipped_train + skipped_test
  listing = source_cache.write_skipped(directory, skipped)
  if skipped:
    logging.warning("%s: skipped %d unreadable image files (%d train, %d test), listed in %s",
                    data.dataset, len(skipped), len(skipped_train), len(skipped_test), listing)
  if len(train) == 0 or len(test) == 0:
    raise ValueError(f"{data.dataset}: no readable images in the "
                     f"{'training' if len(train) == 0 else 'evaluation'} split; see {listing}")
  return Source(name=source.name, train=train, test=test, class_names=source.class_names,
                skipped_files=tuple(skipped))
