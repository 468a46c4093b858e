"""Backbones by name: image batch (N, S, S, 3) in [0, 1] -> pooled embedding (N, D).

  resnet18 / resnet34                     official CBD ResNet, basic blocks       D = 512
  resnet50 / resnet101 / resnet152        official CBD ResNet, bottleneck v1.5    D = 2048
  resnet8 / resnet20 / resnet32 / ...56   CIFAR-style (He et al. 2016, sec. 4.2)  D = 64

The ImageNet ResNets are the one of the official code (google-research
class_balanced_distillation/resnet.py, resnet_helpers.py): a 7x7 stride-2 stem + BN + ReLU +
3x3 stride-2 max-pool; four block groups (strides 1, 2, 2, 2; 64, 128, 256, 512 channels, x4
for bottlenecks) whose first block always has a 1x1 projection shortcut (conv + BN), even in
group 0 of ResNet-18/34; bottleneck v1.5 (1x1 -> 3x3 carrying the stride -> 1x1); the last BN
of every block starts with gamma = 0; convs without bias, glorot-uniform kernels (the Keras
default the official code keeps); BN momentum 0.9, epsilon 1e-5; global average pooling.

The network sees the images as they come, in [0, 1]: there is no mean/std normalisation, as in
the official code.

cbd_tf extension: below 64 pixels ResNet-18/34 use a 3x3 stride-1 stem without max-pooling,
as is usual on CIFAR, so small images are not reduced to nothing. From 64 pixels up the
structure is the official one. The CIFAR ResNets are not in the official code: they keep He
et al.'s design (he-normal kernels, projection only where the shape changes).
"""

from __future__ import annotations

from typing import Callable

import keras

_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
_GROUP_STRIDES = (1, 2, 2, 2)
_GROUP_CHANNELS = (64, 128, 256, 512)
_BOTTLENECK_EXPANSION = 4


def _batch_norm(sync: bool, name: str, zero_gamma: bool = False) -> keras.layers.Layer:
  return keras.layers.BatchNormalization(
      momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, synchronized=sync,
      gamma_initializer="zeros" if zero_gamma else "ones", name=name)


def _conv(filters: int, kernel: int, stride: int, initializer: str, name: str) -> keras.layers.Layer:
  return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                             kernel_initializer=initializer, name=name)


def _shortcut(x, channels: int, stride: int, projection: bool, initializer: str, sync: bool,
              name: str):
  if not projection:
    return x
  shortcut = _conv(channels, 1, stride, initializer, f"{name}_proj")(x)
  return _batch_norm(sync, f"{name}_proj_bn")(shortcut)


def _basic_block(x, channels: int, stride: int, projection: bool, zero_gamma: bool,
                 initializer: str, sync: bool, name: str):
  """3x3 (stride) -> BN -> ReLU -> 3x3 -> BN; relu(branch + shortcut)."""
  shortcut = _shortcut(x, channels, stride, projection, initializer, sync, name)
  y = _conv(channels, 3, stride, initializer, f"{name}_conv1")(x)
  y = keras.layers.ReLU(name=f"{name}_relu1")(_batch_norm(sync, f"{name}_bn1")(y))
  y = _conv(channels, 3, 1, initializer, f"{name}_conv2")(y)
  y = _batch_norm(sync, f"{name}_bn2", zero_gamma)(y)
  return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def _bottleneck_block(x, channels: int, stride: int, projection: bool, sync: bool, name: str):
  """v1.5: 1x1 -> 3x3 (stride) -> 1x1 to `channels`, ReLU after the first two BNs only."""
  width = channels // _BOTTLENECK_EXPANSION
  shortcut = _shortcut(x, channels, stride, projection, "glorot_uniform", sync, name)
  y = _conv(width, 1, 1, "glorot_uniform", f"{name}_conv1")(x)
  y = keras.layers.ReLU(name=f"{name}_relu1")(_batch_norm(sync, f"{name}_bn1")(y))
  y = _conv(width, 3, stride, "glorot_uniform", f"{name}_conv2")(y)
  y = keras.layers.ReLU(name=f"{name}_relu2")(_batch_norm(sync, f"{name}_bn2")(y))
  y = _conv(channels, 1, 1, "glorot_uniform", f"{name}_conv3")(y)
  y = _batch_norm(sync, f"{name}_bn3", zero_gamma=True)(y)
  return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def _stem(inputs, filters: int, small: bool, initializer: str, sync: bool):
  if small:
    x = _conv(filters, 3, 1, initializer, "stem_conv")(inputs)
  else:
    x = _conv(filters, 7, 2, initializer, "stem_conv")(inputs)
  x = keras.layers.ReLU(name="stem_relu")(_batch_norm(sync, "stem_bn")(x))
  if not small:
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
  return x


