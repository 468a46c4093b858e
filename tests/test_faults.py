"""Faults a training run meets, each with the protection that handles it: a second writer
on a run directory, a lock left by a dead process, a damaged newest checkpoint, a save that
fails (disk full, read-only directory), a damaged teacher or backbone run."""

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from cbd_tf import resume, run_files, run_lock, run_models, training
from tests import helpers

SMOKE = ("--flagfile=configs/smoke.flags", "--stage=teacher", "--eval_every_epochs=0",
         "--checkpoint_every_steps=1")


def teacher_config(tmp_path, epochs=2, name="run"):
  return helpers.config_from_argv(*SMOKE, f"--workdir={tmp_path / name}", f"--epochs={epochs}")


def dead_pid() -> int:
  process = subprocess.Popen([sys.executable, "-c", "pass"])  # pylint: disable=consider-using-with
  process.wait()
  return process.pid


def test_second_writer_stops_at_once_naming_the_first(tmp_path):
  workdir = tmp_path / "run"
  lock = run_lock.acquire(str(workdir))
  try:
    result = helpers.run_module("cbd_tf.train", *SMOKE, f"--workdir={workdir}")
    # While the first writer holds it, the lock is still its own: not removed nor taken.
    with open(lock) as f:
      assert json.load(f)["pid"] == os.getpid()
  finally:
    run_lock.release(lock)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"cbd_tf.train: error: run directory {str(workdir)!r} is in use by process "
      f"{os.getpid()} on {socket.gethostname()}")
  assert not os.path.exists(workdir / "checkpoints")


def test_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
  workdir = tmp_path / "run"
  os.makedirs(workdir)
  with open(workdir / "writer.lock", "w") as f:
    json.dump({"pid": dead_pid(), "host": socket.gethostname(), "started": "earlier"}, f)
  training.run(teacher_config(tmp_path, epochs=1))
  assert any("taking over" in r.getMessage() and "is gone" in r.getMessage()
             for r in caplog.records)
  assert os.path.exists(workdir / "final.weights.h5")
  assert not os.path.exists(workdir / "writer.lock")  # released at the end


def test_lock_from_another_host_is_never_taken(tmp_path):
  os.makedirs(tmp_path / "run")
  with open(tmp_path / "run" / "writer.lock", "w") as f:
    json.dump({"pid": dead_pid(), "host": "elsewhere", "started": "earlier"}, f)
  with pytest.raises(run_lock.RunDirectoryInUse, match="in use by process .* on elsewhere"):
    run_lock.acquire(str(tmp_path / "run"))


def checkpoint_paths(directory):
  return tf.train.get_checkpoint_state(os.path.join(directory, "checkpoints")
                                       ).all_model_checkpoint_paths


