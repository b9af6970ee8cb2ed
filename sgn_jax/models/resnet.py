"""ResNet v1.5 (He et al., 2016; torchvision layout) for ImageNet-size and CIFAR inputs.

Clothing1M uses an ImageNet-pretrained ResNet-50 on 224x224 crops (SPEC §2);
`sgn_jax.models.pretrained.load_torchvision_resnet` maps torchvision weights
into these modules. The layout follows `torchvision.models.resnet` exactly, so
that those weights give the same outputs:

* v1.5 bottleneck: the stride sits on the 3x3 convolution (not the first 1x1);
* convolutions without bias and with PyTorch's explicit symmetric padding
  (k - 1) // 2 (not TensorFlow "SAME", which pads stride-2 convolutions at the
  bottom/right only); the stem max-pool pads 1 on every side;
* projection shortcut (1x1 conv with stride + BN) wherever a block changes the
  shape, identity otherwise;
* BatchNorm epsilon 1e-5, momentum 0.9 (Flax convention; torch's momentum 0.1).

Module names mirror torchvision's state-dict names: `conv1`, `bn1`,
`layer{i}_{j}` (torch `layer{i}.{j}`) with `conv1..3`, `bn1..3`,
`downsample_conv`/`downsample_bn` (torch `downsample.0`/`downsample.1`), and the
final dense layer `classifier` (torch `fc`, named like the other models here).
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision's init: kaiming_normal_(mode="fan_out", nonlinearity="relu") for
# convolutions (a plain, untruncated normal with variance 2 / fan_out).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch.nn.Linear's default: kernel U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (= the
# kaiming_uniform_(a=sqrt(5)) torch uses), bias with the same bound.
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in",
                                                     "uniform")


def _uniform_bias_init(fan_in: int):
  bound = 1.0 / fan_in ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


def _conv(features, k, strides, name, dtype):
  p = (k - 1) // 2
  return nn.Conv(features, (k, k), strides=(strides, strides),
                 padding=((p, p), (p, p)), use_bias=False,
                 kernel_init=conv_init, dtype=dtype, name=name)


class BasicBlock(nn.Module):
  """torchvision `BasicBlock` (ResNet-18/34): two 3x3 convolutions.

      y = ReLU(BN1(Conv3x3(features, strides)(x)))
      y = BN2(Conv3x3(features)(y))
      out = ReLU(y + shortcut(x))

  Output channels: `features` (expansion 1).
  """
  features: int
  strides: int = 1
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  expansion = 1  # class constant, not a field

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = functools.partial(BatchNorm, use_running_average=not train,
                           dtype=self.dtype)
    y = _conv(self.features, 3, self.strides, "conv1", self.dtype)(x)
    y = nn.relu(bn(name="bn1")(y))
    y = _conv(self.features, 3, 1, "conv2", self.dtype)(y)
    y = bn(name="bn2", scale_init=(nn.initializers.zeros
                                   if self.zero_init_residual
                                   else nn.initializers.ones))(y)
    return nn.relu(y + _shortcut(self, x, self.features, bn))


class Bottleneck(nn.Module):
  """torchvision `Bottleneck` v1.5 (ResNet-50/101/152).

      y = ReLU(BN1(Conv1x1(features)(x)))
      y = ReLU(BN2(Conv3x3(features, strides)(y)))    # stride on the 3x3
      y = BN3(Conv1x1(4 * features)(y))
      out = ReLU(y + shortcut(x))

  Output channels: 4 * `features` (expansion 4).
  """
  features: int
  strides: int = 1
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  expansion = 4  # class constant, not a field

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = functools.partial(BatchNorm, use_running_average=not train,
                           dtype=self.dtype)
    out_c = self.features * self.expansion
    y = _conv(self.features, 1, 1, "conv1", self.dtype)(x)
    y = nn.relu(bn(name="bn1")(y))
    y = _conv(self.features, 3, self.strides, "conv2", self.dtype)(y)
    y = nn.relu(bn(name="bn2")(y))
    y = _conv(out_c, 1, 1, "conv3", self.dtype)(y)
    y = bn(name="bn3", scale_init=(nn.initializers.zeros
                                   if self.zero_init_residual
                                   else nn.initializers.ones))(y)
    return nn.relu(y + _shortcut(self, x, out_c, bn))


def _shortcut(block, x, out_c, bn):
  """Identity, or 1x1 conv (stride) + BN when the block changes the shape."""
  if block.strides == 1 and x.shape[-1] == out_c:
    return x
  s = _conv(out_c, 1, block.strides, "downsample_conv", block.dtype)(x)
  return bn(name="downsample_bn")(s)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
  """ResNet v1.5 with torchvision's layout.

  Architecture (NHWC)::

      stem (ImageNet, default):  Conv7x7(64, stride 2, pad 3) -> BN -> ReLU
                                 -> MaxPool 3x3 (stride 2, pad 1)
      stem (cifar_stem=True):    Conv3x3(64, stride 1, pad 1) -> BN -> ReLU
      layer1..layerS: stage_sizes[i] blocks with 64 * 2**i base channels; the
                      first block of every stage but the first has stride 2
      global average pool                              # features (head=False)
      Dense(num_outputs)                               # logits

  The feature size is 512 * expansion for four stages (512 for BasicBlock,
  2048 for Bottleneck). The CIFAR stem is the common "ResNet-18 for CIFAR"
  (Kuang Liu's pytorch-cifar, used by most noisy-label papers): 32x32 input,
  4x4 before the pool.

  Initialisation (torchvision): conv kernels normal with variance
  2 / fan_out, BN scale 1 and bias 0 (the last BN of every block scale 0 with
  `zero_init_residual=True`), dense kernel and bias U(+-1/sqrt(fan_in)).
  BatchNorm: momentum 0.9 (Flax convention), epsilon 1e-5, statistics in
  "batch_stats", batch statistics when train=True.

  Trainable parameters (BN scale and bias counted, running statistics not),
  1000 classes: ResNet-18 11,689,512; ResNet-34 21,797,672;
  ResNet-50 25,557,032; ResNet-101 44,549,160 (torchvision's numbers).
  CIFAR-stem ResNet-18 with 10 classes: 11,173,962.

  Attributes:
    stage_sizes: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    block: "basic" / "bottleneck", or the class `BasicBlock` / `Bottleneck`.
    num_outputs: number of logits.
    head: if False, return the pooled features (N, 64 * 2**(S-1) * expansion).
    cifar_stem: 3x3 stride-1 stem convolution and no max-pool (small images).
    zero_init_residual: start the last BN scale of every block at 0
      (torchvision's option; off by default as in torchvision).
    dtype: compute dtype; parameters and BN statistics stay float32. The final
      dense layer computes in float32 so the logits are float32 for any dtype;
      head=False features are in `dtype`.
  """
  stage_sizes: Sequence[int]
  block: Any
  num_outputs: int = 1000
  head: bool = True
  cifar_stem: bool = False
  zero_init_residual: bool = False
  dtype: Any = jnp.float32

  def __post_init__(self):
    if (isinstance(self.stage_sizes, (str, bytes)) or not self.stage_sizes
        or not all(isinstance(n, int) and n >= 1 for n in self.stage_sizes)):
      raise ValueError(f"ResNet stage_sizes must be a non-empty sequence of "
                       f"positive ints; got stage_sizes={self.stage_sizes!r}.")
    if self.block not in _BLOCKS and self.block not in _BLOCKS.values():
      raise ValueError(f"ResNet block must be one of {sorted(_BLOCKS)} or "
                       f"BasicBlock/Bottleneck; got block={self.block!r}.")
    super().__post_init__()

  @property
  def block_cls(self):
    """The block class (`BasicBlock` or `Bottleneck`)."""
    return _BLOCKS[self.block] if isinstance(self.block, str) else self.block

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.asarray(x, self.dtype)
    if self.cifar_stem:
      x = _conv(64, 3, 1, "conv1", self.dtype)(x)
    else:
      x = _conv(64, 7, 2, "conv1", self.dtype)(x)
    x = BatchNorm(use_running_average=not train, dtype=self.dtype,
                  name="bn1")(x)
    x = nn.relu(x)
    if not self.cifar_stem:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    block_cls = self.block_cls
    for i, n in enumerate(self.stage_sizes):
      for j in range(n):
        x = block_cls(features=64 * 2 ** i,
                      strides=2 if (i > 0 and j == 0) else 1,
                      zero_init_residual=self.zero_init_residual,
                      dtype=self.dtype,
                      name=f"layer{i + 1}_{j}")(x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    if not self.head:
      return x
    return nn.Dense(self.num_outputs, kernel_init=dense_kernel_init,
                    bias_init=_uniform_bias_init(x.shape[-1]),
                    dtype=jnp.float32, name="classifier")(x)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic")
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="basic")
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3),
                             block="bottleneck")
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3),
                              block="bottleneck")
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3),
                              block="bottleneck")
