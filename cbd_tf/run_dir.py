"""Every file name of a run, a pipeline and an export, and how a trained classifier is
rebuilt from a run. No other module spells one of these names.

A run directory:
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
  backbone.json      a keras_hub backbone's architecture (converter, image model, pooling),
                     so the run rebuilds it with no network
  pretrained_backbone.weights.h5
                     teacher / student runs on a keras_hub backbone: the preset's weights
                     the run started from (pretrained.py)
  preset_teachers/   a student's keras_hub teachers, each NAME.json + NAME.weights.h5
  serving_warmup_images.tfrecord
                     a few encoded evaluation images, replayed by TF Serving at load
  writer.lock        pid and host of the process training here, while it does (run_lock.py)
  checkpoints/       the training state, for resuming (resume.py)
  tensorboard/       train/* and val/* scalars, profiles (callbacks.py)
  report.md, report.png   per-class accuracy against training-image count (report.py)

A pipeline directory (--stage=pipeline): teachers/<augmentation>_<seed>/ and student/, each
a run directory; comparison.json and comparison.txt (every run's metrics), report.md and
report.png. A data cache (--data_cache_dir) lists the image files it skipped in
skipped_files.txt (data/source_cache.py names it: the data layer imports nothing above it).

An export (serving.py): saved_model.pb, and under assets/ class_names.txt,
train_counts.txt, the run's config.json and serving.json; under assets.extra/
TF Serving's tf_serving_warmup_requests.
"""

from __future__ import annotations

import glob
import json
import os

import h5py
import keras
import numpy as np

from cbd_tf import config as config_lib
from cbd_tf.models import keras_hub_backbone
from cbd_tf.models.classifier import Classifier

CONFIG = "config.json"
CLASSES = "classes.json"
FINAL_WEIGHTS = "final.weights.h5"
METRICS = "metrics.json"
ENVIRONMENT = "environment.json"
SELECTION = "selection.json"
BEST_EPOCH_WEIGHTS = "best_epoch.weights.h5"
BEST_EPOCH_RECORD = "best_epoch.json"
BACKBONE_ARCHITECTURE = "backbone.json"
PRETRAINED_BACKBONE = "pretrained_backbone.weights.h5"
PRESET_TEACHERS = "preset_teachers"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
# Written beside its final name, then renamed, so a reader never sees half a file.
PARTIAL_PREFIX = "partial."

# A few encoded images of the evaluation split, for TF Serving's warm-up record
# (serving_warmup.py).
WARMUP_IMAGES = "serving_warmup_images.tfrecord"
# The process training in the directory (run_lock.py).
WRITER_LOCK = "writer.lock"

TEACHERS = "teachers"
STUDENT = "student"
COMPARISON = "comparison.json"
COMPARISON_TEXT = "comparison.txt"


SAVED_MODEL = "saved_model.pb"
EXPORT_ASSETS = "assets"
CLASS_NAMES_ASSET = "class_names.txt"
TRAIN_COUNTS_ASSET = "train_counts.txt"
CONFIG_ASSET = CONFIG
SERVING_ASSET = "serving.json"

# How check_finished_run names a run of each role: (the directory, the run it would serve).
_ROLES = {"teacher": ("teacher {!r}", "the student"),
          "backbone": ("--backbone_from={!r}", "this run")}


def write_json(path: str, value) -> None:
  """Writes through a temporary file and a rename, so a reader never sees half a file."""
  temporary = f"{path}.tmp"
  with open(temporary, "w") as f:
    json.dump(value, f, indent=2)
    f.write("\n")
  os.replace(temporary, path)


def read_json(path: str):
  """The JSON value in `path`; ValueError naming the file if it is not JSON (a damaged or
  half-copied file)."""
  with open(path) as f:
    try:
      return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
      raise ValueError(f"{path} is damaged: not JSON ({error})") from None


class RunFault(RuntimeError):
  """A fault in a run's files met during training: the CLI prints it as one line."""


class WriteError(RunFault):
  """A run file could not be written (disk full, read-only directory); what was there
  before is kept."""


def check_weights_file(path: str) -> None:
  """ValueError naming `path` unless it is a readable HDF5 weights file: every weight is
  read, so a truncated or overwritten file stops here rather than mid-run."""
  try:
    with h5py.File(path, "r") as weights:
      weights.visititems(lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None)
  except (OSError, KeyError, RuntimeError) as error:
    raise ValueError(f"{path} is damaged: not a readable weights file "
                     f"({str(error).splitlines()[0] if str(error) else type(error).__name__})"
                     ) from None


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


def check_finished_run(directory: str, num_classes: int, image_size: int, role: str,
                       stages: tuple[str, ...] = ()) -> None:
  """Raises ValueError unless `directory` is a finished run whose classes and image size fit
  the data; `role` ("teacher" or "backbone") says how the message names it; `stages`, if
  given, are the stages the run may have been."""
  if role not in _ROLES:
    raise ValueError(f"unknown run role {role!r}; valid: {', '.join(_ROLES)}")
  name, user = _ROLES[role][0].format(directory), _ROLES[role][1]
  check_trained(directory)
  run_config = config_lib.Config.load(os.path.join(directory, CONFIG))
  if stages and run_config.stage not in stages:
    raise ValueError(f"{name} is a {run_config.stage} run; valid: a finished "
                     f"{' or '.join(stages)} run")
  class_names, _ = read_classes(directory)
  if len(class_names) != num_classes:
    raise ValueError(f"{name} has {len(class_names)} classes, the data has {num_classes}")
  # A keras_hub backbone's converter resizes to what its model takes.
  if (run_config.data.image_size != image_size
      and not keras_hub_backbone.is_preset(run_config.model.backbone)):
    raise ValueError(f"{name} takes {run_config.data.image_size}px images, {user} "
                     f"{image_size}px")
  check_weights_file(os.path.join(directory, FINAL_WEIGHTS))


