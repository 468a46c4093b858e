"""Training that survives being killed: step checkpoints and a fit that resumes mid-epoch.

The state saved is the classifier, the optimiser (its step counter included) and nothing
else: the input pipeline is a pure function of (seed, step), so a resumed run rebuilds it
at the saved step, and with op determinism ends with the weights of an uninterrupted run.
Teachers are not part of the state: they are rebuilt from their own run directories.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from cbd_tf import errors, run_dir, run_files


class TrainingState:
  """tf.train.CheckpointManager over (classifier, optimizer) in RUN_DIR/checkpoints.

  CheckpointManager writes the checkpoint files first and then renames its index file
  into place, so a kill at any moment leaves the previous checkpoint usable.
  """

  def __init__(self, directory: str, save_directory: str, classifier: keras.Model,
               optimizer: keras.optimizers.Optimizer, max_to_keep: int = 2):
    """Restores from `directory`; saves to `save_directory` (differs on non-chief workers)."""
    self.optimizer = optimizer
    self.checkpoint = tf.train.Checkpoint(model=classifier, optimizer=optimizer)
    self.restore_directory = os.path.join(directory, run_dir.CHECKPOINTS)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, os.path.join(save_directory, run_dir.CHECKPOINTS),
        max_to_keep=max_to_keep)

  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def restore(self) -> int:
    """Loads the newest readable checkpoint, if there is one; returns the step training
    resumes at. A damaged checkpoint (truncated by a crash, overwritten) is skipped with a
    warning naming it; if checkpoints exist and none reads, run_files.RunFault: never a
    silent restart from step 0."""
    state = tf.train.get_checkpoint_state(self.restore_directory)
    candidates = list(reversed(state.all_model_checkpoint_paths)) if state else []
    for path in candidates:
      try:
        self.checkpoint.restore(path).assert_existing_objects_matched()
      except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as error:
        logging.warning("checkpoint %s is damaged, skipped: %s", path,
                        (str(error).strip().splitlines() or [type(error).__name__])[0])
        continue
      logging.info("resuming from step %d (%s)", self.step, path)
      return self.step
    if candidates:
      raise run_files.RunFault(f"no checkpoint in {self.restore_directory} is readable "
                               f"({', '.join(candidates)}); move the directory away to start over")
    return self.step

  def save(self) -> None:
    """Saves the state at the current step; run_files.WriteError naming the directory if it
    cannot (the previous checkpoint stays usable: the index is renamed into place last)."""
    if self.manager.latest_checkpoint == os.path.join(self.manager.directory,
                                                      f"ckpt-{self.step}"):
      return
    try:
      self.manager.save(checkpoint_number=self.step)
    except (OSError, tf.errors.OpError) as error:
      raise run_files.WriteError(
          f"could not save the training state to {self.manager.directory}: "
          f"{errors.reason(error)}; the previous checkpoint "
          f"{self.manager.latest_checkpoint} is kept") from None


class SaveTrainingState(keras.callbacks.Callback):
  """Saves every `every_steps` steps (0: never mid-epoch) and at every epoch end."""

  def __init__(self, state: TrainingState, every_steps: int):
    super().__init__()
    self.state = state
    self.every_steps = every_steps

  def on_train_batch_end(self, batch, logs=None):
    if self.every_steps and self.state.step % self.every_steps == 0:
      self.state.save()

  def on_epoch_end(self, epoch, logs=None):
    self.state.save()


class StopOnNonFiniteLoss(keras.callbacks.Callback):
  """Stops at the first NaN / Inf loss term, naming the step and the term. Listed before
  SaveTrainingState, so the bad step is never saved over the last good checkpoint."""

  def on_train_batch_end(self, batch, logs=None):
    for name, value in (logs or {}).items():
      value = float(np.mean(value))  # a length-1 array across workers
      if name.startswith("loss") and not math.isfinite(value):
        step = int(self.model.optimizer.iterations.numpy())
        raise FloatingPointError(f"{name} became {value} at step {step}; the last good "
                                 "checkpoint is kept, lower the learning rate or check the data")


def fit_from_step(trainer: keras.Model, build_dataset: Callable[[int], object], start_step: int,
                  epochs: int, steps_per_epoch: int, callbacks: list, verbose: int) -> None:
  """Runs the steps from `start_step` to epochs * steps_per_epoch.

  `build_dataset(step)` returns the training data starting at global step `step`. A run
  resumed mid-epoch first finishes that epoch, then continues with whole epochs.
  """
  epoch, done_in_epoch = divmod(start_step, steps_per_epoch)
  if done_in_epoch:
    trainer.fit(build_dataset(start_step), initial_epoch=epoch, epochs=epoch + 1,
                steps_per_epoch=steps_per_epoch - done_in_epoch, callbacks=callbacks,
                shuffle=False, verbose=verbose)
    epoch += 1
  if epoch < epochs:
    trainer.fit(build_dataset(epoch * steps_per_epoch), initial_epoch=epoch, epochs=epochs,
                steps_per_epoch=steps_per_epoch, callbacks=callbacks, shuffle=False,
                verbose=verbose)
