"""Decoupled classifiers on fixed features, and every stage through training.run on tiny runs."""

import numpy as np
import pytest

from cbd_tf import decoupled, evaluation, metrics, run_models, training
from cbd_tf.models import heads
from tests import helpers


class _IdentityEmbedding:
  """Stands in for a Classifier whose embedding is its input."""

  def __init__(self, head=None):
    self.head = head

  def embed(self, images, training=False):
    return images


def _head(kernel, norm_power=1.0):
  head = heads.CosineClassifier(kernel.shape[1], scale=10.0, norm_power=norm_power)
  head.build((None, kernel.shape[0]))
  head.kernel.assign(kernel)
  return head


def _ncm_head(num_classes, width, features, distance="euclidean"):
  head = heads.NCMClassifier(num_classes, features, distance)
  head.build((None, width))
  return head


def test_ncm_on_separable_clusters():
  rng = np.random.default_rng(0)
  centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  labels = np.repeat(np.arange(3), [50, 10, 2])  # long-tailed
  features = centres[labels] * rng.uniform(0.5, 3.0, (len(labels), 1)) + rng.normal(
      0, 0.05, (len(labels), 3))
  dataset = [(features[i:i + 16].astype(np.float32), labels[i:i + 16])
             for i in range(0, len(labels), 16)]
  means, _ = decoupled.fit_ncm_head(_IdentityEmbedding(), _ncm_head(3, 3, "l2n"), dataset)
  unit = features / np.linalg.norm(features, axis=1, keepdims=True)
  np.testing.assert_allclose(means, [unit[labels == c].mean(axis=0) for c in range(3)],
                             rtol=1e-6)
  np.testing.assert_allclose(means / np.linalg.norm(means, axis=1, keepdims=True), centres,
                             atol=0.05)
  test_points = (centres * 2 + rng.normal(0, 0.05, (3, 3))).astype(np.float32)
  for features_mode, distance in [("l2n", "cosine"), ("cl2n", "euclidean"), ("raw", "euclidean")]:
    head = _ncm_head(3, 3, features_mode, distance)
    decoupled.fit_ncm_head(_IdentityEmbedding(), head, dataset)
    assert list(np.argmax(np.asarray(head(test_points)), axis=-1)) == [0, 1, 2]
  one_class = [(np.ones((1, 4), np.float32), np.array([0]))]
  empty_classes = decoupled.fit_ncm_head(_IdentityEmbedding(), _ncm_head(3, 4, "l2n"),
                                         one_class)[0][1:]
  assert empty_classes.tolist() == np.zeros((2, 4)).tolist()


def test_tau_norm_by_hand():
  # Class weights (2, 0) and (0, 1): norms 2 and 1, mean 1.5; the feature is equally close.
  kernel = np.array([[2.0, 0.0], [0.0, 1.0]], np.float32)
  feature = np.array([[1.0, 1.0]], np.float32)
  cosine = 10.0 / np.sqrt(2)
  plain = heads.CosineClassifier(2, scale=10.0)
  plain.build((None, 2))
  plain.kernel.assign(kernel)
  # tau = 1 is the cosine head itself (it already divides by the norm).
  np.testing.assert_allclose(np.asarray(_head(kernel, 1.0)(feature)), np.asarray(plain(feature)))
  # tau = 0: the raw kernel, |w_c| / mean |w| = (4/3, 2/3): the large-norm class wins.
  np.testing.assert_allclose(np.asarray(_head(kernel, 0.0)(feature)),
                             [[cosine * 4 / 3, cosine * 2 / 3]], rtol=1e-5)
  # tau = 2 divides once more by the relative norm: the small-norm class wins.
  np.testing.assert_allclose(np.asarray(_head(kernel, 2.0)(feature)),
                             [[cosine * 3 / 4, cosine * 3 / 2]], rtol=1e-5)


def test_sweep_tau_scores_each_tau_and_restores_the_head():
  kernel = np.array([[2.0, 0.0], [0.0, 1.0]], np.float32)
  head = _head(kernel)
  # Class 1 images lean slightly toward class 0's direction: only tau > 1 gets them right.
  features = np.array([[1.0, 0.2], [1.0, 0.9], [1.0, 0.95]], np.float32)
  labels = np.array([0, 1, 1])
  sweep = decoupled.sweep_tau(_IdentityEmbedding(head), [(features, labels)],
                              np.array([200, 5]), [0.0, 1.0, 2.0])
  assert [sweep[t]["top1"] for t in (0.0, 1.0, 2.0)] == pytest.approx([1 / 3, 1 / 3, 1.0])
  assert "ece" in sweep[2.0]
  assert metrics.best_tau(sweep) == 2.0
  assert head.norm_power == 1.0


_tiny_config = helpers.tiny_run_config


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
  """A teacher trained with LDAM-DRW (the loss-stage smoke run) and a CBD student on it."""
  root = tmp_path_factory.mktemp("decoupled")
  teacher = _tiny_config(root / "teacher", long_tail={"loss": "ldam", "drw_epoch": 0})
  training.run(teacher)
  student = _tiny_config(root / "student", stage="student",
                         distill={"teachers": (teacher.workdir,)})
  training.run(student)
  return teacher.workdir, student.workdir, root


@pytest.fixture(scope="module")
def crt_run(trained_runs):
  """A finished cRT run on the student, for the tests that need one as input."""
  _, student_dir, root = trained_runs
  config = _tiny_config(root / "crt_input", stage="crt", long_tail={"backbone_from": student_dir})
  training.run(config)
  return config.workdir


