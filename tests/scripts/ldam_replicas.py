"""One LDAM-DRW step (class-balanced weights on) of a tiny classifier on one device, under
MirroredStrategy over 2 logical CPUs, and under Mirrored with each replica taking its own
weighted mean (no all-reduce). Prints one JSON object: the largest weight difference of
each Mirrored run from one device and the logged loss of each run.

  python -m tests.scripts.ldam_replicas

The batch puts the frequent classes on replica 0 and the rare ones on replica 1, so the
two replicas' sums of weights differ by ~50x and a per-replica weighted mean is visibly wrong.
"""

import json

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # pylint: disable=wrong-import-position

from cbd_tf import config as config_lib  # pylint: disable=wrong-import-position
from cbd_tf import long_tail_losses  # pylint: disable=wrong-import-position
from tests import helpers  # pylint: disable=wrong-import-position

COUNTS = np.array([400, 100, 20, 4])
# Mirrored hands the first half of the batch to replica 0, the second half to replica 1.
LABELS = np.array([0, 0, 1, 0, 3, 2, 3, 3])


def one_step(strategy):
  keras.utils.set_random_seed(0)
  images, _ = helpers.tiny_batch(batch_size=8)
  with strategy.scope():
    model = helpers.tiny_classifier(sync_batchnorm=True)
    loss, callbacks = long_tail_losses.build_loss(
        config_lib.LongTailConfig(loss="ldam", drw_epoch=0), COUNTS, model.cosine_scale, epochs=1)
    # Eager: tracing the step would take most of the time.
    model.compile(keras.optimizers.SGD(0.5, momentum=0.9), loss=loss, weight_decay=5e-4,
                  run_eagerly=True)
  history = model.fit(tf.data.Dataset.from_tensors((images, LABELS)), epochs=1, verbose=0,
                      callbacks=callbacks)
  return [w.numpy() for w in model.weights], history.history["loss_ce"][-1]


def largest_difference(first, second):
  return max(float(np.max(np.abs(a - b))) for a, b in zip(first, second))


def main():
  mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  single, single_loss = one_step(tf.distribute.get_strategy())
  together, together_loss = one_step(mirrored)
  # The same step with each replica dividing by its own sum of weights.
  long_tail_losses._sum_over_replicas = lambda value: (value, 1)  # pylint: disable=protected-access
  apart, apart_loss = one_step(mirrored)
  print(json.dumps({"all_reduced_difference": largest_difference(single, together),
                    "per_replica_difference": largest_difference(single, apart),
                    "single_loss": float(single_loss), "all_reduced_loss": float(together_loss),
                    "per_replica_loss": float(apart_loss)}))


if __name__ == "__main__":
  main()
