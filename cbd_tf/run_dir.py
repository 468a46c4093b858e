"""Where every file of a run, a pipeline and an export goes. No other module spells one of
these names; run_files.py reads and writes them, run_checks.py checks a finished run and
run_models.py rebuilds its classifier.

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
import os

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
# A pipeline's teacher-feature cache (--teacher_views), the --workdir of its
# --stage=teacher_features run.
TEACHER_FEATURES = "teacher_features"
# What a --stage=teacher_features run did: images, views, bytes, images/s.
TEACHER_FEATURES_RECORD = "teacher_features.json"
COMPARISON = "comparison.json"
COMPARISON_TEXT = "comparison.txt"


SAVED_MODEL = "saved_model.pb"
EXPORT_ASSETS = "assets"
CLASS_NAMES_ASSET = "class_names.txt"
TRAIN_COUNTS_ASSET = "train_counts.txt"
CONFIG_ASSET = CONFIG
SERVING_ASSET = "serving.json"

def is_trained(run_dir: str) -> bool:
  return os.path.exists(os.path.join(run_dir, FINAL_WEIGHTS))


def teacher_dir(pipeline_dir: str, name: str) -> str:
  """Where a pipeline trains the teacher `name` (config.teacher_run_name)."""
  return os.path.join(pipeline_dir, TEACHERS, name)


def teacher_features_dir(pipeline_dir: str) -> str:
  return os.path.join(pipeline_dir, TEACHER_FEATURES)


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


def preset_teacher_files(directory: str, name: str) -> tuple[str, str]:
  """(architecture, weights) of the keras_hub teacher `name` kept in a student run."""
  stem = os.path.join(directory, PRESET_TEACHERS, name)
  return stem + ".json", stem + ".weights.h5"


