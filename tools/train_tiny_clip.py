"""Trains a tiny CLIP on the bundled digits and writes it as a local KerasHub preset
(backbone, tokenizer, preprocessor, image converter), for zero-shot and text-initialised
heads on mnist_pairs_lt with no network.

  python tools/train_tiny_clip.py --out_dir=/work/tiny_clip_preset [--epochs=20 --seed=0]
  python tools/train_tiny_clip.py --out_dir=/tmp/clip --tiny   # seconds: 1 epoch of 3 steps

Model: CLIPVisionEncoder (32 px, patch 4, width 64, 4 layers, 4 heads), CLIPTextEncoder
(width 64, 2 layers, 20 tokens), projection 64, trained with CLIP's symmetric InfoNCE and
the CLIPBackbone head's learnable logit scale (capped at 100, as CLIP). Captions repeat
within a batch, so every image-caption pair with the same caption counts as a positive (the
target is uniform over them); with unique captions this is exactly CLIP's loss.

Data, training split only (never a validation or test digit of mnist_pairs_lt):
  mnist_pairs_digits' training split, a digit alone in one slot:
      "a photo of a 3 on the left."   /   "a photo of a 7 on the right."
  each epoch, as many fresh two-digit compositions, the same number of each of the 100
  classes, from mnist_pairs_lt's training digit pool, pasted as mnist_pairs_lt does (tens
  left, units right): "a photo of a 3 on the left and a 7 on the right."
Balanced compositions stand in for the web data a real CLIP saw: the text side knows every
class, so a head from text can help the classes mnist_pairs_lt gives few images.

Prompt convention (written to OUT_DIR/prompts.json and OUT_DIR/class_names.txt): label
10 * L + R (class name "LR" in mnist_pairs_lt) is named "a L on the left and a R on the
right", and the template is "a photo of {}.", so the prompt is the training caption:
  --backbone=keras_hub:OUT_DIR --class_names_file=OUT_DIR/class_names.txt
  --class_prompt="a photo of {}."
The tokenizer's vocabulary is the 256 byte characters, the same with "</w>", the caption
words as single tokens and the two special tokens (the end token has the highest id, as the
text pooler takes the argmax token). Deterministic from --seed. Prints the loss per epoch,
the zero-shot top-1 on mnist_pairs_lt's test split (all and the few-shot classes) and time.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

TEMPLATE = "a photo of {}."
WORDS = ("a", "photo", "of", "on", "the", "left", "and", "right")
IMAGE_SIZE, SEQUENCE_LENGTH, BATCH_SIZE = 32, 20, 128
MAX_LOGIT_SCALE = np.log(100.0)  # CLIP clips exp(logit_scale) at 100


def class_name(left: int, right: int) -> str:
  return f"a {left} on the left and a {right} on the right"


def captions() -> list[str]:
  """Caption ids: 0-99 the pair 10 * L + R, 100 + d digit d on the left, 110 + d on the right."""
  pairs = [TEMPLATE.replace("{}", class_name(label // 10, label % 10)) for label in range(100)]
  return (pairs + [TEMPLATE.replace("{}", f"a {d} on the left") for d in range(10)]
          + [TEMPLATE.replace("{}", f"a {d} on the right") for d in range(10)])


def make_tokenizer():
  """A byte-level CLIPTokenizer whose merges spell each of WORDS, one merge a character."""
  import keras_hub  # pylint: disable=import-outside-toplevel
  from keras_hub.src.tokenizers import byte_pair_tokenizer  # pylint: disable=import-outside-toplevel
  chars = byte_pair_tokenizer.bytes_to_unicode()[1]  # GPT-2's 256 byte characters
  vocab, merges = chars + [c + "</w>" for c in chars], []
  for word in WORDS:
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    while len(pieces) > 1:  # left to right: every piece and result is in the vocabulary
      merges.append(f"{pieces[0]} {pieces[1]}")
      pieces = [pieces[0] + pieces[1]] + pieces[2:]
      if pieces[0] not in vocab:
        vocab.append(pieces[0])
  vocab += ["<|startoftext|>", "<|endoftext|>"]
  return keras_hub.models.CLIPTokenizer({t: i for i, t in enumerate(vocab)}, merges,
                                        pad_with_end_token=True)


def make_model(vocabulary_size: int):
  import keras_hub  # pylint: disable=import-outside-toplevel
  vision = keras_hub.models.CLIPVisionEncoder(
      patch_size=4, hidden_dim=64, num_layers=4, num_heads=4, intermediate_dim=256,
      image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), name="vision_encoder")
  text = keras_hub.models.CLIPTextEncoder(
      vocabulary_size=vocabulary_size, embedding_dim=64, hidden_dim=64, num_layers=2,
      num_heads=4, intermediate_dim=256, max_sequence_length=SEQUENCE_LENGTH,
      name="text_encoder")
  # KerasHub 0.32 builds CLIP's position_ids as zeros (its presets load arange with their
  # weights): every patch would get one position, and left could not differ from right.
  embedding = vision.embedding
  embedding.position_ids.assign(np.arange(embedding.num_positions)[np.newaxis])
  return keras_hub.models.CLIPBackbone(vision, text, projection_dim=64)


def load_data() -> dict:
  """Training singles (images, caption ids), the training digit pool, and the test split."""
  from cbd_tf import config as config_lib  # pylint: disable=import-outside-toplevel
  from cbd_tf.data import mnist_sources as ms  # pylint: disable=import-outside-toplevel
  lt = config_lib.DataConfig(dataset="mnist_pairs_lt")
  singles = ms.load_mnist_pairs_digits(config_lib.DataConfig(dataset="mnist_pairs_digits")).train
  # The slot is where the ink is: the left digit fills columns 0..15.
  on_left = singles.images[:, :, :ms.PAIRS_DIGIT_SIZE].reshape(len(singles.labels), -1).any(1)
  digits, labels = ms.read_mnist()
  test = ms.load_mnist_pairs_lt(lt).test
  return {"singles": singles.images, "single_captions": 100 + singles.labels + 10 * ~on_left,
          "small": ms.shrink_digits(digits),
          "pool": ms._digit_pools(labels)["train"],  # pylint: disable=protected-access
          "test": test, "few": ms.pairs_train_counts(lt.imbalance_ratio) < 20}


def compositions(data: dict, count: int, rng: np.random.Generator):
  """`count` two-digit images, each class equally often, with their caption ids."""
  from cbd_tf.data import mnist_sources as ms  # pylint: disable=import-outside-toplevel
  labels = rng.permutation(np.arange(count) % 100)
  left = np.array([rng.choice(data["pool"][label // 10]) for label in labels])
  right = np.array([rng.choice(data["pool"][label % 10]) for label in labels])
  return ms.compose_pairs(data["small"], ms.DigitPairs(left, right, labels)), labels


def rgb(images: np.ndarray) -> np.ndarray:
  return np.repeat(images, 3, axis=-1).astype(np.float32)


def make_train_step(backbone, converter, optimizer):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  @tf.function(jit_compile=True)
  def step(pixels, token_ids, caption_ids):
    same = tf.cast(caption_ids[:, None] == caption_ids[None, :], tf.float32)
    targets = same / tf.reduce_sum(same, axis=1, keepdims=True)
    with tf.GradientTape() as tape:
      out = backbone({"images": converter(pixels), "token_ids": token_ids}, training=True)
      loss = 0.5 * (tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
          targets, out["vision_logits"])) + tf.reduce_mean(
              tf.nn.softmax_cross_entropy_with_logits(targets, out["text_logits"])))
    weights = backbone.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
    scale = backbone.clip_head.logit_scale
    scale.assign(tf.minimum(scale, MAX_LOGIT_SCALE))
    return loss
  return step


def train(backbone, converter, token_table, data, args) -> float:
  """Trains in place; returns the last epoch's mean loss."""
  import keras  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(args.seed)
  per_epoch = 2 * len(data["single_captions"]) // BATCH_SIZE
  steps = args.steps or per_epoch
  schedule = keras.optimizers.schedules.CosineDecay(
      0.0, args.epochs * steps, warmup_target=args.lr, warmup_steps=steps)
  optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.05)
  step = make_train_step(backbone, converter, optimizer)
  loss = float("nan")
  for epoch in range(args.epochs):
    start = time.time()
    pairs, pair_captions = compositions(data, len(data["single_captions"]), rng)
    images = np.concatenate([data["singles"], pairs])
    caption_ids = np.concatenate([data["single_captions"], pair_captions])
    order = rng.permutation(len(caption_ids))
    losses = []
    for index in np.array_split(order[:steps * BATCH_SIZE], steps):
      losses.append(float(step(rgb(images[index]), token_table[caption_ids[index]],
                               caption_ids[index])))
    loss = float(np.mean(losses))
    print(f"epoch {epoch + 1}/{args.epochs}: contrastive loss {loss:.4f}, logit scale "
          f"{float(np.exp(backbone.clip_head.logit_scale)):.1f}, {time.time() - start:.0f} s",
          flush=True)
  return loss


