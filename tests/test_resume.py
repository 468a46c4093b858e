"""Fault tolerance: a pipeline killed with SIGKILL mid-teacher and mid-student, started
again with the same command, ends with the weights of an uninterrupted run."""

from cbd_tf import run_models
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import helpers

STEPS = 18  # 3 epochs of 6 steps per stage

# Each test trains in subprocesses: about 2.5 minutes together on 2 idle cores.
pytestmark = pytest.mark.slow


def command(workdir):
  return [sys.executable, "-m", "cbd_tf.train", "--flagfile=configs/smoke.flags",
          f"--workdir={workdir}", "--teacher_specs=vanilla:1", "--epochs=3",
          "--steps_per_epoch=6", "--checkpoint_every_steps=1", "--deterministic",
          "--eval_every_epochs=0"]


def start(workdir, log_path):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  log = open(log_path, "w")  # pylint: disable=consider-using-with
  return subprocess.Popen(command(workdir), cwd=helpers.ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT)


def kill_when_exists(process, path, timeout=600):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert process.poll() is None, f"training ended before {path} appeared"
    assert time.time() < deadline, f"timed out waiting for {path}"
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait()


def registered_step(run_directory):
  """The step of the newest checkpoint CheckpointManager has registered in its `checkpoint`
  state file: what a restart restores. Its ckpt-N.index is written before that file."""
  with open(os.path.join(run_directory, "checkpoints", "checkpoint")) as f:
    path = re.search(r'^model_checkpoint_path: "(.+)"$', f.read(), re.MULTILINE).group(1)
  return int(os.path.basename(path).split("-")[-1])


def weights(run_directory):
  model, _ = run_models.load_classifier(run_directory)
  return [w.numpy() for w in model.weights]


def resumed_from(log_path):
  with open(log_path) as f:
    lines = [line for line in f if "resuming from step" in line]
  return [int(line.split("resuming from step ")[1].split()[0]) for line in lines]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  result = subprocess.run(command(workdir), cwd=helpers.ROOT, capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_killed_pipeline_resumes_to_identical_weights(uninterrupted, tmp_path):
  workdir = str(tmp_path / "killed")
  teacher = os.path.join(workdir, "teachers", "vanilla_1")
  student = os.path.join(workdir, "student")
  logs = [str(tmp_path / f"log{i}.txt") for i in range(3)]
  kill_when_exists(start(workdir, logs[0]), os.path.join(teacher, "checkpoints", "ckpt-8.index"))
  assert not os.path.exists(os.path.join(teacher, "final.weights.h5"))
  teacher_saved = registered_step(teacher)
  kill_when_exists(start(workdir, logs[1]), os.path.join(student, "checkpoints", "ckpt-9.index"))
  assert not os.path.exists(os.path.join(student, "final.weights.h5"))
  student_saved = registered_step(student)
  final = start(workdir, logs[2])
  assert final.wait(timeout=600) == 0, open(logs[2]).read()[-3000:]

  # Each restart resumes from the last complete checkpoint. A kill just after ckpt-N.index
  # appeared can land before ckpt-N is registered (seen on a loaded CI machine): then that
  # is ckpt-(N-1). On a loaded machine the kill may also land a few steps later.
  teacher_resumed = resumed_from(logs[1])[0]
  student_resumed = resumed_from(logs[2])[0]
  assert (teacher_resumed, student_resumed) == (teacher_saved, student_saved)
  assert 7 <= teacher_resumed < STEPS and 8 <= student_resumed < STEPS
  assert teacher_resumed % 6 or student_resumed % 6, "neither kill landed mid-epoch"
  for run in ("teachers/vanilla_1", "student"):
    for resumed, expected in zip(weights(os.path.join(workdir, run)),
                                 weights(os.path.join(uninterrupted, run))):
      np.testing.assert_array_equal(resumed, expected)


def test_non_finite_loss_stops_with_step_and_term(tmp_path):
  result = helpers.run_module(
      "cbd_tf.train", "--flagfile=configs/smoke.flags", f"--workdir={tmp_path}",
      "--stage=teacher", "--learning_rate=1e30", "--epochs=2", "--steps_per_epoch=3",
      "--checkpoint_every_steps=1", "--eval_every_epochs=0")
  assert result.returncode != 0
  message = result.stderr.strip().splitlines()[-1]
  assert message.startswith("cbd_tf.train: error: loss") and "at step" in message
  assert not os.path.exists(tmp_path / "final.weights.h5")