def _weights(layer):
  return [w.numpy() for w in layer.weights]  # includes BatchNorm moving statistics


@pytest.mark.slow
@pytest.mark.parametrize("stage, backbone", [("crt", "student"), ("lws", "teacher"),
                                             ("tau_norm", "teacher"), ("ncm", "student")])
def test_decoupled_stage_keeps_backbone_and_reloads(trained_runs, stage, backbone):
  teacher_dir, student_dir, root = trained_runs
  source_dir = teacher_dir if backbone == "teacher" else student_dir
  config = _tiny_config(root / stage, stage=stage, long_tail={
      "backbone_from": source_dir, "tau": 0.5 if stage == "tau_norm" else None})
  result = training.run(config)
  assert {"top1", "many", "medium", "few", "ece", "per_class"} <= set(result)
  trained, _ = run_models.load_classifier(source_dir)
  model, saved = run_models.load_classifier(config.workdir)
  assert saved.stage == stage and saved.model.backbone == "resnet8"
  for before, after in zip(_weights(trained.backbone), _weights(model.backbone)):
    np.testing.assert_array_equal(before, after)
  if backbone == "student":
    assert saved.model.projection_dim == 64
    for before, after in zip(_weights(trained.projection), _weights(model.projection)):
      np.testing.assert_array_equal(before, after)
  if stage == "ncm":
    assert not np.allclose(model.head.centroids.numpy(), 0.0)
  else:
    kernel_kept = np.allclose(trained.head.kernel.numpy(), model.head.kernel.numpy())
    assert kernel_kept == (stage in ("lws", "tau_norm"))
  if stage == "lws":
    assert saved.model.class_scales and not np.allclose(model.head.class_scale.numpy(), 1.0)
  if stage == "tau_norm":
    assert saved.model.head_norm_power == 0.5
  # The reloaded run reproduces its metrics, as `python -m cbd_tf.evaluate` does.
  source = training.validate_run(saved)
  again = evaluation.evaluate_and_save(model, saved, source)
  assert again["top1"] == pytest.approx(result["top1"])


@pytest.mark.slow
def test_posthoc_tau_is_applied_at_evaluation_and_on_reload(trained_runs):
  teacher_dir, _, root = trained_runs
  config = _tiny_config(root / "posthoc", stage="tau_norm",
                        long_tail={"backbone_from": teacher_dir, "tau": 1.0, "posthoc_tau": 1.0})
  result = training.run(config)
  model, saved = run_models.load_classifier(config.workdir)
  assert saved.long_tail.posthoc_tau == 1.0
  again = evaluation.evaluate_and_save(model, saved, training.validate_run(saved))
  assert again["per_class"] == pytest.approx(result["per_class"])


@pytest.mark.slow
def test_decoupled_stage_needs_a_finished_backbone(tmp_path, crt_run):
  with pytest.raises(ValueError, match="needs --backbone_from"):
    _tiny_config(tmp_path, stage="crt").validate()
  with pytest.raises(ValueError, match="has no config.json"):
    training.validate_run(_tiny_config(tmp_path / "a", stage="lws",
                                       long_tail={"backbone_from": str(tmp_path)}))
  with pytest.raises(ValueError, match="is a crt run; valid: a finished teacher or student"):
    training.validate_run(_tiny_config(tmp_path / "b", stage="ncm",
                                       long_tail={"backbone_from": crt_run}))
  with pytest.raises(ValueError, match="--loss=focal applies to --stage=teacher, not student"):
    _tiny_config(tmp_path, stage="student", distill={"teachers": ("x",)},
                 long_tail={"loss": "focal"}).validate()


@pytest.mark.parametrize("argv, expected", [
    (["--loss=logit_adjusted", "--logit_adjust_tau=1.5"],
     {"loss": "logit_adjusted", "logit_adjust_tau": 1.5}),
    (["--loss=balanced_softmax"], {"loss": "balanced_softmax"}),
    (["--loss=focal", "--focal_gamma=1"], {"loss": "focal", "focal_gamma": 1.0}),
    (["--loss=class_balanced", "--class_balanced_beta=0.99"],
     {"loss": "class_balanced", "class_balanced_beta": 0.99}),
    (["--loss=ldam", "--drw_epoch=3", "--ldam_max_margin=0.3"],
     {"loss": "ldam", "drw_epoch": 3, "ldam_max_margin": 0.3}),
    (["--posthoc_tau=1"], {"posthoc_tau": "1"}),
    (["--posthoc_tau=val"], {"posthoc_tau": "val"}),
    (["--stage=crt", "--backbone_from=/r"], {"backbone_from": "/r"}),
    (["--stage=lws", "--backbone_from=/r"], {"backbone_from": "/r"}),
    (["--stage=tau_norm", "--backbone_from=/r", "--tau=0.7"], {"backbone_from": "/r", "tau": 0.7}),
    (["--stage=ncm", "--backbone_from=/r"], {"backbone_from": "/r"}),
])
def test_every_method_selectable_from_flags(argv, expected):
  config = helpers.config_from_argv("--workdir=/tmp/w", *argv)
  for name, value in expected.items():
    assert getattr(config.long_tail, name) == value
  stage = next((a.split("=")[1] for a in argv if a.startswith("--stage=")), "teacher")
  assert config.stage == stage
  assert config.sampling == ("instance" if stage == "teacher" else "class_balanced")
