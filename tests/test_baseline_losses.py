"""LDAM-DRW, focal and class-balanced focal against their authors' code, written out here
with the TF ops closest to theirs (not calling ours):

  kaidic/LDAM-DRW losses.py            LDAMLoss.forward, focal_loss / FocalLoss
  kaidic/LDAM-DRW cifar_train.py       DRW per_cls_weights (betas [0, 0.9999], epoch // 160),
                                       FocalLoss(gamma=1), LDAMLoss(max_m=0.5, s=30)
  richardaecn/class-balanced-loss      tpu/models/official/resnet/resnet_main.py: focal_loss
                                       and the tiled per-example weights; run_*.sh: beta 0.999,
                                       gamma 0.5
"""

import numpy as np
import pytest
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf import long_tail_losses
from tests import helpers

# CIFAR-10-LT (imbalance 100) class counts, as LDAM-DRW's IMBALANCECIFAR10 draws them.
COUNTS = np.array([int(5000 * 0.01 ** (c / 9)) for c in range(10)])
SIGMA = 20.0  # our cosine head's scale, which LDAM divides out


def _batch(seed=0, size=64):
  rng = np.random.default_rng(seed)
  labels = rng.choice(len(COUNTS), size=size, p=COUNTS / COUNTS.sum())
  cosines = rng.uniform(-1, 1, (size, len(COUNTS))).astype(np.float32)
  return labels, cosines


def _torch_cross_entropy(logits, target, weight=None):
  """F.cross_entropy(logits, target, weight=weight): the weighted mean sum w_y nll / sum w_y."""
  nll = -tf.gather(tf.nn.log_softmax(logits, axis=-1), target, axis=1, batch_dims=1)
  if weight is None:
    return tf.reduce_mean(nll)
  w = tf.gather(tf.constant(weight, tf.float32), target)
  return tf.reduce_sum(w * nll) / tf.reduce_sum(w)


def _their_ldam(x, target, cls_num_list, max_m=0.5, s=30, weight=None):
  """LDAM-DRW losses.py, LDAMLoss(cls_num_list, max_m, weight, s)(x, target); x = cosines."""
  m_list = 1.0 / np.sqrt(np.sqrt(cls_num_list))
  m_list = m_list * (max_m / np.max(m_list))
  index = tf.cast(tf.one_hot(target, x.shape[1]), tf.bool)
  index_float = tf.cast(index, tf.float32)
  batch_m = tf.matmul(tf.constant(m_list[None, :], tf.float32), tf.transpose(index_float))
  batch_m = tf.reshape(batch_m, (-1, 1))
  x_m = x - batch_m
  output = tf.where(index, x_m, x)
  return _torch_cross_entropy(s * output, target, weight)


def _their_drw_weights(epoch, cls_num_list):
  """LDAM-DRW cifar_train.py, train_rule 'DRW'."""
  idx = epoch // 160
  betas = [0, 0.9999]
  effective_num = 1.0 - np.power(betas[idx], cls_num_list)
  per_cls_weights = (1.0 - betas[idx]) / np.array(effective_num)
  return per_cls_weights / np.sum(per_cls_weights) * len(cls_num_list)


def test_ldam_drw_is_their_weighted_mean_with_s_30():
  labels, cosines = _batch()
  settings = config_lib.LongTailConfig(loss="ldam")
  assert (settings.ldam_scale, settings.ldam_max_margin, settings.class_balanced_beta) == (
      30.0, 0.5, 0.9999)
  loss, (drw,) = long_tail_losses.build_loss(settings, COUNTS, cosine_scale=SIGMA, epochs=200)
  logits = SIGMA * cosines  # what our cosine head gives
  for epoch in (0, 159, 160, 199):
    drw.on_epoch_begin(epoch)
    theirs = float(_their_ldam(cosines, labels, COUNTS, weight=_their_drw_weights(epoch, COUNTS)))
    assert float(loss(labels, logits)) == pytest.approx(theirs, rel=1e-5), epoch
  # After DRW starts, the weighted mean(w * CE) is far from their sum(w * CE) / sum(w)
  # (0.17x on CIFAR-10-LT): the normalisation matters.
  weights = _their_drw_weights(199, COUNTS)
  nll = -tf.gather(tf.nn.log_softmax(30 * cosines), labels, axis=1, batch_dims=1)
  weighted_mean = float(tf.reduce_mean(tf.gather(weights, labels) * tf.cast(nll, tf.float64)))
  assert weighted_mean / theirs < 0.5


