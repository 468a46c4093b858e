"""Where a teacher's or student's backbone starts: a KerasHub preset's pretrained weights,
--init_from's weights, or random.

A preset's backbone is kept in the run directory the first time the run builds it
(architecture and pretrained weights, run_dir.BACKBONE_ARCHITECTURE and
run_dir.PRETRAINED_BACKBONE), so a resumed, re-run, evaluated or exported run needs neither
the network nor KerasHub's download cache.

--init_from takes a finished run directory, a `.keras` file (a cbd_tf Classifier: its
backbone; another model: the model itself) or a `.weights.h5` file (`backbone.save_weights`,
or a Classifier's, whose backbone part is used). A source that does not fit stops with one
line naming the first weight or shape that differs.

--head_init=text starts the cosine head as CLIP's zero-shot classifier: each class weight
the CLIP or SigLIP preset's normalised text embedding of --class_prompt for the class's
readable name (models/text_classifier.py, data/class_names.py).
"""

from __future__ import annotations

import os
import tempfile

import h5py
import keras
import tensorflow as tf
from absl import logging

from cbd_tf import config as config_lib
from cbd_tf import errors, run_checks, run_dir, run_files, run_models, teachers
from cbd_tf.data import class_names, sources
from cbd_tf.models import keras_hub_backbone, text_classifier
from cbd_tf.models.classifier import Classifier
from cbd_tf.models.keras_hub_backbone import KerasHubBackbone


def build_starting_classifier(config: config_lib.Config, num_classes: int,
                              write: bool = True, source: sources.Source | None = None,
                              text: text_classifier.TextHead | None = None) -> Classifier:
  """The classifier a teacher or student run trains, its backbone at its starting weights.
  `write`: keep a preset's backbone in the run directory (the chief's job).

  --head_init=text: the head starts from `text`, or from the text embeddings of `source`'s
  class names (loaded from config.data if not given). Not in a run that resumes (its
  checkpoint holds the head) nor on a student's projection (not the text's space)."""
  classifier = run_models.build_classifier(config, num_classes, config.workdir)
  if isinstance(classifier.backbone, KerasHubBackbone):
    kept = os.path.join(config.workdir, run_dir.PRETRAINED_BACKBONE)
    if os.path.exists(kept):
      classifier.backbone.load_weights(kept)
    elif write:
      run_models.keep_pretrained_backbone(classifier.backbone, config.workdir)
  if config.model.init_from:
    load_backbone_weights(classifier.backbone, config.model.init_from)
  if config.model.head_init == "text":
    if classifier.projection is not None:
      logging.info("--head_init=text: a student's head sits on its projection; it starts random")
    elif not tf.train.get_checkpoint_state(os.path.join(config.workdir, run_dir.CHECKPOINTS)):
      text = text or text_head(config, source or sources.load_source(config.data))
      text_classifier.set_text_head(classifier, text.weights)
  return classifier


def text_head(config: config_lib.Config, source: sources.Source) -> text_classifier.TextHead:
  """The text embeddings of `source`'s readable class names under --class_prompt, from the
  --backbone preset's text side, and its logit scale."""
  check_text_head(config, source)
  return text_classifier.text_head(keras_hub_backbone.preset_of(config.model.backbone),
                                   class_names.class_names(source, config.data),
                                   config.model.class_prompt)


def check_text_head(config: config_lib.Config, source: sources.Source) -> None:
  """ValueError before any work if the run cannot have a head from text: --backbone not a
  CLIP or SigLIP preset, or class names that do not fit the data."""
  if not keras_hub_backbone.is_preset(config.model.backbone):
    raise ValueError(f"a head from text needs a keras_hub CLIP or SigLIP preset, not "
                     f"--backbone={config.model.backbone}")
  class_names.class_names(source, config.data)
  text_classifier.check_text_preset(keras_hub_backbone.preset_of(config.model.backbone))


def keeps_backbone(directory: str) -> bool:
  """Whether the run `directory` holds its preset's backbone (architecture and weights)."""
  return all(os.path.exists(os.path.join(directory, name))
             for name in (run_dir.BACKBONE_ARCHITECTURE, run_dir.PRETRAINED_BACKBONE))


def fetch_presets(student: config_lib.Config) -> None:
  """Keeps a pipeline student's keras_hub backbone and teachers in its run directory before
  any teacher trains, so a preset that cannot be downloaded stops the pipeline first."""
  if (keras_hub_backbone.is_preset(student.model.backbone)
      and not os.path.exists(os.path.join(student.workdir, run_dir.PRETRAINED_BACKBONE))):
    run_models.keep_pretrained_backbone(
        KerasHubBackbone.from_preset(keras_hub_backbone.preset_of(student.model.backbone)),
        student.workdir)
  teachers.load_teachers([t for t in student.distill.teachers
                          if keras_hub_backbone.is_preset(t)], student.workdir)


