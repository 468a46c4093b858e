"""Export, serving, TensorBoard scalars, profiling and reports of the smoke pipeline."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cbd_tf import evaluation, run_files, run_models, serving
from cbd_tf.data import augment
from tests import helpers

# Every test reads the smoke pipeline trained through the command line (conftest.py).
pytestmark = pytest.mark.slow


def write_images(directory):
  rng = np.random.default_rng(0)
  paths = []
  for name, mode, size in (("digit.png", "L", (28, 28)), ("photo.jpg", "RGB", (40, 30)),
                           ("wide.png", "RGBA", (50, 20))):
    pixels = rng.integers(0, 256, size=(size[1], size[0], len(mode)), dtype=np.uint8)
    path = os.path.join(directory, name)
    Image.fromarray(pixels.squeeze(), mode).save(path)
    paths.append(path)
  return paths


def test_served_probabilities_match_in_memory_model(pipeline_dir, tmp_path):
  workdir, _ = pipeline_dir
  export_dir = os.path.join(workdir, "export")
  paths = write_images(str(tmp_path))
  served = {name: np.asarray(value) for name, value in
            helpers.run_script("serve_export", export_dir, *paths).items()}
  assert str(served["broken_request"]).startswith("InvalidArgument")
  model, config = run_models.load_classifier(os.path.join(workdir, "student"))
  images = tf.stack([augment.preprocess_eval(tf.io.decode_image(
      open(p, "rb").read(), channels=3, expand_animations=False), config.data) for p in paths])
  expected = tf.nn.softmax(model(images)).numpy()
  np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
  np.testing.assert_allclose(served["again"], expected[:1], atol=1e-5)
  assert served["top_k_classes"].shape == (3, 5)
  np.testing.assert_array_equal(served["top_k_labels"],
                                served["top_k_classes"].astype(str))  # mnist names are digits


def test_export_has_both_signatures_assets_and_no_teacher(pipeline_dir):
  workdir, _ = pipeline_dir
  export_dir = os.path.join(workdir, "export")
  # The venv's script, whether or not the venv is activated.
  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  shown = subprocess.run([cli, "show", "--all", "--dir", export_dir],
                         capture_output=True, text=True, check=True).stdout
  for text in ("signature_def['serving_default']", "inputs['image_bytes']",
               "signature_def['predict_images']", "inputs['images']", "outputs['probabilities']",
               "outputs['top_k_classes']", "outputs['top_k_scores']", "outputs['top_k_labels']",
               "outputs['features']"):
    assert text in shown
  class_names, train_counts, config = serving.read_export_assets(export_dir)
  assert class_names == [str(d) for d in range(10)] and train_counts[0] == 400
  assert config.stage == "student"
  student, _ = run_models.load_classifier(os.path.join(workdir, "student"))
  exported = tf.train.list_variables(os.path.join(export_dir, "variables", "variables"))
  exported_values = sum(int(np.prod(shape)) for name, shape in exported if shape)
  assert exported_values == sum(int(np.prod(w.shape)) for w in student.weights)


def test_evaluate_saved_model_matches_run_dir(pipeline_dir):
  workdir, _ = pipeline_dir
  result = helpers.run_module("cbd_tf.evaluate", f"--saved_model={workdir}/export")
  assert result.returncode == 0, result.stderr[-3000:]
  from_export = evaluation.evaluate_saved_model(os.path.join(workdir, "export"))
  stored = run_files.read_json(os.path.join(workdir, "student", "metrics.json"))
  assert from_export["per_class"] == pytest.approx(stored["per_class"])
  assert from_export["top1"] == pytest.approx(stored["top1"])


def scalar_tags(directory):
  tags = set()
  for path in glob.glob(os.path.join(directory, "*", "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  return tags


def test_tensorboard_scalars_profile_and_reports(pipeline_dir):
  workdir, _ = pipeline_dir
  student_tags = scalar_tags(os.path.join(workdir, "student", "tensorboard"))
  assert {"train/loss", "train/loss_ce", "train/loss_distill", "train/lr", "val/top1",
          "val/acc_many", "val/acc_medium", "val/acc_few"} <= student_tags
  assert "train/loss_ce" in scalar_tags(os.path.join(workdir, "teachers", "vanilla_1",
                                                     "tensorboard"))
  traces = glob.glob(os.path.join(workdir, "student", "tensorboard", "plugins", "profile", "*",
                                  "*.xplane.pb"))
  assert traces
  for directory in (workdir, os.path.join(workdir, "student")):
    assert os.path.getsize(os.path.join(directory, "report.png")) > 10_000
    with open(os.path.join(directory, "report.md")) as f:
      assert "| student |" in f.read() or directory == workdir
  with open(os.path.join(workdir, "report.md")) as f:
    text = f.read()
  assert "| vanilla_1 |" in text and "| jitter_1 |" in text and "| student |" in text
