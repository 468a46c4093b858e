"""Golden tests of a training step against the official CBD code: the variables its weight
decay covers, enumerated from the official model structure (resnet.py, resnet_helpers.py,
train.py), the distiller's loss through its real train step, and the momentum update of
the official optimiser (Sonnet 2 snt.optimizers.Momentum). Each expected value is written
out from their definitions, not from cbd_tf's code."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbd_tf import optimizers, training
from cbd_tf.distiller import CBDDistiller
from cbd_tf.models.classifier import Classifier
from tests import helpers


def official_resnet50_trainable_shapes(num_classes, projection_dim=0):
  """Shapes of state.model.trainable_variables of the official ResNet-50: the 7x7 stem conv
  and initial_bn; per BottleNeckBlockV1 conv_0 1x1, conv_1 3x3, conv_2 1x1 (4x), each with
  a BatchNorm (gamma, beta), and a 1x1 projection + shortcut_bn on each group's first
  block; convs without bias; a student's proj Dense (kernel, bias); CosineLayer's w
  (sigma is tf.Variable(trainable=False))."""
  shapes = [(7, 7, 3, 64), (64,), (64,)]
  width = 64
  for blocks, channels in zip((3, 4, 6, 3), (64, 128, 256, 512)):
    for block in range(blocks):
      shapes += [(1, 1, width, channels), (channels,), (channels,),
                 (3, 3, channels, channels), (channels,), (channels,),
                 (1, 1, channels, 4 * channels), (4 * channels,), (4 * channels,)]
      if block == 0:
        shapes += [(1, 1, width, 4 * channels), (4 * channels,), (4 * channels,)]
      width = 4 * channels
  if projection_dim:
    shapes += [(2048, projection_dim), (projection_dim,)]
  return shapes + [(projection_dim or 2048, num_classes)]


def official_role(variable) -> bool:
  """Whether the official model trains (and so decays) a weight of this role: kernels,
  BatchNorm gamma / beta, the projection's bias; never moving statistics or sigma."""
  return variable.path.rsplit("/", 1)[-1] in ("kernel", "gamma", "beta", "bias")


@pytest.mark.parametrize("projection_dim", [0, 4096])
def test_weight_decay_covers_the_official_variables_through_the_train_step(projection_dim):
  model = Classifier("resnet50", num_classes=7, image_size=64, projection_dim=projection_dim)
  decayed = [v for v in model.weights if official_role(v)]
  assert sorted(tuple(v.shape) for v in decayed) == sorted(
      official_resnet50_trainable_shapes(7, projection_dim))
  assert len(decayed) == (162 if projection_dim else 160)
  # What the real step decays: weight_decay * 0.5 * tf.nn.l2_loss(concat of them).
  expected = 5e-4 * 0.5 * tf.nn.l2_loss(tf.concat([tf.reshape(v, [-1]) for v in decayed], 0))
  images, labels = helpers.tiny_batch(batch_size=2, image_size=64, num_classes=7)
  model.compile(keras.optimizers.SGD(0.0), weight_decay=5e-4)
  logs = model.train_on_batch(images, labels, return_dict=True)
  np.testing.assert_allclose(logs["loss_weight_decay"], float(expected), rtol=1e-5)


def official_student_loss(student, teachers, images, labels, alpha, beta, weight_decay):
  """train.py's stage-two loss of one batch, written out: each teacher's pooled embedding
  L2-normalised (proj_dim = -1), concatenated; the student's pooled embedding through proj
  Dense + ReLU and l2_normalize; CosineLayer logits; compute_feat_distillation; then
  (1 - alpha) * CE + alpha * beta * distill + weight_decay * 0.5 * l2_loss(variables)."""
  teacher_features = tf.concat([tf.math.l2_normalize(t.backbone(images, training=False), 1)
                                for t in teachers], axis=1)
  pooled = student.backbone(images, training=True)
  kernel, bias = student.projection.weights[:2]
  features = tf.nn.l2_normalize(tf.nn.relu(tf.matmul(pooled, kernel) + bias), axis=1)
  logits = 20.0 * tf.matmul(tf.math.l2_normalize(features, 1),
                            tf.math.l2_normalize(student.head.kernel, 0))
  ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                      logits=logits))
  distill = tf.reduce_mean(1.0 - tf.reduce_sum(
      tf.nn.l2_normalize(features, axis=1) * tf.nn.l2_normalize(teacher_features, axis=1), -1))
  variables = [v for v in student.weights if official_role(v)]
  penalty = weight_decay * 0.5 * tf.nn.l2_loss(tf.concat([tf.reshape(v, [-1]) for v in variables], 0))
  return float((1 - alpha) * ce + alpha * beta * distill + penalty)


