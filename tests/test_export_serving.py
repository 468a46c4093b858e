"""Exports as TF Serving meets them. What a served model does with bytes it did not make:
the size each format declares in its header, read before decoding; images over the export's
pixel limit and requests over its image count refused with a message naming the limit, the
next request served; a generated corpus of malformed images served or refused, in bounded
memory. And TF Serving's warm-up record, read back as PredictionLog protos and
replayed."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from cbd_tf import config as config_lib
from cbd_tf import run_files, run_models, serving, serving_warmup, training
from cbd_tf.data import image_header
from cbd_tf.data.source_types import Split
from tests import fakes, helpers


def webp_bytes(rgb, **options):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  encoded = io.BytesIO()
  Image.fromarray(rgb).save(encoded, "WEBP", **options)
  return encoded.getvalue()


def bomb_jpeg(height=20_000, width=20_000) -> bytes:
  """A small JPEG whose SOF0 marker declares height x width (as a 4.7 MB grey picture of
  that size would): decoding it would allocate height * width * 3 bytes."""
  jpeg = fakes.image_bytes("jpeg", size=(16, 16))
  sof = jpeg.index(b"\xff\xc0")
  return (jpeg[:sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big")
          + jpeg[sof + 9:])


def encoded_images():
  rgb = np.random.default_rng(0).integers(0, 256, size=(11, 17, 3), dtype=np.uint8)
  images = {kind: fakes.image_bytes(kind, size=(11, 17))
            for kind in ("png", "jpeg", "gray_png", "rgba_png", "png16", "gif", "bmp")}
  images.update({"webp_lossless": webp_bytes(rgb, lossless=True),
                 "webp_lossy": webp_bytes(rgb, quality=80),
                 "webp_extended": webp_bytes(rgb, quality=80, exif=b"Exif\0\0cbd")})
  return images


@pytest.mark.parametrize("kind", sorted(encoded_images()))
def test_declared_size_is_the_decoded_size_for_every_format(kind):
  contents = encoded_images()[kind]
  decoded = tf.io.decode_image(contents, expand_animations=False)
  assert image_header.declared_size(tf.constant(contents)).numpy().tolist() == list(
      decoded.shape[:2])


def test_declared_size_reads_the_header_only():
  assert image_header.declared_size(tf.constant(bomb_jpeg())).numpy().tolist() == [20_000, 20_000]
  for broken in (b"", b"not an image", fakes.image_bytes("corrupt_png")[:10]):
    assert image_header.declared_size(tf.constant(broken)).numpy().tolist() in ([0, 0], [0, 10])


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  """A tiny classifier exported with small limits (600 pixels, 2 images) and with the
  defaults: {name: (serving_default, export directory)}."""
  root = tmp_path_factory.mktemp("exports")
  model = helpers.tiny_classifier(num_classes=4, image_size=16)
  loaded = {}
  for name, limits in (("small", {"max_image_pixels": 600, "max_request_images": 2}),
                       ("default", {})):
    config = config_lib.Config(workdir=str(root), data=config_lib.DataConfig(
        image_size=16, eval_crop_fraction=1.0)).replace(
            data={key: value for key, value in limits.items() if key == "max_image_pixels"},
            output={key: value for key, value in limits.items() if key == "max_request_images"})
    warmup = serving_warmup.encoded_images(Split(
        np.random.default_rng(1).integers(0, 256, (5, 20, 20, 1), dtype=np.uint8),
        np.zeros(5, np.int64)))
    directory = serving.export_saved_model(model, str(root / name), list("abcd"), [9, 5, 2, 1],
                                           config, warmup_images=warmup)
    loaded[name] = (tf.saved_model.load(directory).signatures["serving_default"], directory)
  return loaded


def serve(signature, *images):
  return signature(image_bytes=tf.constant(list(images)))


def test_image_over_the_pixel_limit_is_refused_naming_limit_and_size(exports):
  signature, directory = exports["small"]
  small = fakes.image_bytes("png", size=(20, 20))  # 400 pixels
  assert serve(signature, small)["probabilities"].shape == (1, 4)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"\[image of 30 x 30 pixels is over the limit of 600 pixels "
                           r"\(--max_image_pixels\)\]"):
    serve(signature, small, fakes.image_bytes("png", size=(30, 30)))
  assert serve(signature, small)["probabilities"].shape == (1, 4)  # the next is served
  with open(os.path.join(directory, "assets", "serving.json")) as f:
    assert json.load(f) == {"max_image_pixels": 600, "max_request_images": 2,
                            "posthoc_tau": 0.0}


def test_request_over_the_image_limit_is_refused(exports):
  signature, _ = exports["small"]
  small = fakes.image_bytes("jpeg", size=(12, 12))
  assert serve(signature, small, small)["top_k_labels"].shape[0] == 2
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"\[a request of 3 images is over the limit of 2 images "
                           r"\(--max_request_images\)\]"):
    serve(signature, small, small, small)
  assert serve(signature, small)["probabilities"].shape == (1, 4)


def test_decompression_bomb_is_refused_before_it_is_decoded(exports, tmp_path):
  signature, directory = exports["default"]
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"image of 20000 x 20000 pixels is over the limit of 89478485"):
    serve(signature, bomb_jpeg())
  assert serve(signature, fakes.image_bytes("bmp"))["probabilities"].shape == (1, 4)
  # Nothing decoded: with 300 MB of address space left, decoding a 12000 x 12000 bomb (432 MB
  # as uint8; under TF's own JPEG size cap, which refuses 20000 x 20000 itself) before the
  # check would end out of memory (as it does through an export whose limit lets it in).
  bomb = fakes.write_file(tmp_path / "bomb.jpg", bomb_jpeg(12_000, 12_000))
  result = helpers.run_script("serve_under_memory_limit", directory, str(bomb), "300")
  assert result["allocation_refused"]  # the cap bites
  assert result["outcome"].startswith("refused: "), result
  assert "image of 12000 x 12000 pixels is over the limit of 89478485" in result["outcome"]


def test_warmup_record_holds_serving_default_requests_that_replay(exports):
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=import-outside-toplevel
  signature, directory = exports["default"]
  path = os.path.join(directory, "assets.extra", "tf_serving_warmup_requests")
  logs = [prediction_log_pb2.PredictionLog.FromString(record.numpy())
          for record in tf.data.TFRecordDataset(path)]
  assert [len(log.predict_log.request.inputs["image_bytes"].string_val) for log in logs] == [1, 3]
  for log in logs:
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    images = tf.make_ndarray(request.inputs["image_bytes"])
    assert tf.io.decode_png(images[0]).shape == (20, 20, 3)  # a real image of the data
    outputs = signature(image_bytes=tf.constant(images))
    assert outputs["probabilities"].shape == (len(images), 4)


def test_run_keeps_warmup_images_for_later_exports(tmp_path):
  paths = [fakes.write_file(tmp_path / f"{i}.jpg", fakes.image_bytes("jpeg", seed=i))
           for i in range(4)]
  images = serving_warmup.encoded_images(Split.from_files(paths, [0, 1, 2, 3]))
  assert images == [open(p, "rb").read() for p in paths[:3]]  # the files, as they are
  serving_warmup.keep_images(images, str(tmp_path))
  assert serving_warmup.kept_images(str(tmp_path)) == images
  assert serving_warmup.kept_images(str(tmp_path / "elsewhere")) == []


def test_export_bakes_the_posthoc_adjustment_into_the_probabilities(tmp_path):
  # Menon et al.: logits - tau * log prior, the prior from the run's training counts.
  model = helpers.tiny_classifier(num_classes=4, image_size=16)
  counts = [40, 10, 4, 1]
  config = config_lib.Config(workdir=str(tmp_path), data=config_lib.DataConfig(image_size=16))
  directory = serving.export_saved_model(model, str(tmp_path / "export"), list("abcd"), counts,
                                         config, posthoc_tau=1.5)
  images, _ = helpers.tiny_batch(batch_size=5, image_size=16)
  served = tf.saved_model.load(directory).signatures["predict_images"](images=tf.constant(images))
  prior = np.log(np.array(counts) / np.sum(counts))
  expected = tf.nn.softmax(np.asarray(model(images), np.float64) - 1.5 * prior).numpy()
  np.testing.assert_allclose(served["probabilities"].numpy(), expected, rtol=1e-4, atol=1e-6)
  with open(os.path.join(directory, "assets", "serving.json")) as f:
    assert json.load(f)["posthoc_tau"] == 1.5


def test_posthoc_tau_val_finds_the_tau_that_undoes_a_known_prior_bias():
  # Logits = one-hot(label) + 1.5 * log prior: a tau undoes the bias where every class is
  # right. Written out: for counts 40 / 10 / 4 / 1 (log 40 = 3.69), class 3 needs
  # (1.5 - tau) * 3.69 < 1 and class 0 (tau - 1.5) * 3.69 < 1: tau in 1.3 .. 1.7; the
  # smallest on the 0.1 grid, 1.3, neither the default 0 nor an end of the sweep.
  from cbd_tf import evaluation  # pylint: disable=import-outside-toplevel
  from cbd_tf.data.source_types import Source  # pylint: disable=import-outside-toplevel
  counts = [40, 10, 4, 1]
  log_prior = tf.constant(np.log(np.array(counts) / sum(counts)), tf.float32)

  def split(per_class):  # constant images whose first channel spells the label
    labels = np.repeat(np.arange(4), per_class).astype(np.int64)
    images = np.zeros((len(labels), 4, 4, 3), np.uint8)
    images[..., 0] = (labels * 60)[:, None, None]
    return Split(images, labels)

  def model(images, training=False):  # pylint: disable=unused-argument
    label = tf.cast(tf.round(images[:, 0, 0, 0] * 255 / 60), tf.int32)
    return tf.one_hot(label, 4) + 1.5 * log_prior
  source = Source("tiny", train=split(counts), test=split([2] * 4), val=split([3] * 4),
                  class_names=tuple("abcd"))
  config = config_lib.Config(data=config_lib.DataConfig(
      image_size=4, eval_crop_fraction=1.0)).replace(long_tail={"posthoc_tau": "val"})
  tau, chosen = evaluation.posthoc_tau(model, config, source)
  assert tau == 1.3 and chosen["posthoc_tau_chosen_on"] == "val"
  assert chosen["posthoc_tau_sweep"]["1.3"] == 1.0 > chosen["posthoc_tau_sweep"]["1.2"]
  assert chosen["posthoc_tau_sweep"]["0"] == 0.25  # unadjusted: only class 0 right


@pytest.mark.slow
def test_posthoc_tau_val_is_chosen_on_validation_and_the_export_evaluates_as_the_model(tmp_path):
  from cbd_tf import evaluation  # pylint: disable=import-outside-toplevel
  config = helpers.config_from_argv(
      "--flagfile=configs/smoke.flags", "--stage=teacher", "--dataset=mnist_pairs_lt",
      "--eval_every_epochs=0", "--posthoc_tau=val", f"--workdir={tmp_path / 'run'}")
  trained = training.run(config)
  # The sweep, written out: logits on the validation split minus tau * log prior for tau in
  # 0, 0.1, ..., 2; the best mean per-class accuracy (ties: the smaller tau).
  model, _ = run_models.load_classifier(config.workdir)
  source = evaluation.matching_source(config.data, run_files.read_classes(config.workdir)[1], "")
  from cbd_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  batches = list(pipeline.build_eval_dataset(source.val, config.data))
  logits = np.concatenate([np.asarray(model(x)) for x, _ in batches])
  labels = np.concatenate([np.asarray(y) for _, y in batches])
  prior = np.log(source.train_counts / source.train_counts.sum())
  def mean_class_accuracy(tau):
    predicted = (logits - tau * prior).argmax(axis=-1)
    return np.mean([np.mean(predicted[labels == c] == c) for c in np.unique(labels)])
  taus = [round(0.1 * step, 1) for step in range(21)]
  scores = [mean_class_accuracy(tau) for tau in taus]
  # Every tau was scored, and the best taken (scores of a barely trained model tie often).
  assert trained["posthoc_tau_sweep"] == pytest.approx(
      {f"{tau:g}": score for tau, score in zip(taus, scores)})
  assert trained["posthoc_tau"] == next(
      tau for tau, score in zip(taus, scores) if score >= max(scores) - 1e-9)
  export = serving.export_run(config.workdir, str(tmp_path / "export"),
                              posthoc_tau=evaluation.run_posthoc_tau(config.workdir))
  with open(os.path.join(export, "assets", "serving.json")) as f:
    assert json.load(f)["posthoc_tau"] == trained["posthoc_tau"]
  served = evaluation.evaluate_saved_model(export)
  assert served["top1"] == pytest.approx(trained["top1"])
  assert served["per_class"] == pytest.approx(trained["per_class"])


@pytest.mark.slow
def test_malformed_corpus_is_served_or_refused_in_one_line_with_bounded_memory(exports):
  from tools import malformed_images  # pylint: disable=import-outside-toplevel
  _, directory = exports["default"]
  result = helpers.run_module("tests.scripts.serve_corpus", directory)
  assert result.returncode == 0, result.stderr[-3000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  for name, (_, expected) in malformed_images.corpus().items():
    outcome = served["outcomes"][name]
    assert expected == "either" or outcome.split(":")[0] == {
        "decode": "served", "refuse": "refused"}[expected], (name, outcome)
  assert served["outcomes"]["gif_animated_1000_frames"] == "served"
  assert served["next_served"]
  # Every frame of the 1,000-frame GIF decoded would be 3 GB; its first frame alone, 3 MB.
  assert served["peak_mb"] - served["baseline_mb"] < 500, served
