"""Decoupled classifier re-balancing on the backbone of a finished run (Kang et al. 2020),
as classifier-balancing (facebookresearch) defines each stage.

  crt       classifier re-training: a re-initialised head (the backbone run's kind) trained
            with class-balanced sampling; backbone (and a student's projection) frozen
  lws       learnable weight scaling: only a per-class logit scale is learned (initialised
            to 1, class-balanced sampling); backbone, projection and head frozen
  tau_norm  post-hoc: each class weight w_c divided by |w_c|^tau; on a linear head the bias
            is dropped (tau_norm.py), so tau = 0 is the trained classifier without its bias
  ncm       nearest class mean (KNNClassifier.py): logits = -|x - c|^2 with x the centred,
            L2-normalised embedding (cl2n) and c its class means over the training split
            (evaluation preprocessing); --ncm_features / --ncm_distance choose others

Each has its builder (build_crt, build_lws, build_tau_norm, build_ncm), which its stage
module (cbd_tf/stages/) calls. cRT / LWS train --decoupled_epochs, by default the stage's
recipe (its registry entry's default_epochs: 10 / 5). With --decoupled_batchnorm=train the
frozen backbone's BatchNorm layers normalise with the batch's statistics and update their
moving statistics, as upstream's model.train() does under the frozen weights. Where the data
set has a validation split, the epoch with the best validation top-1 is kept
(callbacks.BestValidationEpoch), as upstream.

tau-norm without --tau sweeps TAU_SWEEP (0, 0.1, ..., 2, as tau_norm.py) on the validation
split and keeps the tau with the best mean per-class accuracy (what tau_norm.py prints as
overall); never the test split. The sweep and the choice go to selection.json and
metrics.json. On a cosine head tau keeps this project's family (heads.CosineClassifier):
tau = 1 is the trained head.

`--backbone_from` names a finished teacher or CBD student run. The decoupled run writes a
normal run directory whose config.json describes the rebuilt head (model.head_norm_power,
model.class_scales; an ncm run's long_tail.ncm_*), so `run_models.load_classifier` and
`python -m cbd_tf.evaluate` reload it.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from cbd_tf import config as config_lib
from cbd_tf import metrics, run_checks, run_models, stage_registry
from cbd_tf.data import pipeline, sources
from cbd_tf.models.classifier import Classifier

TAU_SWEEP = metrics.TAU_SWEEP


def check_backbone_run(directory: str, num_classes: int, image_size: int) -> None:
  """Raises ValueError unless `directory` is a finished teacher / student run fitting the data."""
  run_checks.check_finished_run(directory, num_classes, image_size, role="backbone",
                                stages=stage_registry.backbone_source_stages())


def check_tau_split(config: config_lib.Config, source: sources.Source) -> None:
  """tau-norm: a tau sweep needs a validation split; raises ValueError before any work if
  there is none."""
  if config.long_tail.tau is None and source.val is None:
    raise ValueError(f"--stage=tau_norm without --tau picks tau on a validation split, and "
                     f"{config.data.dataset} has none; give --tau")


def decoupled_config(config: config_lib.Config, source_config: config_lib.Config,
                     head_norm_power: float | None = None, class_scales: bool = False
                     ) -> config_lib.Config:
  """`config` with the backbone run's model section and the head the stage builds."""
  # The stage freezes the backbone itself (copy_backbone); it starts from no other weights.
  # An adapted backbone keeps its tuning, so its adapters exist to copy.
  return config.replace(model={**source_config.model.__dict__, "head_norm_power": head_norm_power,
                               "class_scales": class_scales,
                               "init_from": "", "student_backbone": ""})


def build_crt(config: config_lib.Config, source: sources.Source
              ) -> tuple[Classifier, config_lib.Config, dict]:
  """cRT: a re-initialised head (random: call after seeding) on the frozen backbone, to fit."""
  classifier, config, _ = _on_frozen_backbone(config, source,
                                              config.long_tail.decoupled_batchnorm)
  return classifier, config, {}


def build_lws(config: config_lib.Config, source: sources.Source
              ) -> tuple[Classifier, config_lib.Config, dict]:
  """LWS: the trained head, frozen, under per-class scales (initialised to 1), to fit."""
  classifier, config, trained = _on_frozen_backbone(
      config, source, config.long_tail.decoupled_batchnorm, class_scales=True)
  copy_head(trained.head, classifier.head)
  for weight in (classifier.head.kernel, getattr(classifier.head, "bias", None)):
    if weight is not None:
      weight.trainable = False
  return classifier, config, {}


def build_tau_norm(config: config_lib.Config, source: sources.Source
                   ) -> tuple[Classifier, config_lib.Config, dict]:
  """tau-norm: the trained head with --tau, or the tau of TAU_SWEEP best on validation
  (the sweep and the choice returned as the selection). Final: nothing to fit."""
  classifier, config, trained = _on_frozen_backbone(
      config, source, "frozen", head_norm_power=config.long_tail.tau)
  copy_head(trained.head, classifier.head)
  if config.long_tail.tau is not None:
    return classifier, config, {}
  check_tau_split(config, source)
  sweep = sweep_tau(classifier, pipeline.build_eval_dataset(source.val, config.data),
                    source.train_counts, TAU_SWEEP)
  tau = metrics.best_tau(sweep)
  classifier.head.norm_power = tau
  config = config.replace(model={"head_norm_power": tau}, long_tail={"tau": tau})
  selection = {"tau": tau, "tau_chosen_on": "val", "tau_sweep": {
      f"{t:g}": {**{k: r[k] for k in ("top1", "many", "medium", "few", "ece")},
                 "mean_class_accuracy": metrics.mean_class_accuracy(r)} for t, r in sweep.items()}}
  return classifier, config, selection