def _images(image_size: int):
  return keras.Input((image_size, image_size, 3), name="images")


def _official_resnet(blocks_per_group: tuple[int, ...], bottleneck: bool, image_size: int,
                     sync: bool, name: str) -> keras.Model:
  inputs = _images(image_size)
  x = _stem(inputs, 64, not bottleneck and image_size < 64, "glorot_uniform", sync)
  expansion = _BOTTLENECK_EXPANSION if bottleneck else 1
  for group, (blocks, stride, channels) in enumerate(
      zip(blocks_per_group, _GROUP_STRIDES, _GROUP_CHANNELS)):
    for block in range(blocks):
      # As the official BlockGroup: the stride and a projection on block 0 of every group.
      block_stride, projection = (stride, True) if block == 0 else (1, False)
      block_name = f"stage{group + 1}_block{block + 1}"
      if bottleneck:
        x = _bottleneck_block(x, channels * expansion, block_stride, projection, sync, block_name)
      else:
        x = _basic_block(x, channels, block_stride, projection, True, "glorot_uniform", sync,
                         block_name)
  outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
  return keras.Model(inputs, outputs, name=name)


def _cifar_resnet(depth: int) -> Callable[[int, bool], keras.Model]:
  blocks = (depth - 2) // 6

  def build(image_size: int, sync: bool) -> keras.Model:
    inputs = _images(image_size)
    x = _stem(inputs, 16, True, "he_normal", sync)
    for stage, filters in enumerate((16, 32, 64)):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        projection = stride != 1 or x.shape[-1] != filters
        x = _basic_block(x, filters, stride, projection, False, "he_normal", sync,
                         f"stage{stage + 1}_block{block + 1}")
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")
  return build


def _imagenet_resnet(depth: int, blocks_per_group: tuple[int, ...], bottleneck: bool):
  def build(image_size: int, sync: bool) -> keras.Model:
    return _official_resnet(blocks_per_group, bottleneck, image_size, sync, f"resnet{depth}")
  return build


BACKBONES: dict[str, Callable[[int, bool], keras.Model]] = {
    "resnet8": _cifar_resnet(8),
    "resnet20": _cifar_resnet(20),
    "resnet32": _cifar_resnet(32),
    "resnet44": _cifar_resnet(44),
    "resnet56": _cifar_resnet(56),
    "resnet18": _imagenet_resnet(18, (2, 2, 2, 2), bottleneck=False),
    "resnet34": _imagenet_resnet(34, (3, 4, 6, 3), bottleneck=False),
    "resnet50": _imagenet_resnet(50, (3, 4, 6, 3), bottleneck=True),
    "resnet101": _imagenet_resnet(101, (3, 4, 23, 3), bottleneck=True),
    "resnet152": _imagenet_resnet(152, (3, 8, 36, 3), bottleneck=True),
}


def check_backbone_name(name: str) -> None:
  if name not in BACKBONES:
    raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")


def build_backbone(name: str, image_size: int, sync_batchnorm: bool = False) -> keras.Model:
  """A new, randomly initialised backbone returning the pooled embedding."""
  check_backbone_name(name)
  return BACKBONES[name](image_size, sync_batchnorm)