def test_damaged_newest_checkpoint_resumes_from_the_one_before(tmp_path, caplog):
  config = teacher_config(tmp_path)
  training.run(config)
  older, newest = checkpoint_paths(config.workdir)
  for name in ("final.weights.h5", "metrics.json"):
    os.remove(os.path.join(config.workdir, name))
  data_file = tf.io.gfile.glob(newest + ".data-*")[0]
  with open(data_file, "r+b") as f:
    f.truncate(os.path.getsize(data_file) // 2)
  model = run_models.build_classifier(config, 10)
  optimizer = training._build_optimizer(config, 2)  # pylint: disable=protected-access
  optimizer.build(model.trainable_variables)
  step = resume.TrainingState(config.workdir, config.workdir, model, optimizer).restore()
  assert step == int(older.rsplit("-", 1)[1]) == 3
  warnings = [r.getMessage() for r in caplog.records if "is damaged, skipped" in r.getMessage()]
  assert len(warnings) == 1 and newest in warnings[0]
  training.run(config.replace(optimizer={"epochs": 3}))  # and the run goes on from there
  assert os.path.exists(os.path.join(config.workdir, "final.weights.h5"))


def test_no_readable_checkpoint_stops_instead_of_restarting(tmp_path):
  config = teacher_config(tmp_path)
  training.run(config)
  os.remove(os.path.join(config.workdir, "final.weights.h5"))
  for path in checkpoint_paths(config.workdir):
    for data_file in tf.io.gfile.glob(path + ".data-*"):
      with open(data_file, "wb") as f:
        f.write(b"x")
  with pytest.raises(run_files.RunFault, match=r"no checkpoint in .*checkpoints is readable"):
    training.run(config)


@contextlib.contextmanager
def file_size_limit(size):
  """Writes past `size` bytes of a file fail with EFBIG (File too large) once the bytes
  before are written: a disk that fills mid-write. Python ignores SIGXFSZ, so the write
  call fails instead of the process."""
  assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
  try:
    yield
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_failed_save_keeps_the_previous_checkpoint_and_names_the_path(tmp_path, monkeypatch):
  config = teacher_config(tmp_path)
  checkpoints = os.path.join(config.workdir, "checkpoints")
  saves = []
  original = tf.train.CheckpointManager.save

  def save_on_a_filling_disk(manager, *args, **kwargs):
    saves.append(kwargs.get("checkpoint_number"))
    if len(saves) < 2:  # the first save lands, the second fills the disk half-way
      return original(manager, *args, **kwargs)
    written = os.path.getsize(tf.io.gfile.glob(os.path.join(checkpoints, "ckpt-1.data-*"))[0])
    with file_size_limit(written // 2):
      return original(manager, *args, **kwargs)
  monkeypatch.setattr(tf.train.CheckpointManager, "save", save_on_a_filling_disk)
  with pytest.raises(run_files.WriteError) as raised:
    training.run(config)
  message = str(raised.value)
  assert message.startswith(f"could not save the training state to {checkpoints}: ")
  assert "File too large" in message  # failed while writing, past the first half
  assert "function_node" not in message and "[Op:" not in message  # TensorFlow's wrapping
  assert message.endswith(f"the previous checkpoint {os.path.join(checkpoints, 'ckpt-1')} is kept")
  monkeypatch.setattr(tf.train.CheckpointManager, "save", original)
  state = tf.train.get_checkpoint_state(checkpoints)
  assert state.model_checkpoint_path.endswith("ckpt-1")
  assert not os.path.exists(os.path.join(config.workdir, "writer.lock"))
  training.run(config)  # the kept checkpoint resumes
  assert os.path.exists(os.path.join(config.workdir, "final.weights.h5"))


def test_failed_final_save_keeps_the_final_weights_there(tmp_path):
  config = teacher_config(tmp_path, epochs=1)
  training.run(config)
  final = os.path.join(config.workdir, "final.weights.h5")
  before = open(final, "rb").read()
  model, _ = run_models.load_classifier(config.workdir)
  with file_size_limit(len(before) // 2):  # the real write, stopped half-way
    with pytest.raises(run_files.WriteError, match=f"^could not write {final}: File too large$"):
      run_files.save_final_weights(model, config.workdir)
  assert open(final, "rb").read() == before
  run_files.check_weights_file(final)


@pytest.mark.parametrize("damaged", ["final.weights.h5", "config.json"])
@pytest.mark.parametrize("stage", ["student", "crt"])
def test_damaged_teacher_or_backbone_run_stops_before_training(tmp_path, damaged, stage):
  teacher = teacher_config(tmp_path, epochs=1, name="teacher")
  training.run(teacher)
  path = os.path.join(teacher.workdir, damaged)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  uses = (f"--teachers={teacher.workdir}" if stage == "student"
          else f"--backbone_from={teacher.workdir}")
  config = helpers.config_from_argv(*SMOKE, f"--stage={stage}", uses,
                                    f"--workdir={tmp_path / stage}")
  with pytest.raises(ValueError, match=f"^{path} is damaged: "):
    training.run(config)  # would train, were the damage not caught first
  assert not os.path.exists(tmp_path / stage / "checkpoints")
  assert not os.path.exists(tmp_path / stage / "final.weights.h5")


def test_lock_is_held_until_the_outermost_holder_ends(tmp_path):
  directory = str(tmp_path / "run")
  with run_lock.hold(directory):
    with run_lock.hold(directory):  # training.run around train_stage
      pass
    assert os.path.exists(os.path.join(directory, "writer.lock"))
  assert not os.path.exists(os.path.join(directory, "writer.lock"))
