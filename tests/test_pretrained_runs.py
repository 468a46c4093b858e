"""Runs that start from pretrained weights, through the command line: a teacher fine-tuned
from a keras_hub preset, a student with a preset teacher beside a run-directory teacher,
then, with the presets gone, the network unreachable and an empty download cache,
evaluation, resuming, export and serving in fresh processes. And --init_from."""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf import pretrained, run_models
from cbd_tf.data import augment
from cbd_tf.models.classifier import Classifier
from cbd_tf.stages import pipeline as pipeline_stage
from tests import fakes, helpers

SMOKE = ("--flagfile=configs/smoke.flags", "--checkpoint_every_steps=1")


def offline_environment(tmp_path):
  """No route to any download host and an empty KerasHub (kagglehub) cache."""
  unreachable = "http://127.0.0.1:9"
  return {"KAGGLEHUB_CACHE": str(tmp_path / "empty_cache"), "HTTP_PROXY": unreachable,
          "HTTPS_PROXY": unreachable, "http_proxy": unreachable, "https_proxy": unreachable,
          "NO_PROXY": "", "no_proxy": "", "HF_HUB_OFFLINE": "1"}


def train(*args, env=None):
  result = helpers.run_module("cbd_tf.train", *SMOKE, *args, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _own_prediction(run: str, tmp_path):
  """(the run's model, a small PNG, the model's probabilities for it): what a served
  prediction of that image must equal."""
  model, config = run_models.load_classifier(run)
  image = fakes.write_file(tmp_path / "digit.png", fakes.image_bytes("png", size=(20, 20)))
  with open(image, "rb") as f:
    preprocessed = augment.preprocess_eval(augment.decode_image(tf.constant(f.read())),
                                           config.data)
  return model, image, tf.nn.softmax(model(preprocessed[None])).numpy()[0]


@pytest.mark.slow
def test_preset_teacher_and_student_run_evaluate_resume_and_serve_offline(tmp_path):
  presets = {family: fakes.write_keras_hub_preset(tmp_path / "presets" / family, family, 16)
             for family in ("resnet", "dinov2")}
  teacher, student = str(tmp_path / "teacher"), str(tmp_path / "student")
  train("--stage=teacher", f"--backbone=keras_hub:{presets['resnet']}", f"--workdir={teacher}")
  for name in ("backbone.json", "pretrained_backbone.weights.h5"):
    assert os.path.exists(os.path.join(teacher, name)), name
  student_args = ("--stage=student", "--backbone=resnet8", f"--workdir={student}",
                  f"--teachers=keras_hub:{presets['dinov2']},{teacher}")
  train(*student_args)
  assert sorted(os.listdir(os.path.join(student, "preset_teachers"))) == [
      "dinov2.json", "dinov2.weights.h5"]
  with open(os.path.join(student, "config.json")) as f:
    # The DINOv2 teacher's class token (16) beside the ResNet teacher's pooled map (32).
    assert json.load(f)["model"]["projection_dim"] == 16 + 32
  with open(os.path.join(teacher, "metrics.json")) as f:
    trained = json.load(f)
  # The teacher run's own prediction for an image, to compare the served one with.
  model, image, expected = _own_prediction(teacher, tmp_path)

  shutil.rmtree(tmp_path / "presets")
  env = offline_environment(tmp_path)
  evaluated = helpers.run_module("cbd_tf.evaluate", f"--workdir={teacher}", env=env)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  with open(os.path.join(teacher, "metrics.json")) as f:
    assert json.load(f)["per_class"] == pytest.approx(trained["per_class"])
  # The student resumes from its last checkpoint, its preset teacher read from its run.
  for name in ("final.weights.h5", "metrics.json"):
    os.remove(os.path.join(student, name))
  resumed = train(*student_args, env=env)
  assert "resuming from step 2" in resumed.stderr
  assert os.path.exists(os.path.join(student, "final.weights.h5"))

  # A decoupled stage re-balances the preset backbone's run, offline too.
  train("--stage=crt", f"--backbone_from={teacher}", "--decoupled_epochs=1",
        f"--workdir={tmp_path / 'crt'}", env=env)
  assert os.path.exists(tmp_path / "crt" / "backbone.json")

  export = str(tmp_path / "export")
  exported = helpers.run_module("cbd_tf.export", f"--workdir={teacher}", f"--export_dir={export}",
                                env=env)
  assert exported.returncode == 0, exported.stderr[-3000:]
  served = helpers.run_script("serve_export", export, image, env=env)
  np.testing.assert_allclose(served["probabilities"][0], expected, rtol=1e-4, atol=1e-5)


def test_missing_preset_stops_before_training(tmp_path):
  missing = str(tmp_path / "gone")
  result = helpers.run_module("cbd_tf.train", *SMOKE, "--stage=teacher",
                              f"--backbone=keras_hub:{missing}", f"--workdir={tmp_path / 'run'}")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].endswith(
      f"keras_hub preset {missing!r} not found: no such directory")
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def write_run(directory, backbone="resnet8", image_size=16, num_classes=10, seed=0):
  """A finished run directory with real weights, as run_models.load_classifier reads it."""
  os.makedirs(directory)
  keras.utils.set_random_seed(seed)
  model = Classifier(backbone, num_classes, image_size)
  config_lib.Config(workdir=str(directory), data=config_lib.DataConfig(image_size=image_size),
                    model=config_lib.ModelConfig(backbone=backbone)).save(
                        os.path.join(directory, "config.json"))
  with open(os.path.join(directory, "classes.json"), "w") as f:
    json.dump({"class_names": [str(i) for i in range(num_classes)],
               "train_counts": [5] * num_classes}, f)
  model.save_weights(os.path.join(directory, "final.weights.h5"))
  return model


