"""TF Serving's warm-up record: SAVED_MODEL/assets.extra/tf_serving_warmup_requests, a
TFRecord file of PredictionLog protos that the model server replays when it loads the
model, so the first real request does not pay for tracing and allocation.

The requests hold real encoded images of the run's data: a run keeps a few from its
evaluation split (run_dir.WARMUP_IMAGES, written at the end of training), so an export
made later, away from the data, still has them.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from cbd_tf import run_dir
from cbd_tf.data.source_types import Split

WARMUP_DIRECTORY = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_IMAGE_COUNT = 3


def encoded_images(split: Split, count: int = WARMUP_IMAGE_COUNT) -> list[bytes]:
  """The first `count` images of `split` as encoded bytes: the files themselves, or PNG
  for images held in memory."""
  count = min(count, len(split))
  if split.is_encoded:
    return [tf.io.read_file(str(path)).numpy() for path in split.paths[:count]]
  images = split.images[:count]
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return [tf.io.encode_png(image).numpy() for image in images]


def keep_images(images: list[bytes], directory: str) -> None:
  """Writes them into the run directory, for exports made later."""
  path = os.path.join(directory, run_dir.WARMUP_IMAGES)
  temporary = os.path.join(directory, run_dir.PARTIAL_PREFIX + run_dir.WARMUP_IMAGES)
  with tf.io.TFRecordWriter(temporary) as writer:
    for image in images:
      writer.write(image)
  os.replace(temporary, path)


def kept_images(directory: str) -> list[bytes]:
  path = os.path.join(directory, run_dir.WARMUP_IMAGES)
  if not os.path.exists(path):
    return []
  return [record.numpy() for record in tf.data.TFRecordDataset(path)]


def write_warmup(export_dir: str, images: list[bytes],
                 batch_sizes=(1, WARMUP_IMAGE_COUNT)) -> str:
  """One serving_default request per batch size, each of the kept images (repeated to the
  batch size); returns the file's path."""
  # Imported on use: the protos come with tensorflow-serving-api.
  from tensorflow_serving.apis import (  # pylint: disable=import-outside-toplevel
      model_pb2, predict_pb2, prediction_log_pb2)
  directory = os.path.join(export_dir, WARMUP_DIRECTORY)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, WARMUP_FILE)
  with tf.io.TFRecordWriter(path) as writer:
    for size in sorted(set(batch_sizes)):
      batch = [images[i % len(images)] for i in range(size)]
      request = predict_pb2.PredictRequest(
          model_spec=model_pb2.ModelSpec(signature_name="serving_default"))
      request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(batch, dtype=tf.string))
      writer.write(prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
  return path