def test_focal_is_ldam_drw_focal_with_gamma_1():
  labels, cosines = _batch(seed=1)
  logits = 5.0 * cosines
  settings = config_lib.LongTailConfig(loss="focal")
  assert settings.focal_gamma == 1.0
  loss, _ = long_tail_losses.build_loss(settings, COUNTS)
  for gamma in (1.0, 2.0):
    # LDAM-DRW losses.py: FocalLoss(weight=None, gamma)(input, target).
    input_values = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    p = tf.exp(-input_values)
    theirs = float(tf.reduce_mean((1 - p) ** gamma * input_values))
    ours = long_tail_losses.build_loss(config_lib.LongTailConfig(loss="focal", focal_gamma=gamma),
                                       COUNTS)[0]
    assert float(ours(labels, logits)) == pytest.approx(theirs, rel=1e-5)
    if gamma == 1.0:
      assert float(loss(labels, logits)) == pytest.approx(theirs, rel=1e-5)


def _their_class_balanced_focal(labels, logits, img_num_per_cls, beta, gamma):
  """class-balanced-loss resnet_main.py: the weights of resnet_model_fn, then focal_loss."""
  num_classes = len(img_num_per_cls)
  one_hot_labels = tf.one_hot(labels, num_classes)
  effective_num = 1.0 - np.power(beta, img_num_per_cls)
  weights = (1.0 - beta) / np.array(effective_num)
  weights = weights / np.sum(weights) * num_classes
  weights = tf.cast(weights, dtype=tf.float32)
  weights = tf.expand_dims(weights, 0)
  weights = tf.tile(weights, [tf.shape(one_hot_labels)[0], 1]) * one_hot_labels
  weights = tf.reduce_sum(weights, axis=1)
  weights = tf.expand_dims(weights, 1)
  alpha = tf.tile(weights, [1, num_classes])
  cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=one_hot_labels, logits=logits)
  modulator = tf.exp(-gamma * one_hot_labels * logits - gamma * tf.math.log1p(
      tf.exp(-1.0 * logits)))
  focal_loss = tf.reduce_sum(alpha * modulator * cross_entropy)
  return focal_loss / tf.reduce_sum(one_hot_labels)


def test_class_balanced_focal_is_cui_et_al_sigmoid_focal():
  labels, cosines = _batch(seed=2)
  logits = SIGMA * cosines
  settings = config_lib.LongTailConfig(loss="class_balanced_focal")
  assert (settings.class_balanced_focal_beta, settings.class_balanced_focal_gamma) == (0.999, 0.5)
  assert config_lib.LongTailConfig().class_balanced_beta == 0.9999  # --loss=class_balanced's
  loss, callbacks = long_tail_losses.build_loss(settings, COUNTS)
  assert not callbacks
  theirs = float(_their_class_balanced_focal(labels, logits, COUNTS, 0.999, 0.5))
  assert float(loss(labels, logits)) == pytest.approx(theirs, rel=1e-5)
  for beta, gamma in ((0.9999, 1.0), (0.99, 0.0)):
    changed = config_lib.LongTailConfig(loss="class_balanced_focal",
                                        class_balanced_focal_beta=beta,
                                        class_balanced_focal_gamma=gamma)
    theirs = float(_their_class_balanced_focal(labels, logits, COUNTS, beta, gamma))
    assert float(long_tail_losses.build_loss(changed, COUNTS)[0](labels, logits)) == (
        pytest.approx(theirs, rel=1e-5))
  # Where exp(-z) overflows float32 theirs loses the modulator of the true class (0 for 1);
  # here it stays (1 - sigmoid(-100))^0.5 = 1, so the loss is w_0 * softplus(100) = w_0 * 100.
  far = float(long_tail_losses.class_balanced_focal_loss([0], [[-100.0, -100.0]], [0.4, 1.6], 0.5))
  assert far == pytest.approx(0.4 * 100, rel=1e-5)


