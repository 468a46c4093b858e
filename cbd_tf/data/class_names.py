"""Readable class names, for the prompts of a classifier from text (--head_init=text,
--stage=zero_shot): what a CLIP or SigLIP text encoder should read for each label.

  --class_names_file   one name a line, in label order, exactly as written
  imagenet_lt          CLIP's readable ImageNet list (imagenet_class_names.txt, from OpenAI's
                       prompt-engineering notebook; LIFT's classnames.txt has the same
                       names), not TFDS's synset ids; TFDS's labels are the sorted synsets,
                       the list's order
  places_lt            the Places365 categories in label order (places365_class_names.txt,
                       LIFT's classnames.txt: apartment_building-outdoor)
  any other            the source's own: image-folder and file-list folder names, TFDS
                       label names (iNaturalist's species)

Every name but a --class_names_file's has "_" read as a space, as LIFT and CLIP write them.
"""

from __future__ import annotations

import os

from cbd_tf import config as config_lib
from cbd_tf.data.source_types import Source

IMAGENET_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             "imagenet_class_names.txt")
PLACES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "places365_class_names.txt")
# Data sets whose labels have a bundled list of readable names.
BUNDLED = {"imagenet_lt": IMAGENET_FILE, "places_lt": PLACES_FILE}


def readable(name: str) -> str:
  return " ".join(name.replace("_", " ").split())


def class_names(source: Source, data: config_lib.DataConfig) -> tuple[str, ...]:
  """The names the prompts use for `source`'s labels, in label order (module docstring);
  ValueError naming a --class_names_file that does not fit."""
  if data.class_names_file:
    return read_class_names(data.class_names_file, source.num_classes)
  if source.name in BUNDLED:
    names = read_class_names(BUNDLED[source.name], source.num_classes,
                             what=f"the bundled {source.name} list")
  else:
    names = source.class_names
  return tuple(readable(name) for name in names)


def read_class_names(path: str, num_classes: int,
                     what: str = "--class_names_file") -> tuple[str, ...]:
  """One name a line (trailing blank lines ignored); ValueError if a line is blank or the
  count is not `num_classes`."""
  if not os.path.isfile(path):
    raise ValueError(f"{what}={path!r}: no such file")
  with open(path, encoding="utf-8") as f:
    names = [line.strip() for line in f.read().splitlines()]
  while names and not names[-1]:
    names.pop()
  if "" in names:
    raise ValueError(f"{what}={path!r}: line {names.index('') + 1} is blank")
  if len(names) != num_classes:
    raise ValueError(f"{what}={path!r} has {len(names)} names, the data set "
                     f"{num_classes} classes")
  return tuple(names)
