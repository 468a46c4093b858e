"""The Keras API as Keras users expect it: .keras files reload compiled and without warnings,
Keras' checkpointing callbacks work on a Classifier and on a CBDDistiller, and saving the
distiller whole says in one line what to save instead."""

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


def test_distiller_save_says_what_to_save_instead(tmp_path):
  with pytest.raises(NotImplementedError, match=r"save distiller.student.save\('student.keras'\)"):
    distiller().save(tmp_path / "distiller.keras")


@pytest.mark.parametrize("kind", ["classifier", "distiller"])
def test_model_checkpoint_works_on_both(kind, tmp_path):
  model = distiller() if kind == "distiller" else helpers.tiny_classifier()
  if kind == "classifier":
    model.compile(keras.optimizers.SGD(0.1), weight_decay=5e-4)
  path = str(tmp_path / ("best.weights.h5" if kind == "distiller" else "best.keras"))
  model.fit(*data(), batch_size=8, epochs=2, verbose=0, callbacks=[
      keras.callbacks.ModelCheckpoint(path, monitor="loss",
                                      save_weights_only=kind == "distiller")])
  if kind == "distiller":
    model.load_weights(path)
  else:
    assert cbd_tf.load_model(path).num_classes == 4


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
