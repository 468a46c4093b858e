"""Each long-tail loss against a value worked out by hand on two examples, two classes.

Training counts n = (8, 2); logits (1, 0) for both examples, labels 0 and 1.
Per-example CE: log(1 + e^-1) and log(1 + e).
"""

import math

import numpy as np
import pytest

from cbd_tf import config as config_lib
from cbd_tf import long_tail_losses, losses, metrics

COUNTS = np.array([8, 2])
LABELS = np.array([0, 1])
LOGITS = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
CE_0, CE_1 = math.log1p(math.exp(-1)), math.log1p(math.e)


def _loss(name, **changes):
  settings = config_lib.LongTailConfig(loss=name, **changes)
  loss, callbacks = long_tail_losses.build_loss(settings, COUNTS, cosine_scale=10.0, epochs=5)
  return loss, callbacks


def test_every_configured_loss_has_a_builder():
  assert tuple(long_tail_losses.LOSS_BUILDERS) == config_lib.LOSSES
  with pytest.raises(ValueError, match="unknown loss 'hinge'; valid: ce, logit_adjusted"):
    long_tail_losses.build_loss(config_lib.LongTailConfig(loss="hinge"), COUNTS)


def test_cross_entropy():
  loss, callbacks = _loss("ce")
  assert float(loss(LABELS, LOGITS)) == pytest.approx((CE_0 + CE_1) / 2, rel=1e-5)
  assert not callbacks


def test_logit_adjusted_and_balanced_softmax_are_one_loss_at_tau_1():
  # Adjusted logits (1 + log .8, log .2): the margin of class 0 over class 1 is 1 + log 4.
  margin = 1 + math.log(4)
  expected = (math.log1p(math.exp(-margin)) + math.log1p(math.exp(margin))) / 2
  assert float(_loss("logit_adjusted")[0](LABELS, LOGITS)) == pytest.approx(expected, rel=1e-5)
  assert float(_loss("balanced_softmax")[0](LABELS, LOGITS)) == pytest.approx(expected, rel=1e-5)
  # tau = 0 is plain cross-entropy; tau = 2 doubles the log-prior offset.
  assert float(_loss("logit_adjusted", logit_adjust_tau=0.0)[0](LABELS, LOGITS)) == pytest.approx(
      (CE_0 + CE_1) / 2, rel=1e-5)
  margin = 1 + 2 * math.log(4)
  assert float(_loss("logit_adjusted", logit_adjust_tau=2.0)[0](LABELS, LOGITS)) == pytest.approx(
      (math.log1p(math.exp(-margin)) + math.log1p(math.exp(margin))) / 2, rel=1e-5)


def test_focal():
  p0, p1 = math.e / (1 + math.e), 1 / (1 + math.e)  # probability of each true class
  expected = ((1 - p0) ** 2 * CE_0 + (1 - p1) ** 2 * CE_1) / 2
  assert float(_loss("focal", focal_gamma=2.0)[0](LABELS, LOGITS)) == pytest.approx(expected, rel=1e-5)
  assert float(_loss("focal", focal_gamma=0.0)[0](LABELS, LOGITS)) == pytest.approx(
      (CE_0 + CE_1) / 2, rel=1e-5)


def test_class_balanced():
  raw = [(1 - 0.9) / (1 - 0.9 ** 8), (1 - 0.9) / (1 - 0.9 ** 2)]
  weights = [2 * r / sum(raw) for r in raw]  # scaled to sum to the class count
  np.testing.assert_allclose(long_tail_losses.class_balanced_weights(COUNTS, 0.9), weights)
  expected = (weights[0] * CE_0 + weights[1] * CE_1) / 2
  loss = _loss("class_balanced", class_balanced_beta=0.9)[0]
  assert float(loss(LABELS, LOGITS)) == pytest.approx(expected, rel=1e-5)


def test_ldam_with_deferred_reweighting():
  margins = [0.5 * (2 / 8) ** 0.25, 0.5]  # n^-1/4, the rarest class at ldam_max_margin
  np.testing.assert_allclose(long_tail_losses.ldam_margins(COUNTS, 0.5), margins)
  # The head's scale 10 divided out: cosines (0.1, 0); LDAM's s = 30 on cos - m_y.
  first = math.log1p(math.exp(-(3 - 30 * margins[0])))
  second = math.log1p(math.exp(3 - 30 * (0 - margins[1])))
  loss, callbacks = _loss("ldam", drw_epoch=2, class_balanced_beta=0.9)
  (drw,) = callbacks
  drw.on_epoch_begin(1)
  assert float(loss(LABELS, LOGITS)) == pytest.approx((first + second) / 2, rel=1e-5)
  drw.on_epoch_begin(2)
  # With weights: their weighted mean, sum w CE / sum w.
  weights = long_tail_losses.class_balanced_weights(COUNTS, 0.9)
  assert float(loss(LABELS, LOGITS)) == pytest.approx(
      (weights[0] * first + weights[1] * second) / (weights[0] + weights[1]), rel=1e-5)
  assert long_tail_losses.drw_start_epoch(config_lib.LongTailConfig(), 100) == 80


def test_posthoc_adjustment_subtracts_tau_log_prior():
  adjusted = long_tail_losses.posthoc_adjusted(lambda images, training=False: LOGITS, COUNTS, 0.5)
  expected = LOGITS - 0.5 * np.log([0.8, 0.2])
  np.testing.assert_allclose(np.asarray(adjusted(None)), expected, rtol=1e-6)
  plain = object()
  assert long_tail_losses.posthoc_adjusted(plain, COUNTS, 0.0) is plain


def test_losses_agree_with_cross_entropy_module():
  assert float(_loss("ce")[0](LABELS, LOGITS)) == pytest.approx(
      float(losses.cross_entropy_loss(LABELS, LOGITS)))


def test_expected_calibration_error_by_hand():
  # Bin (14/15, 1]: confidence .95, accuracy 1/2; bin (8/15, 9/15]: confidence .6, accuracy 1.
  confidences = np.array([0.95, 0.95, 0.6, 0.6])
  correct = np.array([1, 0, 1, 1])
  expected = 2 / 4 * abs(0.5 - 0.95) + 2 / 4 * abs(1.0 - 0.6)
  assert metrics.expected_calibration_error(confidences, correct) == pytest.approx(expected)
  # Perfectly calibrated within one bin.
  assert metrics.expected_calibration_error([0.5] * 4, [1, 0, 1, 0]) == pytest.approx(0.0)


def test_evaluate_model_reports_ece_and_keeps_keys():
  logits = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]], np.float32))
  labels = np.array([0, 1, 1, 1])
  dataset = [(logits, labels)]
  result = metrics.evaluate_model(lambda x, training=False: x, dataset, np.array([500, 5]))
  assert result["top1"] == pytest.approx(0.75)
  assert result["ece"] == pytest.approx(2 / 4 * abs(0.5 - 0.9) + 2 / 4 * abs(1.0 - 0.7), rel=1e-5)
  assert {"top1", "many", "medium", "few", "per_class", "num_test"} <= set(result)
  assert metrics.format_table({"run": result}).splitlines()[0].split()[-1] == "ece"
