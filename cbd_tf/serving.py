"""The SavedModel export of the inference model, for TF Serving.

The export holds the classifier only (backbone, projection, classifier head): no teacher,
no optimiser state. Signatures:
  serving_default(image_bytes: string [N])     JPEG / PNG / GIF / BMP / WebP bytes,
                                               preprocessed in the graph as in evaluation
  predict_images(images: float32 [N, S, S, 3]) images already preprocessed, values in [0, 1]
With --test_time_crops=5, serving_default averages the logits of each image's five crops
(LIFT's test-time ensemble); predict_images takes one crop an image.
Both return probabilities [N, C], top_k_classes [N, k], top_k_scores [N, k] and
top_k_labels [N, k] (class names); predict_images also returns features [N, D].
Probabilities are softmax(logits - posthoc_tau * log prior): the run's post-hoc logit
adjustment (Menon et al.), 0 unless asked for. Assets: class_names.txt, train_counts.txt,
the run's config.json (posthoc_tau as baked) and serving.json (the limits below and
posthoc_tau) (run_dir names them). serving_default refuses, before decoding, a request of more than
max_request_images images, and before decoding it an image whose header declares more than
max_image_pixels pixels (Pillow's default limit unless --max_image_pixels says otherwise),
a file of another format and an animated WebP; a GIF is cut after its first frame, the one
decoded (data/image_header.py): InvalidArgument naming the reason in one line; the next
request is served.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from typing import Sequence

import tensorflow as tf
from absl import logging

from cbd_tf import config as config_lib
from cbd_tf import long_tail_losses, run_checks, run_dir, run_files
from cbd_tf import run_models, serving_warmup
from cbd_tf.data import augment


class ServingModule(tf.Module):
  """What the SavedModel holds: the classifier, its class names and its serving functions."""

  def __init__(self, classifier, class_names, data: config_lib.DataConfig, top_k: int,
               asset_dir: str, max_image_pixels: int, max_request_images: int,
               logit_offset):
    super().__init__()
    self.classifier = classifier
    self.logit_offset = tf.constant(logit_offset, tf.float32)
    self.data = data
    self.max_image_pixels = tf.constant(max_image_pixels, tf.int64)
    self.max_request_images = tf.constant(max_request_images, tf.int64)
    self.limits_file = tf.saved_model.Asset(os.path.join(asset_dir, run_dir.SERVING_ASSET))
    self.top_k = min(top_k, len(class_names))
    self._class_names = tf.constant(list(class_names))
    self.class_names_file = tf.saved_model.Asset(
        os.path.join(asset_dir, run_dir.CLASS_NAMES_ASSET))
    self.train_counts_file = tf.saved_model.Asset(
        os.path.join(asset_dir, run_dir.TRAIN_COUNTS_ASSET))
    self.config_file = tf.saved_model.Asset(os.path.join(asset_dir, run_dir.CONFIG_ASSET))
    size = data.image_size
    self.serve_image_bytes = tf.function(
        self._serve_image_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    self.predict_images = tf.function(
        self._predict_images,
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])

  def _decode(self, image_bytes):
    # The evaluation pipeline's decode, which checks the header against the limit before
    # decoding. An undecodable or oversized image raises InvalidArgument: that request
    # fails, the server goes on.
    preprocess = (augment.preprocess_eval_crops if self.data.test_time_crops > 1
                  else augment.preprocess_eval)
    return preprocess(augment.decode_image(image_bytes, self.max_image_pixels), self.data)

  def _outputs(self, images):
    crops = images.shape.rank == 5  # (N, K, S, S, 3): LIFT's test-time crops, logits averaged
    if crops:
      count = tf.shape(images)[1]
      images = tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], 0))
    logits, features = self.classifier.call_with_features(images, training=False)
    if crops:
      logits = tf.reduce_mean(tf.reshape(logits, [-1, count, tf.shape(logits)[-1]]), axis=1)
      features = tf.reduce_mean(tf.reshape(features, [-1, count, tf.shape(features)[-1]]),
                                axis=1)
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32) - self.logit_offset, axis=-1)
    scores, classes = tf.math.top_k(probabilities, k=self.top_k)
    return {"probabilities": probabilities, "top_k_classes": classes, "top_k_scores": scores,
            "top_k_labels": tf.gather(self._class_names, classes)}, features

  def _serve_image_bytes(self, image_bytes):
    size = self.data.image_size
    count = tf.size(image_bytes, out_type=tf.int64)
    check = tf.debugging.Assert(count <= self.max_request_images, [tf.strings.format(
        "a request of {} images is over the limit of {} images (--max_request_images)",
        (count, self.max_request_images))])
    with tf.control_dependencies([check]):
      image_bytes = tf.identity(image_bytes)
    crops = [self.data.test_time_crops] if self.data.test_time_crops > 1 else []
    images = tf.map_fn(self._decode, image_bytes,
                       fn_output_signature=tf.TensorSpec([*crops, size, size, 3], tf.float32))
    return self._outputs(images)[0]

  def _predict_images(self, images):
    outputs, features = self._outputs(images)
    return {**outputs, "features": tf.cast(features, tf.float32)}


def export_saved_model(classifier, export_dir: str, class_names, train_counts,
                       config: config_lib.Config, top_k: int = 5,
                       warmup_images: Sequence[bytes] = (), posthoc_tau: float = 0.0) -> str:
  """Writes the SavedModel to `export_dir` (replacing it atomically) and returns the path;
  run_files.WriteError if its directory cannot be written.
  `warmup_images` (encoded) make TF Serving's warm-up record (serving_warmup.py);
  `posthoc_tau` bakes Menon et al.'s logits - tau * log prior into the probabilities."""
  if top_k < 1:
    raise ValueError(f"top_k must be >= 1, got {top_k}")
  parent = os.path.dirname(os.path.abspath(export_dir))
  try:
    os.makedirs(parent, exist_ok=True)
    staging_directory = tempfile.TemporaryDirectory(dir=parent)
  except OSError as error:
    raise run_files.WriteError(f"could not write the export {export_dir}: "
                               f"{error.strerror or error}") from error
  with staging_directory as staging:
    asset_dir = os.path.join(staging, "asset_sources")
    os.makedirs(asset_dir)
    with open(os.path.join(asset_dir, run_dir.CLASS_NAMES_ASSET), "w") as f:
      f.write("".join(f"{name}\n" for name in class_names))
    with open(os.path.join(asset_dir, run_dir.TRAIN_COUNTS_ASSET), "w") as f:
      f.write("".join(f"{int(count)}\n" for count in train_counts))
    config.replace(long_tail={"posthoc_tau": f"{posthoc_tau:g}"}).save(
        os.path.join(asset_dir, run_dir.CONFIG_ASSET))
    limits = {"max_image_pixels": config.data.max_image_pixels,
              "max_request_images": config.output.max_request_images}
    run_files.write_json(os.path.join(asset_dir, run_dir.SERVING_ASSET),
                         {**limits, "posthoc_tau": posthoc_tau})
    module = ServingModule(classifier, class_names, config.data, top_k, asset_dir, **limits,
                           logit_offset=posthoc_tau * long_tail_losses.log_prior(train_counts))
    model_dir = os.path.join(staging, "saved_model")
    tf.saved_model.save(module, model_dir, signatures={
        "serving_default": module.serve_image_bytes,
        "predict_images": module.predict_images,
    })
    if warmup_images:
      serving_warmup.write_warmup(model_dir, list(warmup_images))
    else:
      logging.warning("no warm-up images: %s has no TF Serving warm-up record", export_dir)
    if os.path.exists(export_dir):
      shutil.rmtree(export_dir)
    os.replace(model_dir, export_dir)
  return export_dir


