"""The smoke pipeline through the command line: both stages, evaluation, re-run, API."""

from cbd_tf import run_models, training
import json
import os

import numpy as np
import pytest

from tests import helpers

# Every test reads the smoke pipeline trained through the command line (conftest.py).
pytestmark = pytest.mark.slow


def test_pipeline_trains_every_run_and_prints_comparison(pipeline_dir):
  workdir, stdout = pipeline_dir
  for run in ("teachers/vanilla_1", "teachers/jitter_1", "student"):
    directory = os.path.join(workdir, run)
    assert os.path.exists(os.path.join(directory, "final.weights.h5"))
    with open(os.path.join(directory, "metrics.json")) as f:
      result = json.load(f)
    assert {"top1", "many", "medium", "few", "per_class", "num_test"} <= set(result)
    assert result["num_test"] == 1000 and len(result["per_class"]) == 10
  table = stdout[stdout.index("Teachers vs CBD student"):].splitlines()
  assert [line.split()[0] for line in table[1:5]] == ["run", "vanilla_1", "jitter_1", "student"]
  with open(os.path.join(workdir, "student", "config.json")) as f:
    student = json.load(f)
  assert student["model"]["projection_dim"] == 128  # two resnet8 teachers of width 64
  assert student["distill"]["teachers"] == [os.path.join(workdir, "teachers", n)
                                            for n in ("vanilla_1", "jitter_1")]
  assert student["data"]["batch_size"] == 16  # smoke.flags overrides the included demo.flags
  with open(os.path.join(workdir, "teachers", "jitter_1", "config.json")) as f:
    assert json.load(f)["data"]["augmentation"] == "jitter"


def test_rerun_skips_finished_runs(pipeline_dir):
  workdir, _ = pipeline_dir
  before = os.path.getmtime(os.path.join(workdir, "student", "final.weights.h5"))
  result = helpers.run_module("cbd_tf.train", "--flagfile=configs/smoke.flags",
                              f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.count("is trained already") == 3
  assert os.path.getmtime(os.path.join(workdir, "student", "final.weights.h5")) == before


def test_evaluate_cli_reproduces_metrics(pipeline_dir):
  workdir, _ = pipeline_dir
  with open(os.path.join(workdir, "student", "metrics.json")) as f:
    trained = json.load(f)
  result = helpers.run_module("cbd_tf.evaluate", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "student", "metrics.json")) as f:
    evaluated = json.load(f)
  assert evaluated["top1"] == pytest.approx(trained["top1"])
  assert evaluated["per_class"] == pytest.approx(trained["per_class"])
  assert "vanilla_1" in result.stdout and "student" in result.stdout


def test_student_stage_from_teacher_dirs_and_python_api(pipeline_dir, tmp_path):
  from cbd_tf import config as config_lib  # pylint: disable=import-outside-toplevel
  workdir, _ = pipeline_dir
  teachers = tuple(os.path.join(workdir, "teachers", n) for n in ("vanilla_1", "jitter_1"))
  student_config = config_lib.Config.load(os.path.join(workdir, "student", "config.json"))
  # Not the pipeline's export: other tests read it.
  config = student_config.replace(workdir=str(tmp_path / "student"),
                                  distill={"teachers": teachers[:1]},
                                  model={"projection_dim": 0}, output={"export_dir": ""})
  result = training.run(config)
  assert result["num_test"] == 1000
  model, saved = run_models.load_classifier(config.workdir)
  assert saved.model.projection_dim == 64
  images = np.zeros((2, 16, 16, 3), np.float32)
  assert model(images).shape == (2, 10)
