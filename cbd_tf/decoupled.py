"""Decoupled classifier re-balancing on the backbone of a finished run (Kang et al. 2020).

  crt       classifier re-training: a re-initialised cosine head trained with class-balanced
            sampling; backbone (and a student's projection) frozen
  lws       learnable weight scaling: only a per-class logit scale is learned (initialised
            to 1, class-balanced sampling); backbone, projection and head frozen
  tau_norm  post-hoc: each raw class weight w_c divided by |w_c|^tau
  ncm       nearest class mean: class c scores cos(mean_c, f), mean_c the mean
            L2-normalised training feature of class c (eval preprocessing)

`--backbone_from` names a finished teacher or CBD student run. The decoupled run writes a
normal run directory whose config.json describes the rebuilt head (model.head_norm_power,
model.class_scales), so `run_dir.load_classifier` and `python -m cbd_tf.evaluate` reload it.

tau-norm on a cosine head: the head already divides each class weight by its norm, so the
trained classifier is tau = 1 of the family w_c / |w_c|^tau, and tau = 0 is the raw kernel
used as a linear classifier on the L2-normalised feature. (On a plain linear head, tau = 0
is the trained classifier, as in the paper.) `sweep_tau` scores a list of taus on a split
you give it; pick tau on a validation split, never on the test split.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from cbd_tf import config as config_lib
from cbd_tf import metrics, run_dir
from cbd_tf.data import pipeline, sources
from cbd_tf.models.classifier import Classifier

# Stages that fit (the others are post-hoc and train nothing).
TRAINED_STAGES = ("crt", "lws")
_BACKBONE_STAGES = ("teacher", "student")


def check_backbone_run(directory: str, num_classes: int, image_size: int) -> None:
  """Raises ValueError unless `directory` is a finished teacher / student run fitting the data."""
  run_dir.check_trained(directory)
  source_config = config_lib.Config.load(os.path.join(directory, run_dir.CONFIG))
  if source_config.stage not in _BACKBONE_STAGES:
    raise ValueError(f"--backbone_from={directory!r} is a {source_config.stage} run; valid: "
                     f"a finished {' or '.join(_BACKBONE_STAGES)} run")
  class_names, _ = run_dir.read_classes(directory)
  if len(class_names) != num_classes:
    raise ValueError(f"--backbone_from={directory!r} has {len(class_names)} classes, the data "
                     f"has {num_classes}")
  if source_config.data.image_size != image_size:
    raise ValueError(f"--backbone_from={directory!r} takes {source_config.data.image_size}px "
                     f"images, this run {image_size}px")


def decoupled_config(config: config_lib.Config, source_config: config_lib.Config
                     ) -> config_lib.Config:
  """`config` with the backbone run's model section and the head the stage builds."""
  head = {"crt": (1.0, False), "lws": (1.0, True), "tau_norm": (config.long_tail.tau, False),
          "ncm": (1.0, False)}
  if config.stage not in head:
    raise ValueError(f"unknown decoupled stage {config.stage!r}; valid: {', '.join(head)}")
  norm_power, class_scales = head[config.stage]
  return config.replace(model={**source_config.model.__dict__, "head_norm_power": norm_power,
                               "class_scales": class_scales})


def build_decoupled_classifier(config: config_lib.Config, source: sources.Source
                               ) -> tuple[Classifier, config_lib.Config]:
  """The stage's classifier on the frozen backbone of `config.long_tail.backbone_from`, and
  the config to save with it. crt / lws still need fitting; tau_norm / ncm are final.
  Call inside the strategy scope, after seeding (cRT's fresh head is random)."""
  trained, source_config = run_dir.load_classifier(config.long_tail.backbone_from)
  config = decoupled_config(config, source_config)
  classifier = run_dir.build_classifier(config, source.num_classes)
  copy_backbone(trained, classifier)
  if config.stage != "crt":
    classifier.head.kernel.assign(trained.head.kernel)
  if config.stage == "lws":
    classifier.head.kernel.trainable = False
  if config.stage == "ncm":
    features_dataset = pipeline.build_eval_dataset(source.train, config.data)
    means = class_mean_features(classifier, features_dataset, source.num_classes)
    classifier.head.kernel.assign(means.T)
  return classifier, config


def copy_backbone(trained: Classifier, classifier: Classifier) -> None:
  """Copies backbone (and projection) weights, then freezes them: trainable=False also keeps
  Keras 3 BatchNormalization in inference mode, so its moving statistics stay put."""
  classifier.backbone.set_weights(trained.backbone.get_weights())
  classifier.backbone.trainable = False
  if classifier.projection is not None:
    classifier.projection.set_weights(trained.projection.get_weights())
    classifier.projection.trainable = False


def class_mean_features(classifier: Classifier, dataset, num_classes: int) -> np.ndarray:
  """(C, D) mean L2-normalised embedding per class; a class without examples gets zeros."""
  sums, counts = None, np.zeros(num_classes)
  for images, labels in dataset:
    features = np.asarray(classifier.embed(images, training=False), np.float64)
    features /= np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)
    if sums is None:
      sums = np.zeros((num_classes, features.shape[-1]))
    np.add.at(sums, np.asarray(labels), features)
    counts += np.bincount(np.asarray(labels), minlength=num_classes)
  return sums / np.maximum(counts, 1)[:, None]


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
      probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
      probabilities /= probabilities.sum(axis=-1, keepdims=True)
      results[float(tau)] = metrics.shot_group_accuracy(
          logits.argmax(axis=-1), labels, train_counts, probabilities.max(axis=-1))
  finally:
    head.norm_power = saved_power
  return results


def best_tau(sweep: dict) -> float:
  """The tau with the highest mean per-class accuracy (balanced accuracy); ties -> smaller tau."""
  def balanced(result):
    values = [a for a in result["per_class"] if a is not None]
    return float(np.mean(values)) if values else -1.0
  return max(sorted(sweep), key=lambda tau: balanced(sweep[tau]))
