"""TensorFlow Datasets builders: ImageNet-LT, iNaturalist 2017/2018, CIFAR-10/100-LT.

TFDS gives sequential reads only, and the sampler needs random access by index. Large
sets are therefore streamed once with image decoding skipped, and each image's encoded
bytes are written to its own file in the cache directory (see source_cache); training
reads and decodes only the files the sampler draws. That pass costs one read of the
split and a copy of its encoded bytes on disk (about the size of the TFDS build of the
split), once per cache directory. CIFAR is small: it is decoded into memory.

Class counts come from the labels read in that pass, never from `info.splits`.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import long_tail, source_cache
from cbd_tf.data.source_types import Source, Split, check_labels

# Fixed so every run, whatever its --seed, trains on the same long-tailed subset.
CIFAR_SUBSET_SEED = 20210411

# dataset name -> (TFDS builder, training split, test split, validation split or None)
STREAMED_BUILDERS = {
    # ImageNet-LT: validation (20,000) for periodic evaluation, test (50,000) once at the end.
    "imagenet_lt": ("imagenet_lt", "train", "test", "validation"),
    # iNaturalist test splits have no labels: validation is the test, as in the CBD paper.
    "inaturalist2017": ("i_naturalist2017", "train", "validation", None),
    "inaturalist2018": ("i_naturalist2018", "train", "validation", None),
}


def load_builder(name: str, data: config_lib.DataConfig, prepare: bool = True):
  """The TFDS builder (prepared now if needed); failures become one-line ValueErrors."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    builder = tfds.builder(name, data_dir=data.data_dir or None)
    if prepare:
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=data.manual_dir or None))
  except Exception as error:  # pylint: disable=broad-except
    # TFDS raises many types (AssertionError for a missing manual dir, download errors).
    first_line = str(error).strip().split("\n")[0][:300]
    raise ValueError(f"TFDS {name} (data_dir={data.data_dir or '~/tensorflow_datasets'}, "
                     f"manual_dir={data.manual_dir or '-'}): {type(error).__name__}: "
                     f"{first_line}") from None
  return builder


def load_streamed(dataset: str, data: config_lib.DataConfig) -> Source:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  builder_name, train_split, test_split, val_split = STREAMED_BUILDERS[dataset]
  splits = [split for split in (train_split, test_split, val_split) if split]
  # Not prepared yet: a cached export needs only the class names, which come with the code.
  builder = load_builder(builder_name, data, prepare=False)
  label_feature = builder.info.features["label"]
  directories = {
      split: os.path.join(source_cache.cache_dir(data), f"export_{dataset}_{split}_" +
                          source_cache.key_of(builder.name, str(builder.version),
                                              os.path.abspath(data.data_dir or "~"), split))
      for split in splits}
  if not all(source_cache.is_exported(d) for d in directories.values()):
    builder = load_builder(builder_name, data)

  def export(split: str) -> Split:
    records = lambda: builder.as_dataset(
        split=split, shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()}).map(
            lambda example: (example["image"], example["label"]))
    return source_cache.export_encoded(records, directories[split], label_feature.num_classes,
                                       f"TFDS {builder_name} {split}")

  return Source(name=dataset, train=export(train_split), test=export(test_split),
                val=export(val_split) if val_split else None,
                class_names=tuple(label_feature.names))


def load_cifar_lt(dataset: str, data: config_lib.DataConfig) -> Source:
  """CIFAR with the exponential profile n_i = n_max * rho^(-i / (C - 1)), test set untouched.

  n_max is the smallest class count of the full training split (5,000 / 500), so
  rho = 100 gives 12,406 (CIFAR-10-LT) and 10,847 (CIFAR-100-LT) training images.
  """
  builder = load_builder(dataset.removesuffix("_lt"), data)
  label_feature = builder.info.features["label"]
  train_images, train_labels = _decoded(builder, "train")
  test_images, test_labels = _decoded(builder, "test")
  where = f"TFDS {builder.name}"
  check_labels(train_labels, label_feature.num_classes, f"{where} train")
  check_labels(test_labels, label_feature.num_classes, f"{where} test")
  full_counts = np.bincount(train_labels, minlength=label_feature.num_classes)
  counts = long_tail.exponential_profile(int(full_counts.min()), label_feature.num_classes,
                                         data.imbalance_ratio)
  keep = long_tail.long_tail_subset(train_labels, counts, CIFAR_SUBSET_SEED)
  return Source(name=dataset, train=Split(train_images[keep], train_labels[keep]),
                test=Split(test_images, test_labels), class_names=tuple(label_feature.names))


def _decoded(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
  dataset = builder.as_dataset(split=split, shuffle_files=False).map(
      lambda example: (example["image"], example["label"])).batch(4096)
  images, labels = zip(*dataset.as_numpy_iterator())
  return np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int64)


def load_tfrecord(data: config_lib.DataConfig) -> Source:
  """TFRecord files of tf.train.Example with encoded image bytes and an int64 label.

  --tfrecord_train / --tfrecord_test (and optionally --tfrecord_val) are comma-separated
  glob patterns; feature names
  are --tfrecord_image_key and --tfrecord_label_key. Streamed and exported like TFDS.
  """
  num_classes = data.num_classes

  def export(patterns: str, split: str) -> Split:
    files = _matching_files(patterns, split)
    stats = [(path, os.path.getsize(path), os.path.getmtime(path)) for path in files]
    features = {data.tfrecord_image_key: tf.io.FixedLenFeature([], tf.string),
                data.tfrecord_label_key: tf.io.FixedLenFeature([], tf.int64)}
    records = lambda: tf.data.TFRecordDataset(files).map(
        lambda record: tf.io.parse_single_example(record, features)).map(
            lambda example: (example[data.tfrecord_image_key], example[data.tfrecord_label_key]))
    key = source_cache.key_of(stats, data.tfrecord_image_key, data.tfrecord_label_key)
    directory = os.path.join(source_cache.cache_dir(data), f"export_tfrecord_{split}_{key}")
    try:
      # Labels are range-checked below, once the class count is known.
      return source_cache.export_encoded(records, directory, np.iinfo(np.int64).max,
                                         f"TFRecord {split} files {patterns}")
    except tf.errors.OpError as error:
      raise ValueError(f"TFRecord {split} files {patterns}: {error.message.splitlines()[0]}"
                       ) from None

  train = export(data.tfrecord_train, "train")
  test = export(data.tfrecord_test, "test")
  val = export(data.tfrecord_val, "val") if data.tfrecord_val else None
  num_classes = num_classes or int(train.labels.max()) + 1
  check_labels(train.labels, num_classes, f"TFRecord train files {data.tfrecord_train}")
  check_labels(test.labels, num_classes, f"TFRecord test files {data.tfrecord_test}")
  if val is not None:
    check_labels(val.labels, num_classes, f"TFRecord val files {data.tfrecord_val}")
  return Source(name="tfrecord", train=train, test=test, val=val,
                class_names=tuple(str(label) for label in range(num_classes)))


def _matching_files(patterns: str, split: str) -> list[str]:
  if not patterns:
    raise ValueError(f"--dataset=tfrecord needs --tfrecord_{split}=PATTERN[,PATTERN...]")
  files = []
  for pattern in patterns.split(","):
    matched = sorted(tf.io.gfile.glob(pattern.strip()))
    if not matched:
      raise ValueError(f"--tfrecord_{split}: no files match {pattern.strip()!r}")
    files.extend(matched)
  return files
