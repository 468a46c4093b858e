import os

import pytest

from cbd_tf import config as config_lib
from cbd_tf import training
from tests import fakes, helpers


def base_config(tmp_path, **changes):
  config = config_lib.Config(workdir=str(tmp_path / "run"),
                             data=config_lib.DataConfig(image_size=28))
  return config.replace(**changes)


@pytest.mark.parametrize("changes, message", [
    ({"data": {"dataset": "imagenet"}}, "unknown dataset 'imagenet'; valid: mnist_lt"),
    ({"model": {"backbone": "resnet7"}}, "unknown backbone 'resnet7'; valid: resnet8,"),
    ({"data": {"sampling": "balanced"}}, "unknown sampling 'balanced'; valid: instance,"),
    ({"distill": {"alpha": 1.2}}, "distill_alpha must be in"),
    ({"distill": {"beta": -3.0}}, "distill_beta must be >= 0"),
    ({"stage": "student"}, "--stage=student needs --teachers"),
])
def test_validate_run_rejects(tmp_path, changes, message):
  with pytest.raises(ValueError, match=message.replace("[", r"\[")):
    training.validate_run(base_config(tmp_path, **changes))


def test_teacher_without_final_weights(tmp_path):
  directory = fakes.fake_run(str(tmp_path / "teacher"))
  os.remove(os.path.join(directory, "final.weights.h5"))
  config = base_config(tmp_path, stage="student", distill={"teachers": (directory,)})
  with pytest.raises(ValueError, match="has no final.weights.h5"):
    training.validate_run(config)


def test_teacher_with_other_class_count(tmp_path):
  directory = fakes.fake_run(str(tmp_path / "teacher"), num_classes=3)
  config = base_config(tmp_path, stage="student", distill={"teachers": (directory,)})
  with pytest.raises(ValueError, match="has 3 classes, the data has 10"):
    training.validate_run(config)


def test_teacher_with_other_image_size(tmp_path):
  directory = fakes.fake_run(str(tmp_path / "teacher"), image_size=32)
  config = base_config(tmp_path, stage="student", distill={"teachers": (directory,)})
  with pytest.raises(ValueError, match="takes 32px images, the student 28px"):
    training.validate_run(config)


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(ValueError, match="workdir .* is not writable"):
    training.validate_run(base_config(tmp_path, workdir=str(blocker / "run")))


def test_unwritable_export_dir_stops_before_training(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  config = base_config(tmp_path, output={"export_dir": str(blocker / "exports" / "1")})
  with pytest.raises(ValueError, match=r"--export_dir's directory '.*a_file/exports' is not "
                                       r"writable: Not a directory"):
    training.validate_run(config)


@pytest.mark.slow  # three CLI processes
@pytest.mark.parametrize("args, message", [
    (["--backbone=vgg"], "unknown backbone 'vgg'"),
    (["--stage=student"], "--stage=student needs --teachers"),
    (["--distill_alpha=2"], "distill_alpha must be in [0, 1], got 2.0"),
])
def test_cli_gives_one_line_error_and_nonzero_exit(tmp_path, args, message):
  result = helpers.run_module("cbd_tf.train", "--flagfile=configs/smoke.flags",
                              f"--workdir={tmp_path / 'run'}", *args, timeout=120)
  assert result.returncode != 0
  last_lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert last_lines[-1].startswith("cbd_tf.train: error: ") and message in last_lines[-1]
  assert not (tmp_path / "run" / "config.json").exists()
