"""The teacher-feature cache: --stage=teacher_features writes it, --teacher_features=PATH reads it.

A directory:
  cache.json            what the features were made from (`made_from`), their layout, and
                        the images no teacher saw (unreadable when cached: their rows are 0)
  features-SSSSS.f16    float16 rows, little-endian: row i * M + v is view v of training
                        image i (teacher_views.py), the teachers' embeddings each
                        L2-normalised, concatenated, normalised; shard s holds images
                        [s * S, (s + 1) * S)
A shard is written under a temporary name and renamed when whole, so a killed pass resumes at
the first missing shard. A student reads a batch's rows with one pread each: the cache is
read, not held (ImageNet-LT at M = 10 views and 4,096 dimensions is 9.5 GB). The directory
must be a local or mounted file system.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import source_types

FORMAT = 1
METADATA = "cache.json"
IMAGES_PER_SHARD = 1024
# The training preprocessing a view depends on (augment.py), besides the seed.
VIEW_SETTINGS = ("image_size", "augmentation", "crop_min_area", "horizontal_flip",
                 "randaugment", "randaugment_num_ops", "randaugment_magnitude")
_DTYPE = np.dtype("<f2")


def split_sha256(split: source_types.Split) -> str:
  """sha256 of a split's labels and its file paths (or its decoded images), in order."""
  digest = hashlib.sha256(np.asarray(split.labels, dtype="<i8").tobytes())
  if split.is_encoded:
    for path in split.paths:
      digest.update(os.fsencode(str(path)) + b"\0")
  else:
    digest.update(np.ascontiguousarray(split.images).tobytes())
  return digest.hexdigest()


def made_from(data: config_lib.DataConfig, train: source_types.Split, views: int, seed: int,
              teachers: list[dict]) -> dict:
  """What a cache's rows depend on: the data set, its training split, the view settings,
  M, the view seed and the teachers (each {"teacher", "name", "dim", "weights_sha256"})."""
  return {"dataset": data.dataset, "train_split_sha256": split_sha256(train),
          "num_images": len(train), "views": int(views), "view_seed": int(seed),
          **{name: getattr(data, name) for name in VIEW_SETTINGS},
          "teachers": teachers}


def differences(cache: dict, expected: dict, keys=None) -> list[str]:
  """What differs between two made_from dicts, as 'name: cache X, run Y' (over `keys`, or
  every key either holds). Teachers are the same if their weights are, whatever their name
  or where they were loaded from."""
  keys = keys or sorted(set(cache) | set(expected))
  return [f"{key}: cache {_shown(cache.get(key))}, run {_shown(expected.get(key))}"
          for key in keys if _compared(key, cache.get(key)) != _compared(key, expected.get(key))]


def _compared(key: str, value):
  if key == "teachers" and value:
    return [(t["dim"], t["weights_sha256"]) for t in value]
  return value


def _shown(value) -> str:
  if isinstance(value, list) and value and isinstance(value[0], dict):  # teachers
    return "[" + ", ".join(f"{t['name']} {t['weights_sha256'][:12]}" for t in value) + "]"
  return repr(value)


