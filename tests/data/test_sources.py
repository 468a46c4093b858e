"""File lists, image folders and TFRecords on small real image files written here."""

import os

import pytest
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf.data import long_tail, pipeline, source_cache, sources
from tests.fakes import (BROKEN_KINDS, GOOD_KINDS, image_bytes, write_file, write_file_lists,
                         write_image_folder, write_tfrecords)

def data_config(tmp_path, **changes):
  values = dict(image_size=16, batch_size=8, eval_batch_size=4, cache_dir=str(tmp_path / "cache"))
  values.update(changes)
  return config_lib.DataConfig(**values)


def test_every_good_kind_decodes_to_rgb():
  from cbd_tf.data import augment  # pylint: disable=import-outside-toplevel
  for kind in GOOD_KINDS:
    image = augment.decode_image(tf.constant(image_bytes(kind)))
    assert image.dtype == tf.uint8 and image.shape[-1] == 3, kind
  for kind in BROKEN_KINDS:
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
      augment.decode_image(tf.constant(image_bytes(kind)))


def test_cmyk_jpeg_decodes():
  image_module = pytest.importorskip("PIL.Image")
  import io  # pylint: disable=import-outside-toplevel
  from cbd_tf.data import augment  # pylint: disable=import-outside-toplevel
  buffer = io.BytesIO()
  image_module.new("CMYK", (9, 7), (10, 200, 30, 5)).save(buffer, "JPEG")
  assert augment.decode_image(tf.constant(buffer.getvalue())).shape == (7, 9, 3)


def test_image_folder_sorted_classes_test_split_and_skipped_files(tmp_path):
  root = write_image_folder(tmp_path / "images", broken=[
      ("train", "dog", "truncated_jpeg"), ("train", "eel", "text"), ("test", "cat", "empty")])
  write_file(os.path.join(root, "train", "cat", ".DS_Store"), b"\0\0")
  source = sources.load_source(data_config(tmp_path, dataset="image_folder", data_dir=root))
  assert source.class_names == ("cat", "dog", "eel")
  assert list(source.train_counts) == [6, 3, 2]  # broken files and .DS_Store left out
  assert len(source.test) == 6 and all("/test/" in p for p in source.test.paths)
  assert source.num_skipped == 3
  with open(tmp_path / "cache" / source_cache.SKIPPED_FILES) as f:
    listed = f.read().splitlines()
  assert sorted(line.split("\t")[0] for line in listed) == ["test", "train", "train"]
  assert any("broken_truncated_jpeg" in line for line in listed)
  # Cached: a second load reads the check results instead of decoding again.
  again = sources.load_source(data_config(tmp_path, dataset="image_folder", data_dir=root))
  assert again.num_skipped == 3 and list(again.train_counts) == [6, 3, 2]


def test_image_folder_without_test_evaluates_on_val(tmp_path):
  root = write_image_folder(tmp_path / "images", test=False)
  source = sources.load_source(data_config(tmp_path, dataset="image_folder", data_dir=root))
  assert all("/val/" in p for p in source.test.paths) and source.num_skipped == 0
  assert source.val is None


def test_image_folder_and_file_list_with_val_and_test_keep_both(tmp_path):
  root = write_image_folder(tmp_path / "images")
  source = sources.load_source(data_config(tmp_path, dataset="image_folder", data_dir=root))
  assert all("/test/" in p for p in source.test.paths)
  assert len(source.val) == 6 and all("/val/" in p for p in source.val.paths)
  lists = write_file_lists(tmp_path / "data")
  write_file(os.path.join(lists, "lists", "val.txt"), b"test/0_0.jpg 0\ntest/2_1.jpg 2\n")
  listed = sources.load_source(data_config(tmp_path, dataset="file_list", data_dir=lists,
                                           train_list="lists/train.txt",
                                           test_list="lists/test.txt", val_list="lists/val.txt"))
  assert len(listed.test) == 6 and list(listed.val.labels) == [0, 2]


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "data_dir '.*missing' does not exist"),
    (lambda root: os.makedirs(os.path.join(root, "train", "empty_class")),
     "class folder '.*train/empty_class' is empty"),
    (lambda root: os.makedirs(os.path.join(root, "val", "zebra")),
     "val/zebra is not a class of train/; valid: cat, dog, eel"),
])
def test_image_folder_errors(tmp_path, setup, message):
  root = str(tmp_path / "images")
  if "missing" not in message:
    write_image_folder(root, test=False)
    setup(root)
  else:
    root = str(tmp_path / "missing")
  with pytest.raises(ValueError, match=message):
    sources.load_source(data_config(tmp_path, dataset="image_folder", data_dir=root))


def test_file_list_reads_paths_labels_and_class_folders(tmp_path):
  root = write_file_lists(tmp_path / "data", broken_kind="truncated_jpeg")
  source = sources.load_source(data_config(
      tmp_path, dataset="file_list", data_dir=root, train_list="lists/train.txt",
      test_list=os.path.join(root, "lists", "test.txt")))
  assert source.class_names == ("c0", "c1", "c2")
  assert list(source.train_counts) == [5, 2, 1] and source.num_skipped == 1
  assert list(source.test.labels) == [0, 0, 1, 1, 2, 2]
  images, labels = next(iter(pipeline.build_eval_dataset(source.test, data_config(tmp_path))))
  assert images.shape == (4, 16, 16, 3) and list(labels.numpy()) == [0, 0, 1, 1]


