"""The cached image check: what a cache hit costs, reuses and notices."""

import os

import numpy as np
import pytest

from cbd_tf.data import source_cache
from cbd_tf.data.source_types import Split
from tests.fakes import image_bytes, write_file


def write_split(root):
  """Two class folders of small images; one truncated JPEG at index 1."""
  kinds = [("a", "png"), ("a", "truncated_jpeg"), ("a", "jpeg"), ("b", "png"), ("b", "gif")]
  paths = [write_file(os.path.join(root, folder, f"{index}.{kind.split('_')[-1]}"),
                      image_bytes(kind, seed=index))
           for index, (folder, kind) in enumerate(kinds)]
  return Split.from_files(paths, [0, 0, 0, 1, 1])


@pytest.fixture(name="full_checks")
def count_full_checks(monkeypatch):
  """The paths each full check (decode of every file) was given."""
  calls = []
  find_broken = source_cache._find_broken  # pylint: disable=protected-access

  def counted(paths, *args):
    calls.append(list(paths))
    return find_broken(paths, *args)

  monkeypatch.setattr(source_cache, "_find_broken", counted)
  return calls


def test_broken_file_is_skipped_and_listed(tmp_path, full_checks):
  split = write_split(tmp_path / "images")
  kept, skipped = source_cache.drop_broken(split, "train", str(tmp_path / "cache"))
  assert list(kept.paths) == [split.paths[i] for i in (0, 2, 3, 4)]
  assert list(kept.labels) == [0, 0, 1, 1]
  assert len(skipped) == 1 and len(full_checks) == 1
  name, path, reason = skipped[0].split("\t")
  assert name == "train" and path == split.paths[1] and reason


def test_cache_hit_decodes_nothing_and_stats_once_per_directory(tmp_path, monkeypatch):
  split = write_split(tmp_path / "images")
  first = source_cache.drop_broken(split, "train", str(tmp_path / "cache"))

  def fail(*_):
    raise AssertionError("a cache hit decoded an image")

  monkeypatch.setattr(source_cache, "_find_broken", fail)
  monkeypatch.setattr(source_cache.augment, "decode_image", fail)
  stats = []
  real_stat = os.stat
  monkeypatch.setattr(source_cache.os, "stat",
                      lambda path, *args, **kwargs: stats.append(path) or real_stat(path))
  again = source_cache.drop_broken(split, "train", str(tmp_path / "cache"))
  assert again[1] == first[1] and list(again[0].paths) == list(first[0].paths)
  # Two directories plus the one broken file: never one stat per good file.
  images = str(tmp_path / "images")
  assert len([path for path in stats if str(path).startswith(images)]) == 3


def test_new_labels_reuse_the_check(tmp_path, full_checks):
  split = write_split(tmp_path / "images")
  source_cache.drop_broken(split, "train", str(tmp_path / "cache"))
  relabelled = Split.from_files(split.paths, [4, 3, 2, 1, 0])
  kept, skipped = source_cache.drop_broken(relabelled, "train", str(tmp_path / "cache"))
  assert len(full_checks) == 1 and len(skipped) == 1
  assert list(kept.labels) == [4, 2, 1, 0]


def replace_good_with_broken(split):
  """As tar, rsync and downloaders write: a new file renamed over the old one."""
  temporary = split.paths[0] + ".part"
  write_file(temporary, image_bytes("text"))
  os.replace(temporary, split.paths[0])
  return split, {0, 1}


def remove_good_file(split):
  os.remove(split.paths[3])
  return split, {1, 3}


def add_file_to_a_folder(split):
  write_file(os.path.join(os.path.dirname(split.paths[3]), "new.jpg"), image_bytes("text"))
  return split, {1}


def add_path_to_split(split):
  path = write_file(os.path.join(os.path.dirname(os.path.dirname(split.paths[0])), "c", "x.bmp"),
                    image_bytes("empty"))
  return Split.from_files(list(split.paths) + [path], list(split.labels) + [2]), {1, 5}


@pytest.mark.parametrize("change", [replace_good_with_broken, remove_good_file,
                                    add_file_to_a_folder, add_path_to_split])
def test_changed_files_start_the_check_again(tmp_path, full_checks, change):
  split = write_split(tmp_path / "images")
  source_cache.drop_broken(split, "train", str(tmp_path / "cache"))
  split, expected_broken = change(split)
  kept, skipped = source_cache.drop_broken(split, "train", str(tmp_path / "cache"))
  assert len(full_checks) == 2
  assert {line.split("\t")[1] for line in skipped} == {split.paths[i] for i in expected_broken}
  assert len(kept) == len(split) - len(expected_broken)


def test_broken_file_repaired_in_place_is_decoded_again_alone(tmp_path, full_checks):
  split = write_split(tmp_path / "images")
  source_cache.drop_broken(split, "train", str(tmp_path / "cache"))
  with open(split.paths[1], "wb") as f:  # in place: the folder itself does not change
    f.write(image_bytes("jpeg", seed=9))
  kept, skipped = source_cache.drop_broken(split, "train", str(tmp_path / "cache"))
  assert len(full_checks) == 1 and skipped == []
  assert list(kept.paths) == list(split.paths)
  # The record was updated: the next call needs no decode at all.
  assert source_cache.drop_broken(split, "train", str(tmp_path / "cache"))[1] == []


def test_in_memory_split_is_returned_as_is(tmp_path):
  split = Split(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]))
  assert source_cache.drop_broken(split, "train", str(tmp_path)) == (split, [])


def test_a_damaged_check_record_is_checked_again(tmp_path, full_checks):
  split = write_split(tmp_path / "images")
  cache = tmp_path / "cache"
  first = source_cache.drop_broken(split, "train", str(cache))
  (record,) = [path for path in cache.iterdir() if path.name.startswith("checked_train")]
  record.write_text("1\tnot a size\n")
  again = source_cache.drop_broken(split, "train", str(cache))
  assert len(full_checks) == 2 and again[1] == first[1]


def test_a_damaged_export_is_made_again(tmp_path):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  def records():
    return tf.data.Dataset.from_tensor_slices(
        ([image_bytes("png", seed=i) for i in range(3)], [0, 1, 1]))
  directory = str(tmp_path / "export")
  first = source_cache.export_encoded(records, directory, 2, "test")
  labels_file = os.path.join(directory, "labels.npy")
  with open(labels_file, "r+b") as f:
    f.truncate(20)
  again = source_cache.export_encoded(records, directory, 2, "test")
  assert list(again.labels) == list(first.labels) == [0, 1, 1]
  assert np.load(labels_file).tolist() == [0, 1, 1]
