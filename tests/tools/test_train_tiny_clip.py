"""tools/train_tiny_clip.py --tiny writes a CLIP preset that reloads offline and reads the
mnist_pairs_lt prompts word by word."""

import json
import os

import pytest

from tests import helpers

# It starts TensorFlow in its own process and trains for seconds.
pytestmark = pytest.mark.slow


def test_tiny_clip_preset_reloads_with_its_prompts(tmp_path):
  import keras_hub  # pylint: disable=import-outside-toplevel
  out_dir = str(tmp_path / "clip")
  result = helpers.run_tool("train_tiny_clip.py", f"--out_dir={out_dir}", "--tiny")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "zero-shot top-1" in result.stdout
  backbone = keras_hub.models.CLIPBackbone.from_preset(out_dir)
  preprocessor = keras_hub.models.CLIPPreprocessor.from_preset(out_dir)
  # A position per patch (KerasHub builds them all 0): the slots can differ.
  assert backbone.vision_encoder.embedding.position_ids.numpy().tolist() == [list(range(65))]
  assert preprocessor.image_converter is not None
  with open(os.path.join(out_dir, "class_names.txt")) as f:
    names = f.read().splitlines()
  assert len(names) == 100
  with open(os.path.join(out_dir, "prompts.json")) as f:
    prompts = json.load(f)
  assert prompts["class_names"] == names
  assert names[37] == "a 3 on the left and a 7 on the right"  # tens left, units right
  prompt = prompts["template"].replace("{}", names[37])
  tokenizer = preprocessor.tokenizer
  pieces = [tokenizer.id_to_token(int(i)) for i in tokenizer(prompt)]
  # Every word (and the full stop) one whole token: no unknown (end-token) or byte pieces.
  assert pieces == [word + "</w>" for word in prompt[:-1].split()] + [".</w>"]
  tokens = preprocessor({"prompts": [prompt], "images": None})["token_ids"]
  assert tuple(backbone.get_text_embeddings(tokens).shape) == (1, 64)
