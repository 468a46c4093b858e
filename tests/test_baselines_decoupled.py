"""Linear head, tau-norm, LWS, NCM and the cRT / LWS recipe against classifier-balancing
(facebookresearch/classifier-balancing), whose definitions are written out here in numpy
with the operations their PyTorch code uses, then the stages end to end on mnist_pairs_lt
(which has a validation split)."""

import json
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf import decoupled, evaluation, run_dir, run_files, run_models
from cbd_tf import serving, training
from cbd_tf.models import heads
from tests import helpers


class _IdentityEmbedding:
  def __init__(self, head=None):
    self.head = head

  def embed(self, images, training=False):
    return images


def _linear_head(num_classes, dim, seed=0, **kwargs):
  head = heads.LinearClassifier(num_classes, **kwargs)
  head.build((None, dim))
  rng = np.random.default_rng(seed)
  head.kernel.assign(rng.normal(0, 1, (dim, num_classes)).astype(np.float32))
  head.bias.assign(rng.normal(0, 1, (num_classes,)).astype(np.float32))
  return head


# --- classifier-balancing's definitions, PyTorch layout: weights (C, D), features (N, D) ---

def upstream_linear(features, weights, bias):
  """DotProductClassifier: nn.Linear(feat_dim, num_classes) -> x @ W.T + b."""
  return features @ weights.T + bias


def upstream_tau_norm_logits(features, weights, p):
  """tau_norm.py: pnorm divides row i by torch.norm(weights, 2, 1)[i] ** p, then
  dotproduct_similarity(feat, ws) = torch.mm(feat, ws.t()): the bias is not used."""
  norm = np.sqrt((weights ** 2).sum(axis=1))
  ws = weights.copy()
  for i in range(weights.shape[0]):
    ws[i] = ws[i] / np.power(norm[i], p)
  return features @ ws.T


def upstream_knn_centroids(feats, labels):
  """run_networks.get_knncentroids: featmean over all training features; cl2n subtracts it
  and divides by the L2 norm; class means per label (np.unique order)."""
  featmean = feats.mean(axis=0)
  def get_centroids(feats_, labels_):
    return np.stack([np.mean(feats_[labels_ == i], axis=0) for i in np.unique(labels_)])
  l2n = feats / np.linalg.norm(feats, 2, 1, keepdims=True)
  cl2n = feats - featmean
  cl2n = cl2n / np.linalg.norm(cl2n, 2, 1, keepdims=True)
  return {"mean": featmean, "uncs": get_centroids(feats, labels),
          "l2ncs": get_centroids(l2n, labels), "cl2ncs": get_centroids(cl2n, labels)}


def upstream_knn_logits(inputs, centroids, feat_mean, feat_type="cl2n"):
  """KNNClassifier.forward with dist_type 'l2': l2_similarity = -(AA + BB.t() - 2 AB)."""
  if feat_type == "cl2n":
    inputs = inputs - feat_mean
  if feat_type in ("l2n", "cl2n"):
    inputs = inputs / np.linalg.norm(inputs, 2, 1, keepdims=True)
  ab = inputs @ centroids.T
  aa = (inputs ** 2).sum(axis=1, keepdims=True)
  bb = (centroids ** 2).sum(axis=1, keepdims=True)
  return -(aa + bb.T - 2 * ab)


# --- heads against those definitions ---

def test_linear_head_is_nn_linear_and_keras_dense():
  head = _linear_head(5, 7)
  features = np.random.default_rng(1).normal(size=(4, 7)).astype(np.float32)
  weights, bias = head.kernel.numpy().T, head.bias.numpy()
  np.testing.assert_allclose(np.asarray(head(features)), upstream_linear(features, weights, bias),
                             rtol=1e-5, atol=1e-5)
  dense = keras.layers.Dense(5)
  dense.build((None, 7))
  dense.set_weights([head.kernel.numpy(), head.bias.numpy()])
  np.testing.assert_allclose(np.asarray(head(features)), np.asarray(dense(features)), rtol=1e-5)
  fresh = heads.LinearClassifier(5)
  fresh.build((None, 7))
  assert np.all(fresh.bias.numpy() == 0)  # Dense's default zero bias


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0, 2.0])
def test_tau_norm_on_linear_head_is_tau_norm_py(tau):
  head = _linear_head(6, 8)
  features = np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32)
  weights, bias = head.kernel.numpy().T.astype(np.float64), head.bias.numpy()
  head.norm_power = tau
  np.testing.assert_allclose(np.asarray(head(features)),
                             upstream_tau_norm_logits(features, weights, tau), rtol=1e-4,
                             atol=1e-4)
  if tau == 0.0:
    # tau = 0 is the trained classifier: its logits minus nothing but the bias.
    head.norm_power = None
    trained = np.asarray(head(features))
    head.norm_power = 0.0
    np.testing.assert_allclose(np.asarray(head(features)), trained - bias, rtol=1e-5, atol=1e-5)


