"""ResNet-50 v1 as `tf.keras.applications.ResNet50` (Keras layout and names).

The SGN authors fine-tune Clothing1M from the Keras ImageNet ResNet-50
(`tf.keras.applications.ResNet50(include_top=False, pooling="avg",
weights="imagenet")`, ErikEnglesson/SGN src/clothing1m/sgn.py). That network is
the original ResNet v1, not torchvision's v1.5 (`sgn_jax.models.resnet`), so its
weights only give the same outputs in this module, which follows
keras/src/applications/resnet.py (`ResNet`, `stack1`, `block1`) layer by layer
(shapes for a 224x224 input)::

    conv1_pad   ZeroPadding2D(3)                                  230x230x3
    conv1_conv  Conv7x7/2 "valid" 64, bias -> conv1_bn -> ReLU    112x112x64
    pool1_pad   ZeroPadding2D(1) -> pool1_pool MaxPool3x3/2       56x56x64
    conv2_block1..3   filters 64,  first block stride 1           56x56x256
    conv3_block1..4   filters 128, first block stride 2           28x28x512
    conv4_block1..6   filters 256, first block stride 2           14x14x1024
    conv5_block1..3   filters 512, first block stride 2           7x7x2048
    avg_pool    global average pool              # features (head=False)
    Dense(num_outputs)                           # logits ("predictions")

Each block (Keras `block1`; `filters` = f, stride s)::

    shortcut = {name}_0_bn({name}_0_conv: Conv1x1/s 4f)(x)   # first block only
               x                                              # other blocks
    y = ReLU({name}_1_bn({name}_1_conv: Conv1x1/s f)(x))    # stride on the 1x1
    y = ReLU({name}_2_bn({name}_2_conv: Conv3x3 "same" f)(y))
    y = {name}_3_bn({name}_3_conv: Conv1x1 4f)(y)
    out = ReLU(y + shortcut)

Every convolution has a bias (Keras `use_bias=True` for ResNet50); BatchNorm
epsilon 1.001e-5 and momentum 0.99 (Keras' default; the same convention as
Flax: running = 0.99 * running + 0.01 * batch). Flax updates the running
variance with the biased batch variance, as Keras 3 does (TF 2's fused kernel
uses the unbiased one: a factor n / (n - 1), n = batch x height x width).
The zero padding before the max-pool equals -inf padding because its input is
post-ReLU (>= 0). "same" padding of the stride-1 3x3 convolutions is
symmetric (1 on every side).

Names. Flax modules carry the Keras layer names, so that weights load by name
(`sgn_jax.models.pretrained.load_keras_resnet50`); `keras_weight_name` is the
mapping::

    Flax variable                                Keras layer / weight
    params/conv1_conv/{kernel,bias}              conv1_conv/{kernel,bias}
    params/conv1_bn/{scale,bias}                 conv1_bn/{gamma,beta}
    batch_stats/conv1_bn/{mean,var}              conv1_bn/{moving_mean,moving_variance}
    params/conv{S}_block{B}/{k}_conv/...         conv{S}_block{B}_{k}_conv/...
    params/conv{S}_block{B}/{k}_bn/...           conv{S}_block{B}_{k}_bn/...
    params/classifier/{kernel,bias}              predictions/{kernel,bias}

(k = 0 for the shortcut, 1..3 for the main path). Array layouts are the same
in both: convolution kernels (kh, kw, in, out), the dense kernel (in, out).
The final dense layer is `classifier` as in the other models here (Keras
"predictions").

Initialisation as Keras: glorot-uniform kernels and zero biases (also the new
Dense heads the authors add), BN gamma 1, beta 0, moving mean 0, variance 1.

Parameter count (Keras `model.summary()`): with 1000 classes 25,583,592
trainable (the `params` collection) + 53,120 non-trainable (BN moving mean and
variance, the `batch_stats` collection) = 25,636,712; without the top
(head=False) 23,534,592 + 53,120 = 23,587,712.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

glorot_uniform = nn.initializers.glorot_uniform()  # Keras' default

BatchNorm = functools.partial(nn.BatchNorm, momentum=0.99, epsilon=1.001e-5)

# Flax leaf name -> Keras weight name, per layer kind.
_BN_PARAMS = {"scale": "gamma", "bias": "beta"}
_BN_STATS = {"mean": "moving_mean", "var": "moving_variance"}
_CONV_OR_DENSE = {"kernel": "kernel", "bias": "bias"}
HEAD_NAME = "classifier"
KERAS_HEAD_NAME = "predictions"


def keras_weight_name(collection: str, path: tuple[str, ...]) -> tuple[str, str]:
  """(Keras layer name, Keras weight name) of a Flax variable of `KerasResNet`.

  Args:
    collection: "params" or "batch_stats".
    path: the variable's path in its collection, e.g.
      ("conv3_block1", "0_bn", "scale").

  Returns:
    E.g. ("conv3_block1_0_bn", "gamma"); the head ("classifier", "kernel") is
    ("predictions", "kernel").

  Raises:
    ValueError: a path that is not a variable of this module.
  """
  *modules, leaf = path
  layer = "_".join(modules)
  if layer == HEAD_NAME:
    layer = KERAS_HEAD_NAME
  if collection == "batch_stats" and layer.endswith("_bn") and leaf in _BN_STATS:
    return layer, _BN_STATS[leaf]
  if collection == "params" and layer.endswith("_bn") and leaf in _BN_PARAMS:
    return layer, _BN_PARAMS[leaf]
  if collection == "params" and (layer.endswith("_conv") or layer == KERAS_HEAD_NAME) \
      and leaf in _CONV_OR_DENSE:
    return layer, _CONV_OR_DENSE[leaf]
  raise ValueError(f"{collection}/{'/'.join(path)} is not a variable of the Keras-layout "
                   f"ResNet (model 'resnet50_keras'); no Keras name for it.")


def _conv(features: int, k: int, strides: int, name: str, dtype) -> nn.Conv:
  p = (k - 1) // 2  # 1x1: "valid"; 3x3 stride 1: "same" = 1 on every side
  return nn.Conv(features, (k, k), strides=(strides, strides),
                 padding=((p, p), (p, p)), use_bias=True,
                 kernel_init=glorot_uniform, bias_init=nn.initializers.zeros,
                 dtype=dtype, name=name)


class KerasBottleneck(nn.Module):
  """Keras `block1`: ResNet v1 bottleneck, stride on the first 1x1 convolution.

  Output channels 4 * `filters`. Submodules `0_conv`/`0_bn` (the convolution
  shortcut, with `conv_shortcut=True`) and `1_conv`..`3_conv`, `1_bn`..`3_bn`,
  so the Keras layer name is the block's name + "_" + the submodule's.
  """
  filters: int
  strides: int = 1
  conv_shortcut: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = functools.partial(BatchNorm, use_running_average=not train,
                           dtype=self.dtype)
    out_c = 4 * self.filters
    if self.conv_shortcut:
      shortcut = _conv(out_c, 1, self.strides, "0_conv", self.dtype)(x)
      shortcut = bn(name="0_bn")(shortcut)
    else:
      shortcut = x
    y = _conv(self.filters, 1, self.strides, "1_conv", self.dtype)(x)
    y = nn.relu(bn(name="1_bn")(y))
    y = _conv(self.filters, 3, 1, "2_conv", self.dtype)(y)
    y = nn.relu(bn(name="2_bn")(y))
    y = _conv(out_c, 1, 1, "3_conv", self.dtype)(y)
    y = bn(name="3_bn")(y)
    return nn.relu(y + shortcut)


class KerasResNet(nn.Module):
  """ResNet v1 with `tf.keras.applications`' layout (see the module docstring).

  Attributes:
    stage_sizes: blocks per stage; (3, 4, 6, 3) is Keras' ResNet50 ((3, 4, 23,
      3) ResNet101, (3, 8, 36, 3) ResNet152 use the same blocks).
    num_outputs: number of logits.
    head: if False, return the globally pooled features (N, 2048) (Keras
      `include_top=False, pooling="avg"`).
    dtype: compute dtype; parameters and BN statistics stay float32. The final
      dense layer computes in float32 so the logits are float32 for any dtype;
      head=False features are in `dtype`.
  """
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  num_outputs: int = 1000
  head: bool = True
  dtype: Any = jnp.float32

  def __post_init__(self):
    if (isinstance(self.stage_sizes, (str, bytes)) or not self.stage_sizes
        or not all(isinstance(n, int) and n >= 1 for n in self.stage_sizes)):
      raise ValueError(f"KerasResNet stage_sizes must be a non-empty sequence of "
                       f"positive ints; got stage_sizes={self.stage_sizes!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.asarray(x, self.dtype)
    x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))                # conv1_pad
    x = nn.Conv(64, (7, 7), strides=(2, 2), padding="VALID", use_bias=True,
                kernel_init=glorot_uniform, bias_init=nn.initializers.zeros,
                dtype=self.dtype, name="conv1_conv")(x)
    x = BatchNorm(use_running_average=not train, dtype=self.dtype,
                  name="conv1_bn")(x)
    x = nn.relu(x)
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))                # pool1_pad
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")     # pool1_pool
    for i, n in enumerate(self.stage_sizes):
      for j in range(n):
        x = KerasBottleneck(filters=64 * 2 ** i,
                            strides=(2 if i > 0 else 1) if j == 0 else 1,
                            conv_shortcut=j == 0, dtype=self.dtype,
                            name=f"conv{i + 2}_block{j + 1}")(x, train=train)
    x = jnp.mean(x, axis=(1, 2))                                    # avg_pool
    if not self.head:
      return x
    return nn.Dense(self.num_outputs, kernel_init=glorot_uniform,
                    bias_init=nn.initializers.zeros, dtype=jnp.float32,
                    name=HEAD_NAME)(x)


KerasResNet50 = functools.partial(KerasResNet, stage_sizes=(3, 4, 6, 3))
