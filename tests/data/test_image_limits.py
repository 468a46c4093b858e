"""Every decode of a user's file goes through image_header.checked: the generated corpus of
malformed images (tools/malformed_images.py) decoded or refused with one line, animated GIFs
decoded to their first frame alone, and files over --max_image_pixels skipped and counted by
the image check and the training and evaluation pipelines, never decoded."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cbd_tf import config as config_lib
from cbd_tf.data import augment, image_header, pipeline, source_cache, sources
from cbd_tf.data.source_types import Split
from tests.fakes import image_bytes, write_file, write_image_folder
from tools import malformed_images

CORPUS = malformed_images.corpus()


@pytest.fixture(name="info_logs")
def absl_info_logs(caplog):
  """caplog with absl's INFO lines: another test's CLI run may have left absl at WARNING."""
  from absl import logging  # pylint: disable=import-outside-toplevel
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.INFO)
  with caplog.at_level("INFO"):
    yield caplog
  logging.set_verbosity(verbosity)


def refusal(contents: bytes, max_pixels=config_lib.DataConfig.max_image_pixels):
  """None when `contents` decodes, else the first line of the InvalidArgument it raises."""
  try:
    augment.decode_image(tf.constant(contents), max_pixels)
  except tf.errors.InvalidArgumentError as error:
    return error.message.split("\n")[0]
  return None


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_is_decoded_or_refused_with_one_line(name):
  contents, expected = CORPUS[name]
  reason = refusal(contents)
  if expected == "decode":
    assert reason is None
  elif expected == "refuse":
    assert reason, "decoded what must be refused"


def test_refusal_names_the_reason():
  reasons = {name: refusal(CORPUS[name][0]) for name in (
      "png_declares_largest", "gif_declares_largest", "webp_declares_largest",
      "bmp_declares_overflowing_product", "webp_animated", "jxl_signature", "text",
      "gif_truncated_50%")}
  assert "image of 2147483647 x 2147483647 pixels is over the limit of 89478485" in reasons[
      "png_declares_largest"]
  # A GIF's size is its first image descriptor's: here 65,535 a side on a 1 x 1 file.
  assert "image of 65535 x 65535 pixels is over the limit" in reasons["gif_declares_largest"]
  assert "image of 16777216 x 16777216 pixels" in reasons["webp_declares_largest"]
  assert "image of 2147483648 x 2147483647 pixels" in reasons[
      "bmp_declares_overflowing_product"]
  assert "animated WebP" in reasons["webp_animated"]
  for name in ("jxl_signature", "text"):
    assert "not a JPEG, PNG, GIF, BMP or WebP image" in reasons[name]
  assert "GIF without a complete first image" in reasons["gif_truncated_50%"]


def distinct_frames_gif(frames=5, size=(12, 20)):
  rng = np.random.default_rng(3)
  images = [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).convert("P")
            for _ in range(frames)]
  return malformed_images.encode(images[0], "GIF", save_all=True, append_images=images[1:])


def test_gif_is_cut_after_its_first_image_and_decodes_as_its_first_frame():
  gif = distinct_frames_gif()
  assert tf.io.decode_gif(gif).shape[0] == 5
  checked = image_header.checked(tf.constant(gif), 10**6).numpy()
  assert tf.io.decode_gif(checked).shape[0] == 1  # one frame left to decode
  # Its own walk, in Python: header and blocks up to the end of the first image.
  head, blocks = malformed_images.gif_blocks(gif)
  first_image = next(i for i, block in enumerate(blocks) if block[0] == 0x2C)
  assert checked == head + b"".join(blocks[:first_image + 1]) + b";"
  np.testing.assert_array_equal(augment.decode_image(tf.constant(gif)),
                                tf.io.decode_gif(gif)[0])


def test_gif_walk_of_many_extensions_and_one_byte_sub_blocks():
  contents = CORPUS["gif_many_extensions"][0]  # 60,000 comments of eight 1-byte sub-blocks: 1.1 MB
  assert image_header.declared_size(tf.constant(contents)).numpy().tolist() == [1, 1]
  assert augment.decode_image(tf.constant(contents)).shape == (1, 1, 3)


def test_gif_size_is_its_first_images_not_its_screens():
  # A 1 x 1 logical screen holding a frame that declares 300 x 200.
  gif = malformed_images.gif_with_frame_size(300, 200)
  gif = gif[:6] + b"\x01\x00\x01\x00" + gif[10:]
  assert image_header.declared_size(tf.constant(gif)).numpy().tolist() == [200, 300]
  assert "image of 200 x 300 pixels is over the limit of 100" in refusal(gif, 100)


def test_jpeg_training_crop_checks_the_limit_before_decoding():
  data = config_lib.DataConfig(image_size=8, max_image_pixels=100)
  seeds = augment.train_seeds(tf.constant([1, 2], tf.int64))
  small = tf.constant(image_bytes("jpeg", size=(8, 12)))
  assert augment.crop_resize_flip(small, seeds, data).shape == (8, 8, 3)
  with pytest.raises(tf.errors.InvalidArgumentError, match="image of 20 x 12 pixels"):
    augment.crop_resize_flip(tf.constant(image_bytes("jpeg", size=(20, 12))), seeds, data)


def test_image_check_skips_and_lists_files_over_the_limit_and_the_corpus(tmp_path, info_logs):
  root = write_image_folder(tmp_path / "images", per_class=(4, 3), classes=("a", "b"))
  write_file(os.path.join(root, "train", "a", "large.png"), image_bytes("png", size=(30, 30)))
  refused = sorted(name for name, (_, expected) in CORPUS.items() if expected == "refuse")
  for name in refused:
    write_file(os.path.join(root, "train", "b", f"{name}.bin"), CORPUS[name][0])
  write_file(os.path.join(root, "train", "b", "animated.gif"),
             malformed_images.animated_gif(20, 50))
  data = config_lib.DataConfig(dataset="image_folder", data_dir=root, image_size=8,
                               max_image_pixels=600, cache_dir=str(tmp_path / "cache"))
  source = sources.load_source(data)
  skipped = {line.split("\t")[1].rsplit(os.sep, 1)[1]: line.split("\t")[2]
             for line in source.skipped_files}
  assert set(skipped) == {"large.png", *(f"{name}.bin" for name in refused)}
  assert skipped["large.png"] == ("image of 30 x 30 pixels is over the limit of 600 pixels "
                                  "(--max_image_pixels)")
  assert list(source.train_counts) == [4, 4]  # the animated GIF kept: its first frame
  progress = [r.getMessage() for r in info_logs.records
              if r.getMessage().startswith("checked ")]
  assert f"checked {len(refused) + 9} of {len(refused) + 9} train image files (100%)" in (
      progress[0]) and progress[0].endswith(f", {len(refused) + 1} skipped")
  # Another limit is another check: the large file comes back.
  again = sources.load_source(data.__class__(**{**data.__dict__, "max_image_pixels": 10**6}))
  assert list(again.train_counts) == [5, 4]


def test_check_progress_reports_rate_and_time_left(info_logs):
  progress = source_cache._CheckProgress(1000, "train", seconds=0.0)  # pylint: disable=protected-access
  progress.update(250, 240)
  message = info_logs.records[-1].getMessage()
  assert message.startswith("checked 250 of 1,000 train image files (25%), ")
  assert " files/s, " in message and " left, 10 skipped" in message


def test_pipelines_skip_and_count_files_over_the_limit_without_the_check(tmp_path):
  paths = [write_file(tmp_path / f"{i}.png", image_bytes("png", seed=i, size=(10, 10)))
           for i in range(6)]
  paths.append(write_file(tmp_path / "large.png", image_bytes("png", size=(40, 40))))
  paths.append(write_file(tmp_path / "animated.gif", malformed_images.animated_gif(10, 40)))
  split = Split.from_files(paths, [0, 1, 0, 1, 0, 1, 0, 1])
  data = config_lib.DataConfig(image_size=8, batch_size=2, eval_batch_size=3,
                               max_image_pixels=1_000)
  evaluated = [labels for _, labels in pipeline.eval_batches(split, data)]
  assert sum(len(labels) for labels in evaluated) == 7  # the large file left out
  counter = tf.Variable(0, dtype=tf.int64)
  indices = tf.data.Dataset.from_tensor_slices(
      (tf.range(8, dtype=tf.int64), tf.zeros([8, 2], tf.int64) + tf.range(8, dtype=tf.int64)[:,
                                                                                     None]))
  batches = list(pipeline.train_batches(indices.repeat(2), split, data, batch_size=2,
                                        drop_counter=counter))
  assert len(batches) == 7 and int(counter.numpy()) >= 1
