import os

import numpy as np
import pytest
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import augment, pipeline, randaugment, sources

DATA = config_lib.DataConfig(image_size=12, batch_size=8, eval_batch_size=5, crop_min_area=0.3,
                             eval_crop_fraction=0.75)


def tiny_split(num_examples=20, size=16, channels=1):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(num_examples, size, size, channels), dtype=np.uint8)
  return sources.Split(images, np.arange(num_examples, dtype=np.int64) % 4)


def test_train_batches_have_model_shape_and_range():
  dataset = pipeline.build_train_dataset(tiny_split(), DATA, "class_balanced", 0, 4)
  images, labels = next(iter(dataset))
  assert images.shape == (8, 12, 12, 3) and images.dtype == tf.float32
  assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
  assert labels.shape == (8,) and labels.dtype == tf.int64


def test_training_stream_is_reproducible():
  first = next(iter(pipeline.build_train_dataset(tiny_split(), DATA, "sqrt", 3, 4)))
  second = next(iter(pipeline.build_train_dataset(tiny_split(), DATA, "sqrt", 3, 4)))
  np.testing.assert_array_equal(first[0].numpy(), second[0].numpy())


def test_shards_partition_the_global_batch():
  whole = next(iter(pipeline.build_train_dataset(tiny_split(), DATA, "class_balanced", 1, 4)))
  shards = [next(iter(pipeline.build_train_dataset(
      tiny_split(), DATA, "class_balanced", 1, 4,
      tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i,
                                 num_replicas_in_sync=2)))) for i in range(2)]
  assert shards[0][0].shape[0] == 4
  interleaved = np.stack([shards[0][1].numpy(), shards[1][1].numpy()], axis=1).reshape(-1)
  np.testing.assert_array_equal(interleaved, whole[1].numpy())


def test_eval_is_ordered_centre_crop_same_eagerly_and_in_graph():
  split = tiny_split(num_examples=7, size=16, channels=3)
  batches = list(pipeline.build_eval_dataset(split, DATA))
  assert [b[0].shape[0] for b in batches] == [5, 2]
  np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), split.labels)
  for image, original in zip(np.concatenate([b[0] for b in batches]), split.images):
    # Each image beside its own label: the one at its index.
    np.testing.assert_allclose(image, original[2:14, 2:14].astype(np.float32) / 255, atol=1e-6)
  eager = augment.preprocess_eval(tf.constant(split.images[0]), DATA)
  np.testing.assert_allclose(batches[0][0][0].numpy(), eager.numpy(), atol=1e-6)
  # 16px image, short side resized to 12 / 0.75 = 16, so the crop is the centre 12x12.
  expected = split.images[0][2:14, 2:14].astype(np.float32) / 255
  np.testing.assert_allclose(eager.numpy(), expected, atol=1e-6)


def test_train_preprocessing_same_eagerly_and_in_graph():
  image = tf.constant(tiny_split(size=20, channels=3).images[0])
  seed = tf.constant([4, 2], tf.int64)
  jitter = DATA.__class__(**{**DATA.__dict__, "augmentation": "jitter"})
  eager = augment.preprocess_train(image, seed, jitter)
  graph = tf.function(lambda i, s: augment.preprocess_train(i, s, jitter))(image, seed)
  np.testing.assert_allclose(eager.numpy(), graph.numpy(), atol=1e-6)
  assert eager.shape == (12, 12, 3)


def test_grayscale_arrays_train_and_evaluate_as_rgb():
  split = tiny_split(num_examples=8, size=16, channels=1)
  images, _ = next(iter(pipeline.build_train_dataset(split, DATA, "instance", 0, 4)))
  assert images.shape == (8, 12, 12, 3)
  np.testing.assert_array_equal(images[..., 0].numpy(), images[..., 2].numpy())
  evaluated, _ = next(iter(pipeline.build_eval_dataset(split, DATA)))
  assert evaluated.shape == (5, 12, 12, 3)


