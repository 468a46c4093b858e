"""A fixed set of M views per training image, for distillation from cached teacher features.

With --teacher_views=M, view v of image i is the training preprocessing of image i from the
stateless seed `view_seeds(seed, i * M + v)` (augment.py draws everything from that seed:
crop window, flip, RandAugment, jitter), so a view is named by its key i * M + v and the
teachers' feature of it can be computed once (--stage=teacher_features) and looked up by key.

The student's stream still decides which image comes next; `pick_views` then gives the example
one of its image's M views, chosen from the example's own seed: a function of the position,
so a resumed run picks the same views. A live-teacher student with --teacher_views=M and the
same seed sees exactly the views a cached one does.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

# Second word of the stateless seed of the views (sampling.py uses 1 to 4 for its streams).
_VIEW_SEEDS = 5
_VIEW_CHOICE = 6  # folded into an example's seed to choose its view


@dataclasses.dataclass(frozen=True)
class Views:
  """M views per image, seeded by `seed`; `features`, if given, maps a batch's int64 keys to
  its cached teacher features (teacher_cache.FeatureReader.lookup)."""
  count: int
  seed: int
  features: object = None


def view_seeds(seed: int, keys) -> tf.Tensor:
  """The int64 [..., 2] stateless seeds of the views `keys` (image * M + view)."""
  keys = tf.convert_to_tensor(keys, tf.int64)
  folded = tf.random.stateless_uniform([], tf.constant([seed, _VIEW_SEEDS], tf.int64),
                                       minval=None, maxval=None, dtype=tf.int64)
  return tf.stack([tf.fill(tf.shape(keys), folded), keys], axis=-1)


def pick_views(examples: tf.data.Dataset, views: Views) -> tf.data.Dataset:
  """(index, example_seed) -> (index, view_seed, key): each example becomes one of its image's
  views, chosen uniformly from its own seed."""
  count = int(views.count)

  def pick(index, example_seed):
    view = tf.random.stateless_uniform(
        [], tf.random.experimental.stateless_fold_in(example_seed, _VIEW_CHOICE),
        minval=0, maxval=count, dtype=tf.int64)
    key = index * count + view
    return index, view_seeds(views.seed, key), key
  return examples.map(pick)


def views_of(keys, count: int, seed: int, pad_to: int = 1) -> tf.data.Dataset:
  """(index, view_seed, key) for the views `keys` (image * count + view), in order, the last
  key repeated until the length is a multiple of `pad_to` (whole batches, for accelerators
  that need static shapes; a repeated key only gives its row again)."""
  keys = np.asarray(keys, np.int64)
  keys = np.concatenate([keys, np.full(-len(keys) % pad_to, keys[-1], np.int64)])
  return tf.data.Dataset.from_tensor_slices(keys).map(
      lambda key: (key // count, view_seeds(seed, key), key))
