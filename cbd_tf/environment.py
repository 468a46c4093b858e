"""What a run was computed with: versions, devices, batch, and fingerprints of its splits.

Two runs whose `environment.json` show different label hashes trained or tested on
different data, whatever their configs say (silently different splits are a known
source of irreproducible long-tail numbers).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess

import numpy as np
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import source_types

# Distribution names; TensorFlow's version comes from tf itself (tensorflow or tensorflow-cpu).
_PACKAGES = ("cbd_tf", "keras", "tensorflow-datasets", "numpy")


def labels_sha256(labels: np.ndarray) -> str:
  """sha256 of the labels as little-endian int64, in split order."""
  return hashlib.sha256(np.asarray(labels, dtype="<i8").tobytes()).hexdigest()


def describe(config: config_lib.Config, source: source_types.Source,
             strategy: tf.distribute.Strategy) -> dict:
  """The environment.json of a run."""
  splits = {"train": source.train, "test": source.test, "val": source.val}
  return {
      "cbd_tf_commit": _git_commit(),
      "versions": {"tensorflow": tf.__version__,
                   **{name: _version(name) for name in _PACKAGES if _version(name)}},
      "python": platform.python_version(),
      "strategy": type(strategy).__name__,
      "replicas": int(strategy.num_replicas_in_sync),
      "devices": _device_counts(),
      "global_batch_size": config.data.batch_size,
      "mixed_precision": config.distribute.mixed_precision or "float32",
      "dataset": config.data.dataset,
      "num_examples": {name: len(split) for name, split in splits.items() if split is not None},
      "labels_sha256": {name: labels_sha256(split.labels) for name, split in splits.items()
                        if split is not None},
  }


def _device_counts() -> dict[str, int]:
  """Physical accelerators by kind ("GPU: NVIDIA A100-SXM4-40GB": 8), else the CPUs."""
  devices = ([d for d in tf.config.list_physical_devices() if d.device_type != "CPU"]
             or tf.config.list_physical_devices("CPU"))
  counts: dict[str, int] = {}
  for device in devices:
    name = tf.config.experimental.get_device_details(device).get("device_name")
    kind = f"{device.device_type}: {name}" if name else device.device_type
    counts[kind] = counts.get(kind, 0) + 1
  return counts


def _version(package: str) -> str:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return ""


def _git_commit() -> str:
  """The checkout's commit (with '-dirty' for local changes), or '' outside a git checkout."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ""
  return f"{commit}-dirty" if dirty else commit
