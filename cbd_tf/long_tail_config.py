"""Settings of the re-balancing baselines beside CBD (loss-level and decoupled stages).

A section of cbd_tf.config.Config (`config.long_tail`); standard library only.
"""

from __future__ import annotations

import dataclasses

from cbd_tf.settings import setting

LOSSES = ("ce", "logit_adjusted", "balanced_softmax", "focal", "class_balanced", "ldam",
          "class_balanced_focal")
# --stage=ncm, as classifier-balancing's KNNClassifier (feat_type / dist_type).
NCM_FEATURES = ("cl2n", "l2n", "raw")
NCM_DISTANCES = ("euclidean", "cosine")
# cRT / LWS: what the frozen backbone's BatchNorm does (frozen: inference mode; train:
# statistics follow the class-balanced batches, weights still frozen, as upstream).
DECOUPLED_BATCHNORM = ("frozen", "train")


@dataclasses.dataclass(frozen=True)
class LongTailConfig:
  """Re-balancing baselines beside CBD: loss-level (teacher stage) and decoupled stages.

  Three settings are called tau, after their papers, each for its own method:
  logit_adjust_tau (a training loss), posthoc_tau (evaluation, any stage) and tau
  (--stage=tau_norm). They are independent; each flag's help names where it applies.
  """
  loss: str = setting(
      "ce", "loss", "--stage=teacher loss: ce | logit_adjusted | balanced_softmax | focal | "
      "class_balanced | ldam (with DRW) | class_balanced_focal (sigmoid, Cui et al.'s "
      "large-scale loss).", choices=LOSSES)
  logit_adjust_tau: float = setting(  # Menon et al. 2021.
      1.0, "logit_adjust_tau",
      "tau of --loss=logit_adjusted: logits + tau * log(prior) in training.")
  # The long-tail papers' focal baseline (LDAM-DRW, Cui et al.).
  focal_gamma: float = setting(1.0, "focal_gamma", "gamma of --loss=focal.")
  # Cui et al. 2019 effective number; also LDAM's DRW.
  class_balanced_beta: float = setting(
      0.9999, "class_balanced_beta", "beta of the effective number (1 - beta^n) / (1 - beta): "
      "--loss=class_balanced and the DRW weights of --loss=ldam.")
  ldam_max_margin: float = setting(  # Cao et al. 2019.
      0.5, "ldam_max_margin", "Largest LDAM margin (rarest class), in cosine units.")
  ldam_scale: float = setting(
      30.0, "ldam_scale", "s of --loss=ldam: CE of s * (cos - m_y); the head's --cosine_scale "
      "is divided out, so it stays the model's (and CBD's) sigma.")
  # Cui et al.'s large-scale sigmoid focal loss with class-balanced weights.
  class_balanced_focal_beta: float = setting(
      0.999, "class_balanced_focal_beta",
      "beta of the class-balanced weights of --loss=class_balanced_focal.")
  class_balanced_focal_gamma: float = setting(
      0.5, "class_balanced_focal_gamma", "gamma of --loss=class_balanced_focal.")
  drw_epoch: int = setting(
      -1, "drw_epoch", "Epoch at which --loss=ldam turns on class-balanced weights; negative: "
      "4/5 of --epochs; >= --epochs: never.")
  # A number or "val" (a float from the Python API is a number too).
  posthoc_tau: str = setting(
      "0", "posthoc_tau", "Post-hoc logit adjustment (Menon et al.): evaluation and an export "
      "subtract tau * log(class prior) from the logits. A number, or val: the tau of 0, 0.1, "
      "..., 2 with the best mean per-class accuracy on the validation split.")
  backbone_from: str = setting(
      "", "backbone_from",
      "Finished teacher or student run whose backbone a decoupled stage keeps.")
  tau: float | None = setting(
      None, "tau", "--stage=tau_norm: each class weight is divided by its norm^tau. Not given: "
      "tau is swept over 0, 0.1, ..., 2 on the validation split (never test).")
  decoupled_batchnorm: str = setting(
      "frozen", "decoupled_batchnorm", "--stage=crt / lws: frozen (the backbone's BatchNorm in "
      "inference mode) | train (its statistics follow the class-balanced batches, weights "
      "frozen, as classifier-balancing).", choices=DECOUPLED_BATCHNORM)
  # None: the stage's recipe (stage_registry: default_epochs).
  decoupled_epochs: int | None = setting(
      None, "decoupled_epochs", "Epochs of --stage=crt / lws. Not given: classifier-balancing's "
      "ImageNet-LT recipes, 10 for crt and 5 for lws (iNaturalist's cRT: 30).")
  decoupled_warmup_epochs: float = setting(
      0.0, "decoupled_warmup_epochs", "Linear warm-up epochs of --stage=crt / lws (their "
      "--warmup_epochs): none in classifier-balancing's recipes.")
  ncm_features: str = setting(
      "cl2n", "ncm_features", "--stage=ncm feature transform: cl2n (centred, L2-normalised; "
      "upstream's default) | l2n | raw.", choices=NCM_FEATURES)
  ncm_distance: str = setting(
      "euclidean", "ncm_distance", "--stage=ncm: euclidean (logits = -squared distance; "
      "upstream's default) | cosine (cosine_scale * cosine).", choices=NCM_DISTANCES)
