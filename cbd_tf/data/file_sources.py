"""Images as files: OLTR-style file lists, Places-LT, and folders of class sub-folders.

Nothing is decoded here: a split is file paths + labels, and `sources.load_source`
checks every file once before training (see source_cache.drop_broken).
"""

from __future__ import annotations

import collections
import os

import numpy as np

from cbd_tf import config as config_lib
from cbd_tf.data.source_types import Source, Split, check_labels

PLACES_LT_CLASSES = 365
PLACES_LT_LISTS = ("Places_LT_train.txt", "Places_LT_val.txt", "Places_LT_test.txt")


def load_file_list(data: config_lib.DataConfig) -> Source:
  """--train_list, --test_list and --val_list: lines 'relative/path label'.

  With both evaluation lists, val is for periodic evaluation and test is evaluated once at
  the end; with one of them, that one is the test split."""
  return _file_list_source("file_list", data, data.train_list, data.val_list, data.test_list,
                           data.num_classes)


def load_places_lt(data: config_lib.DataConfig) -> Source:
  """Places365 images under --data_dir with the OLTR Places_LT lists (default names there)."""
  train, val, test = (given or os.path.join(data.data_dir, default) for given, default in
                      zip((data.train_list, data.val_list, data.test_list), PLACES_LT_LISTS))
  if not data.val_list and not os.path.exists(val):
    val = ""  # the default validation list is optional
  if data.num_classes not in (0, PLACES_LT_CLASSES):
    raise ValueError(f"places_lt has {PLACES_LT_CLASSES} classes, --num_classes says "
                     f"{data.num_classes}")
  return _file_list_source("places_lt", data, train, val, test, PLACES_LT_CLASSES)


def _file_list_source(name, data, train_list, val_list, test_list, num_classes) -> Source:
  _check_data_dir(data.data_dir)
  if not train_list:
    raise ValueError(f"--dataset={name} needs --train_list=FILE")
  if not (test_list or val_list):
    raise ValueError(f"--dataset={name} needs --test_list=FILE or --val_list=FILE")
  train_paths, train_labels, train_lines = read_file_list(train_list, data.data_dir)
  num_classes = num_classes or int(train_labels.max()) + 1
  check_labels(train_labels, num_classes, train_list, train_lines)

  def eval_split(list_file: str) -> Split:
    paths, labels, lines = read_file_list(list_file, data.data_dir)
    check_labels(labels, num_classes, list_file, lines)
    return Split.from_files(paths, labels)

  return Source(
      name=name,
      train=Split.from_files(train_paths, train_labels),
      test=eval_split(test_list or val_list),
      val=eval_split(val_list) if test_list and val_list else None,
      class_names=_class_names_from_paths(train_paths, train_labels, num_classes))


def read_file_list(list_file: str, data_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(absolute paths, labels, line numbers) of a 'relative/path label' file; blank lines skipped.

  A relative list file that does not exist is looked up in data_dir too.
  """
  if not os.path.isabs(list_file) and not os.path.exists(list_file):
    list_file = os.path.join(data_dir, list_file)
  if not os.path.isfile(list_file):
    raise ValueError(f"file list {list_file!r} does not exist")
  paths, labels, line_numbers = [], [], []
  with open(list_file) as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      # rsplit: paths may contain spaces, the label never does.
      parts = line.strip().rsplit(maxsplit=1)
      if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
        raise ValueError(f"{list_file}:{line_number}: expected 'relative/path.jpg label', "
                         f"got {line.strip()[:80]!r}")
      paths.append(os.path.join(data_dir, parts[0].lstrip("/")))
      labels.append(int(parts[1]))
      line_numbers.append(line_number)
  if not paths:
    raise ValueError(f"file list {list_file!r} has no entries")
  return (np.asarray(paths, dtype=object), np.asarray(labels, dtype=np.int64),
          np.asarray(line_numbers))


def _class_names_from_paths(paths, labels, num_classes) -> tuple[str, ...]:
  """A class's name is the folder all its training files share, else its label number."""
  folders = collections.defaultdict(set)
  for path, label in zip(paths, labels):
    folders[int(label)].add(os.path.basename(os.path.dirname(path)))
  names = []
  for label in range(num_classes):
    only = folders.get(label, set())
    names.append(next(iter(only)) if len(only) == 1 else str(label))
  if len(set(names)) != len(names):  # Two classes in one folder: numbers are clearer.
    names = [str(label) for label in range(num_classes)]
  return tuple(names)


def load_image_folder(data: config_lib.DataConfig) -> Source:
  """--data_dir/train/<class>/... with test/ and/or val/ beside it (same class folders).

  With both, val/ is for periodic evaluation and test/ is evaluated once at the end; with
  one of them, that one is the test split."""
  _check_data_dir(data.data_dir)
  train_dir = os.path.join(data.data_dir, "train")
  if not os.path.isdir(train_dir):
    raise ValueError(f"image folder {data.data_dir!r} has no train/ directory")
  # Sorted, as keras.utils.image_dataset_from_directory orders classes.
  class_names = sorted(entry.name for entry in os.scandir(train_dir) if entry.is_dir())
  if not class_names:
    raise ValueError(f"{train_dir!r} has no class folders")
  train = _read_folder(train_dir, class_names, require_every_class=True)
  eval_dirs = [os.path.join(data.data_dir, name) for name in ("test", "val")
               if os.path.isdir(os.path.join(data.data_dir, name))]
  if not eval_dirs:
    raise ValueError(f"image folder {data.data_dir!r} has neither test/ nor val/")
  if data.num_classes not in (0, len(class_names)):
    raise ValueError(f"{train_dir!r} has {len(class_names)} class folders, --num_classes says "
                     f"{data.num_classes}")
  test, *val = [_read_folder(directory, class_names, require_every_class=False)
                for directory in eval_dirs]
  return Source(name="image_folder", train=train, test=test, val=val[0] if val else None,
                class_names=tuple(class_names))


def _read_folder(directory: str, class_names: list[str], require_every_class: bool) -> Split:
  """Every non-hidden file under directory/<class>/ (recursively), labelled by class."""
  extra = sorted(entry.name for entry in os.scandir(directory)
                 if entry.is_dir() and entry.name not in class_names)
  if extra:
    raise ValueError(f"{directory}/{extra[0]} is not a class of train/; valid: "
                     f"{', '.join(class_names[:20])}{' ...' if len(class_names) > 20 else ''}")
  paths, labels = [], []
  for label, class_name in enumerate(class_names):
    class_dir = os.path.join(directory, class_name)
    files = sorted(_files_under(class_dir)) if os.path.isdir(class_dir) else []
    if not files and require_every_class:
      raise ValueError(f"class folder {class_dir!r} is empty")
    paths.extend(files)
    labels.extend([label] * len(files))
  if not paths:
    raise ValueError(f"{directory!r} holds no image files")
  return Split.from_files(paths, labels)


def _files_under(directory: str):
  for root, subdirectories, files in os.walk(directory, followlinks=True):
    subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
    # Hidden files (.DS_Store, ._x.jpg) are file-system litter, not data.
    yield from (os.path.join(root, name) for name in files if not name.startswith("."))


def _check_data_dir(data_dir: str) -> None:
  if not data_dir:
    raise ValueError("--data_dir is required for this dataset")
  if not os.path.isdir(data_dir):
    raise ValueError(f"data_dir {data_dir!r} does not exist")
