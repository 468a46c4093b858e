"""Fakes and writers of test data shared by several test modules: encoded images of every
kind (and broken ones), image folders, file lists, TFRecords, a mocked TFDS and the smallest
pipeline config. Fixtures shared by modules live in conftest.py."""

import contextlib
import json
import os
import struct

import h5py
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cbd_tf import config as config_lib


# The classic 1x1 GIF89a.
GIF_BYTES = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00"
             b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


def image_bytes(kind: str, seed: int = 0, size=(10, 14)) -> bytes:
  """Encoded test images: png, jpeg, gray_png, gray_jpeg, rgba_png, png16, gif, bmp, and
  broken ones: truncated_jpeg, corrupt_png, text, empty."""
  rng = np.random.default_rng(seed)
  rgb = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
  encoders = {
      "png": lambda: tf.io.encode_png(rgb),
      "jpeg": lambda: tf.io.encode_jpeg(rgb),
      "gray_png": lambda: tf.io.encode_png(rgb[..., :1]),
      "gray_jpeg": lambda: tf.io.encode_jpeg(rgb[..., :1]),
      "rgba_png": lambda: tf.io.encode_png(np.concatenate([rgb, rgb[..., :1]], axis=-1)),
      "png16": lambda: tf.io.encode_png(rgb.astype(np.uint16) * 257),
      "gif": lambda: GIF_BYTES,
      "bmp": lambda: _bmp(rgb),
  }
  if kind in encoders:
    value = encoders[kind]()
    return value if isinstance(value, bytes) else value.numpy()
  jpeg = tf.io.encode_jpeg(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).numpy()
  png = tf.io.encode_png(rgb).numpy()
  return {"truncated_jpeg": jpeg[:len(jpeg) // 2], "corrupt_png": png[:30] + b"\0" * 40,
          "text": b"not an image\n", "empty": b""}[kind]


def _bmp(rgb: np.ndarray) -> bytes:
  height, width, _ = rgb.shape
  row = (width * 3 + 3) // 4 * 4
  pixels = b"".join(rgb[y, :, ::-1].tobytes().ljust(row, b"\0") for y in range(height - 1, -1, -1))
  header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
  info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
  return header + info + pixels


GOOD_KINDS = ("png", "jpeg", "gray_png", "gray_jpeg", "rgba_png", "png16", "gif", "bmp")
BROKEN_KINDS = ("truncated_jpeg", "corrupt_png", "text", "empty")


def write_file(path, content: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(content)
  return str(path)


def write_image_folder(root, classes=("cat", "dog", "eel"), per_class=(6, 3, 2), test=True,
                       broken=()) -> str:
  """root/{train,val[,test]}/<class>/<i>.<kind>, cycling through every good kind; `broken`
  adds (split, class, kind) files that do not decode."""
  for split in ("train", "val") + (("test",) if test else ()):
    for class_index, class_name in enumerate(classes):
      count = per_class[class_index] if split == "train" else 2
      for i in range(count):
        kind = GOOD_KINDS[(i + class_index) % len(GOOD_KINDS)]
        write_file(os.path.join(root, split, class_name, f"{i}.{kind.split('_')[-1]}"),
                   image_bytes(kind, seed=i))
  for split, class_name, kind in broken:
    write_file(os.path.join(root, split, class_name, f"broken_{kind}.jpg"), image_bytes(kind))
  return str(root)


def write_file_lists(root, broken_kind=None):
  """OLTR-style lists: train has 5 / 2 / 1 images of classes 0-2, test 2 of each."""
  train, test = [], []
  for label, count in enumerate((5, 2, 1)):
    for i in range(count):
      train.append(f"/train/c{label}/{i}.png {label}")
      write_file(os.path.join(root, "train", f"c{label}", f"{i}.png"), image_bytes("png", i))
    for i in range(2):
      test.append(f"test/{label}_{i}.jpg {label}")
      write_file(os.path.join(root, "test", f"{label}_{i}.jpg"), image_bytes("jpeg", i))
  if broken_kind:
    train.append("train/c0/broken.jpg 0")
    write_file(os.path.join(root, "train", "c0", "broken.jpg"), image_bytes(broken_kind))
  write_file(os.path.join(root, "lists", "train.txt"), ("\n".join(train) + "\n\n").encode())
  write_file(os.path.join(root, "lists", "test.txt"), "\n".join(test).encode())
  return str(root)


def write_tfrecords(path, labels, image_key="image", label_key="label", broken_at=()):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for index, label in enumerate(labels):
      content = image_bytes("text" if index in broken_at else "jpeg", index)
      example = tf.train.Example(features=tf.train.Features(feature={
          image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[content])),
          label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
      writer.write(example.SerializeToString())
  return str(path)


def long_tailed_labels(num_classes: int, head_extra: int) -> np.ndarray:
  """Every class once, plus `head_extra` more examples of class 0 and 1 more of class 1."""
  return np.concatenate([np.arange(num_classes), np.zeros(head_extra, np.int64), [1]])


def fake_as_dataset(train_labels=None, test_labels=None, per_class=None):
  """as_dataset_fn for tfds.testing.mock_data: PNG images, labels chosen here.

  `per_class` gives every class that many examples in every split (CIFAR); otherwise
  train / test labels default to long_tailed_labels and one example a class.
  """
  def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    del read_config, shuffle_files
    num_classes = self.info.features["label"].num_classes
    if per_class:
      labels = np.tile(np.arange(num_classes), per_class)
    elif split == "train":
      labels = long_tailed_labels(num_classes, 3) if train_labels is None else train_labels
    else:
      labels = np.arange(num_classes) if test_labels is None else test_labels
    shape = self.info.features["image"].shape
    height, width = (shape[0] or 12, shape[1] or 10)
    image = tf.io.encode_png(tf.fill([height, width, 3], tf.constant(90, tf.uint8)))
    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(labels, np.int64)).map(
        lambda label: {"image": image, "label": label})
    if not (decoders and "image" in decoders):
      dataset = dataset.map(lambda example: {**example, "image": tf.io.decode_png(
          example["image"], channels=3)})
    return dataset
  return as_dataset


@contextlib.contextmanager
def mocked_tfds(**kwargs):
  with tfds.testing.mock_data(as_dataset_fn=fake_as_dataset(**kwargs)):
    yield


def smoke_config(tmp_path, **data):
  config = config_lib.Config(
      stage="pipeline", workdir=str(tmp_path / "run"),
      data=config_lib.DataConfig(image_size=16, batch_size=8, eval_batch_size=64,
                                 cache_dir=str(tmp_path / "run" / "data_cache"), **data),
      model=config_lib.ModelConfig(backbone="resnet8"),
      optimizer=config_lib.OptimizerConfig(epochs=1, steps_per_epoch=1),
      distill=config_lib.DistillConfig(teacher_specs=("vanilla:1",)))
  # No per-epoch evaluation: the final one is enough here.
  return config.replace(output={"eval_every_epochs": 0})


def fake_run(directory, stage="teacher", num_classes=10, image_size=28):
  """What check_finished_run reads of a finished run: config, classes, final weights."""
  os.makedirs(directory)
  config_lib.Config(workdir=directory, stage=stage,
                    data=config_lib.DataConfig(image_size=image_size)).save(
                        os.path.join(directory, "config.json"))
  with open(os.path.join(directory, "classes.json"), "w") as f:
    json.dump({"class_names": [str(i) for i in range(num_classes)],
               "train_counts": [5] * num_classes}, f)
  h5py.File(os.path.join(directory, "final.weights.h5"), "w").close()  # readable, no weights
  return directory


# ImageNet's mean and standard deviation, as KerasHub's ResNet converters hold them.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PRESET_FAMILIES = ("resnet", "dinov2", "clip", "vit", "siglip")
# Words the CLIP and SigLIP presets' tokenizers know whole (write_image_folder's classes):
# any other text goes to CLIP character by character, to SigLIP as <unk>.
PRESET_WORDS = ("a", "photo", "of", "the", "cat", "dog", "eel")


def clip_tokenizer():
  """A CLIP byte-pair tokenizer of printable ASCII and merges spelling PRESET_WORDS: KerasHub
  0.32 wants every merge's parts and result in the vocabulary."""
  import keras_hub  # pylint: disable=import-outside-toplevel
  characters = [chr(code) for code in range(ord("!"), ord("~") + 1)]
  merges, merged = [], []
  for word in PRESET_WORDS:
    done = word[0]
    for index, character in enumerate(word[1:], start=2):
      piece = character + ("</w>" if index == len(word) else "")
      merges.append(f"{done} {piece}")
      done += piece
      merged.append(done)
  tokens = characters + [c + "</w>" for c in characters] + merged + [
      "<|startoftext|>", "<|endoftext|>"]
  vocabulary = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
  return keras_hub.models.CLIPTokenizer(vocabulary=vocabulary, merges=merges,
                                        pad_with_end_token=True)


def siglip_tokenizer():
  """A SigLIP SentencePiece tokenizer whose words are PRESET_WORDS (trained here)."""
  import io  # pylint: disable=import-outside-toplevel
  import keras_hub  # pylint: disable=import-outside-toplevel
  import sentencepiece  # pylint: disable=import-outside-toplevel
  proto = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter([" ".join(PRESET_WORDS)] * 3), model_writer=proto,
      vocab_size=len(PRESET_WORDS) + 4, hard_vocab_limit=False, model_type="WORD", pad_id=0,
      bos_id=1, eos_id=2, unk_id=3, unk_piece="<unk>", pad_piece="<pad>", bos_piece="<s>",
      eos_piece="</s>", minloglevel=2)
  return keras_hub.models.SigLIPTokenizer(proto=proto.getvalue())


def write_keras_hub_preset(directory, family: str, image_size: int = 16, seed: int = 0) -> str:
  """A small KerasHub preset with random weights, written by save_to_preset as a real one
  is: a ResNet with an ImageNet-style converter, a DINOv2 (ViT-type, class token first) or
  a CLIP (image and text encoders), a ViT or a SigLIP (image and text encoders). CLIP and
  SigLIP also get a tokenizer and preprocessor (PRESET_WORDS), so their text side works as a
  real preset's. Returns the directory."""
  import keras  # pylint: disable=import-outside-toplevel
  import keras_hub  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(seed)
  size = (image_size, image_size)
  imagenet = {"scale": [1 / (255 * s) for s in IMAGENET_STD],
              "offset": [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]}
  preprocessor = None
  if family == "resnet":
    # KerasHub's ResNets need 64 filters in the stem and the first stage.
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(None, None, 3))
    converter = keras_hub.layers.ResNetImageConverter(image_size=size, **imagenet)
  elif family == "dinov2":
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=4, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
        image_shape=(*size, 3))
    converter = keras_hub.layers.DINOV2ImageConverter(image_size=size, **imagenet)
  elif family == "clip":
    vision = keras_hub.models.CLIPVisionEncoder(
        patch_size=4, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32,
        image_shape=(*size, 3))
    tokenizer = clip_tokenizer()
    text = keras_hub.models.CLIPTextEncoder(
        vocabulary_size=tokenizer.vocabulary_size(), embedding_dim=16, hidden_dim=16,
        num_layers=1, num_heads=2, intermediate_dim=32)
    backbone = keras_hub.models.CLIPBackbone(vision, text, projection_dim=12)
    converter = keras_hub.layers.CLIPImageConverter(
        image_size=size, scale=1 / 127.5, offset=-1.0)
    preprocessor = keras_hub.models.CLIPPreprocessor(tokenizer, converter)
  elif family == "vit":
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(*size, 3), patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
        mlp_dim=32)
    converter = keras_hub.layers.ViTImageConverter(image_size=size, scale=1 / 127.5,
                                                   offset=-1.0)
  elif family == "siglip":
    vision = keras_hub.models.SigLIPVisionEncoder(
        patch_size=4, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32,
        image_shape=(*size, 3))
    text = keras_hub.models.SigLIPTextEncoder(
        vocabulary_size=50, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
        intermediate_dim=32, max_sequence_length=8)
    backbone = keras_hub.models.SigLIPBackbone(vision, text)
    # Not KerasHub's initial 1 and 0, so a test can tell the scale and the bias apart.
    backbone.siglip_head.logit_scale.assign(np.log(10.0))
    backbone.siglip_head.logit_bias.assign(-3.0)
    converter = keras_hub.layers.SigLIPImageConverter(image_size=size, scale=1 / 127.5,
                                                      offset=-1.0)
    # SigLIP pools the last position: prompts padded to the text encoder's full length.
    preprocessor = keras_hub.models.SigLIPPreprocessor(siglip_tokenizer(), converter,
                                                       sequence_length=8)
  else:
    raise ValueError(f"unknown preset family {family!r}; valid: {', '.join(PRESET_FAMILIES)}")
  backbone.save_to_preset(str(directory))
  converter.save_to_preset(str(directory))
  if preprocessor is not None:
    preprocessor.save_to_preset(str(directory))
  return str(directory)
