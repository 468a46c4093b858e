"""Lightweight tuning of a pretrained backbone, as LIFT does it (Shi et al., ICML 2024;
github shijxcs/LIFT, models/peft_modules.py and models/peft_vit.py): `--backbone_tuning=`

  full         every backbone weight trains (BatchNorm in training mode)
  frozen       no backbone weight trains; the backbone runs in inference mode
  bias         BitFit: only biases train: in a transformer's blocks (attention, MLP, LayerNorm
               beta: LIFT's `blocks.named_parameters()` ending in "bias"); on a ResNet every
               BatchNorm beta (its convolutions have none), statistics frozen
  lora         LoRA on each block's query and value projections: q += (1 / r) * x A B, A (D, r)
               ~ U(+-1 / sqrt(r)) (torch's kaiming_uniform(a=sqrt(5)) on a (D, r) tensor),
               B (r, D) zeros
  adaptformer  AdaptFormer beside each block's MLP: block(x) = h + MLP(LN2(h)) + s * up(relu(
               down(LN(h)))), h the block's input after attention; its own LayerNorm (eps
               1e-5), down ~ N(0, 1 / (3 D)) (kaiming_normal(a=sqrt(5))), up and both biases
               zeros, s a learnable scalar starting at 1

In every mode but `full` the backbone runs with training=False and only the adapter (and
what sits on the backbone) trains, so every pretrained weight and statistic stays as it
was; an adapter starts as the identity (B and up are zero), so step 0 is the pretrained
model. The rank r (LoRA) or bottleneck (AdaptFormer) defaults to LIFT's rule,
2 ** max(0, floor(log2(C / (2 * L)))) for C classes and L blocks.

The blocks are KerasHub's (CLIPEncoderLayer, SigLIPEncoderLayer, ViTEncoderBlock,
DINOV2Layer). KerasHub's block `call` has no adapter hook, so an adapted block's `call` is
replaced on the instance: the block's own attention half and MLP half (tested equal to
KerasHub's call), plus the adapter. LoRA replaces the query and value EinsumDense's `call`
the same way. The replaced calls live on the Python objects, not in the saved config: the
backbone applies them again when it is rebuilt (KerasHubBackbone's config names the mode).
"""

from __future__ import annotations

import math
import types

import keras
from keras import ops


from cbd_tf.config import BACKBONE_TUNINGS as TUNINGS


def _clip_halves(block, x, training):
  attended = block.layer_norm_1(x)
  h = ops.add(x, block.attention(attended, attended, attended, training=training,
                                 use_causal_mask=block.use_causal_mask))
  return h, block.dense_2(block.activation(block.dense_1(block.layer_norm_2(h))))


def _siglip_halves(block, x, training):
  attended = block.layer_norm1(x)
  h = ops.add(x, block.self_attn(attended, attended, attended, training=training,
                                 use_causal_mask=block.use_causal_mask))
  return h, block.mlp(block.layer_norm2(h), training=training)


def _vit_halves(block, x, training):
  attended = block.layer_norm_1(x)
  h = block.dropout(block.mha(attended, attended, training=training), training=training) + x
  return h, block.mlp(block.layer_norm_2(h), training=training)


def _dinov2_halves(block, x, training):
  h = ops.add(block.drop_path(block.layer_scale1(block.attention(
      block.norm1(x, training=training), training=training)), training=training), x)
  mlp = block.layer_scale2(block.mlp(block.norm2(h, training=training), training=training))
  return h, block.drop_path(mlp, training=training)


# KerasHub block class -> (attention half, MLP half): block(x) = h + mlp, h = x + attention.
BLOCK_HALVES = {"CLIPEncoderLayer": _clip_halves, "SigLIPEncoderLayer": _siglip_halves,
                "ViTEncoderBlock": _vit_halves, "DINOV2Layer": _dinov2_halves}


def transformer_blocks(image_model) -> list:
  """The image model's KerasHub transformer blocks, in order (empty for other models)."""
  return [layer for layer in image_model._flatten_layers(include_self=False)  # pylint: disable=protected-access
          if type(layer).__name__ in BLOCK_HALVES]


def default_rank(num_classes: int, num_blocks: int) -> int:
  """LIFT's adapter_dim: 2 ** max(0, int(log2(num_classes / (n_layers * 2))))."""
  if num_classes < 1:
    raise ValueError("an adapter needs adapter_rank or num_classes (LIFT's rule) to size it")
  return 2 ** max(0, int(math.log2(num_classes / (num_blocks * 2))))


@keras.saving.register_keras_serializable(package="cbd_tf")
class AdaptFormer(keras.layers.Layer):
  """s * up(relu(down(LayerNorm(h)))): LIFT's AdaptFormer module (module docstring)."""

  def __init__(self, width: int, bottleneck: int, **kwargs):
    super().__init__(**kwargs)
    self.width, self.bottleneck = width, bottleneck
    self.norm = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")
    # torch's kaiming_normal_(a=sqrt(5)) on a (bottleneck, width) weight: std 1 / sqrt(3 D).
    self.down = keras.layers.Dense(bottleneck, name="down", kernel_initializer=(
        keras.initializers.VarianceScaling(1 / 3, "fan_in", "untruncated_normal")))
    self.up = keras.layers.Dense(width, name="up", kernel_initializer="zeros")

  def build(self, input_shape):
    self.norm.build(input_shape)
    self.down.build(input_shape)
    self.up.build((*input_shape[:-1], self.bottleneck))
    self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
    self.built = True

  def call(self, h):
    return self.scale * self.up(ops.relu(self.down(self.norm(h))))

  def get_config(self):
    return {**super().get_config(), "width": self.width, "bottleneck": self.bottleneck}


