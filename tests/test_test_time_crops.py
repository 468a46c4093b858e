"""--test_time_crops=5: LIFT's test-time ensemble (shijxcs/LIFT trainer.py, tte_mode "fivecrop":
transforms.Resize(resolution + expand), transforms.FiveCrop(resolution), the crops' logits
averaged: `output.view(_bsz, _ncrops, -1).mean(dim=1)`), in evaluation and in the export."""

import numpy as np
import pytest
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf import evaluation, serving
from cbd_tf.data import augment, pipeline
from cbd_tf.data.source_types import Split
from tests import fakes, helpers

SIZE = 16


def five_crops(image: np.ndarray, size: int, expand: int = 24) -> np.ndarray:
  """torchvision's Resize(size + expand) (short side) and FiveCrop(size), written out: top-left,
  top-right, bottom-left, bottom-right, then center_crop (top = int(round((h - size) / 2)))."""
  height, width = image.shape[:2]
  short = size + expand
  ratio = short / min(height, width)
  new_height, new_width = round(height * ratio), round(width * ratio)
  resized = tf.image.resize(image.astype(np.float32), (new_height, new_width)).numpy() / 255.0
  top, left = int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))
  return np.stack([resized[:size, :size], resized[:size, -size:], resized[-size:, :size],
                   resized[-size:, -size:], resized[top:top + size, left:left + size]])


@pytest.mark.parametrize("shape", [(40, 60), (50, 33), (21, 21)])
def test_five_crops_are_lifts(shape):
  image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
  data = config_lib.DataConfig(image_size=SIZE)
  crops = augment.preprocess_eval_crops(tf.constant(image), data).numpy()
  np.testing.assert_allclose(crops, five_crops(image, SIZE), atol=1e-5)


def test_evaluation_and_export_average_the_five_crops_logits(tmp_path):
  model = helpers.tiny_classifier(num_classes=4, image_size=SIZE)
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (6, 30, 40, 3), dtype=np.uint8)
  split = Split(images, np.arange(6) % 4)
  data = config_lib.DataConfig(image_size=SIZE, eval_batch_size=4, test_time_crops=5)
  expected = np.stack([np.mean(model(five_crops(image, SIZE), training=False).numpy(), axis=0)
                       for image in images])
  averaged = evaluation.averaged_over_crops(model)
  batches = pipeline.build_eval_dataset(split, data, data.test_time_crops)
  logits = np.concatenate([averaged(batch).numpy() for batch, _ in batches])
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)

  config = config_lib.Config(workdir=str(tmp_path), data=data)
  export = serving.export_saved_model(model, str(tmp_path / "export"), list("abcd"),
                                      [4, 3, 2, 1], config)
  encoded = [tf.io.encode_png(image).numpy() for image in images]
  served = tf.saved_model.load(export).signatures["serving_default"](
      image_bytes=tf.constant(encoded))
  np.testing.assert_allclose(served["probabilities"].numpy(),
                             tf.nn.softmax(expected).numpy(), rtol=1e-4, atol=1e-5)


def test_one_crop_is_the_default_and_other_counts_are_refused():
  assert config_lib.DataConfig().test_time_crops == 1
  config = config_lib.Config(workdir="w")
  assert config.with_test_time_crops(None) is config
  with pytest.raises(ValueError, match="test_time_crops must be 1 or 5, got 3"):
    config.with_test_time_crops(3)


@pytest.mark.slow
def test_evaluate_and_export_take_test_time_crops_from_the_command_line(pipeline_dir, tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  run = str(tmp_path / "student")
  shutil.copytree(os.path.join(pipeline_dir[0], "student"), run)
  result = helpers.run_module("cbd_tf.evaluate", f"--workdir={run}", "--test_time_crops=5")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(run, "metrics.json")) as f:
    assert json.load(f)["test_time_crops"] == 5
  export = str(tmp_path / "export")
  result = helpers.run_module("cbd_tf.export", f"--workdir={run}", f"--export_dir={export}",
                              "--test_time_crops=5")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(export, "assets", "config.json")) as f:
    assert json.load(f)["data"]["test_time_crops"] == 5
  image = fakes.write_file(tmp_path / "digit.png", fakes.image_bytes("png", size=(20, 20)))
  served = helpers.run_script("serve_export", export, image)
  assert sum(served["probabilities"][0]) == pytest.approx(1.0, abs=1e-5)
