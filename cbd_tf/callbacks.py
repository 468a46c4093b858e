"""Keras callbacks that write what people watch in TensorBoard during a run.

  train/loss, train/loss_ce, train/loss_distill, train/accuracy, train/lr   every N steps
  val/top1, val/acc_many, val/acc_medium, val/acc_few                       every N epochs
and a profiler trace of chosen steps. Train values are Keras' running means over the
current epoch, as on the progress bar.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from cbd_tf import metrics


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


class SamplingProgress(keras.callbacks.Callback):
  """Sets the `progressive` sampler's t = step / total steps before every step."""

  def __init__(self, progress: tf.Variable, total_steps: int):
    super().__init__()
    self.progress = progress
    self.total_steps = total_steps

  def on_train_batch_begin(self, batch, logs=None):
    step = int(self.model.optimizer.iterations.numpy())
    self.progress.assign(min(step / self.total_steps, 1.0))
