"""Which devices train: tf.distribute strategies by name, and process-wide numerics.

Call `configure_process` before anything else touches TensorFlow devices: logical CPU
devices and multi-worker collectives can only be set up before the runtime starts.
"""

from __future__ import annotations

import os
import tempfile

import keras
import tensorflow as tf
from absl import logging

from cbd_tf import config as config_lib


def configure_process(distribute: config_lib.DistributeConfig) -> None:
  """Logical CPU devices, op determinism and the mixed-precision policy."""
  if distribute.cpu_devices > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * distribute.cpu_devices)
  if distribute.deterministic:
    tf.config.experimental.enable_op_determinism()
  if distribute.mixed_precision:
    keras.mixed_precision.set_global_policy(f"mixed_{distribute.mixed_precision}")


def build_strategy(distribute: config_lib.DistributeConfig) -> tf.distribute.Strategy:
  name = distribute.strategy
  if name == "multi_worker":
    # Before anything lists devices: collectives must be configured at runtime start.
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable")
    return _log(tf.distribute.MultiWorkerMirroredStrategy())
  gpus = tf.config.list_logical_devices("GPU")
  if name == "auto":
    name = "tpu" if distribute.tpu else "mirrored" if len(gpus) > 1 else "default"
  if name == "default":
    strategy = tf.distribute.get_strategy()
  elif name == "mirrored":
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
  else:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu="" if distribute.tpu == "local" else distribute.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    strategy = tf.distribute.TPUStrategy(resolver)
  return _log(strategy)


def _log(strategy: tf.distribute.Strategy) -> tf.distribute.Strategy:
  logging.info("strategy %s with %d replicas", type(strategy).__name__,
               strategy.num_replicas_in_sync)
  return strategy


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
  """Whether this process writes the run's files (always, unless multi-worker); `strategy`
  defaults to the current one."""
  strategy = strategy or tf.distribute.get_strategy()
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  if resolver.task_type == "chief":
    return True
  return (resolver.task_type == "worker" and resolver.task_id == 0
          and "chief" not in resolver.cluster_spec().as_dict())


def worker_directory(workdir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this process saves: the workdir on the chief, a scratch directory elsewhere
  (every worker must take part in saving, but only the chief's copy is kept)."""
  if is_chief(strategy):
    return workdir
  resolver = strategy.cluster_resolver
  return tempfile.mkdtemp(prefix=f"{resolver.task_type}_{resolver.task_id}_",
                          dir=os.environ.get("TMPDIR"))




def barrier(strategy: tf.distribute.Strategy) -> None:
  """Waits for every worker (an all-reduce), so files the chief just wrote are there."""
  if getattr(strategy, "cluster_resolver", None) is None:
    return
  strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