def assert_same_backbone(model, source):
  for mine, theirs in zip(model.backbone.weights, source.backbone.weights, strict=True):
    np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)


def test_init_from_loads_a_weights_file_a_keras_file_and_a_run(tmp_path):
  source = write_run(tmp_path / "run", seed=1)
  source.backbone.save_weights(str(tmp_path / "backbone.weights.h5"))
  source.save(str(tmp_path / "model.keras"))
  for path in ("backbone.weights.h5", "run/final.weights.h5", "model.keras", "run"):
    keras.utils.set_random_seed(2)
    model = Classifier("resnet8", 4, 16)  # another head: only the backbone is taken
    pretrained.load_backbone_weights(model.backbone, str(tmp_path / path))
    assert_same_backbone(model, source)


def test_init_from_rejects_what_does_not_fit_naming_the_weight(tmp_path):
  bigger = write_run(tmp_path / "run20", backbone="resnet20")
  bigger.backbone.save_weights(str(tmp_path / "resnet20.weights.h5"))
  model = Classifier("resnet8", 10, 16)
  before = [v.numpy() for v in model.backbone.weights]
  with pytest.raises(ValueError, match=r"does not fit the backbone: layers/batch_normalization_3/"
                                       r"vars/0 is \(16,\) there, \(32,\) here"):
    pretrained.load_backbone_weights(model.backbone, str(tmp_path / "resnet20.weights.h5"))
  with pytest.raises(ValueError, match=r"does not fit the backbone: weight 15 is stage1_block2_"
                                       r"conv1/kernel \(3, 3, 16, 16\) there, stage2_block1_"
                                       r"conv1/kernel \(3, 3, 16, 32\) here"):
    pretrained.load_backbone_weights(model.backbone, str(tmp_path / "run20"))
  with pytest.raises(ValueError,
                     match=r"stem_conv/kernel \(3, 3, 3, 16\) there, .*\(7, 7, 3, 64\)"):
    pretrained.load_backbone_weights(Classifier("resnet18", 10, 64).backbone,
                                     str(tmp_path / "run20"))
  for variable, value in zip(model.backbone.weights, before):
    np.testing.assert_array_equal(variable.numpy(), value)
  with pytest.raises(ValueError, match=r"--init_from='.*nothing': no such file"):
    pretrained.check_init_from(str(tmp_path / "nothing"))
  with pytest.raises(ValueError, match=r"is not a .weights.h5 file, a .keras file or a run"):
    pretrained.check_init_from(fakes.write_file(tmp_path / "w.npz", b"x"))


def test_init_from_starts_a_cli_run_from_the_weights(tmp_path):
  source = write_run(tmp_path / "source", seed=3)
  config = helpers.config_from_argv(*SMOKE, "--stage=teacher", f"--workdir={tmp_path / 'run'}",
                                    f"--init_from={tmp_path / 'source'}")
  model = pretrained.build_starting_classifier(config, 10)
  assert_same_backbone(model, source)


