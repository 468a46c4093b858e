"""--backbone_tuning on small KerasHub presets the tests write (CLIP, SigLIP, ViT, DINOv2) and
a ResNet: LIFT's adapters written out from its code (shijxcs/LIFT models/peft_modules.py,
peft_vit.py), exactly the named variables train, every other weight and statistic stays
bit-identical, step 0 is the pretrained model, and save / reload / export keep the adapted
model."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from cbd_tf.models import adapters
from cbd_tf.models.classifier import Classifier, load_model
from tests import fakes

IMAGE_SIZE = 16
TRANSFORMERS = ("clip", "siglip", "vit", "dinov2")
# What trains in the backbone, by the last part of a variable's path.
TRAINED = {"frozen": set(), "lora": {"a", "b"},
           "adaptformer": {"gamma", "beta", "kernel", "bias", "scale"}, "bias": {"bias", "beta"}}


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
  root = tmp_path_factory.mktemp("tuning_presets")
  return {family: fakes.write_keras_hub_preset(root / family, family, IMAGE_SIZE)
          for family in (*TRANSFORMERS, "resnet")}


def images(count=8, seed=0):
  return np.random.default_rng(seed).uniform(size=(count, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(
      np.float32)


def classifier(preset, tuning, rank=0, num_classes=4, seed=0):
  keras.utils.set_random_seed(seed)
  return Classifier(f"keras_hub:{preset}", num_classes=num_classes, image_size=IMAGE_SIZE,
                    backbone_tuning=tuning, adapter_rank=rank)


def fit(model, steps=3):
  model.compile(keras.optimizers.SGD(0.5), weight_decay=5e-4)
  labels = np.arange(8) % model.num_classes
  model.fit(images(), labels, batch_size=8, epochs=steps, verbose=0)


def test_default_rank_is_lifts_rule():
  # LIFT (models/peft_vit.py): adapter_dim = 2 ** max(0, int(math.log2(num_classes /
  # (n_layers * 2)))), written out for ViT-B/16's 12 and ViT-L/14's 24 blocks.
  for classes, blocks, expected in ((1000, 12, 2 ** int(np.log2(1000 / 24))),
                                    (365, 12, 2 ** int(np.log2(365 / 24))),
                                    (8142, 12, 2 ** int(np.log2(8142 / 24))),
                                    (1000, 24, 2 ** int(np.log2(1000 / 48))),
                                    (10, 12, 1)):
    assert adapters.default_rank(classes, blocks) == expected
  assert [adapters.default_rank(c, 12) for c in (1000, 365, 8142)] == [32, 8, 256]


@pytest.mark.parametrize("family", TRANSFORMERS)
@pytest.mark.parametrize("tuning", ["frozen", "bias", "lora", "adaptformer"])
def test_only_the_named_variables_train_and_step_zero_is_the_pretrained_model(
    presets, family, tuning):
  pretrained = classifier(presets[family], "full")
  model = classifier(presets[family], tuning)
  x = images()
  # Step 0: the adapters start as the identity.
  np.testing.assert_array_equal(model.embed(x), pretrained.embed(x))
  trainable = {v.path for v in model.backbone.trainable_weights}
  assert {path.rsplit("/", 1)[-1] for path in trainable} <= TRAINED[tuning]
  if tuning != "frozen":
    assert trainable
  if tuning == "bias":  # LIFT's BitFit: the blocks' biases only
    assert all("embedding" not in path for path in trainable)
  before = {v.path: v.numpy() for v in model.backbone.weights}
  fit(model)
  changed = {v.path for v in model.backbone.weights if not np.array_equal(v.numpy(),
                                                                           before[v.path])}
  assert changed <= trainable
  if tuning in ("lora", "adaptformer"):
    assert changed == trainable  # every factor moved after three steps
  # Every pretrained weight (and the CLIP projection) as it was.
  pretrained_paths = {v.path for v in pretrained.backbone.weights}
  for variable in model.backbone.weights:
    if variable.path in pretrained_paths and variable.path not in trainable:
      np.testing.assert_array_equal(variable.numpy(), before[variable.path])


def test_bias_tuning_on_a_resnet_trains_batchnorm_betas_and_keeps_statistics(presets):
  for model in (classifier(presets["resnet"], "bias"),
                Classifier("resnet8", 4, IMAGE_SIZE, backbone_tuning="bias")):
    trainable = {v.path for v in model.backbone.trainable_weights}
    assert trainable and all(path.endswith("/beta") for path in trainable)
    statistics = {v.path: v.numpy() for v in model.backbone.weights if "moving" in v.path}
    assert statistics
    fit(model, steps=2)
    for variable in model.backbone.weights:
      if variable.path in statistics:
        np.testing.assert_array_equal(variable.numpy(), statistics[variable.path])


@pytest.mark.parametrize("tuning", ["lora", "adaptformer"])
def test_an_adapter_a_family_cannot_take_stops_with_one_line(presets, tuning):
  for backbone in (f"keras_hub:{presets['resnet']}", "resnet8"):
    with pytest.raises(ValueError, match=f"--backbone_tuning={tuning} needs transformer blocks"):
      Classifier(backbone, 4, IMAGE_SIZE, backbone_tuning=tuning, adapter_rank=2)


def randomised(model):
  """Random values in every adapter weight (they start as the identity)."""
  rng = np.random.default_rng(5)
  for layer in model.backbone.adapters:
    for variable in layer.weights:
      variable.assign(rng.normal(0, 0.3, variable.shape).astype(np.float32))
  return model


def layer_norm(x, gamma, beta, epsilon=1e-5):
  mean = x.mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + epsilon) * gamma + beta


# A second route to h (the block's input after attention): KerasHub's own block call with the
# MLP's last projection (DINOv2: its layer scale) at zero returns h.
MLP_OUTPUT = {"clip": ("dense_2",), "siglip": ("mlp", "fc2"), "vit": ("mlp", "dense_2"),
              "dinov2": ("layer_scale2",)}


@pytest.mark.parametrize("family", TRANSFORMERS)
def test_adaptformer_is_lifts(presets, family):
  # LIFT: x = x + adaptformer(identity) beside the MLP, adaptformer(x) = scale * up_proj(
  # relu(down_proj(ln(x)))).
  model = randomised(classifier(presets[family], "adaptformer", rank=4))
  block = adapters.transformer_blocks(model.backbone.image_model)[0]
  adapter = model.backbone.adapters[0]
  x = np.random.default_rng(2).normal(size=(2, 5, adapter.width)).astype(np.float32)
  original_call = type(block).call
  kerashub_out = original_call(block, x).numpy()
  last = block
  for name in MLP_OUTPUT[family]:
    last = getattr(last, name)
  saved = [v.numpy() for v in last.weights]
  for variable in last.weights:
    variable.assign(np.zeros(variable.shape, np.float32))
  h = original_call(block, x).numpy()
  for variable, value in zip(last.weights, saved):
    variable.assign(value)
  gamma, beta = adapter.norm.gamma.numpy(), adapter.norm.beta.numpy()
  down = np.maximum(layer_norm(h, gamma, beta) @ adapter.down.kernel.numpy()
                    + adapter.down.bias.numpy(), 0)
  expected = kerashub_out + adapter.scale.numpy() * (down @ adapter.up.kernel.numpy()
                                                     + adapter.up.bias.numpy())
  np.testing.assert_allclose(block(x).numpy(), expected, rtol=1e-4, atol=1e-5)
  assert adapter.bottleneck == 4 and adapter.down.kernel.shape == (adapter.width, 4)


@pytest.mark.parametrize("family", TRANSFORMERS)
def test_lora_is_lifts_on_query_and_value(presets, family):
  # LIFT: q = q + lora["q"](x), v = v + lora["v"](x), lora(x) = (1 / r) * x @ lora_A @ lora_B.
  rank = 2
  model = randomised(classifier(presets[family], "lora", rank=rank))
  block = adapters.transformer_blocks(model.backbone.image_model)[0]
  attention = next(layer for layer in block._flatten_layers()  # pylint: disable=protected-access
                   if isinstance(layer, keras.layers.MultiHeadAttention))
  factors = model.backbone.adapters[:2]
  for projection, lora in zip((attention.query_dense, attention.value_dense), factors):
    x = np.random.default_rng(3).normal(size=(2, 5, lora.width)).astype(np.float32)
    kernel, bias = projection.kernel.numpy(), projection.bias.numpy()
    width, heads, head_dim = kernel.shape
    plain = (x @ kernel.reshape(width, heads * head_dim)).reshape(2, 5, heads, head_dim) + bias
    delta = (x @ lora.a.numpy() @ lora.b.numpy() / rank).reshape(2, 5, heads, head_dim)
    np.testing.assert_allclose(projection(x).numpy(), plain + delta, rtol=1e-4, atol=1e-5)
  # The other projections (key, output) carry no factors.
  assert len(model.backbone.adapters) == 2 * len(adapters.transformer_blocks(
      model.backbone.image_model))
  assert factors[0].a.shape == (factors[0].width, rank)


def test_lora_and_adaptformer_initialisation_is_lifts(presets):
  # LoRA A: kaiming_uniform(a=sqrt(5)) on (D, r) -> U(+-1/sqrt(r)); B zeros. AdaptFormer
  # down: kaiming_normal(a=sqrt(5)) on (r, D) -> std 1/sqrt(3 D); up and biases zeros, s = 1.
  lora = classifier(presets["vit"], "lora", rank=4).backbone.adapters[0]
  assert np.abs(lora.a.numpy()).max() <= 1 / np.sqrt(4) and not lora.b.numpy().any()
  wide = adapters.AdaptFormer(width=512, bottleneck=256)
  wide.build((None, None, 512))
  assert abs(wide.down.kernel.numpy().std() - 1 / np.sqrt(3 * 512)) < 0.002
  assert not wide.up.kernel.numpy().any() and not wide.up.bias.numpy().any()
  assert not wide.down.bias.numpy().any() and float(wide.scale.numpy()) == 1.0


@pytest.mark.parametrize("tuning", ["lora", "adaptformer"])
def test_tuned_model_saves_reloads_and_exports_the_adapted_model(presets, tuning, tmp_path):
  from cbd_tf import config as config_lib  # pylint: disable=import-outside-toplevel
  from cbd_tf import serving  # pylint: disable=import-outside-toplevel
  model = randomised(classifier(presets["clip"], tuning, rank=2))
  x = images(3, seed=4)
  expected = model.predict(x, verbose=0)
  path = str(tmp_path / "tuned.keras")
  model.save(path)
  reloaded = load_model(path)
  np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
  assert reloaded.backbone_tuning == tuning and reloaded.adapter_rank == 2
  weights = str(tmp_path / "tuned.weights.h5")
  model.save_weights(weights)
  rebuilt = classifier(presets["clip"], tuning, rank=2, seed=9)
  rebuilt.load_weights(weights)
  np.testing.assert_allclose(rebuilt.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
  config = config_lib.Config(workdir=str(tmp_path), data=config_lib.DataConfig(
      image_size=IMAGE_SIZE, eval_crop_fraction=1.0))
  export = serving.export_saved_model(model, str(tmp_path / "export"), list("abcd"),
                                      [4, 3, 2, 1], config)
  served = tf.saved_model.load(export).signatures["predict_images"](images=tf.constant(x))
  np.testing.assert_allclose(served["probabilities"].numpy(), tf.nn.softmax(expected).numpy(),
                             rtol=1e-4, atol=1e-5)
  assert os.path.exists(export)


def test_init_from_starts_an_adapted_backbone_from_the_pretrained_weights(presets, tmp_path):
  from cbd_tf import pretrained  # pylint: disable=import-outside-toplevel
  donor = classifier(presets["vit"], "full", seed=3)
  for variable in donor.backbone.weights:  # weights other than the preset's
    variable.assign(variable.numpy() + 0.01)
  path = str(tmp_path / "donor.keras")
  donor.save(path)
  model = classifier(presets["vit"], "lora", rank=2)
  pretrained.load_backbone_weights(model.backbone, path)
  x = images()
  np.testing.assert_allclose(model.embed(x), donor.embed(x), rtol=1e-5, atol=1e-6)
  assert not model.backbone.adapters[0].b.numpy().any()  # still the identity
  donor.backbone.save_weights(str(tmp_path / "donor.weights.h5"))
  with pytest.raises(ValueError, match="cannot start an adapted backbone"):
    pretrained.load_backbone_weights(model.backbone, str(tmp_path / "donor.weights.h5"))
