"""What a run directory holds, and how a trained classifier is rebuilt from one.

  config.json        the validated Config of the run
  classes.json       class names and training-image counts, from the labels actually read
  final.weights.h5   classifier weights at the end of training (written last, atomically)
  metrics.json       evaluation: top1, many, medium, few, per_class, num_test, ece (test
                     split), and "val" with the same keys where the data set has one
  environment.json   versions, devices, batch, label hashes of each split (environment.py)
  selection.json     decoupled stages: what was chosen on the validation split (tau-norm's
                     tau and sweep, cRT / LWS's best epoch); copied into metrics.json
  best_epoch.*       cRT / LWS with a validation split: the best epoch so far (weights and
                     record), so a resumed run still compares against earlier epochs
"""

from __future__ import annotations

import json
import os

import numpy as np

from cbd_tf import config as config_lib
from cbd_tf.models.classifier import Classifier

CONFIG = "config.json"
CLASSES = "classes.json"
FINAL_WEIGHTS = "final.weights.h5"
METRICS = "metrics.json"
ENVIRONMENT = "environment.json"
SELECTION = "selection.json"
BEST_EPOCH_WEIGHTS = "best_epoch.weights.h5"
BEST_EPOCH_RECORD = "best_epoch.json"


def write_json(path: str, value) -> None:
  """Writes through a temporary file and a rename, so a reader never sees half a file."""
  temporary = f"{path}.tmp"
  with open(temporary, "w") as f:
    json.dump(value, f, indent=2)
    f.write("\n")
  os.replace(temporary, path)


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def write_classes(run_dir: str, class_names, train_counts) -> None:
  write_json(os.path.join(run_dir, CLASSES), {
      "class_names": list(class_names), "train_counts": [int(c) for c in train_counts]})


def read_classes(run_dir: str) -> tuple[list[str], np.ndarray]:
  values = read_json(os.path.join(run_dir, CLASSES))
  return values["class_names"], np.asarray(values["train_counts"], dtype=np.int64)


def is_trained(run_dir: str) -> bool:
  return os.path.exists(os.path.join(run_dir, FINAL_WEIGHTS))


def check_trained(run_dir: str) -> None:
  """Raises ValueError naming what a finished run directory lacks."""
  for name in (CONFIG, CLASSES, FINAL_WEIGHTS):
    if not os.path.exists(os.path.join(run_dir, name)):
      raise ValueError(f"run directory {run_dir!r} has no {name} (not a finished training run)")


def build_classifier(config: config_lib.Config, num_classes: int) -> Classifier:
  """The classifier `config` describes, untrained. An ncm run's head is the NCM head (its
  model.head names the head its backbone was trained with)."""
  return Classifier(config.model.backbone, num_classes, config.data.image_size,
                    cosine_scale=config.model.cosine_scale,
                    projection_dim=config.model.projection_dim,
                    head_norm_power=config.model.head_norm_power,
                    class_scales=config.model.class_scales,
                    sync_batchnorm=config.distribute.sync_batchnorm,
                    head="ncm" if config.stage == "ncm" else config.model.head,
                    ncm_features=config.long_tail.ncm_features,
                    ncm_distance=config.long_tail.ncm_distance)


def save_final_weights(model: Classifier, run_dir: str) -> None:
  temporary = os.path.join(run_dir, "partial." + FINAL_WEIGHTS)
  model.save_weights(temporary)
  os.replace(temporary, os.path.join(run_dir, FINAL_WEIGHTS))


def load_classifier(run_dir: str) -> tuple[Classifier, config_lib.Config]:
  """The trained classifier of a finished run, and that run's config."""
  check_trained(run_dir)
  config = config_lib.Config.load(os.path.join(run_dir, CONFIG))
  class_names, _ = read_classes(run_dir)
  model = build_classifier(config, len(class_names))
  model.load_weights(os.path.join(run_dir, FINAL_WEIGHTS))
  return model, config