@pytest.mark.slow
def test_ldam_weighted_mean_spans_the_replicas():
  # One LDAM-DRW step on 2 logical CPUs (MirroredStrategy) equals one device; each replica
  # dividing by its own sum of weights does not (the batch splits frequent / rare classes).
  values = helpers.run_script("ldam_replicas")
  assert values["all_reduced_difference"] < 1e-4
  assert values["per_replica_difference"] > 1e-2
  assert values["all_reduced_loss"] == pytest.approx(values["single_loss"], rel=1e-5)
  assert values["per_replica_loss"] != pytest.approx(values["single_loss"], rel=1e-2)


@pytest.mark.parametrize("argv, section, expected", [
    ([], "optimizer", {"lr_schedule": "cosine", "resolved_warmup_epochs": 0.0}),
    (["--lr_schedule=step", "--epochs=200"], "optimizer",
     {"lr_schedule": "step", "resolved_warmup_epochs": 5.0}),
    (["--lr_schedule=step", "--epochs=200", "--warmup_epochs=0"], "optimizer",
     {"resolved_warmup_epochs": 0.0}),
    (["--loss=ldam", "--ldam_scale=16"], "long_tail", {"ldam_scale": 16.0}),
    (["--loss=class_balanced_focal", "--class_balanced_focal_beta=0.99",
      "--class_balanced_focal_gamma=2"], "long_tail",
     {"class_balanced_focal_beta": 0.99, "class_balanced_focal_gamma": 2.0}),
    (["--loss=class_balanced"], "long_tail", {"class_balanced_beta": 0.9999, "focal_gamma": 1.0}),
])
def test_flags(argv, section, expected):
  config = helpers.config_from_argv("--workdir=/tmp/w", *argv)
  for name, value in expected.items():
    assert getattr(getattr(config, section), name) == value


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": {"lr_schedule": "linear"}}, "unknown lr_schedule 'linear'; valid: cosine, step"),
    ({"optimizer": {"lr_schedule": "step", "epochs": 5}},
     "warmup of 5 epochs must be shorter than --epochs=5; set --warmup_epochs"),
    ({"long_tail": {"loss": "ldam", "ldam_scale": 0.0}}, "ldam_scale must be positive"),
    ({"long_tail": {"class_balanced_focal_beta": 1.0}}, "class_balanced_focal_beta must be in"),
    ({"long_tail": {"class_balanced_focal_gamma": -1.0}},
     "class_balanced_focal_gamma must be >= 0"),
])
def test_bad_settings_name_the_problem(changes, message):
  with pytest.raises(ValueError, match=message.replace("[", r"\[")):
    config_lib.Config(workdir="/tmp/x").replace(**changes).validate()


def test_class_balanced_focal_head_starts_at_their_bias_outside_the_decay():
  # Cui et al. model_base.py: bias_initializer=tf.constant_initializer(-np.log(out_dim - 1));
  # cifar_main.py: reg_loss = weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in
  # model_params if 'dense/bias' not in v.name]) (gradient wd * w: cbd_tf's --weight_decay
  # is then 2 * wd, the row's value in tools/compare.py).
  import keras  # pylint: disable=import-outside-toplevel
  from cbd_tf.models.classifier import Classifier  # pylint: disable=import-outside-toplevel
  their_weight_decay, num_classes = 2e-4, 100
  model = Classifier("resnet8", num_classes, 16, head="linear")
  long_tail = config_lib.LongTailConfig(loss="class_balanced_focal")
  model.weight_decay_exempt = long_tail_losses.prepare_head(model.head, long_tail, num_classes)
  np.testing.assert_allclose(model.head.bias.numpy(), -np.log(num_classes - 1.0), rtol=1e-6)
  their_decay = their_weight_decay * tf.add_n(
      [tf.nn.l2_loss(v) for v in model.trainable_variables if v is not model.head.bias])
  loss, _ = long_tail_losses.build_loss(long_tail, np.full(num_classes, 50))  # weights 1
  images, labels = helpers.tiny_batch(batch_size=8, image_size=16, num_classes=num_classes)
  model.compile(keras.optimizers.SGD(0.0), loss=loss, weight_decay=2 * their_weight_decay)
  logs = model.train_on_batch(images, labels, return_dict=True)
  np.testing.assert_allclose(logs["loss_weight_decay"], float(their_decay), rtol=1e-5)
  # Every class starts near probability 1 / C: about 4.7 per image (gamma 0.5) where a zero
  # bias starts near 100 * 0.5^0.5 * log 2 = 49.
  assert 4 < logs["loss_ce"] < 6
  assert long_tail_losses.prepare_head(model.head, config_lib.LongTailConfig(), 10) == ()


