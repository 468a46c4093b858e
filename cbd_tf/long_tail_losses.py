"""Loss-level long-tail baselines for `--stage=teacher`, chosen by `--loss=`.

  ce                mean CE(labels, logits)
  logit_adjusted    mean CE(labels, logits + tau * log prior)              Menon et al. 2021
  balanced_softmax  mean CE(labels, logits + log n_c)                      Ren et al. 2020
  focal             mean -(1 - p_y)^gamma * log p_y                        Lin et al. 2017
  class_balanced    mean w_y * CE, w_c = (1 - beta) / (1 - beta^n_c)
                    scaled so that sum_c w_c = C                          Cui et al. 2019
  ldam              mean w_y * CE(labels, logits - scale * m_y on the true class),
                    m_c = K / n_c^(1/4) with max_c m_c = ldam_max_margin;
                    w = 1 until drw_epoch, then the class-balanced w      Cao et al. 2019

Every loss takes (labels, logits) and returns the mean over its batch, as
`Classifier.compile(loss=...)` expects. Class counts are the training labels' counts;
an empty class counts as one image, so its log prior and weight stay finite.

Balanced softmax is logit adjustment with tau = 1: log n_c and log prior differ by the
constant log N, which softmax ignores, so both train the same model.

LDAM on a cosine classifier: the logits are sigma * cos, and LDAM is defined on
s * (cos - m), so the margin is subtracted from the scaled cosine logits as sigma * m_y
(m in cosine units; Cao et al. use s = 30, here s is the head's cosine_scale).
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf import losses

LossFunction = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def log_prior(train_counts) -> np.ndarray:
  counts = np.maximum(np.asarray(train_counts, np.float64), 1.0)
  return np.log(counts / counts.sum())


def class_balanced_weights(train_counts, beta: float) -> np.ndarray:
  """Inverse effective numbers (1 - beta) / (1 - beta^n_c), scaled to sum to C."""
  counts = np.maximum(np.asarray(train_counts, np.float64), 1.0)
  weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
  return weights * len(counts) / weights.sum()


def ldam_margins(train_counts, max_margin: float) -> np.ndarray:
  """m_c proportional to n_c^(-1/4), the rarest class getting `max_margin`."""
  margins = 1.0 / np.sqrt(np.sqrt(np.maximum(np.asarray(train_counts, np.float64), 1.0)))
  return margins * (max_margin / margins.max())


def _per_example_ce(labels, logits):
  return keras.losses.sparse_categorical_crossentropy(labels, tf.cast(logits, tf.float32),
                                                      from_logits=True)


def logit_adjusted_loss(labels, logits, log_prior_values, tau: float = 1.0):
  """CE on logits + tau * log prior: the rarer the class, the larger the margin it must win by."""
  offset = tf.constant(tau * np.asarray(log_prior_values), tf.float32)
  return losses.cross_entropy_loss(labels, tf.cast(logits, tf.float32) + offset)


def focal_loss(labels, logits, gamma: float = 2.0):
  log_probabilities = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
  log_p = tf.gather(log_probabilities, tf.cast(labels, tf.int32), axis=-1, batch_dims=1)
  return tf.reduce_mean(-tf.pow(1.0 - tf.exp(log_p), gamma) * log_p)


def weighted_cross_entropy_loss(labels, logits, class_weights):
  """mean over the batch of w_label * CE (the weights are not renormalised per batch)."""
  weights = tf.gather(tf.cast(class_weights, tf.float32), tf.cast(labels, tf.int32))
  return tf.reduce_mean(weights * _per_example_ce(labels, logits))


def ldam_loss(labels, logits, margins, scale: float, class_weights=None):
  """Weighted CE after subtracting scale * margin[label] from each true-class logit."""
  labels = tf.cast(labels, tf.int32)
  logits = tf.cast(logits, tf.float32)
  margin = tf.gather(tf.constant(np.asarray(margins), tf.float32), labels)
  adjusted = logits - scale * margin[:, None] * tf.one_hot(labels, tf.shape(logits)[-1])
  if class_weights is None:
    return losses.cross_entropy_loss(labels, adjusted)
  return weighted_cross_entropy_loss(labels, adjusted, class_weights)


class DeferredReweighting(keras.callbacks.Callback):
  """Sets `switch` to 1 from epoch `start_epoch` on (0 before), at each epoch's start,
  so a resumed run gets it right too."""

  def __init__(self, switch: tf.Variable, start_epoch: int):
    super().__init__()
    self.switch = switch
    self.start_epoch = start_epoch

  def on_epoch_begin(self, epoch, logs=None):
    self.switch.assign(1.0 if epoch >= self.start_epoch else 0.0)


def drw_start_epoch(long_tail: config_lib.LongTailConfig, epochs: int) -> int:
  return long_tail.drw_epoch if long_tail.drw_epoch >= 0 else int(round(0.8 * epochs))


def _build_ce(long_tail, train_counts, cosine_scale, epochs):
  return losses.cross_entropy_loss, []


def _build_logit_adjusted(long_tail, train_counts, cosine_scale, epochs):
  prior = log_prior(train_counts)
  return (lambda labels, logits: logit_adjusted_loss(labels, logits, prior,
                                                     long_tail.logit_adjust_tau)), []


def _build_balanced_softmax(long_tail, train_counts, cosine_scale, epochs):
  log_counts = np.log(np.maximum(np.asarray(train_counts, np.float64), 1.0))
  return (lambda labels, logits: logit_adjusted_loss(labels, logits, log_counts, 1.0)), []


def _build_focal(long_tail, train_counts, cosine_scale, epochs):
  return (lambda labels, logits: focal_loss(labels, logits, long_tail.focal_gamma)), []


def _build_class_balanced(long_tail, train_counts, cosine_scale, epochs):
  weights = class_balanced_weights(train_counts, long_tail.class_balanced_beta)
  return (lambda labels, logits: weighted_cross_entropy_loss(labels, logits, weights)), []


def _build_ldam(long_tail, train_counts, cosine_scale, epochs):
  margins = ldam_margins(train_counts, long_tail.ldam_max_margin)
  balanced = tf.constant(class_balanced_weights(train_counts, long_tail.class_balanced_beta),
                         tf.float32)
  # Read inside the compiled train step, so flipping it needs no retracing.
  switch = tf.Variable(0.0, trainable=False, name="drw_switch")

  def loss(labels, logits):
    weights = 1.0 + switch * (balanced - 1.0)
    return ldam_loss(labels, logits, margins, cosine_scale, weights)

  return loss, [DeferredReweighting(switch, drw_start_epoch(long_tail, epochs))]


LOSS_BUILDERS = {
    "ce": _build_ce,
    "logit_adjusted": _build_logit_adjusted,
    "balanced_softmax": _build_balanced_softmax,
    "focal": _build_focal,
    "class_balanced": _build_class_balanced,
    "ldam": _build_ldam,
}


def build_loss(long_tail: config_lib.LongTailConfig, train_counts, cosine_scale: float = 20.0,
               epochs: int = 1) -> tuple[LossFunction, list[keras.callbacks.Callback]]:
  """(loss(labels, logits) -> batch mean, callbacks the loss needs during fit).

  Build it inside the strategy scope: LDAM's DRW switch is a variable.
  """
  if long_tail.loss not in LOSS_BUILDERS:
    raise ValueError(f"unknown loss {long_tail.loss!r}; valid: {', '.join(LOSS_BUILDERS)}")
  return LOSS_BUILDERS[long_tail.loss](long_tail, np.asarray(train_counts), cosine_scale, epochs)


def posthoc_adjusted(model, train_counts, tau: float):
  """images -> logits - tau * log prior (Menon et al.'s post-hoc logit adjustment)."""
  if not tau:
    return model
  offset = tf.constant(tau * log_prior(train_counts), tf.float32)
  return lambda images, training=False: tf.cast(model(images, training=training),
                                                tf.float32) - offset
