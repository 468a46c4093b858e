import math

import numpy as np
import pytest

from cbd_tf import metrics, schedules


def test_warmup_then_cosine():
  schedule = schedules.WarmupCosineDecay(peak=0.4, total_steps=110, warmup_steps=10)
  values = [float(schedule(step)) for step in (0, 5, 10, 60, 110)]
  np.testing.assert_allclose(values, [0.0, 0.2, 0.4, 0.2, 0.0], atol=1e-6)
  assert schedules.scaled_learning_rate(0.1, 512) == pytest.approx(0.2)
  no_warmup = schedules.WarmupCosineDecay(peak=1.0, total_steps=4)
  assert float(no_warmup(0)) == pytest.approx(1.0)
  assert float(no_warmup(1)) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


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
