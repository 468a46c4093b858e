"""Datasets for the Keras API, built by the code the CLI trains with (pipeline.py): a
sampling policy, the training crop and augmentation, or the evaluation resize and crop.

  split = datasets.from_arrays(images, labels)         uint8 (N, H, W, C) in memory
  split = datasets.from_files(paths, labels)           encoded image files
  source = datasets.load_data("image_folder", data_dir=...)   any data set the CLI names
                                                       (source.train / .val / .test)
  train = datasets.training_dataset(split, sampling="class_balanced", image_size=32)
  test = datasets.evaluation_dataset(source.test, image_size=32)

`training_dataset` is infinite (pass `steps_per_epoch` to fit); both yield (images in [0, 1],
int64 labels) batches. Settings not given take the CLI's defaults (config.DataConfig).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import pipeline, sampling, sources
from cbd_tf.data.source_types import Source, Split


def from_arrays(images, labels) -> Split:
  """A split of uint8 images (N, H, W, 1 or 3) held in memory."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"images must be uint8 (N, H, W, 1 or 3), got {images.dtype} "
                     f"{images.shape}")
  return Split(images, np.asarray(labels, dtype=np.int64))


def from_files(paths, labels) -> Split:
  """A split of encoded image files (JPEG, PNG, GIF, BMP, WebP)."""
  return Split.from_files([str(path) for path in paths], labels)


def load_data(dataset: str, **data_settings) -> Source:
  """The data set `dataset` as the CLI loads it (`image_folder`, `file_list`, `tfrecord`,
  `mnist_pairs_lt`, `cifar100_lt`, `imagenet_lt`, ...); `data_settings` are DataConfig
  fields (data_dir, imbalance_ratio, ...)."""
  return sources.load_source(_data_config(dataset=dataset, **data_settings))


def training_dataset(split: Split, sampling_policy: str = "instance", *, image_size: int,
                     batch_size: int = 128, seed: int = 0, num_classes: int | None = None,
                     **data_settings) -> tf.data.Dataset:
  """Infinite batches of (images, labels) drawn by `sampling_policy` (instance |
  class_balanced | sqrt | progressive), with the training crop, flip and augmentation
  (`augmentation="jitter"`, `randaugment=True`, ... as DataConfig fields)."""
  sampling.check_policy(sampling_policy)
  data = _data_config(image_size=image_size, batch_size=batch_size, **data_settings)
  num_classes = num_classes or int(np.max(split.labels)) + 1
  return pipeline.build_train_dataset(split, data, sampling_policy, seed, num_classes)


def evaluation_dataset(split: Split, *, image_size: int, batch_size: int = 256,
                       **data_settings) -> tf.data.Dataset:
  """One ordered pass of (images, labels) batches with the evaluation resize and centre crop
  (`eval_crop_fraction`, 224 / 256 by default as ImageNet; 1.0 for no crop)."""
  return pipeline.build_eval_dataset(split, _data_config(
      image_size=image_size, eval_batch_size=batch_size, **data_settings))


def _data_config(**values) -> config_lib.DataConfig:
  known = {field.name for field in dataclasses.fields(config_lib.DataConfig)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"unknown data settings {unknown}; valid: {', '.join(sorted(known))}")
  return config_lib.DataConfig(**values)
