"""CBDDistiller: a class-balanced student trained against frozen teachers (CBD stage two)."""

from __future__ import annotations

import re
from typing import Sequence

import keras
import tensorflow as tf

from cbd_tf import losses, train_step
from cbd_tf.config import DistillConfig
from cbd_tf.models import keras_hub_backbone  # pylint: disable=unused-import  (registers PresetTeacher)
from cbd_tf.models.classifier import Classifier


class _FrozenTeachers:
  """A plain holder: Keras and tf.train.Checkpoint do not track it, so teacher weights
  stay out of the student's checkpoints, saved weights and exports."""

  def __init__(self, models: Sequence[keras.Model]):
    self.models = tuple(models)


def teacher_features(teachers: Sequence[keras.Model], images) -> tf.Tensor:
  """Each teacher's L2-normalised embedding, concatenated once, L2-normalised again."""
  parts = [tf.math.l2_normalize(tf.cast(t.embed(images, training=False), tf.float32), axis=-1)
           for t in teachers]
  return tf.math.l2_normalize(tf.concat(parts, axis=-1), axis=-1)


def teacher_feature_dim(teachers: Sequence[keras.Model]) -> int:
  return sum(int(t.embedding_dim) for t in teachers)


def distillation_shares(student_features, teacher_features, widths: Sequence[int]) -> list:
  """Each teacher's share of mean(1 - cos(student feature, teacher feature)); the shares sum
  to it. With s, t the L2-normalised student and concatenated teacher features and s_k, t_k
  their slices for teacher k: 1 - s.t = |t|^2 - s.t = sum_k t_k.(t_k - s_k). (|t_k|^2 is
  1/K unless a teacher's embedding is all zero, which then gets a share of 0.)"""
  student = tf.math.l2_normalize(tf.cast(student_features, tf.float32), axis=-1)
  teacher = tf.math.l2_normalize(tf.cast(teacher_features, tf.float32), axis=-1)
  return [tf.reduce_mean(tf.reduce_sum(t * (t - s), axis=-1))
          for s, t in zip(tf.split(student, widths, axis=-1), tf.split(teacher, widths, axis=-1))]


def _metric_names(teacher_names: Sequence[str] | None, count: int) -> list[str]:
  if teacher_names is None:
    return [str(i) for i in range(count)]
  if len(teacher_names) != count:
    raise ValueError(f"{len(teacher_names)} teacher names for {count} teachers")
  # Keras refuses '/' in a metric's name; TensorBoard tags read best without spaces.
  names = [re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)) for name in teacher_names]
  if len(set(names)) != len(names) or not all(names):
    raise ValueError(f"teacher names must be distinct and non-empty: {list(teacher_names)}")
  return names


