"""The Keras API as Keras users expect it: .keras files reload compiled and without warnings,
Keras' checkpointing callbacks work on a Classifier and on a CBDDistiller, and a distiller
saves and reloads whole (student, run and preset teachers, compile state)."""

import warnings

import keras
import numpy as np
import pytest

import cbd_tf
from cbd_tf import long_tail_losses
from cbd_tf import config as config_lib
from tests import helpers


def data():
  return helpers.tiny_batch(batch_size=16)


def test_keras_file_reloads_compiled_without_warnings(tmp_path):
  model = helpers.tiny_classifier()
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), weight_decay=5e-4,
                backbone_learning_rate_multiplier=0.5)
  model.fit(*data(), batch_size=8, verbose=0)
  model.save(tmp_path / "model.keras")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    reloaded = cbd_tf.load_model(tmp_path / "model.keras")
  assert (reloaded.weight_decay, reloaded.backbone_learning_rate_multiplier) == (5e-4, 0.5)
  assert int(reloaded.optimizer.iterations) == 2
  for mine, theirs in zip(reloaded.optimizer.variables, model.optimizer.variables):
    np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
  reloaded.fit(*data(), batch_size=8, verbose=0)  # trains on


def test_custom_loss_is_named_on_reload(tmp_path):
  loss, _ = long_tail_losses.build_loss(config_lib.LongTailConfig(loss="balanced_softmax"),
                                        np.array([9, 5, 2, 1]))
  model = helpers.tiny_classifier()
  model.compile(keras.optimizers.SGD(0.1), loss=loss)
  model.save(tmp_path / "model.keras")
  with pytest.warns(UserWarning, match="compiled with a custom loss"):
    cbd_tf.load_model(tmp_path / "model.keras")


def distiller():
  student = helpers.tiny_classifier(projection_dim=64)
  model = cbd_tf.CBDDistiller(student, [helpers.tiny_classifier()])
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), weight_decay=5e-4)
  return model


def _preset_teacher(tmp_path):
  """A frozen KerasHub ViT (8 px, random weights) as a preset teacher, from a local preset."""
  import keras_hub  # pylint: disable=import-outside-toplevel
  preset = str(tmp_path / "vit_preset")
  keras_hub.models.ViTBackbone(image_shape=(8, 8, 3), patch_size=4, num_layers=1, num_heads=2,
                               hidden_dim=16, mlp_dim=32).save_to_preset(preset)
  keras_hub.layers.ViTImageConverter(image_size=(8, 8), scale=1 / 127.5,
                                     offset=-1.0).save_to_preset(preset)
  return cbd_tf.PresetTeacher(cbd_tf.KerasHubBackbone.from_preset(preset))


def test_distiller_saves_and_reloads_whole(tmp_path):
  run_teacher, preset_teacher = helpers.tiny_classifier(), _preset_teacher(tmp_path)
  student = helpers.tiny_classifier(projection_dim=64 + 16)
  model = cbd_tf.CBDDistiller(student, [run_teacher, preset_teacher], alpha=0.3, beta=50.0,
                              teacher_names=["run", "preset"])
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), weight_decay=5e-4)
  images, labels = data()
  model.fit(images, labels, batch_size=8, verbose=0)
  model.save(tmp_path / "distiller.keras")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    reloaded = cbd_tf.load_model(tmp_path / "distiller.keras")
  assert isinstance(reloaded, cbd_tf.CBDDistiller)
  assert (reloaded.alpha, reloaded.beta, reloaded.teacher_names) == (0.3, 50.0, ("run", "preset"))
  assert isinstance(reloaded.teachers[1], cbd_tf.PresetTeacher)
  for mine, theirs in zip(reloaded.teachers, model.teachers):
    np.testing.assert_array_equal(mine.embed(images), theirs.embed(images))
    assert not mine.trainable_weights
  np.testing.assert_array_equal(reloaded.student.predict(images, verbose=0),
                                student.predict(images, verbose=0))
  assert int(reloaded.optimizer.iterations) == 2 and reloaded.weight_decay == 5e-4
  # It trains on exactly as the original does.
  ours = model.fit(images, labels, batch_size=8, verbose=0, shuffle=False).history
  theirs = reloaded.fit(images, labels, batch_size=8, verbose=0, shuffle=False).history
  assert ours == theirs
  # The student's own file holds no teacher.
  student.save(tmp_path / "student.keras")
  assert sum(w.size for w in cbd_tf.load_model(tmp_path / "student.keras").get_weights()) == (
      sum(w.size for w in student.get_weights()))


def test_a_distiller_of_cached_features_saves_whole(tmp_path):
  model = cbd_tf.CBDDistiller(helpers.tiny_classifier(projection_dim=64),
                              teacher_widths=[32, 32], teacher_names=["a", "b"])
  model.save(tmp_path / "cached.keras")
  reloaded = cbd_tf.load_model(tmp_path / "cached.keras")
  assert reloaded.teachers == () and reloaded.teacher_widths == (32, 32)


@pytest.mark.parametrize("kind", ["classifier", "distiller"])
def test_model_checkpoint_keeps_the_best_model_whole(kind, tmp_path):
  model = distiller() if kind == "distiller" else helpers.tiny_classifier()
  if kind == "classifier":
    model.compile(keras.optimizers.SGD(0.1), weight_decay=5e-4)
  best = _BestLoss()
  model.fit(*data(), batch_size=8, epochs=3, verbose=0, callbacks=[
      best, keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="loss",
                                            save_best_only=True)])
  reloaded = cbd_tf.load_model(tmp_path / "best.keras")
  assert type(reloaded) is type(model)
  for mine, theirs in zip(reloaded.weights, best.weights):
    np.testing.assert_array_equal(np.asarray(mine), theirs)


