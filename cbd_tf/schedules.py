"""Learning-rate schedule of the official recipe: optional linear warmup, then cosine decay."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cbd_tf")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear from 0 to `peak` over `warmup_steps`, then cosine from `peak` to 0 at `total_steps`."""

  def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0):
    if total_steps <= 0 or not 0 <= warmup_steps < total_steps:
      raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps}, {total_steps}")
    self.peak = peak
    self.total_steps = total_steps
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    step = ops.cast(step, "float32")
    warmup = self.peak * step / max(self.warmup_steps, 1)
    progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
    cosine = 0.5 * self.peak * (1.0 + ops.cos(math.pi * ops.clip(progress, 0.0, 1.0)))
    return ops.where(step < self.warmup_steps, warmup, cosine)

  def get_config(self):
    return {"peak": self.peak, "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps}


def scaled_learning_rate(learning_rate_per_256: float, batch_size: int) -> float:
  """lr = base * batch / 256 (Goyal et al.), as in the CBD recipe."""
  return learning_rate_per_256 * batch_size / 256
