"""cbd_tf: Class-Balanced Distillation (Iscen et al., BMVC 2021) for long-tailed images.

The public Keras API below is imported on first access, so `import cbd_tf.config` (a
notebook building a Config, a tool reading config.json) does not load TensorFlow. Load a
saved `.keras` model with `cbd_tf.load_model(path)`: a bare `import cbd_tf` has not yet
registered cbd_tf's classes with Keras.
"""

import importlib

# Public name -> the module that defines it.
_PUBLIC = {
    "CBDDistiller": "cbd_tf.distiller",
    "CBDFeatureDistillation": "cbd_tf.distiller",
    "Classifier": "cbd_tf.models.classifier",
    "KerasHubBackbone": "cbd_tf.models.keras_hub_backbone",
    "PresetTeacher": "cbd_tf.models.keras_hub_backbone",
    "feature_distillation_loss": "cbd_tf.losses",
    "load_model": "cbd_tf.distiller",
    "load_teachers": "cbd_tf.teachers",
    # Datasets built as the CLI builds them (cbd_tf/data/datasets.py).
    "evaluation_dataset": "cbd_tf.data.datasets",
    "from_arrays": "cbd_tf.data.datasets",
    "from_files": "cbd_tf.data.datasets",
    "load_data": "cbd_tf.data.datasets",
    "training_dataset": "cbd_tf.data.datasets",
    # CLIP's zero-shot classifier from a CLIP or SigLIP preset (models/text_classifier.py).
    "zero_shot_classifier": "cbd_tf.models.text_classifier",
}

__all__ = ["CBDDistiller", "CBDFeatureDistillation", "Classifier", "KerasHubBackbone",
           "PresetTeacher", "evaluation_dataset", "feature_distillation_loss", "from_arrays", "from_files",
           "load_data", "load_model", "load_teachers", "training_dataset",
           "zero_shot_classifier"]


def __getattr__(name):
  if name not in _PUBLIC:
    raise AttributeError(f"module 'cbd_tf' has no attribute {name!r}")
  value = getattr(importlib.import_module(_PUBLIC[name]), name)
  globals()[name] = value  # later accesses skip __getattr__
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