def check_export(export_dir: str) -> None:
  """Raises ValueError unless `export_dir` holds a SavedModel."""
  if not os.path.exists(os.path.join(export_dir, run_dir.SAVED_MODEL)):
    raise ValueError(f"no {run_dir.SAVED_MODEL} in {export_dir!r}")


def read_export_assets(export_dir: str) -> tuple[list[str], list[int], config_lib.Config]:
  """Class names, training class counts and config stored beside an export."""
  assets = os.path.join(export_dir, run_dir.EXPORT_ASSETS)
  with open(os.path.join(assets, run_dir.CLASS_NAMES_ASSET)) as f:
    class_names = f.read().splitlines()
  with open(os.path.join(assets, run_dir.TRAIN_COUNTS_ASSET)) as f:
    train_counts = [int(line) for line in f.read().splitlines()]
  return class_names, train_counts, config_lib.Config.load(
      os.path.join(assets, run_dir.CONFIG_ASSET))


def export_run(directory: str, export_dir: str, top_k: int = 5,
               max_image_pixels: int = config_lib.DataConfig.max_image_pixels,
               max_request_images: int = config_lib.OutputConfig.max_request_images,
               posthoc_tau: float = 0.0, test_time_crops: int | None = None) -> str:
  """Exports the classifier of the finished run `directory` with these serving limits,
  post-hoc adjustment (evaluation.run_posthoc_tau resolves --posthoc_tau) and test-time crops
  (None: the run's); returns the path."""
  run_checks.check_trained(directory)
  for name, value in (("top_k", top_k), ("max_image_pixels", max_image_pixels),
                      ("max_request_images", max_request_images)):
    if value < 1:
      raise ValueError(f"--{name} must be >= 1, got {value}")
  model, config = run_models.load_classifier(directory)
  config = config.with_test_time_crops(test_time_crops).replace(
      data={"max_image_pixels": max_image_pixels},
      output={"max_request_images": max_request_images})
  class_names, train_counts = run_files.read_classes(directory)
  return export_saved_model(model, export_dir, class_names, train_counts, config, top_k,
                            serving_warmup.kept_images(directory), posthoc_tau)
