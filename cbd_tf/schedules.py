"""Learning-rate schedules, per optimiser step, chosen by `--lr_schedule`.

  cosine  the CBD recipe: optional linear warmup, then cosine decay to 0 (WarmupCosineDecay)
  step    the long-tail CIFAR recipe of LDAM-DRW (Cao et al.) and Cui et al.: linear warmup
          over 5 epochs, then x0.01 from 80% and x0.0001 from 90% of the epochs (160 and
          180 of 200) (WarmupStepDecay)

Cui et al.'s `learning_rate_schedule` warms up per step (lr * epoch / 5 with a fractional
epoch), as here; LDAM-DRW's `adjust_learning_rate` raises it once per epoch ((e + 1) / 5 of
the peak in epoch e). The two agree from the end of the warmup on.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from cbd_tf import config as config_lib

# (fraction of the epochs at which a drop starts, learning-rate multiplier from then on).
STEP_DECAY = ((0.8, 0.01), (0.9, 0.0001))


@keras.saving.register_keras_serializable(package="cbd_tf")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear from 0 to `peak` over `warmup_steps`, then cosine from `peak` to 0 at `total_steps`.

  Called, as Keras calls a schedule, with the number of updates made so far, it returns
  the rate at that count + 1: the official train_step sets `learning_rate_fn(global_step +
  1)` before each update, so its first update uses lr(1) and update `total_steps` lr = 0.
  """

  def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0):
    if total_steps <= 0 or not 0 <= warmup_steps < total_steps:
      raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps}, {total_steps}")
    self.peak = peak
    self.total_steps = total_steps
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    step = ops.cast(step, "float32") + 1.0
    warmup = self.peak * step / max(self.warmup_steps, 1)
    progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
    cosine = 0.5 * self.peak * (1.0 + ops.cos(math.pi * ops.clip(progress, 0.0, 1.0)))
    return ops.where(step < self.warmup_steps, warmup, cosine)

  def get_config(self):
    return {"peak": self.peak, "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="cbd_tf")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear from 0 to `peak` over `warmup_steps`, then `peak * factors[k]` from step
  `boundaries[k]` on (where boundaries coincide, the later factor holds)."""

  def __init__(self, peak: float, boundaries, factors, warmup_steps: int = 0):
    boundaries, factors = [int(b) for b in boundaries], [float(f) for f in factors]
    if len(boundaries) != len(factors):
      raise ValueError(f"need one factor per boundary, got {boundaries} and {factors}")
    if boundaries != sorted(boundaries) or not 0 <= warmup_steps <= (boundaries or [math.inf])[0]:
      raise ValueError(f"need 0 <= warmup_steps <= boundaries, ascending; got {warmup_steps}, "
                       f"{boundaries}")
    self.peak = peak
    self.boundaries = boundaries
    self.factors = factors
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    step = ops.cast(step, "float32")
    rate = ops.where(step < self.warmup_steps, self.peak * step / max(self.warmup_steps, 1),
                     self.peak)
    for boundary, factor in zip(self.boundaries, self.factors):
      rate = ops.where(step < boundary, rate, self.peak * factor)
    return rate

  def get_config(self):
    return {"peak": self.peak, "boundaries": list(self.boundaries),
            "factors": list(self.factors), "warmup_steps": self.warmup_steps}


def step_decay_epochs(epochs: int) -> list[int]:
  """The epochs at which `step` drops the rate: [160, 180] for 200. LDAM's DRW starts at
  the first of them by default (long_tail_losses.drw_start_epoch), as in its code."""
  return [int(round(fraction * epochs)) for fraction, _ in STEP_DECAY]


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """The official train.py's epoch, `num_examples // batch_size` steps (the last partial
  batch's images are left to later epochs' draws), at least 1."""
  return max(1, num_examples // batch_size)


def build_schedule(name: str, peak: float, epochs: int, steps_per_epoch: int,
                   warmup_epochs: float) -> keras.optimizers.schedules.LearningRateSchedule:
  """The `--lr_schedule` named `name` over `epochs` x `steps_per_epoch` steps."""
  warmup_steps = int(round(warmup_epochs * steps_per_epoch))
  if name == "cosine":
    return WarmupCosineDecay(peak, epochs * steps_per_epoch, warmup_steps)
  if name == "step":
    return WarmupStepDecay(peak, [e * steps_per_epoch for e in step_decay_epochs(epochs)],
                           [factor for _, factor in STEP_DECAY], warmup_steps)
  raise ValueError(f"unknown lr_schedule {name!r}; valid: {', '.join(config_lib.LR_SCHEDULES)}")


def scaled_learning_rate(learning_rate_per_256: float, batch_size: int) -> float:
  """lr = base * batch / 256 (Goyal et al.), as in the CBD recipe."""
  return learning_rate_per_256 * batch_size / 256
