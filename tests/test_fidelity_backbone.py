"""Golden tests: cbd_tf's ImageNet ResNets against the official CBD ResNet.

The official definition (google-research class_balanced_distillation/resnet.py and
resnet_helpers.py) is written out below with its names and TF ops; only `our_name` ties it
to cbd_tf's layer names.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf
import keras

from cbd_tf.models import heads, resnet

# --- the official definition ------------------------------------------------------------

# resnet.resnet(): blocks per group and block type.
OFFICIAL_GROUPS = {
    18: ([2, 2, 2, 2], "basic"),
    34: ([3, 4, 6, 3], "basic"),
    50: ([3, 4, 6, 3], "bottleneck"),
    101: ([3, 4, 23, 3], "bottleneck"),
    152: ([3, 8, 36, 3], "bottleneck"),
}
OFFICIAL_STRIDES = [1, 2, 2, 2]
OFFICIAL_CHANNELS = (64, 128, 256, 512)
OFFICIAL_EXPANSION = {"basic": 1, "bottleneck": 4}
OFFICIAL_BN = {"momentum": 0.9, "epsilon": 1e-5}  # functools.partial(BatchNormalization, ...)
IMAGE_SIZE = 64  # >= 64: the official stem (cbd_tf's small stem is only below 64 px)


def official_blocks(depth):
  """[(group, block, channels, stride, use_projection, [(conv name, kernel, filters, stride),
  ...], last bn name)] in the order of the official BlockGroup / block constructors."""
  blocks_per_group, block_type = OFFICIAL_GROUPS[depth]
  blocks = []
  for group in range(4):
    channels = OFFICIAL_CHANNELS[group] * OFFICIAL_EXPANSION[block_type]
    for id_block in range(blocks_per_group[group]):
      stride = OFFICIAL_STRIDES[group] if id_block == 0 else 1
      if block_type == "basic":
        convs = [("conv_0", 3, channels, stride), ("conv_1", 3, channels, 1)]
      else:  # BottleNeckBlockV1: the stride sits on the 3x3
        convs = [("conv_0", 1, channels // 4, 1), ("conv_1", 3, channels // 4, stride),
                 ("conv_2", 1, channels, 1)]
      blocks.append((group, id_block, channels, stride, id_block == 0, convs,
                     f"bn_{len(convs) - 1}"))
  return blocks


def official_convs(depth):
  """{official layer path: (kernel, filters, stride)} for every conv of the network."""
  convs = {"initial_conv": (7, 64, 2)}
  for group, block, channels, stride, use_projection, block_convs, _ in official_blocks(depth):
    prefix = f"block_group_{group}/block_{block}"
    if use_projection:
      convs[f"{prefix}/shortcut_conv"] = (1, channels, stride)
    for conv_name, kernel, filters, conv_stride in block_convs:
      convs[f"{prefix}/{conv_name}"] = (kernel, filters, conv_stride)
  return convs


def official_trainable_count(depth):
  """Conv kernels (no bias) plus gamma and beta of the BN after each conv."""
  total = 7 * 7 * 3 * 64 + 2 * 64
  in_channels = 64
  for _, _, channels, _, use_projection, block_convs, _ in official_blocks(depth):
    if use_projection:
      total += in_channels * channels + 2 * channels
    conv_in = in_channels
    for _, kernel, filters, _ in block_convs:
      total += kernel * kernel * conv_in * filters + 2 * filters
      conv_in = filters
    in_channels = channels
  return total


def official_forward(depth, images, conv_kernel, bn_variables):
  """The official ResNet.__call__ (training=False) up to final_avg_pool, in TF ops.

  `conv_kernel(path)` and `bn_variables(path)` (gamma, beta, mean, variance) fetch weights by
  official layer path."""
  def conv(net, path, stride):
    return tf.nn.conv2d(net, conv_kernel(path), strides=stride, padding="SAME")

  def norm(net, path):
    gamma, beta, mean, variance = bn_variables(path)
    return tf.nn.batch_normalization(net, mean, variance, beta, gamma, OFFICIAL_BN["epsilon"])

  net = tf.nn.relu(norm(conv(images, "initial_conv", 2), "initial_bn"))
  net = tf.nn.max_pool2d(net, ksize=3, strides=2, padding="SAME")
  for group, block, _, stride, use_projection, block_convs, _ in official_blocks(depth):
    prefix = f"block_group_{group}/block_{block}"
    if use_projection:
      shortcut = norm(conv(net, f"{prefix}/shortcut_conv", stride), f"{prefix}/shortcut_bn")
    else:
      shortcut = net
    x = net
    for i, (conv_name, _, _, conv_stride) in enumerate(block_convs):
      x = norm(conv(x, f"{prefix}/{conv_name}", conv_stride), f"{prefix}/bn_{i}")
      if i < len(block_convs) - 1:  # no relu on the last layer
        x = tf.nn.relu(x)
    net = tf.nn.relu(x + shortcut)
  return tf.reduce_mean(net, axis=[1, 2])


# --- the one place tied to cbd_tf's names -------------------------------------------------

def our_name(path):
  """Official layer path -> cbd_tf layer name."""
  if path in ("initial_conv", "initial_bn"):
    return {"initial_conv": "stem_conv", "initial_bn": "stem_bn"}[path]
  group, block, layer = path.split("/")
  prefix = f"stage{int(group.split('_')[-1]) + 1}_block{int(block.split('_')[-1]) + 1}"
  if layer in ("shortcut_conv", "shortcut_bn"):
    return f"{prefix}_{'proj' if layer == 'shortcut_conv' else 'proj_bn'}"
  kind, index = layer.split("_")
  return f"{prefix}_{kind}{int(index) + 1}"


@functools.lru_cache(maxsize=None)
def backbone(depth):
  return resnet.build_backbone(f"resnet{depth}", IMAGE_SIZE)


def layers_of(model, layer_type):
  return [layer for layer in model.layers if isinstance(layer, layer_type)]


# --- tests --------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [18, 50])
def test_forward_matches_official_definition_in_tf_ops(depth):
  # Fresh weights everywhere (zero gammas included) so every branch shows in the output.
  model = resnet.build_backbone(f"resnet{depth}", IMAGE_SIZE)
  rng = np.random.default_rng(depth)
  for layer in layers_of(model, keras.layers.BatchNormalization):
    channels = layer.gamma.shape[0]
    layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype(np.float32))
    layer.beta.assign(rng.normal(0, 0.1, channels).astype(np.float32))
    layer.moving_mean.assign(rng.normal(0, 0.1, channels).astype(np.float32))
    layer.moving_variance.assign(rng.uniform(0.5, 1.5, channels).astype(np.float32))
  used = set()

  def conv_kernel(path):
    used.add(our_name(path))
    return model.get_layer(our_name(path)).kernel

  def bn_variables(path):
    used.add(our_name(path))
    layer = model.get_layer(our_name(path))
    return layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance

  images = rng.uniform(size=(2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)  # [0, 1], as fed
  expected = official_forward(depth, tf.constant(images), conv_kernel, bn_variables).numpy()
  ours = model(images, training=False).numpy()
  assert ours.shape == expected.shape == (2, 512 if depth == 18 else 2048)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  assert used == {layer.name for layer in model.layers if layer.weights}  # no extra layers


# ResNet-101 and -152 take seconds each to build: in the full suite only.
@pytest.mark.parametrize("depth", [18, 34, 50, pytest.param(101, marks=pytest.mark.slow),
                                   pytest.param(152, marks=pytest.mark.slow)])
def test_convs_kernels_strides_and_projections_are_official(depth):
  model = backbone(depth)
  expected = {our_name(path): spec for path, spec in official_convs(depth).items()}
  ours = {layer.name: (layer.kernel_size[0], layer.filters, layer.strides[0])
          for layer in layers_of(model, keras.layers.Conv2D)}
  assert ours == expected
  for layer in layers_of(model, keras.layers.Conv2D):
    assert layer.padding == "same" and not layer.use_bias and layer.bias is None
  assert not [w.path for w in model.weights if "bias" in w.path]
  pools = layers_of(model, keras.layers.MaxPooling2D)
  assert [(p.pool_size, p.strides, p.padding) for p in pools] == [((3, 3), (2, 2), "same")]
  assert model.output_shape == (None, 512 if depth < 50 else 2048)


@pytest.mark.parametrize("depth", [18, 50])
def test_zero_gamma_exactly_on_last_batchnorm_of_each_block(depth):
  model = backbone(depth)
  last_bns = {our_name(f"block_group_{g}/block_{b}/{last}")
              for g, b, _, _, _, _, last in official_blocks(depth)}
  batch_norms = layers_of(model, keras.layers.BatchNormalization)
  zero = {bn.name for bn in batch_norms if not np.any(bn.gamma.numpy())}
  assert zero == last_bns
  assert all(np.all(bn.gamma.numpy() == 1.0) for bn in batch_norms if bn.name not in zero)
  # Every conv is followed by one BN: stem, shortcuts and block convs.
  assert len(batch_norms) == len(official_convs(depth))


@pytest.mark.parametrize("depth", [18, 50])
def test_batchnorm_momentum_and_epsilon_are_official(depth):
  batch_norms = layers_of(backbone(depth), keras.layers.BatchNormalization)
  assert {(bn.momentum, bn.epsilon) for bn in batch_norms} == {
      (OFFICIAL_BN["momentum"], OFFICIAL_BN["epsilon"])}


@pytest.mark.parametrize("depth", [18, 50])
def test_conv_kernels_are_glorot_uniform(depth):
  # The official convs set no initializer: the Keras default, GlorotUniform.
  convs = layers_of(backbone(depth), keras.layers.Conv2D)
  assert all(isinstance(c.kernel_initializer, keras.initializers.GlorotUniform) for c in convs)
  for conv in convs:
    kernel = conv.kernel.numpy()
    receptive = kernel.shape[0] * kernel.shape[1]
    limit = np.sqrt(6.0 / (receptive * (kernel.shape[2] + kernel.shape[3])))
    assert np.abs(kernel).max() <= limit * (1 + 1e-6)  # float32 rounding of the bound
    if kernel.size >= 10_000:  # U(-l, l) has variance l^2 / 3; the estimate's sd is ~ 0.9 % here
      assert abs(kernel.var() / (limit * limit / 3) - 1) < 0.05, conv.name


def test_cosine_classifier_kernel_is_glorot_uniform_as_official_cosine_layer():
  head = heads.CosineClassifier(1000)
  head.build((None, 2048))
  kernel = head.kernel.numpy()
  limit = np.sqrt(6.0 / (2048 + 1000))
  assert np.abs(kernel).max() <= limit * (1 + 1e-6)
  # 2M draws: the variance estimate's relative sd is ~ 0.06 %.
  assert abs(kernel.var() / (limit * limit / 3) - 1) < 0.01
  assert abs(kernel.mean()) < 0.01 * limit


@pytest.mark.slow  # builds ResNet-18 and -50
def test_trainable_weight_counts():
  def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  assert trainable(backbone(50)) == official_trainable_count(50) == 23_508_032
  # Official ResNet-18 has a projection in group 0 block 0 (torchvision's has none: 11,176,512).
  assert trainable(backbone(18)) == official_trainable_count(18) == 11_176_512 + 64 * 64 + 2 * 64
  for depth in (34, 101, 152):
    assert trainable(backbone(depth)) == official_trainable_count(depth)


@pytest.mark.parametrize("depth", [18, 50])
def test_sync_batchnorm_gives_synchronized_layers(depth):
  synced = layers_of(resnet.build_backbone(f"resnet{depth}", IMAGE_SIZE, sync_batchnorm=True),
                     keras.layers.BatchNormalization)
  assert len(synced) == len(official_convs(depth)) and all(bn.synchronized for bn in synced)
  assert not any(bn.synchronized for bn in layers_of(backbone(depth),
                                                     keras.layers.BatchNormalization))


@pytest.mark.parametrize("name, size", [("resnet8", 16), ("resnet20", 16), ("resnet18", 32),
                                        ("resnet18", 64), ("resnet50", 64)])
def test_images_go_straight_to_the_stem_conv_without_normalisation(name, size):
  model = resnet.build_backbone(name, size)
  assert not layers_of(model, (keras.layers.Normalization, keras.layers.Rescaling))
  assert [tensor.name for tensor in model.inputs] == ["images"]
  stem = model.get_layer("stem_conv")
  assert stem.input is model.inputs[0]
  images = np.random.default_rng(0).uniform(size=(2, size, size, 3)).astype(np.float32)
  stem_output = keras.Model(model.inputs[0], stem.output)(images)
  expected = tf.nn.conv2d(images, stem.kernel, strides=stem.strides[0], padding="SAME")
  np.testing.assert_allclose(stem_output.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
