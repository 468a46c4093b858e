import numpy as np
import tensorflow as tf

from cbd_tf import losses


def numpy_distillation(student, teacher):
  student = student / np.linalg.norm(student, axis=1, keepdims=True)
  teacher = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
  return np.mean(1.0 - np.sum(student * teacher, axis=1))


def test_feature_distillation_matches_formula():
  rng = np.random.default_rng(0)
  student, teacher = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  value = losses.feature_distillation_loss(tf.constant(student), tf.constant(teacher))
  np.testing.assert_allclose(float(value), numpy_distillation(student, teacher), rtol=1e-5)
  # Scale-invariant; zero for aligned features; 2 for opposite ones.
  assert abs(float(losses.feature_distillation_loss(3 * student, student))) < 1e-6
  np.testing.assert_allclose(float(losses.feature_distillation_loss(student, -student)), 2.0,
                             rtol=1e-6)


def test_weight_decay_is_a_quarter_sum_of_squares():
  weights = [tf.constant([[1.0, 2.0]]), tf.constant([3.0])]
  np.testing.assert_allclose(float(losses.weight_decay_loss(weights, 0.1)), 0.1 * 0.25 * 14)
  assert float(losses.weight_decay_loss(weights, 0.0)) == 0.0