def test_distiller_train_step_loss_is_the_official_stage_two_loss():
  keras.utils.set_random_seed(0)
  teachers = [helpers.tiny_classifier(image_size=16) for _ in range(2)]
  student = helpers.tiny_classifier(image_size=16, projection_dim=128)
  images, labels = helpers.tiny_batch(batch_size=8, image_size=16)
  expected = official_student_loss(student, teachers, images, labels, 0.4, 100.0, 5e-4)
  distiller = CBDDistiller(student, teachers, alpha=0.4, beta=100.0)
  distiller.compile(keras.optimizers.SGD(0.0), weight_decay=5e-4)
  logs = distiller.train_on_batch(images, labels, return_dict=True)
  np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)


def sonnet_momentum_steps(weights, gradients, learning_rates, mu):
  """sonnet/src/optimizers/momentum.py momentum_update (use_nesterov=False):
  momentum = mu * momentum + update; param -= learning_rate * momentum."""
  momentum = np.zeros_like(weights)
  for gradient, learning_rate in zip(gradients, learning_rates):
    momentum = mu * momentum + gradient
    weights = weights - learning_rate * momentum
  return weights


def test_official_momentum_is_sonnets_update_under_a_changing_rate():
  rng = np.random.default_rng(0)
  start = rng.normal(size=(3, 4)).astype(np.float32)
  gradients = rng.normal(size=(6, 3, 4)).astype(np.float32)
  rates = [0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
  expected = sonnet_momentum_steps(start, gradients, rates, 0.9)

  def run(optimizer):
    variable = keras.Variable(start)
    for gradient, rate in zip(gradients, rates):
      optimizer.learning_rate.assign(rate)
      optimizer.apply([tf.constant(gradient)], [variable])
    return variable.numpy()
  np.testing.assert_allclose(run(optimizers.build_sgd(0.5, 0.9, "official")), expected, rtol=1e-5)
  # Keras' form keeps each gradient at the rate it arrived with: not the official steps.
  assert not np.allclose(run(optimizers.build_sgd(0.5, 0.9, "keras")), expected, rtol=1e-3)
  with pytest.raises(ValueError, match="unknown momentum_update 'nesterov'; valid: keras, official"):
    optimizers.build_sgd(0.5, 0.9, "nesterov")


@pytest.mark.parametrize("name", ["imagenet_lt", "imagenet_lt_cbd", "inaturalist2017",
                                  "inaturalist2018"])
def test_paper_configs_train_with_the_official_momentum_and_stream(name, monkeypatch, tmp_path):
  monkeypatch.chdir(helpers.ROOT)  # nested --flagfile paths resolve from here
  config = helpers.config_from_argv(f"--flagfile=configs/{name}.flags", f"--workdir={tmp_path}")
  # The student reads the reference's over/under-sampled stream (input_pipeline.py),
  # the teachers every image once an epoch (its "uniform").
  assert (config.data.sampling_method, config.distill.teacher_sampling) == (
      "resample", "instance")
  # The optimiser a run builds from the config, over the schedule's last updates (one step
  # an epoch), where the rate changes fastest.
  gradients = np.random.default_rng(1).normal(size=(4, 3, 2)).astype(np.float32)

  def last_steps(run_config):
    optimizer = training._build_optimizer(run_config, steps_per_epoch=1)  # pylint: disable=protected-access
    variable = keras.Variable(np.zeros((3, 2), np.float32))
    optimizer.build([variable])
    optimizer.iterations.assign(config.optimizer.epochs - len(gradients))
    rates = []
    for gradient in gradients:
      rates.append(float(optimizer.learning_rate))
      optimizer.apply([tf.constant(gradient)], [variable])
    return variable.numpy(), rates
  moved, rates = last_steps(config)
  expected = sonnet_momentum_steps(np.zeros((3, 2)), gradients, rates, config.optimizer.momentum)
  np.testing.assert_allclose(moved, expected, rtol=1e-5)
  keras_form, _ = last_steps(config.replace(optimizer={"momentum_update": "keras"}))
  assert not np.allclose(keras_form, expected, rtol=1e-3)


@pytest.mark.slow
def test_per_replica_batchnorm_step_under_mirrored_is_the_official_step():
  # 2 logical CPUs: each half-batch normalised by itself, gradients summed over replicas of
  # loss / replicas; a whole-batch (synchronised) step differs by far more.
  result = helpers.run_script("per_replica_batchnorm")
  assert result["replicas"] == 2
  assert result["per_replica"] < 1e-5 < 1e-3 < result["whole_batch"]
