"""Two steps of a CBD student (or a teacher) on one device, again on one device, and under
MirroredStrategy over 2 logical CPUs (synchronised BatchNorm). Prints one JSON object: the
largest weight difference of the repeat and of the Mirrored run from the first, and each
run's logs of the first step.

  python -m tests.scripts.mirrored_step student|teacher
"""

import json
import sys

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # pylint: disable=wrong-import-position

from cbd_tf.distiller import CBDDistiller  # pylint: disable=wrong-import-position
from tests import helpers  # pylint: disable=wrong-import-position


def two_steps(strategy, stage):
  """(the student's weights after two steps, the logs of the first step)."""
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
  history = model.fit(dataset, epochs=2, verbose=0).history
  return [w.numpy() for w in student.weights], {name: values[0] for name, values in history.items()}


def largest_difference(weights, reference):
  return max(float(np.max(np.abs(a - b))) for a, b in zip(weights, reference))


def main():
  stage = sys.argv[1]
  single, single_logs = two_steps(tf.distribute.get_strategy(), stage)
  repeat, _ = two_steps(tf.distribute.get_strategy(), stage)
  mirrored, mirrored_logs = two_steps(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
                                      stage)
  print(json.dumps({"max_difference": largest_difference(mirrored, single),
                    "repeat_difference": largest_difference(repeat, single),
                    "single_logs": single_logs, "mirrored_logs": mirrored_logs}))


if __name__ == "__main__":
  main()