def test_class_balanced_focal_run_trains_from_their_bias_outside_the_decay(tmp_path,
                                                                           monkeypatch):
  # A --stage=teacher --loss=class_balanced_focal run through training.train_stage, its
  # first update watched: the head bias it starts from and the decay that update logs,
  # against Cui et al.'s definitions (previous test).
  import keras  # pylint: disable=import-outside-toplevel
  from cbd_tf import training  # pylint: disable=import-outside-toplevel
  from cbd_tf.data.source_types import Source, Split  # pylint: disable=import-outside-toplevel
  from cbd_tf.stages import teacher  # pylint: disable=import-outside-toplevel

  class FirstUpdate(keras.callbacks.Callback):
    before, logs = None, None

    def on_train_batch_begin(self, batch, logs=None):
      if self.before is None:
        self.before = [(v.path, v.numpy()) for v in self.model.trainable_variables]

    def on_train_batch_end(self, batch, logs=None):
      if self.logs is None:
        self.logs = {name: float(value) for name, value in logs.items()}
  watch = FirstUpdate()
  monkeypatch.setattr(teacher, "callbacks", lambda *args: [watch], raising=False)
  rng, num_classes = np.random.default_rng(0), 5
  labels = np.repeat(np.arange(num_classes), [12, 6, 3, 2, 1])
  split = Split(rng.integers(0, 256, (len(labels), 8, 8, 3), dtype=np.uint8), labels)
  source = Source("tiny", train=split, test=split, class_names=tuple("abcde"))
  config = config_lib.Config(
      workdir=str(tmp_path / "run"), stage="teacher",
      data=config_lib.DataConfig(image_size=8, batch_size=8, eval_crop_fraction=1.0),
      model=config_lib.ModelConfig(backbone="resnet8", head="linear"),
      optimizer=config_lib.OptimizerConfig(epochs=1, steps_per_epoch=1, weight_decay=4e-4),
      output=config_lib.OutputConfig(eval_every_epochs=0)).replace(
          long_tail={"loss": "class_balanced_focal"})
  training.train_stage(config, source)
  before = dict(watch.before)
  bias = next(path for path in before if path.endswith("bias") and "head" in path)
  np.testing.assert_allclose(before[bias], -np.log(num_classes - 1.0), rtol=1e-6)
  # cbd_tf's --weight_decay is twice their wd (previous test): theirs is 2e-4 here.
  their_decay = 2e-4 * sum(float(tf.nn.l2_loss(value)) for path, value in before.items()
                           if path != bias)
  np.testing.assert_allclose(watch.logs["loss_weight_decay"], their_decay, rtol=1e-5)
  with_bias = their_decay + 2e-4 * float(tf.nn.l2_loss(before[bias]))
  assert abs(with_bias - their_decay) > 1e-4 * their_decay  # the exemption is visible


def test_decoupled_stages_warm_up_only_when_asked():
  config = helpers.config_from_argv("--workdir=/tmp/w", "--stage=crt", "--backbone_from=/x",
                                    "--warmup_epochs=3", "--epochs=40")
  assert config.warmup_epochs == 0 and config.epochs == 10
  asked = helpers.config_from_argv("--workdir=/tmp/w", "--stage=lws", "--backbone_from=/x",
                                   "--decoupled_warmup_epochs=1")
  assert asked.warmup_epochs == 1
  assert helpers.config_from_argv("--workdir=/tmp/w", "--warmup_epochs=3").warmup_epochs == 3
