"""The stage registry (stage_registry.py), the stage modules (cbd_tf/stages/) and the generic
loop of training.train_stage over them, on a tiny in-memory source; progressive sampling's
tracker."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf import distiller, run_dir, run_files, run_models, stage_registry, stages, training
from cbd_tf.stages import crt, pipeline, student, teacher
from cbd_tf.data import sampling
from cbd_tf.data.source_types import Source, Split
from tests import helpers

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
  model = run_models.build_classifier(config, NUM_CLASSES)
  run_files.save_final_weights(model, config.workdir)
  config.save(os.path.join(config.workdir, run_dir.CONFIG))
  run_files.write_classes(config.workdir, source.class_names, source.train_counts)
  return config.workdir


def test_every_stage_module_builds_or_runs_what_its_entry_declares():
  for name, entry in stage_registry.STAGES.items():
    module = stages.stage_module(name)
    assert callable(getattr(module, "run" if entry.runs_itself else "build")), name
  assert [name for name, entry in stage_registry.STAGES.items() if not entry.trains] == [
      "tau_norm", "ncm", "zero_shot"]
  assert config_lib.STAGES == tuple(stage_registry.STAGES)


def test_config_takes_a_stage_defaults_from_its_entry():
  sampling_by_stage = {name: config_lib.Config(stage=name).sampling
                       for name in stage_registry.STAGES}
  assert sampling_by_stage == {"teacher": "instance", "student": "class_balanced",
                               "pipeline": "class_balanced", "crt": "class_balanced",
                               "lws": "class_balanced", "tau_norm": "class_balanced",
                               "ncm": "class_balanced", "zero_shot": "class_balanced",
                               "teacher_features": "class_balanced"}
  epochs = {name: config_lib.Config(stage=name).epochs for name in ("teacher", "crt", "lws")}
  assert epochs == {"teacher": config_lib.OptimizerConfig().epochs, "crt": 10, "lws": 5}
  assert config_lib.Config(stage="crt").replace(long_tail={"decoupled_epochs": 3}).epochs == 3


def test_a_setting_only_other_stages_read_is_refused_naming_them():
  for flag, value, stage in (("--tau=1", "tau", "teacher"), ("--loss=focal", "loss", "crt"),
                             ("--init_from=/tmp/w.keras", "init_from", "ncm")):
    readers = " / ".join(stage_registry.stages_reading(value))
    with pytest.raises(ValueError, match=f"^{flag}.* applies to --stage={readers}, not {stage}$"):
      helpers.config_from_argv(flag, f"--stage={stage}", "--workdir=/tmp/x",
                               *(["--backbone_from=/tmp/run"] if stage != "teacher" else []))
  # The paper flagfiles' pipeline settings and a data set's cRT epochs are shared recipe.
  helpers.config_from_argv("--flagfile=configs/imagenet_lt.flags", "--stage=teacher",
                           "--decoupled_epochs=30", "--workdir=/tmp/x")


def test_unknown_stage_names_the_valid_ones():
  with pytest.raises(ValueError, match="unknown stage 'bogus'; valid: teacher, student, "
                                       "teacher_features, pipeline, crt, lws, tau_norm, ncm"):
    stage_registry.get_stage("bogus")


class _Teacher:
  def __init__(self, embedding_dim):
    self.embedding_dim = embedding_dim


def test_student_projection_is_resolved_from_the_teachers():
  config = config_lib.Config(stage="student", model=config_lib.ModelConfig(projection_dim=0))
  resolved = student.with_teacher_width(
      config, distiller.teacher_feature_dim([_Teacher(64), _Teacher(32)]))
  assert resolved.model.projection_dim == 96
  assert config.model.projection_dim == 0  # configs are values: the input is unchanged


def test_only_tau_norm_checks_for_a_validation_split(backbone_run, source, tmp_path):
  without_val = Source("tiny", train=source.train, test=source.test,
                       class_names=source.class_names)
  for stage in ("crt", "lws", "ncm"):
    config = _config(tmp_path, stage=stage, long_tail={"backbone_from": backbone_run})
    stages.check_stage(config, without_val)
  config = _config(tmp_path, stage="tau_norm", long_tail={"backbone_from": backbone_run})
  with pytest.raises(ValueError, match="without --tau picks tau on a validation split"):
    stages.check_stage(config, without_val)
  stages.check_stage(config.replace(long_tail={"tau": 1.0}), without_val)
  with pytest.raises(ValueError, match="has no config.json"):
    stages.check_stage(config.replace(stage="ncm", long_tail={"backbone_from": str(tmp_path)}),
                       source)


@pytest.mark.parametrize("stage", ["tau_norm", "ncm"])
def test_post_hoc_stages_build_no_loss_optimizer_or_checkpoint(stage, backbone_run, source,
                                                               tmp_path, monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError(f"a {stage} run built a training piece")
  monkeypatch.setattr(training.long_tail_losses, "build_loss", refuse)
  monkeypatch.setattr(training, "_build_optimizer", refuse)
  monkeypatch.setattr(training.resume, "TrainingState", refuse)
  config = _config(tmp_path / stage, stage=stage, long_tail={"backbone_from": backbone_run})
  result = training.train_stage(config, source)
  names = set(os.listdir(config.workdir))
  assert {run_dir.CONFIG, run_dir.CLASSES, run_dir.FINAL_WEIGHTS, run_dir.METRICS} <= names
  assert "checkpoints" not in names and run_dir.TENSORBOARD not in names
  assert "dropped_train_examples" not in result  # nothing was trained
  # tau_norm without --tau chose tau on the validation split (selection.json); ncm chose nothing.
  assert set(stage_registry.get_stage(stage).run_files) <= names
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
    return [counter] + crt.callbacks(built, source, log_dir, save_dir)
  monkeypatch.setattr(teacher, "callbacks", stage_callbacks, raising=False)
  # steps_per_epoch 0: 23 images // batch 16 = 1 step an epoch, as the official train.py
  # (ceil would run 2).
  config = _config(tmp_path / "teacher", optimizer={"epochs": 2, "steps_per_epoch": 0},
                   data={"batch_size": 16})
  result = training.train_stage(config, source)
  assert counter.batches == 2
  selection = run_files.read_json(os.path.join(config.workdir, run_dir.SELECTION))
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


def test_every_run_a_pipeline_builds_passes_the_checks_of_its_stage():
  config = helpers.config_from_argv(
      "--flagfile=configs/smoke.flags", "--workdir=/tmp/p", "--teachers=keras_hub:dinov2_base",
      "--init_from=x.keras", "--student_backbone=resnet20")
  runs = [pipeline.teacher_config(config, spec) for spec in config.distill.teacher_specs]
  for run in runs + [pipeline.student_config(config)]:
    run.validate()
  assert all(run.distill.teachers == () for run in runs)