def shard_count(num_images: int, images_per_shard: int) -> int:
  return -(-num_images // images_per_shard)


def shard_path(directory: str, shard: int) -> str:
  return os.path.join(directory, f"features-{shard:05d}.f16")


def read_metadata(directory: str) -> dict | None:
  """A cache directory's cache.json, or None if it has none."""
  path = os.path.join(directory, METADATA)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      metadata = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(f"{path} is damaged: not JSON ({error})") from None
  if metadata.get("format") != FORMAT:
    raise ValueError(f"{path}: cache format {metadata.get('format')!r}, this cbd_tf reads "
                     f"{FORMAT}; cache the features again")
  return metadata


def write_metadata(directory: str, made: dict, dim: int, widths: list[int],
                   images_per_shard: int, unreadable: list[int] = ()) -> None:
  os.makedirs(directory, exist_ok=True)
  metadata = {"format": FORMAT, "made_from": made, "dim": int(dim),
              "widths": [int(w) for w in widths], "dtype": "float16",
              "images_per_shard": int(images_per_shard),
              "unreadable_images": sorted(int(i) for i in unreadable)}
  temporary = os.path.join(directory, METADATA + ".tmp")
  with open(temporary, "w") as f:
    json.dump(metadata, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(temporary, os.path.join(directory, METADATA))


def missing_shards(directory: str, num_images: int, images_per_shard: int) -> list[int]:
  return [shard for shard in range(shard_count(num_images, images_per_shard))
          if not os.path.exists(shard_path(directory, shard))]


def write_shard(directory: str, shard: int, rows: np.ndarray) -> None:
  """Writes a shard's rows (its images' views, in key order) whole or not at all."""
  temporary = shard_path(directory, shard) + ".tmp"
  with open(temporary, "wb") as f:
    f.write(np.ascontiguousarray(rows, dtype=_DTYPE).tobytes())
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, shard_path(directory, shard))


class FeatureReader:
  """Reads cached teacher features by key (image * M + view), a pread per row."""

  def __init__(self, directory: str):
    metadata = read_metadata(directory)
    if metadata is None:
      raise ValueError(f"--teacher_features={directory}: no {METADATA} there; make it with "
                       f"--stage=teacher_features --workdir={directory}")
    made = metadata["made_from"]
    missing = missing_shards(directory, made["num_images"], metadata["images_per_shard"])
    if missing:
      raise ValueError(f"--teacher_features={directory} is incomplete: {len(missing)} of "
                       f"{shard_count(made['num_images'], metadata['images_per_shard'])} "
                       f"shards missing (first {shard_path(directory, missing[0])}); run "
                       f"--stage=teacher_features there again to finish it")
    self.directory = directory
    self.metadata = metadata
    self.views = int(made["views"])
    self.dim = int(metadata["dim"])
    self._images_per_shard = int(metadata["images_per_shard"])
    self._files: dict[int, int] = {}

  @property
  def made_from(self) -> dict:
    return self.metadata["made_from"]

  @property
  def widths(self) -> list[int]:
    return list(self.metadata["widths"])

  @property
  def teacher_names(self) -> list[str]:
    return [teacher["name"] for teacher in self.made_from["teachers"]]

  def rows(self, keys: np.ndarray) -> np.ndarray:
    """float16 (len(keys), dim) rows of `keys`."""
    row_bytes = self.dim * _DTYPE.itemsize
    out = np.empty((len(keys), self.dim), _DTYPE)
    for n, key in enumerate(np.asarray(keys, np.int64)):
      image, view = divmod(int(key), self.views)
      shard, within = divmod(image, self._images_per_shard)
      data = os.pread(self._file(shard), row_bytes, (within * self.views + view) * row_bytes)
      if len(data) != row_bytes:
        raise ValueError(f"{shard_path(self.directory, shard)} is damaged: row {key} is past "
                         f"its end; cache the features again")
      out[n] = np.frombuffer(data, _DTYPE)
    return out

  def _file(self, shard: int) -> int:
    if shard not in self._files:
      self._files[shard] = os.open(shard_path(self.directory, shard), os.O_RDONLY)
    return self._files[shard]

  def __call__(self, keys: tf.Tensor) -> tf.Tensor:
    """In a tf.data map: int64 keys (B,) -> float16 features (B, dim)."""
    features = tf.numpy_function(self.rows, [keys], tf.float16, stateful=False)
    features.set_shape([keys.shape[0], self.dim])
    return features

  def __del__(self):
    for descriptor in getattr(self, "_files", {}).values():
      os.close(descriptor)


def check_fits(reader: FeatureReader, data: config_lib.DataConfig, train: source_types.Split,
               teacher_views: int) -> None:
  """ValueError, one line naming what differs, if the cache was made for other data, another
  split, other view settings, or (--teacher_views given) another M."""
  made = reader.made_from
  run = made_from(data, train, made["views"] if not teacher_views else teacher_views,
                  made["view_seed"], made["teachers"])
  keys = ["dataset", "train_split_sha256", *VIEW_SETTINGS, "views"]
  differ = differences(made, run, keys)
  if differ:
    raise ValueError(f"--teacher_features={reader.directory} does not fit this run: "
                     f"{'; '.join(differ)}")