def teacher_dir(pipeline_dir: str, name: str) -> str:
  """Where a pipeline trains the teacher `name` (config.teacher_run_name)."""
  return os.path.join(pipeline_dir, TEACHERS, name)


def student_dir(pipeline_dir: str) -> str:
  return os.path.join(pipeline_dir, STUDENT)


def run_directories(directory: str) -> dict[str, str]:
  """{name: run dir}: the directory itself, or a pipeline's teachers and student."""
  if os.path.exists(os.path.join(directory, CONFIG)):
    return {os.path.basename(os.path.normpath(directory)): directory}
  runs = {os.path.basename(d): d
          for d in sorted(glob.glob(os.path.join(directory, TEACHERS, "*")))}
  if os.path.isdir(student_dir(directory)):
    runs[STUDENT] = student_dir(directory)
  if not runs:
    raise ValueError(f"{directory!r} is neither a run directory nor a pipeline directory")
  return runs


def build_classifier(config: config_lib.Config, num_classes: int,
                     directory: str | None = None) -> Classifier:
  """The classifier `config` describes, untrained. An ncm run's head is the NCM head (its
  model.head names the head its backbone was trained with). A keras_hub backbone is rebuilt
  from `directory`'s backbone.json if there is one (no network), else from its preset."""
  backbone = config.model.backbone
  architecture = os.path.join(directory or "", BACKBONE_ARCHITECTURE)
  if keras_hub_backbone.is_preset(backbone) and directory and os.path.exists(architecture):
    backbone = read_json(architecture)
  return Classifier(backbone, num_classes, config.data.image_size,
                    freeze_backbone=config.model.freeze_backbone,
                    cosine_scale=config.model.cosine_scale,
                    projection_dim=config.model.projection_dim,
                    head_norm_power=config.model.head_norm_power,
                    class_scales=config.model.class_scales,
                    sync_batchnorm=config.distribute.sync_batchnorm,
                    head="ncm" if config.stage == "ncm" else config.model.head,
                    ncm_features=config.long_tail.ncm_features,
                    ncm_distance=config.long_tail.ncm_distance)


def write_backbone_architecture(classifier: Classifier, directory: str) -> None:
  """backbone.json for a keras_hub backbone, unless keep_pretrained_backbone wrote it;
  nothing for a built-in one (its name is enough)."""
  path = os.path.join(directory, BACKBONE_ARCHITECTURE)
  if (isinstance(classifier.backbone, keras_hub_backbone.KerasHubBackbone)
      and not os.path.exists(path)):
    write_json(path, keras.saving.serialize_keras_object(classifier.backbone))


def save_layer(layer: keras.layers.Layer, architecture: str, weights: str) -> None:
  """A layer's weights, then its serialized architecture: whoever finds the architecture
  file finds the weights, both written through a rename."""
  temporary = os.path.join(os.path.dirname(weights), PARTIAL_PREFIX + os.path.basename(weights))
  layer.save_weights(temporary)
  os.replace(temporary, weights)
  write_json(architecture, keras.saving.serialize_keras_object(layer))


def load_layer(architecture: str, weights: str) -> keras.layers.Layer:
  layer = keras.saving.deserialize_keras_object(read_json(architecture))
  layer.load_weights(weights)
  return layer


def keep_pretrained_backbone(backbone: keras.layers.Layer, directory: str) -> None:
  os.makedirs(directory, exist_ok=True)
  save_layer(backbone, os.path.join(directory, BACKBONE_ARCHITECTURE),
             os.path.join(directory, PRETRAINED_BACKBONE))


def preset_teacher_files(directory: str, name: str) -> tuple[str, str]:
  """(architecture, weights) of the keras_hub teacher `name` kept in a student run."""
  stem = os.path.join(directory, PRESET_TEACHERS, name)
  return stem + ".json", stem + ".weights.h5"


def save_final_weights(model: Classifier, run_dir: str) -> None:
  """Writes final.weights.h5 through a rename; WriteError naming the path if it cannot
  (final weights already there stay as they were)."""
  temporary = os.path.join(run_dir, PARTIAL_PREFIX + FINAL_WEIGHTS)
  try:
    model.save_weights(temporary)
    os.replace(temporary, os.path.join(run_dir, FINAL_WEIGHTS))
  except OSError as error:
    raise WriteError(f"could not write {os.path.join(run_dir, FINAL_WEIGHTS)}: "
                     f"{error.strerror or error}") from None


def load_classifier(run_dir: str) -> tuple[Classifier, config_lib.Config]:
  """The trained classifier of a finished run, and that run's config."""
  check_trained(run_dir)
  config = config_lib.Config.load(os.path.join(run_dir, CONFIG))
  class_names, _ = read_classes(run_dir)
  model = build_classifier(config, len(class_names), run_dir)
  model.load_weights(os.path.join(run_dir, FINAL_WEIGHTS))
  return model, config