@pytest.mark.parametrize("line, num_classes, message", [
    ("train/c0/0.png", 0, r"train.txt:4: expected 'relative/path.jpg label', got 'train/c0/0.png'"),
    ("train/c0/0.png zero", 0, "train.txt:4: expected"),
    ("train/c0/0.png 7", 3, r"train.txt:4: label 7 is outside \[0, 3\)"),
    ("train/c0/0.png -1", 0, r"train.txt:4: label -1 is outside"),
])
def test_file_list_errors_name_file_and_line(tmp_path, line, num_classes, message):
  root = str(tmp_path / "data")
  for i in range(3):
    write_file(os.path.join(root, f"{i}.png"), image_bytes("png", i))
  write_file(os.path.join(root, "train.txt"), f"0.png 0\n1.png 1\n2.png 2\n{line}\n".encode())
  write_file(os.path.join(root, "test.txt"), b"0.png 0\n")
  with pytest.raises(ValueError, match=message):
    sources.load_source(data_config(tmp_path, dataset="file_list", data_dir=root,
                                    train_list="train.txt", test_list="test.txt",
                                    num_classes=num_classes))


def test_file_list_eval_label_outside_training_classes(tmp_path):
  root = str(tmp_path / "data")
  write_file(os.path.join(root, "0.png"), image_bytes("png"))
  write_file(os.path.join(root, "train.txt"), b"0.png 0\n0.png 1\n")
  write_file(os.path.join(root, "val.txt"), b"0.png 1\n0.png 2\n")
  with pytest.raises(ValueError, match=r"val.txt:2: label 2 is outside \[0, 2\)"):
    sources.load_source(data_config(tmp_path, dataset="file_list", data_dir=root,
                                    train_list="train.txt", val_list="val.txt"))


def test_places_lt_uses_default_list_names(tmp_path):
  root = str(tmp_path / "places")
  train = "".join(f"data_256/c{c}/{i}.jpg {c}\n" for c in range(365) for i in range(1 + (c < 3)))
  for c in range(3):
    write_file(os.path.join(root, "data_256", f"c{c}", "0.jpg"), image_bytes("jpeg", c))
  write_file(os.path.join(root, "Places_LT_train.txt"), train.encode())
  write_file(os.path.join(root, "Places_LT_test.txt"), b"data_256/c0/0.jpg 0\n")
  source = sources.load_source(data_config(tmp_path, dataset="places_lt", data_dir=root,
                                           validate_images=False))
  assert source.num_classes == 365 and source.class_names[:2] == ("c0", "c1")
  assert source.train_counts[0] == 2 and source.train_counts[364] == 1


def test_tfrecord_exports_once_and_skips_broken_images(tmp_path):
  write_tfrecords(tmp_path / "rec" / "train-0", [0, 0, 0, 1], broken_at=(1,))
  write_tfrecords(tmp_path / "rec" / "train-1", [1, 2])
  write_tfrecords(tmp_path / "rec" / "test-0", [0, 1, 2])
  data = data_config(tmp_path, dataset="tfrecord", tfrecord_train=str(tmp_path / "rec/train-*"),
                     tfrecord_test=str(tmp_path / "rec/test-0"))
  source = sources.load_source(data)
  assert list(source.train_counts) == [2, 2, 1] and source.num_skipped == 1
  assert source.class_names == ("0", "1", "2") and len(source.test) == 3
  exported = sorted(d for d in os.listdir(tmp_path / "cache") if d.startswith("export_"))
  assert len(exported) == 2
  with pytest.raises(ValueError, match=r"TFRecord train files .*: example 5 has label 2 "
                                       r"is outside \[0, 2\)"):
    sources.load_source(dataclass_replace(data, num_classes=2))


def test_tfrecord_errors(tmp_path):
  with pytest.raises(ValueError, match="--tfrecord_train: no files match"):
    sources.load_source(data_config(tmp_path, dataset="tfrecord",
                                    tfrecord_train=str(tmp_path / "none-*"), tfrecord_test="x"))
  with pytest.raises(ValueError, match="needs --tfrecord_train=PATTERN"):
    sources.load_source(data_config(tmp_path, dataset="tfrecord"))


def dataclass_replace(data, **changes):
  import dataclasses  # pylint: disable=import-outside-toplevel
  return dataclasses.replace(data, **changes)


@pytest.mark.parametrize("max_count, num_classes, total", [(5000, 10, 12406), (500, 100, 10847)])
def test_cifar_lt_profile_sizes(max_count, num_classes, total):
  counts = long_tail.exponential_profile(max_count, num_classes, 100)
  assert counts.sum() == total and counts[0] == max_count and counts[-1] == max_count // 100
