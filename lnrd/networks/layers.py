"""Building blocks shared by the EDM U-Nets (Karras et al., NeurIPS 2022).

Flax Linen versions of the layers in EDM's `training/networks.py`, on NHWC
tensors. Parameters are float32; every layer casts them to its `dtype` (the
compute dtype) when applied. Parameter names follow Flax conventions
(`kernel`, `bias`, `scale`); `lnrd.networks.convert_torch` maps them to and
from the PyTorch names (`weight`, `bias`).

Layouts:
  * Linear kernels are (in, out) (PyTorch: (out, in)).
  * Conv kernels are HWIO (PyTorch: OIHW).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Initializer = Callable[[jax.Array, Sequence[int], Dtype], jax.Array]

_CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(frozen=True)
class WeightInit:
  """One of EDM's initialisation settings (its `init`, `init_zero`, ... dicts).

  Attributes:
    mode: 'xavier_uniform', 'xavier_normal', 'kaiming_uniform' or
      'kaiming_normal'.
    weight: factor applied to the initial weights (EDM's `init_weight`).
    bias: factor applied to the initial biases (EDM's `init_bias`).
  """
  mode: str = "kaiming_normal"
  weight: float = 1.0
  bias: float = 0.0


def edm_initializer(mode: str, fan_in: int, fan_out: int, scale: float = 1.0) -> Initializer:
  """Returns an initializer drawing EDM's `weight_init(shape, mode, fan_in, fan_out) * scale`.

  The draws are i.i.d., so the layout of `shape` does not matter; the fans are
  given explicitly, as in EDM (conv fans include the kernel area).

  Args:
    mode: 'xavier_uniform', 'xavier_normal', 'kaiming_uniform' or 'kaiming_normal'.
    fan_in: input fan.
    fan_out: output fan.
    scale: multiplier of the draw (EDM's `init_weight` or `init_bias`).

  Raises:
    ValueError: unknown `mode`.
  """
  if mode == "xavier_uniform":
    std, uniform = math.sqrt(6 / (fan_in + fan_out)), True
  elif mode == "xavier_normal":
    std, uniform = math.sqrt(2 / (fan_in + fan_out)), False
  elif mode == "kaiming_uniform":
    std, uniform = math.sqrt(3 / fan_in), True
  elif mode == "kaiming_normal":
    std, uniform = math.sqrt(1 / fan_in), False
  else:
    raise ValueError(f"Invalid init mode {mode!r}.")

  def init(key, shape, dtype=jnp.float32):
    if scale == 0:
      return jnp.zeros(shape, dtype)
    if uniform:
      draw = jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
    else:
      draw = jax.random.normal(key, shape, jnp.float32)
    return (draw * (std * scale)).astype(dtype)

  return init


def resample_filter_2d(resample_filter: Sequence[float]) -> np.ndarray:
  """EDM's separable resampling filter: outer(f, f) / sum(f)**2, shape (k, k)."""
  taps = np.asarray(resample_filter, dtype=np.float32)
  return np.outer(taps, taps) / np.square(taps.sum())


def _filter_taps(x: jax.Array, filter_2d: np.ndarray, stride: int, out_h: int,
                 out_w: int) -> jax.Array:
  """sum_{a,b} f[a, b] x[:, stride i + a, stride j + b]: a depthwise (k, k) filter as k^2
  shifted, strided slices. XLA:CPU runs depthwise (grouped) convolutions, and their
  gradients, tens to hundreds of times slower than these slices and adds."""
  out = None
  for a in range(filter_2d.shape[0]):
    for b in range(filter_2d.shape[1]):
      if filter_2d[a, b] == 0:
        continue
      tap = jax.lax.slice(x, (0, a, b, 0),
                          (x.shape[0], a + stride * (out_h - 1) + 1,
                           b + stride * (out_w - 1) + 1, x.shape[3]),
                          (1, stride, stride, 1))
      term = tap * jnp.asarray(filter_2d[a, b], x.dtype)
      out = term if out is None else out + term
  return out


def _downsample(x: jax.Array, filter_2d: np.ndarray, padding: int) -> jax.Array:
  """Depthwise stride-2 filtering (EDM's grouped `conv2d` with the filter)."""
  size = filter_2d.shape[0]
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  out_h = (x.shape[1] - size) // 2 + 1
  out_w = (x.shape[2] - size) // 2 + 1
  return _filter_taps(x, filter_2d, 2, out_h, out_w)


def _upsample(x: jax.Array, filter_2d: np.ndarray, padding: int) -> jax.Array:
  """Depthwise stride-2 transposed filtering with gain 4 (EDM's `conv_transpose2d`).

  A transposed convolution with stride 2 and padding p is a convolution of the
  2x-dilated input with the flipped kernel, padded by k - 1 - p on each side.
  """
  size = filter_2d.shape[0]
  if size == 2 and padding == 0 and np.allclose(filter_2d, 0.25):
    # The box filter [1, 1] (DDPM++, ADM): every input pixel becomes a 2x2 block.
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  flipped = np.ascontiguousarray(filter_2d[::-1, ::-1]) * 4
  edge = size - 1 - padding
  zero = jnp.zeros((), x.dtype)
  dilated = jax.lax.pad(x, zero, ((0, 0, 0), (edge, edge, 1), (edge, edge, 1), (0, 0, 0)))
  return _filter_taps(dilated, flipped, 1, dilated.shape[1] - size + 1,
                      dilated.shape[2] - size + 1)


def _conv(x: jax.Array, kernel: jax.Array, padding: int) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding=[(padding, padding)] * 2,
      dimension_numbers=_CONV_DIMENSIONS)


class Linear(nn.Module):
  """Fully-connected layer (EDM's `Linear`).

  Attributes:
    features: output features.
    use_bias: whether to add a bias.
    init: initialisation (mode and factors).
    dtype: compute dtype.
  """
  features: int
  use_bias: bool = True
  init: WeightInit = WeightInit()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    fans = dict(fan_in=in_features, fan_out=self.features)
    kernel = self.param("kernel", edm_initializer(self.init.mode, scale=self.init.weight, **fans),
                        (in_features, self.features), jnp.float32)
    x = jnp.asarray(x, self.dtype) @ kernel.astype(self.dtype)
    if self.use_bias:
      bias = self.param("bias", edm_initializer(self.init.mode, scale=self.init.bias, **fans),
                        (self.features,), jnp.float32)
      x = x + bias.astype(self.dtype)
    return x


class Conv2d(nn.Module):
  """Square convolution with optional 2x up/downsampling (EDM's `Conv2d`).

  With `kernel=0` the layer has no parameters and only resamples. Up/down
  sampling uses the separable `resample_filter` (normalised to unit sum), as a
  depthwise (transposed) stride-2 convolution; `fused_resample` applies the
  filter and the kernel in EDM's fused order (with its paddings).

  Attributes:
    out_channels: output channels (ignored when kernel == 0).
    kernel: spatial kernel size; 0 for no convolution.
    use_bias: whether to add a bias (only when kernel > 0).
    up: upsample by 2.
    down: downsample by 2.
    resample_filter: 1-D taps of the resampling filter.
    fused_resample: EDM's fused resample/convolution ordering.
    init: initialisation (mode and factors).
    dtype: compute dtype.
  """
  out_channels: int
  kernel: int
  use_bias: bool = True
  up: bool = False
  down: bool = False
  resample_filter: Sequence[float] = (1, 1)
  fused_resample: bool = False
  init: WeightInit = WeightInit()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.up and self.down:
      raise ValueError("Conv2d cannot both upsample and downsample.")
    x = jnp.asarray(x, self.dtype)
    in_channels = x.shape[-1]
    weight = bias = None
    if self.kernel:
      area = self.kernel * self.kernel
      fans = dict(fan_in=in_channels * area, fan_out=self.out_channels * area)
      weight = self.param(
          "kernel", edm_initializer(self.init.mode, scale=self.init.weight, **fans),
          (self.kernel, self.kernel, in_channels, self.out_channels), jnp.float32).astype(self.dtype)
      if self.use_bias:
        bias = self.param("bias", edm_initializer(self.init.mode, scale=self.init.bias, **fans),
                          (self.out_channels,), jnp.float32).astype(self.dtype)
    filter_2d = resample_filter_2d(self.resample_filter) if (self.up or self.down) else None
    weight_pad = self.kernel // 2 if weight is not None else 0
    filter_pad = (filter_2d.shape[0] - 1) // 2 if filter_2d is not None else 0

    if self.fused_resample and self.up and weight is not None:
      x = _upsample(x, filter_2d, max(filter_pad - weight_pad, 0))
      x = _conv(x, weight, max(weight_pad - filter_pad, 0))
    elif self.fused_resample and self.down and weight is not None:
      x = _conv(x, weight, weight_pad + filter_pad)
      x = _downsample(x, filter_2d, 0)
    else:
      if self.up:
        x = _upsample(x, filter_2d, filter_pad)
      if self.down:
        x = _downsample(x, filter_2d, filter_pad)
      if weight is not None:
        x = _conv(x, weight, weight_pad)
    if bias is not None:
      x = x + bias
    return x


class GroupNorm(nn.Module):
  """Group normalisation with EDM's group count min(num_groups, C // min_channels_per_group).

  Statistics (biased variance) are computed in float32; the output is in `dtype`.

  Attributes:
    num_groups: maximum number of groups.
    min_channels_per_group: minimum channels per group.
    eps: variance epsilon.
    dtype: compute (output) dtype.
  """
  num_groups: int = 32
  min_channels_per_group: int = 4
  eps: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    groups = min(self.num_groups, channels // self.min_channels_per_group)
    if groups < 1 or channels % groups:
      raise ValueError(f"GroupNorm: {channels} channels cannot form {groups} groups.")
    scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    # Each group's values made contiguous (batch, group, pixels x channels): XLA:CPU
    # reduces over a trailing axis several times faster than over strided ones.
    batch, per_group = x.shape[0], channels // groups
    grouped = jnp.asarray(x, jnp.float32).reshape(batch, -1, groups, per_group)
    grouped = grouped.transpose(0, 2, 1, 3).reshape(batch, groups, -1)
    mean = grouped.mean(axis=-1, keepdims=True)
    var = jnp.square(grouped - mean).mean(axis=-1, keepdims=True)
    normed = (grouped - mean) * jax.lax.rsqrt(var + self.eps)
    normed = normed.reshape(batch, groups, -1, per_group).transpose(0, 2, 1, 3).reshape(x.shape)
    return (normed * scale + bias).astype(self.dtype)


def self_attention(qkv: jax.Array, num_heads: int) -> jax.Array:
  """EDM's multi-head self-attention over the pixels of one feature map.

  Args:
    qkv: (B, H, W, 3C) output of the qkv 1x1 convolution. Its channels are laid
      out as EDM's `reshape(B * heads, C // heads, 3, H * W)` reads them:
      index (head * (C // heads) + c) * 3 + {0: q, 1: k, 2: v}.
    num_heads: number of heads.

  Returns:
    (B, H, W, C) attention output, channel index head * (C // heads) + c.
    Logits and softmax are computed in float32, as EDM's `AttentionOp`.
  """
  batch, height, width, triple = qkv.shape
  channels = triple // 3
  head_channels = channels // num_heads
  split = qkv.reshape(batch, height * width, num_heads, head_channels, 3)
  q, k, v = split[..., 0], split[..., 1], split[..., 2]
  logits = jnp.einsum("bqhc,bkhc->bhqk", q.astype(jnp.float32),
                      (k / np.sqrt(head_channels)).astype(jnp.float32))
  weights = jax.nn.softmax(logits, axis=-1).astype(qkv.dtype)
  out = jnp.einsum("bhqk,bkhc->bqhc", weights, v)
  return out.reshape(batch, height, width, channels)


class UNetBlock(nn.Module):
  """EDM's unified U-Net block: residual block, optional resampling and self-attention.

  Attributes:
    out_channels: output channels.
    up: upsample by 2 (in conv0 and the skip path).
    down: downsample by 2.
    attention: add a self-attention layer after the residual block.
    num_heads: attention heads; None for out_channels // channels_per_head.
    channels_per_head: channels per head when num_heads is None.
    dropout: dropout rate before conv1 (rng 'dropout' when train=True).
    skip_scale: factor applied after each residual sum (sqrt(0.5) in DDPM++/NCSN++).
    eps: GroupNorm epsilon.
    resample_filter: 1-D resampling taps.
    resample_proj: use a 1x1 projection on a resampled skip path even when the
      channel count does not change.
    adaptive_scale: FiLM (scale and shift) from the embedding, else a shift only.
    init: initialisation of conv0, affine and skip.
    init_zero: initialisation of conv1 and proj.
    init_attn: initialisation of qkv (None: `init`).
    dtype: compute dtype.
  """
  out_channels: int
  up: bool = False
  down: bool = False
  attention: bool = False
  num_heads: int | None = None
  channels_per_head: int = 64
  dropout: float = 0.0
  skip_scale: float = 1.0
  eps: float = 1e-5
  resample_filter: Sequence[float] = (1, 1)
  resample_proj: bool = False
  adaptive_scale: bool = True
  init: WeightInit = WeightInit()
  init_zero: WeightInit = WeightInit(weight=0.0)
  init_attn: WeightInit | None = None
  dtype: Dtype = jnp.float32

  @property
  def heads(self) -> int:
    """Number of attention heads (0: no attention), as EDM computes it."""
    if not self.attention:
      return 0
    return self.num_heads if self.num_heads is not None else self.out_channels // self.channels_per_head

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
    x = jnp.asarray(x, self.dtype)
    in_channels = x.shape[-1]
    resample = dict(up=self.up, down=self.down, resample_filter=self.resample_filter, dtype=self.dtype)
    orig = x
    x = GroupNorm(eps=self.eps, dtype=self.dtype, name="norm0")(x)
    x = Conv2d(self.out_channels, kernel=3, init=self.init, name="conv0", **resample)(nn.silu(x))

    affine_features = self.out_channels * (2 if self.adaptive_scale else 1)
    film = Linear(affine_features, init=self.init, dtype=self.dtype, name="affine")(emb)
    film = film[:, None, None, :].astype(self.dtype)
    norm1 = GroupNorm(eps=self.eps, dtype=self.dtype, name="norm1")
    if self.adaptive_scale:
      scale, shift = jnp.split(film, 2, axis=-1)
      x = nn.silu(shift + norm1(x) * (scale + 1))
    else:
      x = nn.silu(norm1(x + film))

    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = Conv2d(self.out_channels, kernel=3, init=self.init_zero, dtype=self.dtype, name="conv1")(x)
    if self.out_channels != in_channels or self.up or self.down:
      skip_kernel = 1 if (self.resample_proj or self.out_channels != in_channels) else 0
      orig = Conv2d(self.out_channels, kernel=skip_kernel, init=self.init, name="skip", **resample)(orig)
    x = (x + orig) * self.skip_scale

    if self.heads:
      qkv_init = self.init_attn if self.init_attn is not None else self.init
      h = GroupNorm(eps=self.eps, dtype=self.dtype, name="norm2")(x)
      qkv = Conv2d(self.out_channels * 3, kernel=1, init=qkv_init, dtype=self.dtype, name="qkv")(h)
      attended = self_attention(qkv, self.heads)
      x = Conv2d(self.out_channels, kernel=1, init=self.init_zero, dtype=self.dtype, name="proj")(attended) + x
      x = x * self.skip_scale
    return x


class PositionalEmbedding(nn.Module):
  """Sinusoidal timestep embedding (DDPM++, ADM): [cos(x f), sin(x f)].

  Frequencies f_i = (1 / max_positions) ** (i / (n / 2 - endpoint)), i < n / 2.
  Computed in float32.

  Attributes:
    num_channels: embedding size n.
    max_positions: base of the frequency ladder.
    endpoint: include the lowest frequency 1 / max_positions.
  """
  num_channels: int
  max_positions: int = 10000
  endpoint: bool = False

  def __call__(self, x: jax.Array) -> jax.Array:
    half = self.num_channels // 2
    freqs = jnp.arange(half, dtype=jnp.float32) / (half - (1 if self.endpoint else 0))
    freqs = (1.0 / self.max_positions) ** freqs
    x = jnp.outer(jnp.asarray(x, jnp.float32), freqs)
    return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


class FourierEmbedding(nn.Module):
  """Random Fourier timestep embedding (NCSN++): [cos(2 pi x f), sin(2 pi x f)].

  The frequencies f ~ N(0, scale^2) are a fixed (untrained) buffer, as in EDM;
  they live in the 'constants' collection (variable `freqs`), drawn from the
  'params' rng at init.

  Attributes:
    num_channels: embedding size.
    scale: standard deviation of the frequencies.
  """
  num_channels: int
  scale: float = 16.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    freqs = self.variable(
        "constants", "freqs",
        lambda: jax.random.normal(self.make_rng("params"), (self.num_channels // 2,), jnp.float32) * self.scale)
    x = jnp.outer(jnp.asarray(x, jnp.float32), 2 * np.pi * freqs.value)
    return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


def drop_labels(class_labels: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """EDM's label dropout: zero each sample's labels with probability `rate`."""
  keep = jax.random.uniform(rng, (class_labels.shape[0], 1)) >= rate
  return class_labels * keep.astype(class_labels.dtype)
