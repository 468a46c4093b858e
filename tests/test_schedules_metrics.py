import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbd_tf import metrics, schedules


def _official_learning_rate(step, base_learning_rate, steps_per_epoch, num_epochs,
                            warmup_epochs):
  """class_balanced_distillation/train.py get_learning_rate (with its cosine_decay), in
  numpy; its train_step calls it with global_step + 1 before each update."""
  def cosine_decay(lr, step, total_steps):
    ratio = max(0.0, step / total_steps)
    return 0.5 * (1.0 + math.cos(math.pi * ratio)) * lr
  epoch = step / steps_per_epoch
  lr = cosine_decay(base_learning_rate, epoch - warmup_epochs, num_epochs - warmup_epochs)
  with np.errstate(divide="ignore"):  # warmup_epochs = 0 (every config): epoch / 0 = inf
    warmup = min(1.0, np.float64(epoch) / warmup_epochs)
  return lr * warmup


def _official_steps_per_epoch(num_examples, global_batch_size, num_epochs):
  """train.py train_and_evaluate with num_train_steps = -1 (every config)."""
  num_train_steps = num_examples // global_batch_size * num_epochs
  return num_train_steps // num_epochs


def test_an_epoch_is_the_official_number_of_steps():
  # ImageNet-LT (115,846 images), iNaturalist 2018 (437,513), CIFAR-100-LT (10,847).
  for num_examples in (115_846, 437_513, 10_847, 256):
    assert schedules.steps_per_epoch(num_examples, 128) == _official_steps_per_epoch(
        num_examples, 128, 90), num_examples
  # Fewer images than a batch: the official loop would divide by 0 steps; one here.
  assert schedules.steps_per_epoch(100, 128) == 1


@pytest.mark.parametrize("warmup_epochs", [0, 5])
def test_cosine_is_the_official_learning_rate_at_each_update(warmup_epochs):
  # ImageNet-LT: 115,846 images, 90 epochs, 0.1 per 256 at batch 128.
  steps_per_epoch, epochs, base = schedules.steps_per_epoch(115_846, 128), 90, 0.1 * 128 / 256
  assert steps_per_epoch == _official_steps_per_epoch(115_846, 128, epochs)
  schedule = schedules.build_schedule("cosine", base, epochs, steps_per_epoch, warmup_epochs)
  total = epochs * steps_per_epoch
  # Updates made before: the first, the warm-up's last and first after, the middle, the last.
  for global_step in (0, 5 * steps_per_epoch - 1, 5 * steps_per_epoch, total // 2, total - 1):
    official = _official_learning_rate(global_step + 1, base, steps_per_epoch, epochs,
                                       warmup_epochs)
    assert float(schedule(global_step)) == pytest.approx(official, rel=1e-5, abs=1e-9), global_step
  assert float(schedule(total - 1)) == pytest.approx(0, abs=1e-9)
  assert schedules.scaled_learning_rate(0.1, 512) == pytest.approx(0.2)


def _their_cui_schedule(current_epoch, base_learning_rate, lr_boundaries, lr_multiplier):
  """class-balanced-loss src/cifar_main.py learning_rate_schedule (per step: the epoch is
  fractional); cifar_im_trainval_cb.sh runs it with multipliers 1 0.01 0.0001."""
  staged_lr = [base_learning_rate * x for x in lr_multiplier]
  decay_rate = (base_learning_rate * current_epoch / lr_boundaries[0])
  for st_lr, start_epoch in zip(staged_lr, lr_boundaries):
    decay_rate = tf.where(current_epoch < start_epoch, decay_rate, st_lr)
  return decay_rate


def _their_ldam_drw_schedule(epoch, lr):
  """LDAM-DRW cifar_train.py adjust_learning_rate (once per epoch)."""
  epoch = epoch + 1
  if epoch <= 5:
    return lr * epoch / 5
  if epoch > 180:
    return lr * 0.0001
  if epoch > 160:
    return lr * 0.01
  return lr


def test_step_schedule_is_the_long_tail_cifar_recipe():
  steps_per_epoch = 3
  schedule = schedules.build_schedule("step", 0.1, 200, steps_per_epoch, warmup_epochs=5)
  assert schedules.step_decay_epochs(200) == [160, 180]
  steps = np.arange(200 * steps_per_epoch)
  ours = np.asarray(schedule(steps))
  theirs = np.asarray(_their_cui_schedule(steps / steps_per_epoch, 0.1, [5, 160, 180],
                                          [1, 0.01, 0.0001]))
  np.testing.assert_allclose(ours, theirs, rtol=1e-6)
  # LDAM-DRW's per-epoch warmup differs inside the first 5 epochs only.
  ldam = np.array([_their_ldam_drw_schedule(step // steps_per_epoch, 0.1) for step in steps])
  after_warmup = steps >= 5 * steps_per_epoch
  np.testing.assert_allclose(ours[after_warmup], ldam[after_warmup], rtol=1e-6)
  assert not np.allclose(ours[~after_warmup], ldam[~after_warmup])


def test_schedules_serialize_and_cosine_is_unchanged():
  cosine = schedules.build_schedule("cosine", 0.4, 11, 10, warmup_epochs=1)
  reference = schedules.WarmupCosineDecay(peak=0.4, total_steps=110, warmup_steps=10)
  np.testing.assert_array_equal(np.asarray(cosine(np.arange(111))),
                                np.asarray(reference(np.arange(111))))
  step = schedules.build_schedule("step", 0.4, 10, 4, warmup_epochs=0.5)
  assert step.get_config() == {"peak": 0.4, "boundaries": [32, 36], "factors": [0.01, 0.0001],
                               "warmup_steps": 2}
  for schedule in (cosine, step):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule) and restored.get_config() == schedule.get_config()
  with pytest.raises(ValueError, match="need 0 <= warmup_steps <= boundaries"):
    schedules.build_schedule("step", 0.4, 10, 4, warmup_epochs=9)
  with pytest.raises(ValueError, match="unknown lr_schedule 'linear'; valid: cosine, step"):
    schedules.build_schedule("linear", 0.4, 10, 4, warmup_epochs=0)


def test_shot_group_accuracy_and_empty_groups():
  train_counts = np.array([500, 500, 50, 5])  # many, many, medium, few
  labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
  predictions = np.array([0, 0, 1, 0, 2, 0, 0, 0])
  result = metrics.shot_group_accuracy(predictions, labels, train_counts)
  assert result["top1"] == pytest.approx(4 / 8)
  assert result["many"] == pytest.approx((1.0 + 0.5) / 2)
  assert result["medium"] == pytest.approx(0.5)
  assert result["few"] == pytest.approx(0.0)
  assert result["per_class"] == [1.0, 0.5, 0.5, 0.0] and result["num_test"] == 8
  no_few = metrics.shot_group_accuracy(predictions[:6], labels[:6], train_counts[:3])
  assert no_few["few"] is None
  table = metrics.format_table({"teacher": result, "student": no_few})
  assert table.splitlines()[2].split() == ["student", "66.7", "75.0", "50.0", "-"]