def test_colour_distortion_changes_colours_but_keeps_range():
  image = tf.random.stateless_uniform([8, 8, 3], seed=[1, 2])
  outputs = [augment.color_distortion(image, tf.constant([s, 0], tf.int64)) for s in range(20)]
  changed = sum(not np.allclose(o.numpy(), image.numpy()) for o in outputs)
  assert changed >= 10
  assert all(0.0 <= float(tf.reduce_min(o)) and float(tf.reduce_max(o)) <= 1.0 for o in outputs)


def write_png_split(directory, split):
  """The same images as `split`, as PNG files (lossless, so decoding gives them back)."""
  paths = []
  for index, image in enumerate(split.images):
    path = os.path.join(directory, f"{index}.png")
    tf.io.write_file(path, tf.io.encode_png(image))
    paths.append(path)
  return sources.Split.from_files(paths, split.labels)


@pytest.mark.slow
def test_file_split_gives_the_same_batches_as_decoded_images(tmp_path):
  in_memory = tiny_split(num_examples=12, size=16, channels=3)
  on_disk = write_png_split(str(tmp_path), in_memory)
  for build in (lambda s: pipeline.build_train_dataset(s, DATA, "class_balanced", 2, 4),
                lambda s: pipeline.build_eval_dataset(s, DATA)):
    expected, got = next(iter(build(in_memory))), next(iter(build(on_disk)))
    np.testing.assert_allclose(got[0].numpy(), expected[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(got[1].numpy(), expected[1].numpy())


def test_file_broken_after_the_check_is_skipped_not_fatal(tmp_path):
  split = write_png_split(str(tmp_path), tiny_split(num_examples=8, size=16, channels=3))
  with open(split.paths[3], "wb") as f:
    f.write(b"broken since load_source checked it")
  labels = np.concatenate([b[1].numpy() for b in pipeline.build_eval_dataset(split, DATA)])
  assert len(labels) == 7
  dropped = tf.Variable(0, dtype=tf.int64)
  iterator = iter(pipeline.build_train_dataset(split, DATA, "instance", 0, 4,
                                               drop_counter=dropped))
  for _ in range(4):
    images, _ = next(iterator)
  assert images.shape == (8, 12, 12, 3)
  # 32 examples kept from a uniform draw over 8 files: about 4.6 of file 3 dropped by then.
  assert int(dropped.numpy()) >= 1


def test_split_holds_images_or_paths():
  with pytest.raises(ValueError, match="exactly one of images or paths"):
    sources.Split(None, np.zeros(2, np.int64))


@pytest.mark.parametrize("name", randaugment.OPERATIONS)
def test_each_randaugment_operation_keeps_shape_and_range(name):
  image = tf.random.stateless_uniform([12, 10, 3], seed=[3, 4])
  branch = randaugment._branch(name, image, -0.9, 0.9)  # pylint: disable=protected-access
  output = tf.clip_by_value(branch(), 0.0, 1.0)
  assert output.shape == (12, 10, 3)
  if name != "identity":
    assert not np.allclose(output.numpy(), image.numpy()), name


@pytest.mark.slow
def test_randaugment_is_seeded_per_example_and_same_in_graph():
  data = DATA.__class__(**{**DATA.__dict__, "randaugment": True})
  image = tf.constant(tiny_split(size=20, channels=3).images[0])
  seed = tf.constant([7, 1], tf.int64)
  eager = augment.preprocess_train(image, seed, data)
  in_graph = tf.function(lambda i, s: augment.preprocess_train(i, s, data))
  np.testing.assert_allclose(eager.numpy(), in_graph(image, seed).numpy(), atol=1e-5)
  plain = augment.preprocess_train(image, seed, DATA)
  outputs = [in_graph(image, tf.constant([s, 1], tf.int64)) for s in range(8)]
  assert sum(not np.allclose(o.numpy(), outputs[0].numpy()) for o in outputs) >= 6
  assert eager.shape == plain.shape == (12, 12, 3)
