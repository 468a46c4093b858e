"""The stage registry (cbd_tf/trainers.py) and the generic loop of stages.train_stage over it,
on a tiny in-memory source; progressive sampling's tracker."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf import run_dir, stages, trainers
from cbd_tf.data import sampling
from cbd_tf.data.source_types import Source, Split

NUM_CLASSES = 4
IMAGE_SIZE = 8


def _split(counts, seed):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(NUM_CLASSES), counts).astype(np.int64)
  images = rng.integers(0, 256, (len(labels), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
  return Split(images, labels)


@pytest.fixture(scope="module")
def source():
  return Source("tiny", train=_split([12, 6, 3, 2], 0), test=_split([3] * NUM_CLASSES, 1),
                class_names=tuple(str(c) for c in range(NUM_CLASSES)),
                val=_split([2] * NUM_CLASSES, 2))


def _config(workdir, **changes):
  config = config_lib.Config(
      workdir=str(workdir),
      data=config_lib.DataConfig(image_size=IMAGE_SIZE, batch_size=8, eval_batch_size=32,
                                 eval_crop_fraction=1.0),
      model=config_lib.ModelConfig(backbone="resnet8", head="linear"),
      optimizer=config_lib.OptimizerConfig(epochs=1, steps_per_epoch=2),
      output=config_lib.OutputConfig(eval_every_epochs=0))
  return config.replace(**changes)


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory, source):
  """A finished-looking teacher run: untrained weights, but every file a finished run has."""
  config = _config(tmp_path_factory.mktemp("backbone"))
  model = run_dir.build_classifier(config, NUM_CLASSES)
  run_dir.save_final_weights(model, config.workdir)
  config.save(os.path.join(config.workdir, run_dir.CONFIG))
  run_dir.write_classes(config.workdir, source.class_names, source.train_counts)
  return config.workdir


def test_registry_covers_every_single_run_stage():
  assert set(trainers.STAGES) == set(config_lib.STAGES) - {"pipeline"}
  assert [name for name, stage in trainers.STAGES.items() if not stage.trains] == [
      "tau_norm", "ncm"]
  # Only the distiller brings its own loss.
  assert [n for n, s in trainers.STAGES.items() if not s.compiles_loss] == ["student"]


def test_registry_reports_the_defaults_config_declares():
  sampling_by_stage = {name: stage.default_sampling for name, stage in trainers.STAGES.items()}
  assert sampling_by_stage == {"teacher": "instance", "student": "class_balanced",
                               "crt": "class_balanced", "lws": "class_balanced",
                               "tau_norm": "class_balanced", "ncm": "class_balanced"}
  assert trainers.get_stage("crt").default_epochs == 10
  assert trainers.get_stage("lws").default_epochs == 5
  assert trainers.get_stage("teacher").default_epochs == config_lib.OptimizerConfig().epochs


def test_unknown_stage_names_the_valid_ones():
  with pytest.raises(ValueError, match="unknown stage 'pipeline' for one run; valid: teacher, "
                                       "student, crt, lws, tau_norm, ncm"):
    trainers.get_stage("pipeline")


class _Teacher:
  def __init__(self, embedding_dim):
    self.embedding_dim = embedding_dim


def test_student_projection_is_resolved_from_the_teachers():
  config = config_lib.Config(stage="student", model=config_lib.ModelConfig(projection_dim=0))
  resolved = trainers.student_config(config, [_Teacher(64), _Teacher(32)])
  assert resolved.model.projection_dim == 96
  assert config.model.projection_dim == 0  # configs are values: the input is unchanged


def test_only_tau_norm_checks_for_a_validation_split(backbone_run, source, tmp_path):
  without_val = Source("tiny", train=source.train, test=source.test,
                       class_names=source.class_names)
  for stage in ("crt", "lws", "ncm"):
    config = _config(tmp_path, stage=stage, long_tail={"backbone_from": backbone_run})
    trainers.get_stage(stage).check(config, without_val)
  config = _config(tmp_path, stage="tau_norm", long_tail={"backbone_from": backbone_run})
  with pytest.raises(ValueError, match="without --tau picks tau on a validation split"):
    trainers.get_stage("tau_norm").check(config, without_val)
  trainers.get_stage("tau_norm").check(config.replace(long_tail={"tau": 1.0}), without_val)
  with pytest.raises(ValueError, match="has no config.json"):
    trainers.get_stage("ncm").check(config.replace(long_tail={"backbone_from": str(tmp_path)}),
                                    source)


@pytest.mark.parametrize("stage", ["tau_norm", "ncm"])
def test_post_hoc_stages_build_no_loss_optimizer_or_checkpoint(stage, backbone_run, source,
                                                               tmp_path, monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError(f"a {stage} run built a training piece")
  monkeypatch.setattr(stages.long_tail_losses, "build_loss", refuse)
  monkeypatch.setattr(stages, "_build_optimizer", refuse)
  monkeypatch.setattr(stages.resume, "TrainingState", refuse)
  config = _config(tmp_path / stage, stage=stage, long_tail={"backbone_from": backbone_run})
  result = stages.train_stage(config, source)
  names = set(os.listdir(config.workdir))
  assert {run_dir.CONFIG, run_dir.CLASSES, run_dir.FINAL_WEIGHTS, run_dir.METRICS} <= names
  assert "checkpoints" not in names and run_dir.TENSORBOARD not in names
  assert "dropped_train_examples" not in result  # nothing was trained
  # tau_norm without --tau chose tau on the validation split; ncm chose nothing.
  assert (run_dir.SELECTION in names) == (stage == "tau_norm")
  saved = config_lib.Config.load(os.path.join(config.workdir, run_dir.CONFIG))
  assert saved.model.head == "linear"  # the backbone run's model section, resolved by build
  if stage == "tau_norm":
    assert saved.long_tail.tau == result["tau"] == saved.model.head_norm_power


class _CountBatches(keras.callbacks.Callback):
  def __init__(self):
    super().__init__()
    self.batches = 0

  def on_train_batch_end(self, batch, logs=None):
    self.batches += 1


@pytest.mark.slow  # trains two steps: ~5 s alone, ~20 s on a loaded machine
def test_a_stage_callbacks_join_fit_and_their_choice_is_saved(source, tmp_path, monkeypatch):
  counter = _CountBatches()

  def stage_callbacks(built, source, log_dir, save_dir):
    return [counter] + trainers._best_validation_epoch(built, source, log_dir, save_dir)
  teacher = trainers.STAGES["teacher"]
  monkeypatch.setitem(trainers.STAGES, "teacher",
                      trainers.Stage("teacher", teacher.build, callbacks=stage_callbacks))
  config = _config(tmp_path / "teacher", optimizer={"epochs": 2, "steps_per_epoch": 1})
  result = stages.train_stage(config, source)
  assert counter.batches == 2
  selection = run_dir.read_json(os.path.join(config.workdir, run_dir.SELECTION))
  assert selection["best_epoch"] in (1, 2) and list(selection["val_top1_by_epoch"]) == ["1", "2"]
  assert result["dropped_train_examples"] == 0
  assert os.path.isdir(os.path.join(config.workdir, "checkpoints"))


class _FakeModel:
  def __init__(self, step):
    self.optimizer = type("Optimizer", (), {"iterations": tf.Variable(step, dtype=tf.int64)})()


def test_progress_tracker_moves_t_with_the_optimizer_step():
  assert sampling.progress_tracker("instance", 3, 10) == (None, [])
  progress, callbacks = sampling.progress_tracker("progressive", 5, 20)
  assert float(progress.numpy()) == 0.25 and not progress.trainable
  callback, = callbacks
  callback.set_model(_FakeModel(15))
  callback.on_train_batch_begin(0)
  assert float(progress.numpy()) == 0.75
  callback.set_model(_FakeModel(30))  # past the end: t stays 1
  callback.on_train_batch_begin(0)
  assert float(progress.numpy()) == 1.0
  with pytest.raises(ValueError, match="total_steps must be positive, got 0"):
    sampling.progress_tracker("progressive", 0, 0)
  with pytest.raises(ValueError, match="unknown sampling 'balanced'"):
    sampling.progress_tracker("balanced", 0, 10)
