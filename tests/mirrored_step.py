"""Prints the largest weight difference between one CBD (or teacher) step on one device
and the same step under MirroredStrategy over 2 logical CPUs (synchronised BatchNorm).

  python -m tests.mirrored_step student|teacher
"""

import sys

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # pylint: disable=wrong-import-position

from cbd_tf.distiller import CBDDistiller  # pylint: disable=wrong-import-position
from tests import helpers  # pylint: disable=wrong-import-position


def one_step(strategy, stage):
  keras.utils.set_random_seed(0)
  images, labels = helpers.tiny_batch(batch_size=8)
  with strategy.scope():
    if stage == "student":
      teachers = [helpers.tiny_classifier(sync_batchnorm=True) for _ in range(2)]
      student = helpers.tiny_classifier(projection_dim=128, sync_batchnorm=True)
      model = CBDDistiller(student, teachers)
    else:
      model = student = helpers.tiny_classifier(sync_batchnorm=True)
    model.compile(keras.optimizers.SGD(0.5, momentum=0.9), weight_decay=5e-4)
  dataset = tf.data.Dataset.from_tensors((images, labels))
  model.fit(dataset, epochs=2, verbose=0)
  return [w.numpy() for w in student.weights]


def main():
  stage = sys.argv[1]
  single = one_step(tf.distribute.get_strategy(), stage)
  mirrored = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), stage)
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(single, one_step(
      tf.distribute.get_strategy(), stage)))
  print(f"max_difference {max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored))}")
  print(f"repeat_difference {moved}")


if __name__ == "__main__":
  main()
