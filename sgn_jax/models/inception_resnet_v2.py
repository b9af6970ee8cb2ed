"""Inception-ResNet-v2 (Szegedy et al., 2017) as `tf.keras.applications`.

The SGN WebVision experiments train InceptionResNetV2 from scratch on 227x227
crops (SPEC §2), as the authors' TF2 code calls
`tf.keras.applications.InceptionResNetV2(weights=None)`. This module follows
that Keras architecture layer by layer (keras/applications/
inception_resnet_v2.py); shapes quoted for a 299x299 input (227x227 in
brackets)::

    stem   Conv3x3/2 V 32 -> Conv3x3 V 32 -> Conv3x3 S 64 -> MaxPool3x3/2 V
           -> Conv1x1 V 80 -> Conv3x3 V 192 -> MaxPool3x3/2 V    35x35x192 [26]
    mixed_5b  [1x1 96 | 1x1 48, 5x5 64 | 1x1 64, 3x3 96, 3x3 96 |
               AvgPool3x3/1 S, 1x1 64]                            35x35x320
    10 x block35 (scale 0.17)                                     35x35x320
    mixed_6a  [3x3/2 V 384 | 1x1 256, 3x3 256, 3x3/2 V 384 |
               MaxPool3x3/2 V]                                   17x17x1088 [12]
    20 x block17 (scale 0.1)                                     17x17x1088
    mixed_7a  [1x1 256, 3x3/2 V 384 | 1x1 256, 3x3/2 V 288 |
               1x1 256, 3x3 288, 3x3/2 V 320 | MaxPool3x3/2 V]    8x8x2080 [5]
    9 x block8 (scale 0.2) + block8 (scale 1.0, no activation)    8x8x2080
    conv_7b  Conv1x1 1536                                          8x8x1536
    global average pool                                 # features (head=False)
    Dense(num_outputs)                                  # logits ("predictions")

V = "valid", S = "same" padding (all "same" convolutions have stride 1, so the
padding is symmetric and matches TensorFlow's). Every convolution except the
residual-block "up" projections is Keras' `conv2d_bn`: Conv (no bias) ->
BatchNorm(scale=False: no gamma, epsilon 1e-3, momentum 0.99) -> ReLU (the
module fields `bn_momentum` and `bn_scale` change the momentum and add a learnable
gamma: the SGN authors' WebVision copy uses 0.9 and True). The
residual blocks are

    mixed = concat(branches);  up = Conv1x1(C_in, with bias)(mixed)   # no BN
    x = act(x + scale * up)

with branches block35 [1x1 32 | 1x1 32, 3x3 32 | 1x1 32, 3x3 48, 3x3 64],
block17 [1x1 192 | 1x1 128, 1x7 160, 7x1 192], block8 [1x1 192 | 1x1 192,
1x3 224, 3x1 256]. The average pool of mixed_5b excludes the padding from the
average (TensorFlow's "same" pooling). The smallest input is 75x75
(1x1 after mixed_7a).

Initialisation as Keras: glorot-uniform kernels, zero biases, BN beta 0,
moving mean 0 / variance 1.

Parameter count with 1000 classes (Keras `model.summary()`): trainable
55,813,192 (kernels, biases and BN betas: the `params` collection here) plus
non-trainable 60,544 (BN moving mean and variance, 2 x 30,272 channels: the
`batch_stats` collection) = 55,873,736 total.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

glorot_uniform = nn.initializers.glorot_uniform()  # Keras' default

# Keras' conv2d_bn BatchNorm: epsilon 1e-3; momentum and scale from the model's fields.
BN_EPSILON = 1e-3


def _pair(k):
  return (k, k) if isinstance(k, int) else tuple(k)


class ConvBN(nn.Module):
  """Keras `conv2d_bn`: Conv (no bias) -> BN (no scale by default) -> optional ReLU."""
  features: int
  kernel_size: Any
  strides: int = 1
  padding: str = "SAME"
  activation: bool = True
  bn_momentum: float = 0.99
  bn_scale: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.features, _pair(self.kernel_size),
                strides=(self.strides, self.strides), padding=self.padding,
                use_bias=False, kernel_init=glorot_uniform, dtype=self.dtype,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                     epsilon=BN_EPSILON, use_scale=self.bn_scale, dtype=self.dtype,
                     name="bn")(x)
    return nn.relu(x) if self.activation else x


def _max_pool(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class Mixed5b(nn.Module):
  """Stem output -> 320 channels (Keras `mixed_5b`)."""
  bn_momentum: float = 0.99
  bn_scale: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    cb = functools.partial(ConvBN, bn_momentum=self.bn_momentum, bn_scale=self.bn_scale,
                           dtype=self.dtype)
    b0 = cb(96, 1, name="branch0")(x, train)
    b1 = cb(48, 1, name="branch1_0")(x, train)
    b1 = cb(64, 5, name="branch1_1")(b1, train)
    b2 = cb(64, 1, name="branch2_0")(x, train)
    b2 = cb(96, 3, name="branch2_1")(b2, train)
    b2 = cb(96, 3, name="branch2_2")(b2, train)
    b3 = nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME",
                     count_include_pad=False)
    b3 = cb(64, 1, name="branch3")(b3, train)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class Mixed6a(nn.Module):
  """35x35x320 -> 17x17x1088 reduction (Keras `mixed_6a`)."""
  bn_momentum: float = 0.99
  bn_scale: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    cb = functools.partial(ConvBN, bn_momentum=self.bn_momentum, bn_scale=self.bn_scale,
                           dtype=self.dtype)
    b0 = cb(384, 3, strides=2, padding="VALID", name="branch0")(x, train)
    b1 = cb(256, 1, name="branch1_0")(x, train)
    b1 = cb(256, 3, name="branch1_1")(b1, train)
    b1 = cb(384, 3, strides=2, padding="VALID", name="branch1_2")(b1, train)
    return jnp.concatenate([b0, b1, _max_pool(x)], axis=-1)


class Mixed7a(nn.Module):
  """17x17x1088 -> 8x8x2080 reduction (Keras `mixed_7a`)."""
  bn_momentum: float = 0.99
  bn_scale: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    cb = functools.partial(ConvBN, bn_momentum=self.bn_momentum, bn_scale=self.bn_scale,
                           dtype=self.dtype)
    b0 = cb(256, 1, name="branch0_0")(x, train)
    b0 = cb(384, 3, strides=2, padding="VALID", name="branch0_1")(b0, train)
    b1 = cb(256, 1, name="branch1_0")(x, train)
    b1 = cb(288, 3, strides=2, padding="VALID", name="branch1_1")(b1, train)
    b2 = cb(256, 1, name="branch2_0")(x, train)
    b2 = cb(288, 3, name="branch2_1")(b2, train)
    b2 = cb(320, 3, strides=2, padding="VALID", name="branch2_2")(b2, train)
    return jnp.concatenate([b0, b1, b2, _max_pool(x)], axis=-1)


# Branch specs: a list of branches, each a list of (filters, kernel_size).
_BLOCK_BRANCHES = {
    "block35": [[(32, 1)], [(32, 1), (32, 3)], [(32, 1), (48, 3), (64, 3)]],
    "block17": [[(192, 1)], [(128, 1), (160, (1, 7)), (192, (7, 1))]],
    "block8": [[(192, 1)], [(192, 1), (224, (1, 3)), (256, (3, 1))]],
}


class InceptionResNetBlock(nn.Module):
  """Keras `inception_resnet_block`: x = act(x + scale * Conv1x1(concat(...)))."""
  block_type: str
  scale: float
  activation: bool = True
  bn_momentum: float = 0.99
  bn_scale: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    branches = []
    for i, spec in enumerate(_BLOCK_BRANCHES[self.block_type]):
      b = x
      for j, (filters, k) in enumerate(spec):
        b = ConvBN(filters, k, bn_momentum=self.bn_momentum, bn_scale=self.bn_scale,
                   dtype=self.dtype, name=f"branch{i}_{j}")(b, train)
      branches.append(b)
    mixed = jnp.concatenate(branches, axis=-1)
    up = nn.Conv(x.shape[-1], (1, 1), use_bias=True, kernel_init=glorot_uniform,
                 dtype=self.dtype, name="up")(mixed)
    x = x + self.scale * up
    return nn.relu(x) if self.activation else x


class InceptionResNetV2(nn.Module):
  """Inception-ResNet-v2, `tf.keras.applications.InceptionResNetV2` layout.

  See the module docstring for the architecture. Inputs: float32 NHWC images,
  already normalised, at least 75x75 (WebVision: 227x227; Keras default
  299x299). Output: float32 logits (N, num_outputs), or the pooled conv_7b
  features (N, 1536) with head=False.

  Trainable parameters with 1000 classes: 55,813,192 (`params`), plus 60,544
  BN moving statistics (`batch_stats`); Keras' "Total params" 55,873,736 is
  their sum.

  Attributes:
    num_outputs: number of logits.
    head: if False, return the pooled features (N, 1536).
    block_repeats: number of (block35, block17, block8) blocks; Keras'
      (10, 20, 10), the last block8 always scale 1.0 without ReLU.
    bn_momentum: momentum of every BatchNorm's running statistics (Keras' 0.99;
      the SGN authors' WebVision copy 0.9, webvision/inception_resnetv2.py:50).
    bn_scale: learn a BatchNorm scale (gamma); Keras' False, the SGN authors' True
      (inception_resnetv2.py:51,326). Adds 30,272 parameters.
    dtype: compute dtype; parameters and BN statistics stay float32. The final
      dense layer computes in float32 so the logits are float32 for any dtype;
      head=False features are in `dtype`.
  """
  num_outputs: int = 1000
  head: bool = True
  block_repeats: Sequence[int] = (10, 20, 10)
  bn_momentum: float = 0.99
  bn_scale: bool = False
  dtype: Any = jnp.float32

  def __post_init__(self):
    if not 0.0 <= self.bn_momentum < 1.0:
      raise ValueError(f"InceptionResNetV2 bn_momentum must be in [0, 1); got "
                       f"{self.bn_momentum!r}.")
    if (len(self.block_repeats) != 3
        or not all(isinstance(n, int) for n in self.block_repeats)
        or min(self.block_repeats[:2]) < 0 or self.block_repeats[2] < 1):
      raise ValueError(
          f"InceptionResNetV2 block_repeats must be 3 ints (block35, block17, "
          f"block8), the last >= 1; got {self.block_repeats!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    if min(x.shape[1:3]) < 75:
      raise ValueError(f"InceptionResNetV2 needs inputs of at least 75x75; got "
                       f"shape {x.shape}.")
    x = jnp.asarray(x, self.dtype)
    cb = functools.partial(ConvBN, bn_momentum=self.bn_momentum, bn_scale=self.bn_scale,
                           dtype=self.dtype)
    # Stem.
    x = cb(32, 3, strides=2, padding="VALID", name="conv2d_1a")(x, train)
    x = cb(32, 3, padding="VALID", name="conv2d_2a")(x, train)
    x = cb(64, 3, name="conv2d_2b")(x, train)
    x = _max_pool(x)
    x = cb(80, 1, padding="VALID", name="conv2d_3b")(x, train)
    x = cb(192, 3, padding="VALID", name="conv2d_4a")(x, train)
    x = _max_pool(x)
    bn = dict(bn_momentum=self.bn_momentum, bn_scale=self.bn_scale)
    x = Mixed5b(**bn, dtype=self.dtype, name="mixed_5b")(x, train)
    n35, n17, n8 = self.block_repeats
    block = functools.partial(InceptionResNetBlock, **bn, dtype=self.dtype)
    for i in range(1, n35 + 1):
      x = block("block35", 0.17, name=f"block35_{i}")(x, train)
    x = Mixed6a(**bn, dtype=self.dtype, name="mixed_6a")(x, train)
    for i in range(1, n17 + 1):
      x = block("block17", 0.1, name=f"block17_{i}")(x, train)
    x = Mixed7a(**bn, dtype=self.dtype, name="mixed_7a")(x, train)
    for i in range(1, n8):
      x = block("block8", 0.2, name=f"block8_{i}")(x, train)
    x = block("block8", 1.0, activation=False, name=f"block8_{n8}")(x, train)
    x = cb(1536, 1, name="conv_7b")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    if not self.head:
      return x
    return nn.Dense(self.num_outputs, kernel_init=glorot_uniform,
                    dtype=jnp.float32, name="classifier")(x)