@keras.saving.register_keras_serializable(package="cbd_tf")
class CBDDistiller(train_step.TrainStepModel):
  """Wraps a student `Classifier` (with a projection head as wide as the teachers'
  concatenated embeddings) and a list of trained teachers with an `embed` method, or, for
  cached teacher features (--teacher_features), only the teachers' embedding `teacher_widths`:
  its batches are then (images, labels, teacher features).

  Per batch: loss = (1 - alpha) * CE(labels, student logits)
                    + alpha * beta * mean(1 - cos(student feature, teacher feature)),
  plus the explicit weight decay of the student. Teachers run with training=False
  outside the gradient tape and are never updated; calling the distiller calls the student.

  Logs loss, loss_ce, loss_distill (the unweighted 1 - cos term), loss_weight_decay,
  accuracy, and loss_distill_<name> per teacher: its share of loss_distill (see
  `distillation_shares`), named by `teacher_names` (e.g. teachers.teacher_metric_names) or by
  the teacher's index.
  """

  def __init__(self, student: Classifier, teachers: Sequence[keras.Model] = (),
               alpha: float = DistillConfig.alpha, beta: float = DistillConfig.beta,
               teacher_names: Sequence[str] | None = None,
               teacher_widths: Sequence[int] | None = None, **kwargs):
    if bool(teachers) == bool(teacher_widths):
      raise ValueError("CBDDistiller needs teachers, or the teacher_widths of cached teacher "
                       "features (not both)")
    widths = [int(t.embedding_dim) for t in teachers] or [int(w) for w in teacher_widths]
    names = _metric_names(teacher_names, len(widths))
    super().__init__(term_names=["ce", "distill", *(f"distill_{name}" for name in names)],
                     **kwargs)
    if student.embedding_dim != sum(widths):
      raise ValueError(f"student feature width {student.embedding_dim} != concatenated teacher "
                       f"width {sum(widths)}; build the student with projection_dim={sum(widths)}")
    for teacher in teachers:
      teacher.trainable = False
    self.student = student
    self._frozen = _FrozenTeachers(teachers)
    self.teacher_names = tuple(names)
    self.teacher_widths = tuple(widths)
    self.alpha = alpha
    self.beta = beta
    self.built = True

  @property
  def teachers(self) -> tuple[keras.Model, ...]:
    return self._frozen.models

  def call(self, images, training=False):
    return self.student(images, training=training)

  @property
  def variables_to_train(self) -> list:
    return self.student.trainable_weights

  @property
  def backbone_variables(self) -> list:
    return self.student.backbone_variables

  def loss_targets(self, images, *extra):
    if self.teachers:  # a batch's third element (Keras' sample weights) is not read
      return tf.stop_gradient(teacher_features(self.teachers, images))
    if not extra:
      raise ValueError("this CBDDistiller has no teachers: its batches must be (images, "
                       "labels, teacher features)")
    return tf.stop_gradient(tf.cast(extra[0], tf.float32))

  def loss_terms(self, images, labels, targets):
    logits, features = self.student.call_with_features(images, training=True)
    ce = losses.cross_entropy_loss(labels, logits)
    distill = losses.feature_distillation_loss(features, targets)
    shares = distillation_shares(features, targets, self.teacher_widths)
    ce_weight, distill_weight = losses.cbd_weights(self.alpha, self.beta)
    return logits, {"ce": train_step.Term(ce, ce_weight),
                    "distill": train_step.Term(distill, distill_weight),
                    **{f"distill_{name}": train_step.Term(share, None)
                       for name, share in zip(self.teacher_names, shares)}}

  def get_config(self):
    """Student, teachers (a finished run's classifier or a preset's backbone, each whole) and
    the loss's settings: `save("d.keras")` and ModelCheckpoint keep the distiller whole, and
    cbd_tf.load_model rebuilds it offline. The student's own files never hold a teacher."""
    serialize = keras.saving.serialize_keras_object
    config = {**super().get_config(), "student": serialize(self.student),
              "teachers": [serialize(teacher) for teacher in self.teachers],
              "alpha": self.alpha, "beta": self.beta, "teacher_names": list(self.teacher_names)}
    if not self.teachers:
      config["teacher_widths"] = list(self.teacher_widths)
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    deserialize = keras.saving.deserialize_keras_object
    config["student"] = deserialize(config["student"])
    config["teachers"] = [deserialize(teacher) for teacher in config["teachers"]]
    return cls(**config)


@keras.saving.register_keras_serializable(package="cbd_tf")
class CBDFeatureDistillation(keras.distillation.FeatureDistillation):
  """CBD's distillation term for Keras' own Distiller: beta * mean(1 - cos(student feature,
  teacher feature)), each L2-normalised, read from the layers named `teacher_layer_name` and
  `student_layer_name` ("embedding": what Classifier.as_functional() exposes, a teacher's
  embedding and a student's projected feature). With `student_loss_weight=1 - alpha` and
  sparse cross-entropy on logits, the Distiller's loss is CBD's:

    distiller = keras.distillation.Distiller(
        teacher.as_functional(), student.as_functional(),
        distillation_losses=cbd_tf.CBDFeatureDistillation(beta=100.0),
        student_loss_weight=1 - 0.4)
    distiller.compile(optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

  Keras' Distiller takes one teacher and decays weights through its optimizer; CBDDistiller
  takes any number of teachers (or their cached features) and the official weight decay.
  """

  def __init__(self, beta: float = DistillConfig.beta, teacher_layer_name: str = "embedding",
               student_layer_name: str = "embedding"):
    super().__init__(loss="cosine_similarity", teacher_layer_name=teacher_layer_name,
                     student_layer_name=student_layer_name)
    self.beta = beta

  def validate_outputs(self, teacher_outputs, student_outputs):
    if teacher_outputs.shape[-1] != student_outputs.shape[-1]:
      raise ValueError(f"student feature width {student_outputs.shape[-1]} != teacher width "
                       f"{teacher_outputs.shape[-1]}; build the student with "
                       f"projection_dim={teacher_outputs.shape[-1]}")

  def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
    return self.beta * losses.feature_distillation_loss(student_outputs, teacher_outputs)

  def get_config(self):
    return {"beta": self.beta, "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name}

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def load_model(path: str, **kwargs) -> keras.Model:
  """keras.models.load_model for a saved cbd_tf model (`model.save("x.keras")`): a
  Classifier, or a CBDDistiller with its student and teachers.

  Keras finds a saved class only once its module is imported; `import cbd_tf` imports
  none (so `import cbd_tf.config` stays free of TensorFlow), and this module registers the
  distiller, the Classifier, its heads and backbones and preset teachers."""
  return keras.models.load_model(path, **kwargs)
