"""The train-step base of every model trained here (Classifier, CBDDistiller).

A subclass supplies its loss terms (`loss_terms`) and, if not all its trainable weights,
the variables it trains (`variables_to_train`); this module owns the rest of the step,
once: the gradient tape, the official explicit weight decay, the division by the replica
count under a tf.distribute strategy, and one running-mean metric per term, which
StepScalars writes as train/loss_<term>.

Depends only on Keras, TensorFlow and cbd_tf.losses, so models/classifier.py can build on
it without models importing anything above them.
"""

from __future__ import annotations

import functools
import operator
from typing import NamedTuple, Sequence

import keras
import tensorflow as tf

from cbd_tf import losses


class Term(NamedTuple):
  """One loss term of a batch, logged as loss_<name>. `weight * value` is part of the loss;
  with weight None the term is logged only (e.g. one teacher's share of another term)."""
  value: tf.Tensor
  weight: float | None = 1.0


def replica_count() -> int:
  return tf.distribute.get_strategy().num_replicas_in_sync


def step_logs(metrics) -> dict:
  """Metric results as a train_step returns them. Across workers Keras 3.15 reduces them
  along axis 0 and fails on scalars, so there they get a length-1 axis."""
  multi_worker = isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy)
  return {m.name: tf.reshape(m.result(), [1]) if multi_worker else m.result() for m in metrics}


def weighted_sum(terms: dict[str, Term]) -> tf.Tensor:
  """The sum of weight * value over the weighted terms, in order."""
  parts = [term.weight * term.value for term in terms.values() if term.weight is not None]
  if not parts:
    raise ValueError(f"no loss term has a weight: {', '.join(terms)}")
  return functools.reduce(operator.add, parts)