def test_pipeline_fetches_its_presets_before_any_teacher_trains(tmp_path):
  # A preset directory that passes the name check but does not load.
  broken = tmp_path / "broken_preset"
  broken.mkdir()
  for name in ("config.json", "image_converter.json"):
    (broken / name).write_text("{}")
  workdir = tmp_path / "pipeline"
  result = helpers.run_module("cbd_tf.train", *SMOKE, f"--teachers=keras_hub:{broken}",
                              f"--workdir={workdir}")
  assert result.returncode == 1
  assert (f"could not load keras_hub preset {str(broken)!r} from directory {broken}:"
          in result.stderr.strip().splitlines()[-1])
  assert not os.path.exists(workdir / "teachers" / "vanilla_1" / "final.weights.h5")


def test_named_preset_that_cannot_download_names_its_handle_and_cache(tmp_path, monkeypatch):
  for name, value in offline_environment(tmp_path).items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ValueError, match=r"could not load keras_hub preset 'resnet_18_imagenet' "
                                       r"from kaggle://keras/resnetv1/keras/resnet_18_imagenet/"
                                       r"\d+ \(download cache .*empty_cache\): "):
    Classifier("keras_hub:resnet_18_imagenet", 10, 32)


def test_sync_batchnorm_is_refused_for_a_preset_backbone(tmp_path):
  with pytest.raises(ValueError, match="--sync_batchnorm applies to the built-in ResNets"):
    helpers.config_from_argv(*SMOKE, f"--workdir={tmp_path}", "--sync_batchnorm",
                             "--student_backbone=keras_hub:resnet_18_imagenet")


def test_pipeline_student_takes_student_backbone_and_extra_teachers(tmp_path):
  config = helpers.config_from_argv(
      *SMOKE, f"--workdir={tmp_path}", "--backbone=keras_hub:dinov2_small",
      "--student_backbone=resnet8", "--teachers=keras_hub:dinov2_base", "--init_from=x.keras")
  student = pipeline_stage.student_config(config)
  assert student.model.backbone == "resnet8" and student.model.init_from == ""
  assert student.distill.teachers == (
      str(tmp_path / "teachers" / "vanilla_1"), str(tmp_path / "teachers" / "jitter_1"),
      "keras_hub:dinov2_base")
  teacher = pipeline_stage.teacher_config(config, "vanilla:1")
  assert teacher.model.backbone == "keras_hub:dinov2_small"
  assert teacher.model.init_from == "x.keras" and teacher.model.student_backbone == ""
  same = pipeline_stage.student_config(config.replace(model={"student_backbone": ""}))
  assert same.model.backbone == "keras_hub:dinov2_small" and same.model.init_from == "x.keras"


@pytest.mark.slow
def test_adapted_preset_run_resumes_teaches_and_exports_offline(tmp_path):
  preset = fakes.write_keras_hub_preset(tmp_path / "presets" / "clip", "clip", 16)
  teacher = str(tmp_path / "teacher")
  teacher_args = ("--stage=teacher", f"--backbone=keras_hub:{preset}",
                  "--backbone_tuning=adaptformer", "--adapter_rank=2", f"--workdir={teacher}")
  first = train(*teacher_args)
  with open(os.path.join(teacher, "environment.json")) as f:
    trained = json.load(f)["trained_weights"]
  # One block of width 16: norm 2 * 16, down 16 * 2 + 2, up 2 * 16 + 16, scale 1.
  assert trained["backbone"] == 2 * 16 + 16 * 2 + 2 + 2 * 16 + 16 + 1
  assert f"trains {trained['total']:,} weights, {trained['backbone']:,} of them" in first.stderr
  weights = os.path.join(teacher, "final.weights.h5")
  model, image, expected = _own_prediction(teacher, tmp_path)

  shutil.rmtree(tmp_path / "presets")
  env = offline_environment(tmp_path)
  for name in ("final.weights.h5", "metrics.json"):
    os.remove(os.path.join(teacher, name))
  resumed = train(*teacher_args, env=env)
  assert "resuming from step 2" in resumed.stderr
  resumed_model = run_models.load_classifier(teacher)[0]
  for variable, original in zip(resumed_model.weights, model.weights):
    np.testing.assert_array_equal(variable.numpy(), original.numpy(), err_msg=variable.path)
  assert os.path.exists(weights)

  train("--stage=student", "--backbone=resnet8", f"--teachers={teacher}",
        f"--workdir={tmp_path / 'student'}", env=env)
  export = str(tmp_path / "export")
  exported = helpers.run_module("cbd_tf.export", f"--workdir={teacher}", f"--export_dir={export}",
                                env=env)
  assert exported.returncode == 0, exported.stderr[-3000:]
  served = helpers.run_script("serve_export", export, image, env=env)
  np.testing.assert_allclose(served["probabilities"][0], expected, rtol=1e-4, atol=1e-5)
