"""Every data set trains both stages for a step (smoke settings), and a folder of user
images with broken files trains and evaluates end to end through the command line."""

import json
import os

import numpy as np
import pytest

from cbd_tf import training
from tests import fakes, helpers
from tests.fakes import smoke_config

# Every test trains a pipeline.
pytestmark = pytest.mark.slow


def prepare_files(tmp_path, dataset):
  """DataConfig fields of a small on-disk copy of `dataset`."""
  if dataset == "file_list":
    return {"data_dir": fakes.write_file_lists(tmp_path / "data", "text"),
            "train_list": "lists/train.txt", "test_list": "lists/test.txt"}
  if dataset == "places_lt":
    root = str(tmp_path / "places")
    fakes.write_file(os.path.join(root, "a", "0.jpg"), fakes.image_bytes("jpeg"))
    lines = "".join(f"a/0.jpg {label}\n" for label in range(365))
    for name in ("Places_LT_train.txt", "Places_LT_test.txt"):
      fakes.write_file(os.path.join(root, name), lines.encode())
    return {"data_dir": root}
  if dataset == "tfrecord":
    train = fakes.write_tfrecords(tmp_path / "rec" / "train", [0, 0, 0, 1, 2, 1],
                                  broken_at=(2,))
    test = fakes.write_tfrecords(tmp_path / "rec" / "test", [0, 1, 2])
    return {"tfrecord_train": train, "tfrecord_test": test}
  return {"data_dir": str(tmp_path / "tfds"), "imbalance_ratio": 10.0}


@pytest.mark.parametrize("dataset, skipped", [
    ("imagenet_lt", 0), ("inaturalist2018", 0), ("cifar100_lt", 0), ("places_lt", 0),
    ("tfrecord", 1), ("inaturalist2017", 0), ("cifar10_lt", 0), ("file_list", 1)])
def test_dataset_trains_teacher_and_student(tmp_path, dataset, skipped):
  """image_folder: see the command-line test below."""
  tfds_data = dataset in {"imagenet_lt", "inaturalist2017", "inaturalist2018", "cifar10_lt",
                          "cifar100_lt"}
  # TFDS builders check images when preparing; the image check has its own tests.
  config = smoke_config(tmp_path, dataset=dataset, validate_images=not tfds_data,
                        **prepare_files(tmp_path, dataset))
  if tfds_data:
    cifar = dataset.startswith("cifar")
    with fakes.mocked_tfds(**({"per_class": 10} if cifar else
                              {"test_labels": np.array([0, 1, 2])})):
      source = training.validate_run(config)
  else:
    source = training.validate_run(config)
  results = training.run(config, source)
  assert set(results) == {"vanilla_1", "student"}
  student = results["student"]
  assert student["skipped_images"] == skipped and len(student["per_class"]) == source.num_classes
  with open(os.path.join(config.workdir, "student", "classes.json")) as f:
    assert json.load(f)["train_counts"] == [int(c) for c in source.train_counts]


def test_user_folder_with_broken_files_trains_and_evaluates_from_the_command_line(tmp_path):
  root = fakes.write_image_folder(tmp_path / "images", per_class=(7, 4, 2), broken=[
      ("train", "cat", "truncated_jpeg"), ("train", "dog", "text"), ("test", "eel", "corrupt_png")])
  workdir = str(tmp_path / "run")
  result = helpers.run_module(
      "cbd_tf.train", "--flagfile=configs/smoke.flags", f"--workdir={workdir}",
      "--dataset=image_folder", f"--data_dir={root}", "--teacher_specs=vanilla:1",
      "--steps_per_epoch=1", "--batch_size=8", "--randaugment", "--eval_every_epochs=0")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "skipped 3 unreadable image files (2 train, 1 test, 0 val)" in result.stderr
  with open(os.path.join(workdir, "data_cache", "skipped_files.txt")) as f:
    assert len(f.read().splitlines()) == 3
  for run in ("teachers/vanilla_1", "student"):
    with open(os.path.join(workdir, run, "metrics.json")) as f:
      metrics = json.load(f)
    assert metrics["skipped_images"] == 3 and metrics["num_test"] == 6
    assert metrics["val"]["num_val"] == 6 and len(metrics["val"]["per_class"]) == 3
    with open(os.path.join(workdir, run, "classes.json")) as f:
      assert json.load(f) == {"class_names": ["cat", "dog", "eel"], "train_counts": [7, 4, 2]}
  # What `python -m cbd_tf.evaluate` runs, in process: reloads the data from the cache.
  from cbd_tf import evaluation  # pylint: disable=import-outside-toplevel
  evaluated = evaluation.evaluate_run(os.path.join(workdir, "student"))
  assert evaluated["num_test"] == 6 and evaluated["skipped_images"] == 3


def test_periodic_evaluation_uses_validation_split_and_test_is_evaluated_once(tmp_path,
                                                                              monkeypatch):
  from cbd_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  root = fakes.write_image_folder(tmp_path / "images", per_class=(7, 4, 2))
  # One more test image, so the two evaluation splits differ in size (val 6, test 7).
  fakes.write_file(os.path.join(root, "test", "cat", "extra.png"),
                   fakes.image_bytes("png"))
  evaluated_sizes = []
  build_eval_dataset = pipeline.build_eval_dataset
  monkeypatch.setattr(pipeline, "build_eval_dataset", lambda split, data, *crops: (
      evaluated_sizes.append(len(split)), build_eval_dataset(split, data, *crops))[1])
  config = smoke_config(tmp_path, dataset="image_folder", data_dir=root).replace(
      stage="teacher", output={"eval_every_epochs": 1})
  result = training.run(config)
  # The periodic evaluation's dataset (val), then the final test and val evaluations.
  assert evaluated_sizes == [6, 7, 6]
  assert result["num_test"] == 7 and result["val"]["num_val"] == 6
  with open(os.path.join(config.workdir, "environment.json")) as f:
    environment = json.load(f)
  assert environment["num_examples"] == {"train": 13, "test": 7, "val": 6}
  assert set(environment["labels_sha256"]) == {"train", "test", "val"}
  assert environment["global_batch_size"] == 8 and environment["replicas"] == 1


def test_file_broken_after_the_check_is_dropped_and_counted(tmp_path):
  root = fakes.write_image_folder(tmp_path / "images", per_class=(7, 4, 2))
  config = smoke_config(tmp_path, dataset="image_folder", data_dir=root).replace(
      stage="teacher", optimizer={"steps_per_epoch": 2})
  source = training.validate_run(config)
  # Broken after sources checked it: instance sampling draws every one of the 13 training
  # files within the 16 examples of two steps, so it is read (and dropped) at least once.
  fakes.write_file(source.train.paths[0], b"no longer an image")
  result = training.run(config, source)
  assert result["dropped_train_examples"] >= 1 and result["skipped_images"] == 0
  with open(os.path.join(config.workdir, "metrics.json")) as f:
    assert json.load(f)["dropped_train_examples"] == result["dropped_train_examples"]