@keras.saving.register_keras_serializable(package="cbd_tf")
class LoRA(keras.layers.Layer):
  """(1 / rank) * x A B, reshaped to an attention projection's (..., heads, head_dim):
  LIFT's LoRA module (module docstring)."""

  def __init__(self, width: int, rank: int, heads: int, head_dim: int, **kwargs):
    super().__init__(**kwargs)
    self.width, self.rank, self.heads, self.head_dim = width, rank, heads, head_dim

  def build(self, input_shape):
    # torch's kaiming_uniform_(a=sqrt(5)) on the (width, rank) A: fan-in = rank.
    bound = 1 / math.sqrt(self.rank)
    self.a = self.add_weight(shape=(self.width, self.rank), name="a",
                             initializer=keras.initializers.RandomUniform(-bound, bound))
    self.b = self.add_weight(shape=(self.rank, self.heads * self.head_dim), name="b",
                             initializer="zeros")
    self.built = True

  def call(self, x):
    delta = ops.matmul(ops.matmul(x, self.a), self.b) / self.rank
    return ops.reshape(delta, (*ops.shape(x)[:-1], self.heads, self.head_dim))

  def get_config(self):
    return {**super().get_config(), "width": self.width, "rank": self.rank,
            "heads": self.heads, "head_dim": self.head_dim}


def _is_bias(variable) -> bool:
  # Dense / EinsumDense / Conv "bias", LayerNormalization and BatchNormalization "beta".
  return variable.path.rsplit("/", 1)[-1] in ("bias", "beta")


def _freeze(variables, keep=lambda variable: False) -> None:
  for variable in variables:
    if variable.trainable and not keep(variable):
      variable.trainable = False


def tune(image_model, tuning: str, rank: int = 0, num_classes: int = 0,
         name: str = "backbone") -> list:
  """Applies `tuning` (module docstring) to `image_model` in place; returns the adapter
  layers it added (to be tracked by the caller). ValueError (one line) when `image_model`
  cannot take it. `rank` 0: LIFT's rule, from `num_classes`."""
  if tuning not in TUNINGS:
    raise ValueError(f"unknown backbone tuning {tuning!r}; valid: {', '.join(TUNINGS)}")
  if tuning == "full":
    return []
  blocks = transformer_blocks(image_model)
  if tuning == "bias":
    owners = blocks or [image_model]
    biases = {id(v) for block in owners for v in block.weights if _is_bias(v)}
    if not biases:
      raise ValueError(f"--backbone_tuning=bias: {name} has no biases to train")
    _freeze(image_model.weights, keep=lambda variable: id(variable) in biases)
    return []
  _freeze(image_model.weights)
  if tuning == "frozen":
    return []
  if not blocks:
    raise ValueError(
        f"--backbone_tuning={tuning} needs transformer blocks (KerasHub's CLIP, SigLIP, ViT or "
        f"DINOv2 image encoders); {name} ({type(image_model).__name__}) has none: use full, "
        "frozen or bias")
  rank = rank or default_rank(num_classes, len(blocks))
  adapters = []
  for index, block in enumerate(blocks):
    if tuning == "adaptformer":
      adapters.append(_add_adaptformer(block, rank, f"adaptformer_{index}"))
    else:
      adapters.extend(_add_lora(block, rank, f"lora_{index}"))
  return adapters


def _add_adaptformer(block, bottleneck: int, name: str) -> AdaptFormer:
  halves = BLOCK_HALVES[type(block).__name__]
  adapter = AdaptFormer(_block_width(block), bottleneck, name=name)
  adapter.build((None, None, adapter.width))

  def call(self, x, training=None, **_):
    h, mlp = halves(self, x, training)
    return ops.add(ops.add(h, mlp), ops.cast(adapter(h), h.dtype))

  block.call = types.MethodType(call, block)
  return adapter


def _block_width(block) -> int:
  norm = next(layer for layer in block._flatten_layers(include_self=False)  # pylint: disable=protected-access
              if isinstance(layer, keras.layers.LayerNormalization))
  return int(norm.gamma.shape[-1])


def _add_lora(block, rank: int, name: str) -> list:
  attention = next(layer for layer in block._flatten_layers(include_self=False)  # pylint: disable=protected-access
                   if isinstance(layer, keras.layers.MultiHeadAttention))
  factors = []
  for projection in (attention.query_dense, attention.value_dense):
    width, heads, head_dim = (int(size) for size in projection.kernel.shape)
    lora = LoRA(width, rank, heads, head_dim, name=f"{name}_{projection.name}")
    lora.build((None, width))
    original = projection.call

    def call(self, inputs, training=None, original=original, lora=lora):
      del self
      return ops.add(original(inputs, training=training), ops.cast(lora(inputs), inputs.dtype))

    projection.call = types.MethodType(call, projection)
    factors.append(lora)
  return factors
