"""One SGD step of a classifier under MirroredStrategy over 2 logical CPUs with per-replica
BatchNorm (the paper recipe: --nosync_batchnorm), against the official step written out on
one device: each replica's half-batch normalised with its own statistics, its loss divided
by the replica count, the gradients summed (train.py: local_loss = loss /
num_replicas_in_sync, then all_reduce("sum", grads)). Prints one JSON object: the largest
difference of the trained weights from that step, and from a whole-batch BatchNorm step.

  python -m tests.scripts.per_replica_batchnorm
"""

import json

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # pylint: disable=wrong-import-position

from tests import helpers  # pylint: disable=wrong-import-position

LEARNING_RATE, WEIGHT_DECAY, SIZE = 0.1, 5e-4, 16


def official_step(start, batches):
  """Trainable weights after train.py's step over `batches` (one per replica)."""
  model = helpers.tiny_classifier(image_size=SIZE)
  model.set_weights(start)
  variables = model.trainable_variables
  total = [tf.zeros_like(v) for v in variables]
  for images, labels in batches:
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=labels, logits=logits))
      loss += WEIGHT_DECAY * 0.5 * tf.nn.l2_loss(tf.concat([tf.reshape(v, [-1]) for v in variables], 0))
      local_loss = loss / len(batches)
    total = [t + g for t, g in zip(total, tape.gradient(local_loss, variables))]
  return [(v - LEARNING_RATE * g).numpy() for v, g in zip(variables, total)]


def main():
  keras.utils.set_random_seed(0)
  images, labels = helpers.tiny_batch(batch_size=8, image_size=SIZE)
  start = helpers.tiny_classifier(image_size=SIZE).get_weights()
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with strategy.scope():
    model = helpers.tiny_classifier(image_size=SIZE)
    model.set_weights(start)
    model.compile(keras.optimizers.SGD(LEARNING_RATE), weight_decay=WEIGHT_DECAY)
  model.fit(tf.data.Dataset.from_tensors((images, labels)), epochs=1, verbose=0)
  trained = [v.numpy() for v in model.trainable_variables]
  halves = [(images[:4], labels[:4]), (images[4:], labels[4:])]
  print(json.dumps({
      "per_replica": max(float(np.max(np.abs(a - b)))
                         for a, b in zip(trained, official_step(start, halves))),
      "whole_batch": max(float(np.max(np.abs(a - b)))
                         for a, b in zip(trained, official_step(start, [(images, labels)]))),
      "replicas": strategy.num_replicas_in_sync}))


if __name__ == "__main__":
  main()
