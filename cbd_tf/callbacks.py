"""Keras callbacks that write what people watch in TensorBoard during a run.

  train/loss, train/loss_ce, train/loss_distill, train/accuracy, train/lr   every N steps
  val/top1, val/acc_many, val/acc_medium, val/acc_few                       every N epochs
                                            (every epoch for cRT / LWS keeping the best one)
and a profiler trace of chosen steps. Train values are Keras' running means over the
current epoch, as on the progress bar.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from cbd_tf import metrics, run_dir, run_files


class StepScalars(keras.callbacks.Callback):
  """train/<metric> and train/lr every `every_steps` optimiser steps."""

  def __init__(self, log_dir: str, every_steps: int):
    super().__init__()
    self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
    self.every_steps = every_steps

  def on_train_batch_end(self, batch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    if step % self.every_steps:
      return
    with self.writer.as_default(step=step):
      for name, value in (logs or {}).items():
        tf.summary.scalar(f"train/{name}", float(np.mean(value)))
      tf.summary.scalar("train/lr", float(self.model.optimizer.learning_rate))

  def on_train_end(self, logs=None):
    self.writer.flush()


class ShotGroupEvaluation(keras.callbacks.Callback):
  """Evaluates `classifier` by shot group every `every_epochs` epochs: val/* scalars, and
  val_top1 / val_acc_many / ... in the epoch logs (so in the history and progress line)."""

  def __init__(self, classifier, dataset, train_counts: np.ndarray, log_dir: str,
               every_epochs: int):
    super().__init__()
    self.classifier = classifier
    self.dataset = dataset
    self.train_counts = train_counts
    self.every_epochs = every_epochs
    self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "val"))

  def on_epoch_end(self, epoch, logs=None):
    if (epoch + 1) % self.every_epochs:
      return
    self.evaluate(logs)

  def evaluate(self, logs=None) -> dict:
    """Evaluates now, writes the val/* scalars and returns the metrics."""
    result = metrics.evaluate_model(self.classifier, self.dataset, self.train_counts)
    values = {"top1": result["top1"], **{f"acc_{group}": result[group]
                                         for group in ("many", "medium", "few")}}
    step = int(self.model.optimizer.iterations.numpy())
    with self.writer.as_default(step=step):
      for name, value in values.items():
        if value is not None:
          tf.summary.scalar(f"val/{name}", value)
          if logs is not None:
            logs[f"val_{name}"] = value
    self.writer.flush()
    return result


class BestValidationEpoch(ShotGroupEvaluation):
  """Evaluates on the validation split after every epoch and keeps the weights of the epoch
  with the highest top-1, BatchNorm statistics included, as classifier-balancing's
  run_networks.py does for cRT / LWS (`eval_acc_mic_top1 > best_acc`: plain top-1 over the
  split, the earlier epoch wins a tie).

  The best weights and the per-epoch scores live in `directory`, so a run resumed after a
  kill still compares against the epochs before it. `restore_best()` loads the best weights
  into the classifier and returns the record for metrics.json.
  """

  def __init__(self, classifier, dataset, train_counts: np.ndarray, log_dir: str,
               directory: str):
    super().__init__(classifier, dataset, train_counts, log_dir, every_epochs=1)
    self.directory = directory
    self.record_path = os.path.join(directory, run_dir.BEST_EPOCH_RECORD)
    self.record = {"epoch": None, "val_top1": None, "weights": None, "val_top1_by_epoch": {}}
    if os.path.exists(self.record_path):
      self.record = run_files.read_json(self.record_path)

  def on_epoch_end(self, epoch, logs=None):
    top1 = self.evaluate(logs)["top1"]
    self.record["val_top1_by_epoch"][str(epoch + 1)] = top1
    previous = self.record["weights"]
    if self.record["val_top1"] is None or top1 > self.record["val_top1"]:
      # A new file per best epoch, the old one removed only after the record names the new
      # one: a kill at any moment leaves the record pointing at weights that exist.
      name = run_dir.BEST_EPOCH_WEIGHTS.replace("best_epoch", f"best_epoch_{epoch + 1}")
      self.classifier.save_weights(os.path.join(self.directory, name))
      self.record.update(epoch=epoch + 1, val_top1=top1, weights=name)
    run_files.write_json(self.record_path, self.record)
    if previous and previous != self.record["weights"]:
      os.remove(os.path.join(self.directory, previous))

  def restore_best(self) -> dict:
    """Loads the best epoch's weights; returns {"best_epoch": epoch (from 1), ...}."""
    if self.record["epoch"] is None:
      raise ValueError(f"no epoch was evaluated on the validation split ({self.record_path})")
    self.classifier.load_weights(os.path.join(self.directory, self.record["weights"]))
    return {"best_epoch": self.record["epoch"], "best_epoch_val_top1": self.record["val_top1"],
            "val_top1_by_epoch": self.record["val_top1_by_epoch"]}


class Profile(keras.callbacks.Callback):
  """A TensorFlow profiler trace of steps first..last (counted from 1 over the whole run)."""

  def __init__(self, log_dir: str, first: int, last: int):
    super().__init__()
    self.log_dir = log_dir
    self.first, self.last = first, last
    self.active = False

  def on_train_batch_begin(self, batch, logs=None):
    step = int(self.model.optimizer.iterations.numpy()) + 1
    if step == self.first and not self.active:
      tf.profiler.experimental.start(self.log_dir)
      self.active = True

  def on_train_batch_end(self, batch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    if self.active and step >= self.last:
      tf.profiler.experimental.stop()
      self.active = False

  def on_train_end(self, logs=None):
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False
