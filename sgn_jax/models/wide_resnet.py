"""Pre-activation Wide Residual Network (Zagoruyko & Komodakis, 2016) for CIFAR.

The SGN CIFAR experiments (and all their baselines) use WRN-28-2 with He-normal
initialisation and BatchNorm epsilon 1e-5, momentum 0.9 (SPEC §2), as in the
Uncertainty Baselines `wide_resnet(version=2)` that the authors' code builds on.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# He-normal as Keras `he_normal`: truncated normal (cut at 2 std, the std
# corrected so the variance stays) with variance 2 / fan_in.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
# Kernel initialisers of the dense head (`WideResNet.head_init`).
HEAD_INITS = {"he_normal": he_normal, "glorot_uniform": nn.initializers.glorot_uniform()}

BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


class WideResNetBlock(nn.Module):
  """Pre-activation basic block: two 3x3 convolutions and a shortcut.

      a = ReLU(BN1(x))
      y = Conv3x3(features, strides)(a)
      y = Conv3x3(features)(Dropout(ReLU(BN2(y))))
      out = y + shortcut

  The shortcut is the identity when the block keeps the shape (same channels,
  stride 1), otherwise a 1x1 convolution with stride `strides`, applied to the
  raw input `x` (shortcut_on_preact=False, the default: Uncertainty Baselines'
  Keras `wide_resnet(version=2)`, which the SGN authors trained) or to the
  pre-activated input `a` (True, Zagoruyko & Komodakis's reference code). Both
  have the same parameters. Convolutions
  have no bias and use TensorFlow "SAME" padding (for stride 2 the extra pad row
  and column go at the bottom/right, unlike PyTorch's symmetric padding=1).
  """
  features: int
  strides: int = 1
  shortcut_on_preact: bool = False
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(nn.Conv, use_bias=False, padding="SAME",
                             kernel_init=he_normal, dtype=self.dtype)
    bn = functools.partial(BatchNorm, use_running_average=not train,
                           dtype=self.dtype)
    a = nn.relu(bn(name="bn1")(x))
    y = conv(self.features, (3, 3), strides=self.strides, name="conv1")(a)
    y = nn.relu(bn(name="bn2")(y))
    if self.dropout_rate > 0:
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = conv(self.features, (3, 3), name="conv2")(y)
    if x.shape[-1] != self.features or self.strides != 1:
      shortcut_in = a if self.shortcut_on_preact else x
      shortcut = conv(self.features, (1, 1), strides=self.strides,
                      name="shortcut")(shortcut_in)
    else:
      shortcut = x
    return shortcut + y


class WideResNet(nn.Module):
  """Pre-activation WRN-depth-width.

  Architecture (NHWC)::

      Conv3x3(16)                                     # no BN/ReLU after it
      group 1: n blocks, 16*width channels, stride 1
      group 2: n blocks, 32*width channels, stride 2 (first block)
      group 3: n blocks, 64*width channels, stride 2 (first block)
      BN -> ReLU -> global average pool               # features (head=False)
      Dense(num_outputs)                              # logits

  with n = (depth - 4) / 6 pre-activation blocks per group (`WideResNetBlock`;
  the shortcut variant is chosen by `shortcut_on_preact`, see there).

  Initialisation: all conv and dense kernels He-normal with a TRUNCATED normal
  (`variance_scaling(2.0, "fan_in", "truncated_normal")`, as Keras `he_normal`
  in Uncertainty Baselines); convolutions have no bias; the dense bias starts
  at zero; BN scale 1, bias 0. BatchNorm: momentum 0.9, epsilon 1e-5, running
  statistics in the "batch_stats" collection, batch statistics when
  train=True. Under `jax.jit` with a globally sharded batch the batch
  statistics are global (synchronised BN).

  Trainable parameters (BN scale and bias counted, running statistics not):
  WRN-28-2 with 10 classes has 1,467,610 (with 100 classes 1,479,220).

  Attributes:
    depth: total number of conv layers on the main path, 6n + 4.
    width: width multiplier k.
    num_outputs: number of logits.
    head: if False, return the pooled features (N, 64 * width).
    shortcut_on_preact: projection shortcut on the raw block input (False,
      default: Uncertainty Baselines, as the SGN authors) or on the
      pre-activated one (True, Zagoruyko & Komodakis).
    dropout_rate: dropout between the two convolutions of each block (the
      WRN paper's placement); 0 (the default, and the SGN setting) disables it.
      Needs the "dropout" rng when > 0 and train=True.
    head_init: kernel initialiser of the dense head, `HEAD_INITS`: "he_normal"
      (default; Uncertainty Baselines' `wide_resnet`, the SGN authors' baselines) or
      "glorot_uniform" (Keras' default Dense; the SGN authors' `wide_resnet_factors`
      heads of SGN and LN, src/cifar/wide_resnet_factors.py:223-251). Biases start
      at zero.
    head_groups: () (default): one Dense(num_outputs) named "classifier"; else
      separate Dense layers of these sizes ("classifier_0", "classifier_1", ...;
      they sum to num_outputs) whose outputs are concatenated, e.g. SGN's (K-1, K-1)
      loc and scale layers. With glorot_uniform the split changes the initial scale
      (the limit sqrt(6 / (fan_in + fan_out)) is per layer).
    dtype: compute dtype; parameters and BN statistics stay float32. The final
      dense layer computes in float32 so the logits are float32 for any dtype;
      head=False features are in `dtype`.
  """
  depth: int = 28
  width: int = 2
  num_outputs: int = 10
  head: bool = True
  shortcut_on_preact: bool = False
  dropout_rate: float = 0.0
  head_init: str = "he_normal"
  head_groups: Sequence[int] = ()
  dtype: Any = jnp.float32

  def __post_init__(self):
    if self.head_init not in HEAD_INITS:
      raise ValueError(f"WideResNet head_init={self.head_init!r} is not known; allowed: "
                       f"{sorted(HEAD_INITS)}.")
    if self.head_groups and (
        not all(isinstance(n, int) and n > 0 for n in self.head_groups)
        or sum(self.head_groups) != self.num_outputs):
      raise ValueError(
          f"WideResNet head_groups={tuple(self.head_groups)!r} must be positive ints that "
          f"sum to num_outputs={self.num_outputs} (or () for one dense layer).")
    if (not isinstance(self.depth, int) or self.depth < 10
        or (self.depth - 4) % 6 != 0):
      raise ValueError(
          f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, "
          f"...); got depth={self.depth!r}.")
    if not isinstance(self.width, int) or self.width < 1:
      raise ValueError(f"WideResNet width must be a positive int; got "
                       f"width={self.width!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    n = (self.depth - 4) // 6
    x = jnp.asarray(x, self.dtype)
    x = nn.Conv(16, (3, 3), padding="SAME", use_bias=False,
                kernel_init=he_normal, dtype=self.dtype, name="init_conv")(x)
    for g, (channels, strides) in enumerate(
        zip((16, 32, 64), (1, 2, 2)), start=1):
      for b in range(n):
        x = WideResNetBlock(
            features=channels * self.width,
            strides=strides if b == 0 else 1,
            shortcut_on_preact=self.shortcut_on_preact,
            dropout_rate=self.dropout_rate,
            dtype=self.dtype,
            name=f"group{g}_block{b + 1}")(x, train=train)
    x = BatchNorm(use_running_average=not train, dtype=self.dtype,
                  name="final_bn")(x)
    x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    if not self.head:
      return x
    kernel_init = HEAD_INITS[self.head_init]
    if not self.head_groups:
      return nn.Dense(self.num_outputs, kernel_init=kernel_init, dtype=jnp.float32,
                      name="classifier")(x)
    return jnp.concatenate(
        [nn.Dense(n, kernel_init=kernel_init, dtype=jnp.float32, name=f"classifier_{i}")(x)
         for i, n in enumerate(self.head_groups)], axis=-1)


wrn28_2 = functools.partial(WideResNet, depth=28, width=2)
