import numpy as np
import pytest
import keras
import tensorflow as tf

from cbd_tf import callbacks, distiller, teachers
from tests import helpers


def build_distiller(num_teachers=2, teacher_names=None):
  teachers = [helpers.tiny_classifier() for _ in range(num_teachers)]
  student = helpers.tiny_classifier(projection_dim=64 * num_teachers)
  model = distiller.CBDDistiller(student, teachers, alpha=0.4, beta=100.0,
                                 teacher_names=teacher_names)
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
  assert {"loss_distill_0", "loss_distill_1"} <= set(history)  # no names given: indices


def read_scalars(log_dir):
  """{tag: value} of every scalar summary under log_dir (the last value of each tag)."""
  values = {}
  for path in tf.io.gfile.glob(f"{log_dir}/events.out.tfevents.*"):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        values[value.tag] = float(tf.make_ndarray(value.tensor))
  return values


def test_one_distillation_loss_per_teacher_sums_to_the_total(tmp_path):
  keras.utils.set_random_seed(0)  # teachers whose shares differ clearly (~2%)
  model, student, teachers = build_distiller(teacher_names=["vanilla_1", "augmented_1"])
  images, labels = helpers.tiny_batch()
  # The paper's loss, written out: the teacher feature is the concatenation of each
  # teacher's L2-normalised embedding, L2-normalised again; the student feature is the
  # projected embedding, L2-normalised; the term is mean(1 - cos).
  teacher = tf.math.l2_normalize(tf.concat(
      [tf.math.l2_normalize(t.embed(images, training=False), axis=1) for t in teachers], 1), 1)
  student_feature = tf.math.l2_normalize(student.embed(images, training=True), axis=1)
  official = tf.reduce_mean(1.0 - tf.reduce_sum(student_feature * teacher, axis=1))
  # Teacher k's share: its slice of |t|^2 - s.t (|t| = 1), i.e. t_k.(t_k - s_k).
  expected = {name: float(tf.reduce_mean(tf.reduce_sum(
      teacher[:, 64 * k:64 * (k + 1)] * (teacher - student_feature)[:, 64 * k:64 * (k + 1)],
      axis=1))) for k, name in enumerate(["vanilla_1", "augmented_1"])}
  history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0,
                      callbacks=[callbacks.StepScalars(str(tmp_path), every_steps=1)]).history
  logged = {name: history[f"loss_distill_{name}"][0] for name in expected}
  for name, value in expected.items():
    np.testing.assert_allclose(logged[name], value, rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(sum(logged.values()), history["loss_distill"][0], rtol=1e-5)
  np.testing.assert_allclose(history["loss_distill"][0], float(official), rtol=1e-5)
  # Each teacher its own share, not the total split evenly.
  assert abs(logged["vanilla_1"] - logged["augmented_1"]) > 1e-3 * history["loss_distill"][0]
  scalars = read_scalars(tmp_path / "train")
  for name in expected:
    np.testing.assert_allclose(scalars[f"train/loss_distill_{name}"], logged[name], rtol=1e-6)
  assert "train/loss_distill" in scalars


def test_teacher_names_are_run_basenames_or_indices():
  assert teachers.teacher_metric_names(["runs/p/teachers/vanilla_1", "/x/augmented_2/"]) == [
      "vanilla_1", "augmented_2"]
  assert teachers.teacher_metric_names(["a/teacher", "b/teacher"]) == ["0", "1"]
  with pytest.raises(ValueError, match="distinct"):
    build_distiller(teacher_names=["vanilla_1", "vanilla_1"])
  with pytest.raises(ValueError, match="1 teacher names for 2 teachers"):
    build_distiller(teacher_names=["vanilla_1"])


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


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["student", "teacher"])
def test_mirrored_two_replicas_match_one_device(stage):
  # Without dividing each replica's loss by the replica count, summed gradients double.
  result = helpers.run_script("mirrored_step", stage)
  assert result["repeat_difference"] == 0.0
  assert result["max_difference"] < 1e-4
  # Every logged term, per-teacher shares included, is the global batch's on 2 replicas.
  single, mirrored = result["single_logs"], result["mirrored_logs"]
  assert set(mirrored) == set(single)
  if stage == "student":
    assert {"loss_distill_0", "loss_distill_1"} <= set(single)
  for name, value in single.items():
    np.testing.assert_allclose(mirrored[name], value, rtol=1e-5, err_msg=name)


def test_a_distiller_of_cached_features_reads_them_from_the_batch():
  images, labels = helpers.tiny_batch()
  teacher = helpers.tiny_classifier()
  features = distiller.teacher_features([teacher], images)
  student = helpers.tiny_classifier(projection_dim=64)
  cached = distiller.CBDDistiller(student, teacher_widths=[64])
  live = distiller.CBDDistiller(student, [teacher])
  np.testing.assert_array_equal(cached.loss_targets(images, features),
                                live.loss_targets(images, np.zeros_like(features)))
  with pytest.raises(ValueError, match="its batches must be \\(images, labels, teacher features\\)"):
    cached.loss_targets(images)
  with pytest.raises(ValueError, match="needs teachers, or the teacher_widths"):
    distiller.CBDDistiller(student, [teacher], teacher_widths=[64])
