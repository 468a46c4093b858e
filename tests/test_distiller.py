import numpy as np
import pytest
import keras
import tensorflow as tf

from cbd_tf import distiller, losses
from tests import helpers


def build_distiller(num_teachers=2):
  teachers = [helpers.tiny_classifier() for _ in range(num_teachers)]
  student = helpers.tiny_classifier(projection_dim=64 * num_teachers)
  model = distiller.CBDDistiller(student, teachers, alpha=0.4, beta=100.0)
  model.compile(keras.optimizers.SGD(0.1, momentum=0.9), weight_decay=5e-4)
  return model, student, teachers


def test_step_moves_student_and_leaves_teachers_unchanged():
  model, student, teachers = build_distiller()
  teacher_before = [[w.numpy().copy() for w in t.weights] for t in teachers]
  student_before = [w.numpy().copy() for w in student.trainable_weights]
  images, labels = helpers.tiny_batch()
  history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0).history
  for teacher, before in zip(teachers, teacher_before):
    for weight, value in zip(teacher.weights, before):  # BatchNorm statistics included
      np.testing.assert_array_equal(weight.numpy(), value)
  moved = [not np.array_equal(w.numpy(), b) for w, b in zip(student.trainable_weights,
                                                              student_before)]
  assert all(moved)
  assert {"loss", "loss_ce", "loss_distill", "loss_weight_decay", "accuracy"} <= set(history)


def test_logged_loss_is_the_cbd_formula():
  model, student, teachers = build_distiller()
  images, labels = helpers.tiny_batch()
  targets = distiller.teacher_features(teachers, images)
  logits, features = student.call_with_features(images, training=True)
  expected = losses.cbd_loss(labels, logits, features, targets, 0.4, 100.0)
  expected += losses.weight_decay_loss(student.trainable_weights, 5e-4)
  history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0).history
  np.testing.assert_allclose(history["loss"][0], float(expected), rtol=1e-4)


def test_teacher_feature_is_normalised_concatenation():
  _, _, teachers = build_distiller()
  images, _ = helpers.tiny_batch()
  features = distiller.teacher_features(teachers, images).numpy()
  assert features.shape == (8, 128)
  np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)
  first = teachers[0].embed(images).numpy()
  first /= np.linalg.norm(first, axis=1, keepdims=True)
  np.testing.assert_allclose(features[:, :64], first / np.sqrt(2), atol=1e-5)


def test_teachers_stay_out_of_weights_and_checkpoints(tmp_path):
  model, student, teachers = build_distiller()
  assert len(model.weights) == len(student.weights)
  teacher_ids = {id(w) for t in teachers for w in t.weights}
  assert not teacher_ids & {id(w) for w in model.weights}
  path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
  saved = {name.replace("model/student/", "model/") for name, _ in tf.train.list_variables(path)
           if not name.startswith("model/optimizer/")}
  student_path = tf.train.Checkpoint(model=student).save(str(tmp_path / "student"))
  assert saved == {name for name, _ in tf.train.list_variables(student_path)}


def test_width_mismatch_is_an_error():
  with pytest.raises(ValueError, match="projection_dim=128"):
    distiller.CBDDistiller(helpers.tiny_classifier(projection_dim=64),
                           [helpers.tiny_classifier(), helpers.tiny_classifier()])


@pytest.mark.parametrize("stage", ["student", "teacher"])
def test_mirrored_two_replicas_match_one_device(stage):
  # Without dividing each replica's loss by the replica count, summed gradients double.
  result = helpers.run_module("tests.mirrored_step", stage)
  assert result.returncode == 0, result.stderr[-3000:]
  values = dict(line.split() for line in result.stdout.splitlines() if line.count(" ") == 1)
  assert float(values["repeat_difference"]) == 0.0
  assert float(values["max_difference"]) < 1e-4
