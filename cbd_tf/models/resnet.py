"""Backbones by name: image batch (N, S, S, 3) in [0, 1] -> pooled embedding (N, D).

  resnet8 / resnet20 / resnet32 / resnet44 / resnet56   CIFAR-style (He et al. 2016, sec. 4.2)
  resnet18 / resnet34                                   basic-block ImageNet ResNets
  resnet50 / resnet101 / resnet152                      keras.applications, no weights

Below 64 pixels ResNet-18/34 use a 3x3 stride-1 stem without max pooling, as is usual
on CIFAR, so small images are not reduced to nothing.
"""

from __future__ import annotations

from typing import Callable

import keras

# ImageNet channel statistics: inputs are normalised inside the model, so exports take [0, 1].
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _batch_norm(sync: bool, name: str) -> keras.layers.Layer:
  return keras.layers.BatchNormalization(
      momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, synchronized=sync, name=name)


def _conv(filters: int, kernel: int, stride: int, name: str) -> keras.layers.Layer:
  return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                             kernel_initializer="he_normal", name=name)


def _basic_block(x, filters: int, stride: int, sync: bool, name: str):
  shortcut = x
  y = _conv(filters, 3, stride, f"{name}_conv1")(x)
  y = keras.layers.ReLU(name=f"{name}_relu1")(_batch_norm(sync, f"{name}_bn1")(y))
  y = _conv(filters, 3, 1, f"{name}_conv2")(y)
  y = _batch_norm(sync, f"{name}_bn2")(y)
  if stride != 1 or x.shape[-1] != filters:
    shortcut = _conv(filters, 1, stride, f"{name}_proj")(x)
    shortcut = _batch_norm(sync, f"{name}_proj_bn")(shortcut)
  return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def _normalized_input(image_size: int):
  inputs = keras.Input((image_size, image_size, 3), name="images")
  x = keras.layers.Normalization(mean=_MEAN, variance=[s * s for s in _STD], name="normalize")(inputs)
  return inputs, x


def _basic_resnet(stage_blocks: tuple[int, ...], stage_filters: tuple[int, ...], small_stem: bool,
                  image_size: int, sync: bool, name: str) -> keras.Model:
  inputs, x = _normalized_input(image_size)
  if small_stem:
    x = _conv(stage_filters[0], 3, 1, "stem_conv")(x)
  else:
    x = _conv(stage_filters[0], 7, 2, "stem_conv")(x)
  x = keras.layers.ReLU(name="stem_relu")(_batch_norm(sync, "stem_bn")(x))
  if not small_stem:
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
  for stage, (blocks, filters) in enumerate(zip(stage_blocks, stage_filters)):
    for block in range(blocks):
      stride = 2 if stage > 0 and block == 0 else 1
      x = _basic_block(x, filters, stride, sync, f"stage{stage + 1}_block{block + 1}")
  outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
  return keras.Model(inputs, outputs, name=name)


def _cifar_resnet(depth: int) -> Callable[[int, bool], keras.Model]:
  blocks = (depth - 2) // 6

  def build(image_size: int, sync: bool) -> keras.Model:
    return _basic_resnet((blocks,) * 3, (16, 32, 64), True, image_size, sync, f"resnet{depth}")
  return build


def _imagenet_basic_resnet(depth: int, stage_blocks: tuple[int, ...]):
  def build(image_size: int, sync: bool) -> keras.Model:
    return _basic_resnet(stage_blocks, (64, 128, 256, 512), image_size < 64, image_size, sync,
                         f"resnet{depth}")
  return build


def _keras_application(constructor_name: str):
  def build(image_size: int, sync: bool) -> keras.Model:
    inputs, x = _normalized_input(image_size)
    constructor = getattr(keras.applications, constructor_name)
    trunk = constructor(include_top=False, weights=None, input_shape=(image_size, image_size, 3),
                        pooling="avg")
    if sync:  # keras.applications has no option for it: rebuild with synchronised BatchNorm
      trunk = keras.models.clone_model(trunk, clone_function=_synchronized_batch_norm)
    return keras.Model(inputs, trunk(x), name=constructor_name.lower())
  return build


def _synchronized_batch_norm(layer: keras.layers.Layer) -> keras.layers.Layer:
  config = layer.get_config()
  if isinstance(layer, keras.layers.BatchNormalization):
    config["synchronized"] = True
  return layer.__class__.from_config(config)


BACKBONES: dict[str, Callable[[int, bool], keras.Model]] = {
    "resnet8": _cifar_resnet(8),
    "resnet20": _cifar_resnet(20),
    "resnet32": _cifar_resnet(32),
    "resnet44": _cifar_resnet(44),
    "resnet56": _cifar_resnet(56),
    "resnet18": _imagenet_basic_resnet(18, (2, 2, 2, 2)),
    "resnet34": _imagenet_basic_resnet(34, (3, 4, 6, 3)),
    "resnet50": _keras_application("ResNet50"),
    "resnet101": _keras_application("ResNet101"),
    "resnet152": _keras_application("ResNet152"),
}


def check_backbone_name(name: str) -> None:
  if name not in BACKBONES:
    raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")


def build_backbone(name: str, image_size: int, sync_batchnorm: bool = False) -> keras.Model:
  """A new, randomly initialised backbone returning the pooled embedding."""
  check_backbone_name(name)
  return BACKBONES[name](image_size, sync_batchnorm)
