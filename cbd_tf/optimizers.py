"""SGD with momentum in the two forms `--momentum_update` chooses.

  keras     keras.optimizers.SGD: m = mu * m - lr * g; w += m
  official  the official code's Sonnet 2 snt.optimizers.Momentum (no Nesterov):
            acc = mu * acc + g; w -= lr * acc

The two take the same steps while the learning rate is constant. Under a decaying rate
Keras' form keeps each gradient at the rate of the step it arrived in, the official form
applies the current rate to the whole accumulated gradient.
"""

from __future__ import annotations

import keras
from keras import ops

from cbd_tf import config as config_lib


@keras.saving.register_keras_serializable(package="cbd_tf")
class OfficialMomentum(keras.optimizers.Optimizer):
  """acc = momentum * acc + gradient; variable -= learning_rate * acc (Sonnet 2 Momentum)."""

  def __init__(self, learning_rate=0.01, momentum: float = 0.9, name="official_momentum",
               **kwargs):
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    if not 0 <= momentum < 1:
      raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    self.momentum = float(momentum)

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    self.accumulators = self.add_optimizer_variables(variables, "accumulator")

  def update_step(self, gradient, variable, learning_rate):
    accumulator = self.accumulators[self._get_variable_index(variable)]
    gradient = ops.cast(gradient, variable.dtype)
    self.assign(accumulator, ops.add(
        ops.multiply(accumulator, ops.cast(self.momentum, variable.dtype)), gradient))
    self.assign_sub(variable, ops.multiply(ops.cast(learning_rate, variable.dtype), accumulator))

  def get_config(self):
    return {**super().get_config(), "momentum": self.momentum}


def build_sgd(learning_rate, momentum: float, update: str) -> keras.optimizers.Optimizer:
  """SGD with momentum in the `update` form (module docstring)."""
  if update == "keras":
    return keras.optimizers.SGD(learning_rate, momentum=momentum)
  if update == "official":
    return OfficialMomentum(learning_rate, momentum=momentum)
  raise ValueError(f"unknown momentum_update {update!r}; "
                   f"valid: {', '.join(config_lib.MOMENTUM_UPDATES)}")