def check_init_from(path: str) -> None:
  """ValueError before any work if --init_from names nothing loadable (errors.DamagedFile:
  a damaged file)."""
  if os.path.isdir(path):
    run_checks.check_trained(path)
  elif not os.path.isfile(path):
    raise ValueError(f"--init_from={path!r}: no such file or directory")
  elif not path.endswith((".keras", ".weights.h5")):
    raise ValueError(f"--init_from={path!r} is not a .weights.h5 file, a .keras file or a run "
                     "directory")
  elif path.endswith(".weights.h5"):
    run_files.check_weights_file(path)
  else:
    run_files.check_keras_file(path)


def load_backbone_weights(backbone: keras.layers.Layer, path: str) -> None:
  """Sets `backbone`'s weights from `path` (module docstring); ValueError naming the first
  weight or shape that differs, before any weight changes."""
  check_init_from(path)
  added = adapter_weights(backbone)
  if path.endswith(".weights.h5"):
    if added:
      raise ValueError(f"--init_from={path!r}: a .weights.h5 file cannot start an adapted "
                       "backbone; give the run directory or .keras file it came from")
    _load_weights_file(backbone, path)
    return
  if os.path.isdir(path):
    donor = run_models.load_classifier(path)[0].backbone
  else:
    try:
      model = keras.models.load_model(path, compile=False)
    except (OSError, KeyError, TypeError, ValueError) as error:  # a .keras file Keras cannot read
      raise errors.DamagedFile(f"--init_from={path!r}: Keras cannot load it: "
                               f"{(str(error).strip().splitlines() or [''])[0]}") from error
    donor = model.backbone if isinstance(model, Classifier) else model
  # An adapter starts as the identity, whatever the donor had: only the pretrained weights.
  ours = [v for v in backbone.weights if id(v) not in added]
  theirs = [v for v in donor.weights if id(v) not in adapter_weights(donor)]
  for index, (mine, other) in enumerate(zip(ours, theirs)):
    if tuple(mine.shape) != tuple(other.shape):
      raise ValueError(f"--init_from={path!r} does not fit the backbone: weight {index} is "
                       f"{other.path} {tuple(other.shape)} there, {mine.path} "
                       f"{tuple(mine.shape)} here")
  if len(ours) != len(theirs):
    first = (ours if len(ours) > len(theirs) else theirs)[min(len(ours), len(theirs))]
    raise ValueError(f"--init_from={path!r} does not fit the backbone: {len(theirs)} weights "
                     f"there, {len(ours)} here (first unmatched: {first.path})")
  for mine, other in zip(ours, theirs):
    mine.assign(other)


def adapter_weights(backbone: keras.layers.Layer) -> set[int]:
  """ids of the weights of `backbone`'s LoRA / AdaptFormer adapters (none for others)."""
  return {id(v) for layer in getattr(backbone, "adapters", []) for v in layer.weights}


def _datasets(group: h5py.Group) -> dict[str, tuple]:
  found = {}
  group.visititems(lambda name, item: found.__setitem__(name, item.shape)
                   if isinstance(item, h5py.Dataset) else None)
  return found


def _load_weights_file(backbone: keras.layers.Layer, path: str) -> None:
  with tempfile.TemporaryDirectory() as scratch:
    # Keras names a file's weights by layer type and position: our own layout to compare.
    layout_path = os.path.join(scratch, "layout.weights.h5")
    backbone.save_weights(layout_path)
    with h5py.File(layout_path, "r") as layout_file:
      wanted = _datasets(layout_file)
    with h5py.File(path, "r") as source:
      root = source["backbone"] if "backbone" in source and "layers" not in source else source
      found = _datasets(root)
      for name in sorted(wanted):
        if name not in found:
          raise ValueError(f"--init_from={path!r} does not fit the backbone: it has no weight "
                           f"{name} {wanted[name]}")
        if tuple(found[name]) != tuple(wanted[name]):
          raise ValueError(f"--init_from={path!r} does not fit the backbone: {name} is "
                           f"{tuple(found[name])} there, {tuple(wanted[name])} here")
      extra = sorted(set(found) - set(wanted))
      if extra:
        raise ValueError(f"--init_from={path!r} does not fit the backbone: it has "
                         f"{len(extra)} weights more, the first {extra[0]}")
      if root is source:
        backbone.load_weights(path)
        return
      subset_path = os.path.join(scratch, "backbone.weights.h5")
      with h5py.File(subset_path, "w") as subset:
        for key in root:
          source.copy(root[key], subset, name=key)
    backbone.load_weights(subset_path)