class _BestLoss(keras.callbacks.Callback):
  """The weights at the end of the epoch of lowest loss."""

  def __init__(self):
    super().__init__()
    self.loss, self.weights = float("inf"), None

  def on_epoch_end(self, epoch, logs=None):
    if logs["loss"] < self.loss:
      self.loss, self.weights = logs["loss"], [np.asarray(w) for w in self.model.weights]


class _StopAfterFirstEpoch(keras.callbacks.Callback):
  def on_epoch_end(self, epoch, logs=None):
    if epoch == 0:
      raise RuntimeError("interrupted")


class _Snapshot(keras.callbacks.Callback):
  """The model's weights and its optimiser's variables (step counter, momentum): at the end
  of epoch `epoch`, or at the start of training (after BackupAndRestore, listed before it)."""

  def __init__(self, epoch=None):
    super().__init__()
    self.epoch, self.values = epoch, None

  def _take(self):
    self.values = [v.numpy() for v in [*self.model.weights, *self.model.optimizer.variables]]

  def on_train_begin(self, logs=None):
    if self.epoch is None:
      self._take()

  def on_epoch_end(self, epoch, logs=None):
    if epoch == self.epoch:
      self._take()


@pytest.mark.parametrize("kind", ["classifier", "distiller"])
def test_backup_and_restore_resumes_both(kind, tmp_path):
  def build():
    keras.utils.set_random_seed(0)
    if kind == "distiller":
      return distiller()
    model = helpers.tiny_classifier()
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), weight_decay=5e-4)
    return model
  backup, interrupted = keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), _Snapshot(0)
  with pytest.raises(RuntimeError, match="interrupted"):
    build().fit(*data(), batch_size=8, epochs=3, verbose=0,
                callbacks=[backup, interrupted, _StopAfterFirstEpoch()])
  resumed, restored = build(), _Snapshot()
  untrained = [w.numpy() for w in resumed.weights]
  history = resumed.fit(*data(), batch_size=8, epochs=3, verbose=0, callbacks=[
      keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), restored])
  assert len(history.history["loss"]) == 2  # epochs 1 and 2: epoch 0 was restored
  # Restored: epoch 0's weights (not the fresh build's), step counter (2) and momentum.
  assert len(restored.values) == len(interrupted.values)
  for mine, saved in zip(restored.values, interrupted.values):
    np.testing.assert_array_equal(mine, saved)
  assert int(resumed.optimizer.iterations) == 2 + 4  # restored 2, then 2 epochs of 2
  assert any(not np.array_equal(w, u) for w, u in zip(restored.values, untrained))
  slots = restored.values[len(untrained):]
  assert any(np.any(slot != 0) for slot in slots if slot.ndim)  # momentum, not zeros


def test_keras_distiller_with_cbd_feature_distillation_trains_as_cbd_distiller():
  """keras.distillation.Distiller + CBDFeatureDistillation, student_loss_weight = 1 - alpha,
  against CBDDistiller (official weight decay 0: Keras' Distiller has none) on the same batch:
  the same loss and, step after step, the same trained weights. Keras' Distiller runs the
  student twice a step (its prediction, then its feature extractor), so BatchNorm's moving
  statistics move twice: those are the only weights that differ."""
  teacher = helpers.tiny_classifier()
  student = helpers.tiny_classifier(projection_dim=64)
  twin = helpers.tiny_classifier(projection_dim=64)
  twin.set_weights(student.get_weights())
  keras_distiller = keras.distillation.Distiller(
      teacher.as_functional(), twin.as_functional(),
      distillation_losses=cbd_tf.CBDFeatureDistillation(beta=100.0), student_loss_weight=0.6)
  keras_distiller.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  ours = cbd_tf.CBDDistiller(student, [teacher], alpha=0.4, beta=100.0)
  ours.compile(keras.optimizers.SGD(0.1, momentum=0.9), weight_decay=0.0)
  images, labels = helpers.tiny_batch()
  theirs = keras_distiller.fit(images, labels, batch_size=8, epochs=3, verbose=0).history
  mine = ours.fit(images, labels, batch_size=8, epochs=3, verbose=0).history
  np.testing.assert_allclose(theirs["loss"], mine["loss"], rtol=1e-6)
  np.testing.assert_allclose(theirs["student_loss"], mine["loss_ce"], rtol=1e-6)
  np.testing.assert_allclose(theirs["distillation_loss"], np.multiply(mine["loss_distill"], 100),
                             rtol=1e-5)
  for twin_weight, weight in zip(twin.trainable_weights, student.trainable_weights):
    np.testing.assert_allclose(twin_weight, weight, atol=1e-5)
  assert cbd_tf.CBDFeatureDistillation.from_config(
      cbd_tf.CBDFeatureDistillation(beta=7.0).get_config()).beta == 7.0


def test_as_functional_is_a_view_sharing_the_classifier_weights():
  student = helpers.tiny_classifier(projection_dim=32)
  view = student.as_functional()
  images, _ = helpers.tiny_batch()
  np.testing.assert_allclose(view(images), student(images), atol=1e-6)
  embedding = keras.Model(view.input, view.get_layer("embedding").output)
  np.testing.assert_allclose(embedding(images), student.embed(images), atol=1e-6)
  assert {id(w) for w in view.weights} == {id(w) for w in student.weights}
  with pytest.raises(ValueError, match="student feature width 32 != teacher width 64"):
    cbd_tf.CBDFeatureDistillation().validate_outputs(np.zeros((2, 64)), np.zeros((2, 32)))
