"""Loss-level long-tail baselines for `--stage=teacher`, chosen by `--loss=`.

  ce                mean CE(labels, logits)
  logit_adjusted    mean CE(labels, logits + tau * log prior)              Menon et al. 2021
  balanced_softmax  mean CE(labels, logits + log n_c)                      Ren et al. 2020
  focal             mean -(1 - p_y)^gamma * log p_y, softmax p, gamma 1    Lin et al. 2017, as
                    LDAM-DRW's FocalLoss and the long-tail papers' baseline
  class_balanced    mean w_y * CE, w_c = (1 - beta) / (1 - beta^n_c)
                    scaled so that sum_c w_c = C                          Cui et al. 2019
  ldam              sum_i w_i CE_i / sum_i w_i over the global batch, CE of
                    s * (cos - m_y on the true class), m_c = K / n_c^(1/4) with
                    max_c m_c = ldam_max_margin; w = 1 until drw_epoch, then the
                    class-balanced w                                      Cao et al. 2019
  class_balanced_focal
                    mean w_y * sum_c (1 - p_t)^gamma * BCE(t_c, z_c), sigmoid p,
                    w with beta 0.999, gamma 0.5 (the large-scale runs)   Cui et al. 2019

Every loss takes (labels, logits) of one replica's batch and returns a value whose mean
over the replicas is the loss of the global batch, as `Classifier.train_step` expects (it
divides by the replica count; the strategy sums the gradients). For all but LDAM that is
the replica's batch mean. LDAM's weighted mean is PyTorch's `F.cross_entropy(weight=w)`,
whose denominator sum_i w_i spans the global batch: that sum is all-reduced, see
`weighted_mean_cross_entropy_loss`. Class counts are the training labels' counts; an empty
class counts as one image, so its log prior and weight stay finite.

Balanced softmax is logit adjustment with tau = 1: log n_c and log prior differ by the
constant log N, which softmax ignores, so both train the same model.

LDAM on our cosine head: the head gives sigma * cos (sigma = --cosine_scale, CBD's 20);
LDAM's NormedLinear gives cos and its loss scales by s = 30. The loss divides sigma out and
uses `--ldam_scale`: CE(s * (cos - m_y)), the authors' logits whatever sigma is. sigma only
sets the scale of the logits at evaluation (accuracy ignores it).
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf import losses, schedules

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


def focal_loss(labels, logits, gamma: float = 1.0):
  """mean (1 - p_y)^gamma * CE with softmax p_y = exp(-CE) (LDAM-DRW's focal_loss)."""
  log_probabilities = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
  log_p = tf.gather(log_probabilities, tf.cast(labels, tf.int32), axis=-1, batch_dims=1)
  return tf.reduce_mean(-tf.pow(1.0 - tf.exp(log_p), gamma) * log_p)


def weighted_cross_entropy_loss(labels, logits, class_weights):
  """mean over the batch of w_label * CE (the weights are not renormalised per batch)."""
  weights = tf.gather(tf.cast(class_weights, tf.float32), tf.cast(labels, tf.int32))
  return tf.reduce_mean(weights * _per_example_ce(labels, logits))


def _sum_over_replicas(value):
  """(value summed over the replicas of this step, their count); outside a replica
  context, or with one replica, (value, 1)."""
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return value, 1
  return context.all_reduce(tf.distribute.ReduceOp.SUM, value), context.num_replicas_in_sync


def weighted_mean_cross_entropy_loss(labels, logits, class_weights):
  """sum_i w_i CE_i / sum_i w_i over the global batch (PyTorch's weighted F.cross_entropy).

  Each replica returns R * (its sum of w_i CE_i) / (the sum of w_i over every replica): the
  train step divides by R and the strategy sums the replicas' gradients, so the update is
  that of the global weighted mean, and so is the mean of the replicas' values (the logged
  loss). The denominator holds no variable, so no gradient flows through the all-reduce.
  """
  labels = tf.cast(labels, tf.int32)
  weights = tf.gather(tf.cast(class_weights, tf.float32), labels)
  total_weight, replicas = _sum_over_replicas(tf.reduce_sum(weights))
  weighted_sum = tf.reduce_sum(weights * _per_example_ce(labels, logits))
  return replicas * weighted_sum / tf.stop_gradient(total_weight)


def ldam_loss(labels, logits, margins, scale: float, cosine_scale: float, class_weights=None):
  """Weighted-mean CE of scale * (cos - margin on the true class), cos = logits / cosine_scale."""
  labels = tf.cast(labels, tf.int32)
  cosines = tf.cast(logits, tf.float32) / cosine_scale
  num_classes = tf.shape(cosines)[-1]
  margin = tf.gather(tf.constant(np.asarray(margins), tf.float32), labels)
  adjusted = scale * (cosines - margin[:, None] * tf.one_hot(labels, num_classes))
  if class_weights is None:
    class_weights = tf.ones([num_classes])
  return weighted_mean_cross_entropy_loss(labels, adjusted, class_weights)


def class_balanced_focal_loss(labels, logits, class_weights, gamma: float):
  """Cui et al.'s sigmoid focal loss: mean over the batch of
  w_y * sum_c (1 - p_t)^gamma * BCE(t_c, z_c), p = sigmoid(z), t = one-hot label,
  p_t = p where t = 1, else 1 - p. (Theirs divides the sum by the number of positive
  labels, one an example.)"""
  labels = tf.cast(labels, tf.int32)
  logits = tf.cast(logits, tf.float32)
  targets = tf.one_hot(labels, tf.shape(logits)[-1])
  binary_ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
  # log(1 - p_t) = -(t * z + softplus(-z)): their exp(-gamma * (t z + log1p(exp(-z)))),
  # with softplus for log1p(exp(-z)), which overflows below z = -88 in float32.
  modulator = tf.exp(-gamma * (targets * logits + tf.nn.softplus(-logits)))
  weights = tf.gather(tf.cast(class_weights, tf.float32), labels)
  return tf.reduce_mean(weights * tf.reduce_sum(modulator * binary_ce, axis=-1))


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
  """--drw_epoch, or by default the epoch at which `--lr_schedule=step` drops the rate
  x0.01 (160 of 200), as in LDAM-DRW's code."""
  if long_tail.drw_epoch >= 0:
    return long_tail.drw_epoch
  return schedules.step_decay_epochs(epochs)[0]


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
    return ldam_loss(labels, logits, margins, long_tail.ldam_scale, cosine_scale, weights)

  return loss, [DeferredReweighting(switch, drw_start_epoch(long_tail, epochs))]


def _build_class_balanced_focal(long_tail, train_counts, cosine_scale, epochs):
  weights = class_balanced_weights(train_counts, long_tail.class_balanced_focal_beta)
  gamma = long_tail.class_balanced_focal_gamma
  return (lambda labels, logits: class_balanced_focal_loss(labels, logits, weights, gamma)), []


LOSS_BUILDERS = {
    "ce": _build_ce,
    "logit_adjusted": _build_logit_adjusted,
    "balanced_softmax": _build_balanced_softmax,
    "focal": _build_focal,
    "class_balanced": _build_class_balanced,
    "ldam": _build_ldam,
    "class_balanced_focal": _build_class_balanced_focal,
}


def prepare_head(head, long_tail: config_lib.LongTailConfig, num_classes: int
                 ) -> tuple[str, ...]:
  """What a loss asks of the head it trains, before training; returns the paths of the head
  weights the weight decay must leave out. Cui et al.'s sigmoid focal loss (class_balanced_focal)
  starts a linear head's bias at -log(C - 1), so every class starts at probability 1 / C
  (model_base.py `_fully_connected`), and exempts it from the decay (cifar_main.py: "no
  regularization (weight decay) for last layer's bias")."""
  if long_tail.loss != "class_balanced_focal" or getattr(head, "bias", None) is None:
    return ()
  head.bias.assign(tf.fill(head.bias.shape, -np.log(num_classes - 1.0)))
  return (head.bias.path,)


def build_loss(long_tail: config_lib.LongTailConfig, train_counts, cosine_scale: float = 20.0,
               epochs: int = 1) -> tuple[LossFunction, list[keras.callbacks.Callback]]:
  """(loss(labels, logits) of one replica's batch, callbacks the loss needs during fit).

  `cosine_scale` is the head's sigma (LDAM divides it out). Build the loss inside the
  strategy scope: LDAM's DRW switch is a variable.
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
