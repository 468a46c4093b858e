"""Reading and writing a run's files (run_dir.py names them): JSON and weights written through
a temporary file and a rename, so a reader never sees half a file; a file that cannot be
written or read stops with one line naming it."""

from __future__ import annotations

import json
import os
import zipfile

import h5py
import keras
import numpy as np

from cbd_tf import errors
from cbd_tf.run_dir import CLASSES, FINAL_WEIGHTS, PARTIAL_PREFIX


def write_json(path: str, value) -> None:
  """Writes through a temporary file and a rename, so a reader never sees half a file;
  WriteError naming `path` if it cannot (disk full, read-only directory)."""
  temporary = f"{path}.tmp"
  try:
    with open(temporary, "w") as f:
      json.dump(value, f, indent=2)
      f.write("\n")
    os.replace(temporary, path)
  except OSError as error:
    raise WriteError(f"could not write {path}: {error.strerror or error}") from error


def read_json(path: str):
  """The JSON value in `path`; errors.DamagedFile (a ValueError) naming the file if it is not
  JSON (a damaged or half-copied file)."""
  with open(path) as f:
    try:
      return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
      raise errors.DamagedFile(f"{path} is damaged: not JSON ({error})") from error


class RunFault(errors.UserError, RuntimeError):
  """A fault in a run's files met during training: the CLI prints it as one line."""


class WriteError(RunFault):
  """A run file could not be written (disk full, read-only directory); what was there
  before is kept."""


def check_weights_file(path: str) -> None:
  """errors.DamagedFile (a ValueError) naming `path` unless it is a readable HDF5 weights
  file: every weight is read, so a truncated or overwritten file stops here, not mid-run."""
  try:
    with h5py.File(path, "r") as weights:
      weights.visititems(lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None)
  except (OSError, KeyError, RuntimeError) as error:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    raise errors.DamagedFile(f"{path} is damaged: not a readable weights file ({reason})"
                             ) from error


def check_keras_file(path: str) -> None:
  """errors.DamagedFile naming `path` unless it is a whole `.keras` archive (a zip whose
  every member reads back with its checksum)."""
  try:
    with zipfile.ZipFile(path) as archive:
      broken = archive.testzip()
  except (OSError, zipfile.BadZipFile, EOFError) as error:
    raise errors.DamagedFile(f"{path} is damaged: not a readable .keras file ({error})"
                             ) from error
  if broken:
    raise errors.DamagedFile(f"{path} is damaged: its member {broken} does not read back")


def write_classes(directory: str, class_names, train_counts) -> None:
  write_json(os.path.join(directory, CLASSES), {
      "class_names": list(class_names), "train_counts": [int(c) for c in train_counts]})


def read_classes(directory: str) -> tuple[list[str], np.ndarray]:
  values = read_json(os.path.join(directory, CLASSES))
  return values["class_names"], np.asarray(values["train_counts"], dtype=np.int64)


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


def save_final_weights(model: keras.Model, directory: str) -> None:
  """Writes final.weights.h5 through a rename; WriteError naming the path if it cannot
  (final weights already there stay as they were)."""
  temporary = os.path.join(directory, PARTIAL_PREFIX + FINAL_WEIGHTS)
  try:
    model.save_weights(temporary)
    os.replace(temporary, os.path.join(directory, FINAL_WEIGHTS))
  except OSError as error:
    # h5py's OSError has the errno but a strerror of many lines.
    reason = os.strerror(error.errno) if error.errno else error.strerror or error
    raise WriteError(f"could not write {os.path.join(directory, FINAL_WEIGHTS)}: "
                     f"{reason}") from error