def l2_normalised(x) -> np.ndarray:
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def zero_shot(backbone, preprocessor, test, few: np.ndarray) -> tuple[float, float]:
  """Top-1 of the nearest class prompt on mnist_pairs_lt's test split: all, few-shot."""
  names = [class_name(label // 10, label % 10) for label in range(100)]
  tokens = preprocessor({"prompts": [TEMPLATE.replace("{}", n) for n in names],
                         "images": None})["token_ids"]
  text = l2_normalised(backbone.get_text_embeddings(tokens))
  vision = np.concatenate([
      l2_normalised(backbone.get_vision_embeddings(
          preprocessor.image_converter(rgb(test.images[start:start + 500]))))
      for start in range(0, len(test.labels), 500)])
  correct = (vision @ text.T).argmax(1) == test.labels
  return float(correct.mean()), float(correct[few[test.labels]].mean())


def save(out_dir: str, backbone, preprocessor) -> None:
  """The preset (the preprocessor writes its tokenizer and converter too) and the prompts."""
  os.makedirs(out_dir, exist_ok=True)
  backbone.save_to_preset(out_dir)
  preprocessor.save_to_preset(out_dir)
  names = [class_name(label // 10, label % 10) for label in range(100)]
  with open(os.path.join(out_dir, "prompts.json"), "w") as f:
    json.dump({"template": TEMPLATE, "class_names": names}, f, indent=1)
  with open(os.path.join(out_dir, "class_names.txt"), "w") as f:
    f.write("\n".join(names) + "\n")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--epochs", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--lr", type=float, default=2e-3)
  parser.add_argument("--steps", type=int, default=0, help="steps an epoch; 0: every image")
  parser.add_argument("--tiny", action="store_true")
  args = parser.parse_args(argv)
  if args.tiny:
    args.epochs, args.steps = 1, 3
  start = time.time()
  import keras  # pylint: disable=import-outside-toplevel
  import keras_hub  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(args.seed)
  tf.config.experimental.enable_op_determinism()  # same --seed, same weights
  tokenizer = make_tokenizer()
  converter = keras_hub.layers.CLIPImageConverter(
      image_size=(IMAGE_SIZE, IMAGE_SIZE), scale=1 / 127.5, offset=-1.0)
  preprocessor = keras_hub.models.CLIPPreprocessor(tokenizer, converter,
                                                   sequence_length=SEQUENCE_LENGTH)
  token_table = np.asarray(preprocessor({"prompts": captions(), "images": None})["token_ids"])
  backbone = make_model(tokenizer.vocabulary_size())
  data = load_data()
  loss = train(backbone, converter, token_table, data, args)
  top1, few = zero_shot(backbone, preprocessor, data["test"], data["few"])
  save(args.out_dir, backbone, preprocessor)
  print(f"final contrastive loss {loss:.4f}; zero-shot top-1 on mnist_pairs_lt test "
        f"{100 * top1:.1f}% (few-shot classes {100 * few:.1f}%, chance 1.0%)")
  print(f"preset: {args.out_dir}\nprompts: --class_names_file="
        f"{os.path.join(args.out_dir, 'class_names.txt')} --class_prompt=\"{TEMPLATE}\" "
        f"(label 37: \"{TEMPLATE.replace('{}', class_name(3, 7))}\")")
  print(f"time: {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()