def test_lws_on_linear_head_scales_the_biased_logits():
  # TauNormClassifier.py (LWS): x = self.fc(x); x *= self.scales.
  head = _linear_head(4, 3, class_scales=True)
  scales = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
  head.class_scale.assign(scales)
  features = np.random.default_rng(3).normal(size=(2, 3)).astype(np.float32)
  expected = upstream_linear(features, head.kernel.numpy().T, head.bias.numpy()) * scales
  np.testing.assert_allclose(np.asarray(head(features)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("features_mode, upstream_key", [("cl2n", "cl2ncs"), ("l2n", "l2ncs"),
                                                         ("raw", "uncs")])
def test_ncm_is_knn_classifier_with_euclidean_distance(features_mode, upstream_key):
  rng = np.random.default_rng(4)
  labels = np.repeat(np.arange(4), [40, 12, 5, 2])
  train = (rng.normal(size=(len(labels), 6)) + 2.0 * np.eye(4, 6)[labels] + 1.5).astype(np.float32)
  dataset = [(train[i:i + 8], labels[i:i + 8]) for i in range(0, len(labels), 8)]
  head = heads.NCMClassifier(4, features_mode, "euclidean")
  head.build((None, 6))
  centroids, mean = decoupled.fit_ncm_head(_IdentityEmbedding(), head, dataset)
  upstream = upstream_knn_centroids(train.astype(np.float64), labels)
  # The head holds float32 class means, as the model that is served.
  np.testing.assert_allclose(centroids, upstream[upstream_key], rtol=1e-6, atol=1e-7)
  if features_mode == "cl2n":
    np.testing.assert_allclose(mean, upstream["mean"], rtol=1e-6)
  test = rng.normal(size=(10, 6)).astype(np.float32) + 1.5
  expected = upstream_knn_logits(test.astype(np.float64), upstream[upstream_key],
                                 upstream["mean"], features_mode.replace("raw", "un"))
  np.testing.assert_allclose(np.asarray(head(test)), expected, rtol=1e-4, atol=1e-4)


def test_ncm_cosine_on_l2n_is_a_cosine_head_on_the_class_means():
  # Class means of L2-normalised features as the weights of a cosine head (scale 20, no tau).
  rng = np.random.default_rng(5)
  centroids = rng.normal(size=(3, 4)).astype(np.float32)
  head = heads.NCMClassifier(3, "l2n", "cosine", scale=20.0)
  head.build((None, 4))
  head.centroids.assign(centroids)
  cosine = heads.CosineClassifier(3, scale=20.0)
  cosine.build((None, 4))
  cosine.kernel.assign(centroids.T)
  features = rng.normal(size=(5, 4)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(head(features)), np.asarray(cosine(features)), rtol=1e-5)


def test_bad_head_and_ncm_names_list_the_valid_ones():
  with pytest.raises(ValueError, match="unknown head 'mlp'; valid: cosine, linear"):
    heads.build_head("mlp", 3)
  with pytest.raises(ValueError, match="unknown ncm_features 'pca'; valid: cl2n, l2n, raw"):
    heads.NCMClassifier(3, "pca")
  config = config_lib.Config(workdir="/tmp/x")
  for changes, message in [({"model": {"head": "mlp"}}, "unknown head 'mlp'"),
                           ({"long_tail": {"ncm_distance": "l1"}}, "unknown ncm_distance 'l1'"),
                           ({"long_tail": {"decoupled_batchnorm": "x"}},
                            "unknown decoupled_batchnorm 'x'"),
                           ({"long_tail": {"tau": -1.0}}, "tau must be >= 0"),
                           ({"long_tail": {"loss": "ldam"}, "model": {"head": "linear"}},
                            "--loss=ldam needs --head=cosine")]:
    with pytest.raises(ValueError, match=message):
      config.replace(**changes).validate()


# --- cRT / LWS recipe ---

def test_stage_epochs_when_decoupled_epochs_is_not_given():
  # A paper flagfile's --epochs (90, 200) is for the backbone stages, never cRT / LWS.
  config = config_lib.Config(workdir="/tmp/x", optimizer=config_lib.OptimizerConfig(epochs=200))
  assert {stage: config.replace(stage=stage).epochs
          for stage in ("teacher", "crt", "lws")} == {"teacher": 200, "crt": 10, "lws": 5}
  assert config.replace(stage="crt", long_tail={"decoupled_epochs": 30}).epochs == 30


@pytest.mark.parametrize("argv, stage_epochs", [(["--epochs=200"], 10),
                                                (["--epochs=200", "--decoupled_epochs=30"], 30)])
def test_epochs_flag(argv, stage_epochs):
  config = helpers.config_from_argv(
      "--workdir=/tmp/w", "--stage=crt", "--backbone_from=/r", "--head=linear",
      "--decoupled_batchnorm=train", *argv)
  assert config.epochs == stage_epochs and config.model.head == "linear"
  assert config.long_tail.tau is None and config.long_tail.decoupled_batchnorm == "train"
  ncm = helpers.config_from_argv("--workdir=/tmp/w", "--stage=ncm", "--backbone_from=/r",
                                 "--ncm_features=l2n", "--ncm_distance=cosine")
  assert (ncm.long_tail.ncm_features, ncm.long_tail.ncm_distance) == ("l2n", "cosine")


def _batchnorm_variables(model):
  moving, learned = [], []
  for variable in model.backbone.weights:
    (moving if "moving" in variable.path else learned).append(variable)
  return moving, learned


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_decoupled_batchnorm_statistics_follow_batches_only_in_train_mode(batchnorm):
  trained = helpers.tiny_classifier()
  classifier = helpers.tiny_classifier()
  decoupled.copy_backbone(trained, classifier, batchnorm)
  moving, learned = _batchnorm_variables(classifier)
  assert moving and learned
  before = [v.numpy().copy() for v in moving], [v.numpy().copy() for v in learned]
  assert classifier.trainable_weights == [classifier.head.kernel]
  classifier.compile(keras.optimizers.SGD(0.1), weight_decay=5e-4)
  images, labels = helpers.tiny_batch()
  classifier.fit(images * 3.0 + 1.0, labels, batch_size=8, epochs=2, verbose=0)
  for variable, value in zip(learned, before[1]):
    np.testing.assert_array_equal(variable.numpy(), value)  # weights never move
  moved = [not np.array_equal(v.numpy(), value) for v, value in zip(moving, before[0])]
  assert all(moved) if batchnorm == "train" else not any(moved)


# --- the stages end to end on mnist_pairs_lt (validation split) ---

def _tiny_config(workdir, **changes):
  config = helpers.tiny_run_config(
      workdir, data={"dataset": "mnist_pairs_lt", "batch_size": 32, "eval_batch_size": 500},
      model={"head": "linear"}, optimizer={"steps_per_epoch": 3})
  return config.replace(**changes)


@pytest.fixture(scope="module")
def linear_teacher(tmp_path_factory):
  root = tmp_path_factory.mktemp("baselines")
  teacher = _tiny_config(root / "teacher")
  training.run(teacher)
  return teacher.workdir, root


@pytest.mark.slow
def test_linear_teacher_reloads_and_exports(linear_teacher, tmp_path):
  teacher_dir, _ = linear_teacher
  model, saved = run_models.load_classifier(teacher_dir)
  assert saved.model.head == "linear" and isinstance(model.head, heads.LinearClassifier)
  assert saved.model.head_norm_power is None and np.any(model.head.bias.numpy() != 0)
  images, _ = helpers.tiny_batch(4, 16)
  export_dir = serving.export_run(teacher_dir, str(tmp_path / "export"))
  served = tf.saved_model.load(export_dir).signatures["predict_images"](images=tf.constant(images))
  np.testing.assert_allclose(served["probabilities"].numpy(),
                             tf.nn.softmax(model(images)).numpy(), atol=1e-5)


@pytest.mark.slow
def test_tau_norm_sweeps_on_validation_and_reloads(linear_teacher):
  teacher_dir, root = linear_teacher
  config = _tiny_config(root / "tau", stage="tau_norm", long_tail={"backbone_from": teacher_dir})
  result = training.run(config)
  sweep = result["tau_sweep"]
  assert list(sweep) == [f"{t:g}" for t in np.linspace(0, 2, 21).round(1)]
  best = max(sweep, key=lambda t: (sweep[t]["mean_class_accuracy"], -float(t)))
  assert result["tau"] == float(best) and result["tau_chosen_on"] == "val"
  model, saved = run_models.load_classifier(config.workdir)
  assert saved.model.head_norm_power == result["tau"] == saved.long_tail.tau
  assert saved.stage == "tau_norm" and model.head.norm_power == result["tau"]
  # The sweep was scored on the validation split: the chosen tau's entry is val's metrics.
  assert sweep[best]["top1"] == pytest.approx(result["val"]["top1"])
  again = evaluation.evaluate_run(config.workdir)  # what `python -m cbd_tf.evaluate` runs
  assert again["top1"] == pytest.approx(result["top1"]) and again["tau_sweep"] == sweep
  with open(os.path.join(config.workdir, run_dir.METRICS)) as f:
    assert json.load(f)["tau"] == result["tau"]


def test_tau_norm_without_tau_and_without_validation_split_fails_first(tmp_path):
  # A finished-looking mnist_lt teacher (the checks read config.json, classes.json and a
  # readable weights file).
  backbone = _tiny_config(tmp_path / "teacher", data={"dataset": "mnist_lt"})
  os.makedirs(backbone.workdir)
  backbone.save(os.path.join(backbone.workdir, run_dir.CONFIG))
  run_files.write_classes(backbone.workdir, [str(c) for c in range(10)], [1] * 10)
  h5py.File(os.path.join(backbone.workdir, run_dir.FINAL_WEIGHTS), "w").close()
  config = backbone.replace(workdir=str(tmp_path / "tau"), stage="tau_norm",
                            long_tail={"backbone_from": backbone.workdir})
  with pytest.raises(ValueError, match="without --tau picks tau on a validation split, and "
                                       "mnist_lt has none; give --tau"):
    training.run(config)
  assert not os.path.exists(os.path.join(config.workdir, run_dir.CONFIG))
  training.validate_run(config.replace(long_tail={"tau": 1.0}))  # an explicit tau needs none


@pytest.mark.slow
def test_lws_keeps_the_best_validation_epoch_with_training_batchnorm(linear_teacher):
  teacher_dir, root = linear_teacher
  config = _tiny_config(root / "lws", stage="lws", optimizer={"steps_per_epoch": 1},
                        long_tail={"backbone_from": teacher_dir, "decoupled_batchnorm": "train",
                                   "decoupled_epochs": None})
  result = training.run(config)
  saved = config_lib.Config.load(os.path.join(config.workdir, run_dir.CONFIG))
  assert saved.optimizer.epochs == 5  # LWS's recipe, written out
  by_epoch = result["val_top1_by_epoch"]
  assert list(by_epoch) == [str(e) for e in range(1, 6)]
  best = max(range(1, 6), key=lambda e: (by_epoch[str(e)], -e))  # the first of the best
  assert result["best_epoch"] == best and result["best_epoch_val_top1"] == by_epoch[str(best)]
  # The saved classifier is that epoch's: its validation top-1 is the recorded one.
  assert result["val"]["top1"] == pytest.approx(by_epoch[str(best)])
  assert len([n for n in os.listdir(config.workdir) if n.startswith("best_epoch_")]) == 1
  trained, _ = run_models.load_classifier(teacher_dir)
  model, _ = run_models.load_classifier(config.workdir)
  moving, learned = _batchnorm_variables(model)
  trained_moving, trained_learned = _batchnorm_variables(trained)
  for after, before in zip(learned, trained_learned):
    np.testing.assert_array_equal(after.numpy(), before.numpy())
  assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(moving, trained_moving))
  # LWS: the linear head's kernel and bias kept, only the class scales learned.
  np.testing.assert_array_equal(model.head.kernel.numpy(), trained.head.kernel.numpy())
  np.testing.assert_array_equal(model.head.bias.numpy(), trained.head.bias.numpy())
  assert not np.allclose(model.head.class_scale.numpy(), 1.0)


@pytest.mark.slow
def test_ncm_default_is_cl2n_euclidean_and_reloads(linear_teacher):
  teacher_dir, root = linear_teacher
  config = _tiny_config(root / "ncm", stage="ncm", long_tail={"backbone_from": teacher_dir},
                        output={"export_dir": str(root / "ncm_export")})
  result = training.run(config)
  model, saved = run_models.load_classifier(config.workdir)
  assert isinstance(model.head, heads.NCMClassifier)
  assert (model.head.features, model.head.distance) == ("cl2n", "euclidean")
  assert not np.allclose(model.head.feature_mean.numpy(), 0.0)
  again = evaluation.evaluate_run(config.workdir)
  assert again["per_class"] == pytest.approx(result["per_class"])
  images, _ = helpers.tiny_batch(4, 16)
  served = tf.saved_model.load(str(root / "ncm_export")).signatures["predict_images"](
      images=tf.constant(images))
  np.testing.assert_allclose(served["probabilities"].numpy(),
                             tf.nn.softmax(model(images)).numpy(), atol=1e-5)
  assert saved.model.head == "linear"  # the backbone run's head; the NCM head is the stage's