class TrainStepModel(keras.Model):
  """A keras.Model whose train_step minimises the weighted sum of `loss_terms` plus the
  official weight decay, `weight_decay * 0.5 * tf.nn.l2_loss(variables_to_train)`.

  Logs loss (the total), loss_<term> for each name in `term_names` (the unweighted batch
  mean), loss_weight_decay and accuracy.
  """

  def __init__(self, term_names: Sequence[str], **kwargs):
    super().__init__(**kwargs)
    if len(set(term_names)) != len(term_names):
      raise ValueError(f"loss term names repeat: {', '.join(term_names)}")
    self.weight_decay = 0.0
    self.backbone_learning_rate_multiplier = 1.0
    # Paths of weights trained but not decayed (long_tail_losses.prepare_head).
    self.weight_decay_exempt = ()
    self.loss_metric = keras.metrics.Mean(name="loss")
    self.term_metrics = {name: keras.metrics.Mean(name=f"loss_{name}") for name in term_names}
    self.loss_wd_metric = keras.metrics.Mean(name="loss_weight_decay")
    self.accuracy_metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

  def compile(self, optimizer="sgd", weight_decay: float = 0.0,
              backbone_learning_rate_multiplier: float = 1.0, **kwargs):
    """`weight_decay` is the L2 coefficient of the official term
    wd * 0.5 * tf.nn.l2_loss(w) = 0.25 * wd * sum(w^2). `backbone_learning_rate_multiplier`
    scales the gradients of `backbone_variables`: with SGD (momentum or not) that is their
    learning rate times the multiplier, each variable's momentum seeing only its own steps."""
    self.weight_decay = weight_decay
    self.backbone_learning_rate_multiplier = backbone_learning_rate_multiplier
    super().compile(optimizer=optimizer, **kwargs)

  def get_compile_config(self):
    """What compile_from_config needs to compile a reloaded .keras model again (Keras asks
    for this pair when compile() is overridden)."""
    if getattr(self, "optimizer", None) is None:  # never compiled
      return None
    return {"optimizer": keras.saving.serialize_keras_object(self.optimizer),
            "weight_decay": self.weight_decay,
            "backbone_learning_rate_multiplier": self.backbone_learning_rate_multiplier}

  def compile_from_config(self, config):
    config = dict(config)
    self.compile(optimizer=keras.saving.deserialize_keras_object(config.pop("optimizer")),
                 **config)
    if self.built:  # the saved optimizer variables load into these
      self.optimizer.build(self.trainable_variables)

  @property
  def metrics(self):
    return [self.loss_metric, *self.term_metrics.values(), self.loss_wd_metric,
            self.accuracy_metric]

  @property
  def variables_to_train(self) -> list:
    """What the step updates and decays."""
    return self.trainable_weights

  @property
  def backbone_variables(self) -> list:
    """The pretrained part, whose gradients backbone_learning_rate_multiplier scales."""
    return []

  def _scale_backbone_gradients(self, gradients, variables):
    multiplier = self.backbone_learning_rate_multiplier
    if multiplier == 1.0:
      return gradients
    backbone = {id(v) for v in self.backbone_variables}
    return [g * multiplier if g is not None and id(v) in backbone else g
            for g, v in zip(gradients, variables)]

  def loss_targets(self, images, *extra):
    """What the loss compares against that needs no gradient, computed before the tape (a
    CBD student: the frozen teachers' feature); `extra`: what the batch holds after the
    labels (cached teacher features). None by default."""
    return None

  def loss_terms(self, images, labels, targets) -> tuple[tf.Tensor, dict[str, Term]]:
    """Runs the model with training=True under the tape: (logits, {name: Term}) with the
    names of `term_names`, in that order."""
    raise NotImplementedError(f"{type(self).__name__} defines no loss_terms")

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Stands in for Keras' own, which probes the first batch with a strategy.reduce that
    fails across workers (MultiWorkerMirroredStrategy, Keras 3.15). These models are built
    in __init__ and compile no Keras losses or metrics, so only the optimiser is left."""
    if self.optimizer is not None and not self.optimizer.built:
      with self.distribute_strategy.scope():
        self.optimizer.build(self.variables_to_train)

  def train_step(self, data):
    images, labels = data[0], data[1]
    targets = self.loss_targets(images, *data[2:])
    variables = self.variables_to_train
    with tf.GradientTape() as tape:
      logits, terms = self.loss_terms(images, labels, targets)
      if list(terms) != list(self.term_metrics):
        raise ValueError(f"loss_terms gave {', '.join(terms)}; expected "
                         f"{', '.join(self.term_metrics)}")
      # Terms first, then weight decay: the graph optimiser may regroup additions by
      # construction order, and a float32 sum depends on its order.
      loss = weighted_sum(terms)
      weight_decay = losses.weight_decay_loss(
          [v for v in variables if v.path not in self.weight_decay_exempt], self.weight_decay)
      total = loss + weight_decay
      # Replica gradients are summed, so each replica's batch mean is divided by their count.
      scaled = self.optimizer.scale_loss(total / replica_count())
    gradients = self._scale_backbone_gradients(tape.gradient(scaled, variables), variables)
    self.optimizer.apply(gradients, variables)
    self.loss_metric.update_state(total)
    for name, term in terms.items():
      self.term_metrics[name].update_state(term.value)
    self.loss_wd_metric.update_state(weight_decay)
    self.accuracy_metric.update_state(labels, logits)
    return step_logs(self.metrics)

  def evaluation_loss(self, labels, logits) -> tf.Tensor:
    """The loss_ce of evaluation: cross-entropy of the logits unless a subclass says."""
    return losses.cross_entropy_loss(labels, logits)

  def test_step(self, data):
    """Evaluation: loss_ce (`evaluation_loss`) and accuracy of the logits, and loss too when
    the training loss is that one term (the terms of a student need its teachers)."""
    images, labels = data[0], data[1]
    logits = self(images, training=False)
    ce = self.evaluation_loss(labels, logits)
    logged = [self.term_metrics["ce"], self.accuracy_metric]
    if len(self.term_metrics) == 1:
      logged.insert(0, self.loss_metric)
    for metric in logged[:-1]:
      metric.update_state(ce)
    self.accuracy_metric.update_state(labels, logits)
    return {m.name: m.result() for m in logged}