def build_ncm(config: config_lib.Config, source: sources.Source
              ) -> tuple[Classifier, config_lib.Config, dict]:
  """NCM: the class means of the training split (evaluation preprocessing) as the head.
  Final: nothing to fit."""
  classifier, config, _ = _on_frozen_backbone(config, source, "frozen")
  fit_ncm_head(classifier, classifier.head,
               pipeline.build_eval_dataset(source.train, config.data))
  return classifier, config, {}


def _on_frozen_backbone(config: config_lib.Config, source: sources.Source, batchnorm: str,
                        head_norm_power: float | None = None, class_scales: bool = False
                        ) -> tuple[Classifier, config_lib.Config, Classifier]:
  """A classifier with the given head on the backbone run's frozen backbone (and
  projection), its config, and the trained backbone run's classifier."""
  trained, source_config = run_models.load_classifier(config.long_tail.backbone_from)
  config = decoupled_config(config, source_config, head_norm_power, class_scales)
  classifier = run_models.build_classifier(config, source.num_classes,
                                           config.long_tail.backbone_from)
  copy_backbone(trained, classifier, batchnorm)
  return classifier, config, trained


def copy_backbone(trained: Classifier, classifier: Classifier, batchnorm: str = "frozen") -> None:
  """Copies backbone (and projection) weights and freezes them.

  frozen: trainable=False, which also keeps Keras 3 BatchNormalization in inference mode, so
  its moving statistics stay put. train: the layers stay trainable but every variable is
  not, so no weight moves while BatchNormalization, still a trainable layer, normalises with
  the batch's statistics in training and updates its moving ones (PyTorch's model.train()
  under requires_grad=False)."""
  if batchnorm not in config_lib.DECOUPLED_BATCHNORM:
    raise ValueError(f"unknown decoupled_batchnorm {batchnorm!r}; "
                     f"valid: {', '.join(config_lib.DECOUPLED_BATCHNORM)}")
  classifier.backbone.set_weights(trained.backbone.get_weights())
  if batchnorm == "frozen":
    classifier.backbone.trainable = False
  else:
    classifier.backbone.trainable = True  # sets every variable trainable: unset them after
    for variable in classifier.backbone.weights:
      variable.trainable = False
  if classifier.projection is not None:
    classifier.projection.set_weights(trained.projection.get_weights())
    classifier.projection.trainable = False


def copy_head(trained_head, head) -> None:
  """The trained head's kernel (and bias of a linear head) into `head`."""
  head.kernel.assign(trained_head.kernel)
  if hasattr(trained_head, "bias"):
    head.bias.assign(trained_head.bias)


def fit_ncm_head(model, head, dataset) -> tuple[np.ndarray, np.ndarray]:
  """Sets the NCM `head`'s feature mean and class means from (images, labels) `dataset`
  embedded by `model`, as classifier-balancing's get_knncentroids: the mean over every
  training example, then the class means of the embeddings as the head's own transform
  (heads.NCMClassifier.transform: cl2n, l2n or raw) sees them. A class without examples gets
  zeros. cl2n takes two passes (the mean first) rather than holding every embedding.
  Returns (centroids, feature mean)."""
  if head.features == "cl2n":
    total, count = 0.0, 0
    for images, _ in dataset:
      embedded = np.asarray(model.embed(images, training=False), np.float64)
      total, count = total + embedded.sum(axis=0), count + len(embedded)
    head.feature_mean.assign(np.asarray(total / max(count, 1), np.float32))
  sums, counts = None, np.zeros(head.num_classes)
  for images, labels in dataset:
    transformed = np.asarray(head.transform(model.embed(images, training=False)), np.float64)
    if sums is None:
      sums = np.zeros((head.num_classes, transformed.shape[-1]))
    np.add.at(sums, np.asarray(labels), transformed)
    counts += np.bincount(np.asarray(labels), minlength=head.num_classes)
  head.centroids.assign((sums / np.maximum(counts, 1)[:, None]).astype(np.float32))
  return head.centroids.numpy(), head.feature_mean.numpy()


def sweep_tau(classifier: Classifier, dataset, train_counts, taus: Iterable[float]) -> dict:
  """{tau: metrics} of tau-normalising `classifier`'s head, on (images, labels) `dataset`.

  Embeds the split once; the head's norm_power is set per tau and restored afterwards.
  """
  features, labels = [], []
  for images, batch_labels in dataset:
    features.append(classifier.embed(images, training=False))
    labels.append(np.asarray(batch_labels))
  labels = np.concatenate(labels)
  head, saved_power = classifier.head, classifier.head.norm_power
  results = {}
  try:
    for tau in taus:
      head.norm_power = float(tau)
      logits = np.concatenate([np.asarray(head(f), np.float64) for f in features])
      results[float(tau)] = metrics.logits_accuracy(logits, labels, train_counts)
  finally:
    head.norm_power = saved_power
  return results
