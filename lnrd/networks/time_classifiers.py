"""Time-dependent noisy-label classifiers of TDSM (Na et al., ICLR 2024): the networks.

TDSM needs a classifier p_phi(y~ | x_t, sigma) of the *noisy* label y~ given a
noisy input x_t = x + sigma * n. This module ports the authors' classifiers
(`training/networks.py`, `training/resnet_cond.py` of byeonghu-na/tdsm) to Flax
Linen with NHWC images:

* `TimeCNN`: MNIST (32x32, 1 channel; `ClassifierSong_MNIST`).
* `TimeResNet`: CIFAR-style ResNet-18 (CIFAR-10) / ResNet-34 (CIFAR-100)
  (`ClassifierSong` with `ResNet_cond`).
* `TimeMLP`: a small MLP for 2-D vector data (no counterpart in the authors'
  code; same preconditioning and time embedding).

`get_time_classifier(name, num_classes)` builds one by its name in
`TIME_CLASSIFIERS`. Their loss (forward correction, VolMinNet's T) is in
`lnrd.classifier_loss`, their train step in `lnrd.time_classifier`, and the
converter of the authors' PyTorch state dicts in
`lnrd.networks.convert_torch_classifier`.

Preconditioning (authors' `EDMPrecond_classifier`, identical for every model):

    c_in    = 1 / sqrt(sigma_data**2 + sigma**2),   sigma_data = 0.5
    c_noise = ln(sigma) / 4
    logits  = F(c_in * x_t, c_noise)

There is no c_skip/c_out: the network output is the logits. Time embedding
(authors' `ClassifierSong*`, 'ddpmpp' arch):

    e   = PositionalEmbedding(c_noise; 128 channels, endpoint=True,
                              max_positions=10000) -> [sin | cos] order
    e   = e + map_augment(augment_labels)        # Linear 9 -> 128, no bias
    emb = SiLU(map_layer1(SiLU(map_layer0(e))))  # 128 -> 512 -> 512
    after stage i:  h = h + dense_i(SiLU(emb))   # broadcast over H, W

(so SiLU is applied twice to the embedding before each per-stage linear layer,
exactly as the authors do). `map_augment` exists because the authors train
with EDM's augmentation pipe (default p=0.12, `augment_dim=9`); it is applied
to zeros when no augmentation labels are given, which adds nothing, but keeps
its parameters so the parameter counts match the authors' networks:
MNIST CNN 388,218; ResNet-18 (10 classes) 11,996,298; ResNet-34 (100 classes)
22,150,628 (`augment_dim=0` removes 1,152 of them).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


# -----------------------------------------------------------------------------
# Initialisers (PyTorch defaults, so freshly initialised models match theirs in
# distribution).


def _torch_kernel_init() -> Callable[..., jax.Array]:
  """PyTorch's default Linear/Conv weight init: U(-1/sqrt(fan_in), +...)."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int) -> Callable[..., jax.Array]:
  """PyTorch's default Linear/Conv bias init: U(-1/sqrt(fan_in), +...)."""
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _dense(features: int, name: str, x: jax.Array,
           use_bias: bool = True) -> jax.Array:
  """Applies a torch-initialised Dense layer (params directly under `name`)."""
  return nn.Dense(features, use_bias=use_bias,
                  kernel_init=_torch_kernel_init(),
                  bias_init=_torch_bias_init(x.shape[-1]), name=name)(x)


def _conv(features: int, kernel: int, stride: int, name: str, x: jax.Array,
          use_bias: bool) -> jax.Array:
  """`torch.nn.Conv2d(kernel, stride, padding=(kernel - 1) // 2)` in NHWC."""
  p = (kernel - 1) // 2
  fan_in = x.shape[-1] * kernel * kernel
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((p, p), (p, p)), use_bias=use_bias,
                 kernel_init=_torch_kernel_init(),
                 bias_init=_torch_bias_init(fan_in), name=name)(x)


def _batch_norm(name: str, train: bool) -> nn.BatchNorm:
  """`torch.nn.BatchNorm2d` defaults (eps 1e-5, torch momentum 0.1)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, name=name)


# -----------------------------------------------------------------------------
# Preconditioning and time embedding.


def edm_classifier_precond(
    x: jax.Array, sigma: jax.Array | float, sigma_data: float = 0.5
) -> tuple[jax.Array, jax.Array]:
  """EDM preconditioning of the authors' `EDMPrecond_classifier`.

  Args:
    x: (B, ...) noisy inputs x_t = x_0 + sigma * n.
    sigma: (B,) noise levels (a scalar is broadcast).
    sigma_data: standard deviation of the data.

  Returns:
    (c_in * x, c_noise) with c_in = 1 / sqrt(sigma_data^2 + sigma^2) broadcast
    per example and c_noise = ln(sigma) / 4 of shape (B,).
  """
  x = jnp.asarray(x, jnp.float32)
  b = x.shape[0]
  sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32).reshape(-1), (b,))
  c_in = 1.0 / jnp.sqrt(sigma_data ** 2 + sigma ** 2)
  c_noise = jnp.log(sigma) / 4.0
  return x * c_in.reshape((b,) + (1,) * (x.ndim - 1)), c_noise


def positional_embedding(c_noise: jax.Array, num_channels: int,
                         max_positions: int = 10000,
                         endpoint: bool = True) -> jax.Array:
  """EDM `PositionalEmbedding` followed by the sin/cos swap of `ClassifierSong`.

      f_k = (1 / max_positions) ** (k / (num_channels // 2 - endpoint))
      emb = [sin(c_noise * f) | cos(c_noise * f)]      # (B, num_channels)

  Args:
    c_noise: (B,) noise labels.
    num_channels: embedding width (even).
    max_positions: frequency base.
    endpoint: whether the last frequency reaches 1 / max_positions.

  Returns:
    (B, num_channels) embedding.
  """
  half = num_channels // 2
  freqs = jnp.arange(half, dtype=jnp.float32) / (half - (1 if endpoint else 0))
  freqs = (1.0 / max_positions) ** freqs
  arg = jnp.asarray(c_noise, jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=1)


class NoiseEmbedding(nn.Module):
  """The authors' noise-label mapping network (`map_*` layers).

  Attributes:
    noise_channels: positional-embedding width (authors: 128).
    emb_channels: MLP width (authors: 512).
    augment_dim: augmentation-label width (authors: 9; 0 = no `map_augment`).
  """
  noise_channels: int = 128
  emb_channels: int = 512
  augment_dim: int = 9

  @nn.compact
  def __call__(self, c_noise: jax.Array,
               augment_labels: jax.Array | None = None) -> jax.Array:
    emb = positional_embedding(c_noise, self.noise_channels)
    if self.augment_dim:
      if augment_labels is None:
        augment_labels = jnp.zeros((emb.shape[0], self.augment_dim), emb.dtype)
      emb = emb + nn.Dense(self.noise_channels, use_bias=False,
                           kernel_init=nn.initializers.xavier_uniform(),
                           name="map_augment")(
                               jnp.asarray(augment_labels, jnp.float32))
    elif augment_labels is not None:
      raise ValueError("augment_labels given but augment_dim == 0")
    xavier = dict(kernel_init=nn.initializers.xavier_uniform(),
                  bias_init=nn.initializers.zeros)
    emb = nn.silu(nn.Dense(self.emb_channels, name="map_layer0", **xavier)(emb))
    emb = nn.silu(nn.Dense(self.emb_channels, name="map_layer1", **xavier)(emb))
    return emb


def _add_time(h: jax.Array, emb: jax.Array, name: str) -> jax.Array:
  """h + Linear(SiLU(emb)), broadcast over the spatial axes of NHWC `h`."""
  t = _dense(h.shape[-1], name, nn.silu(emb))
  return h + t.reshape((t.shape[0],) + (1,) * (h.ndim - 2) + (t.shape[-1],))


# -----------------------------------------------------------------------------
# Models.


class TimeCNN(nn.Module):
  """The authors' MNIST classifier (`ClassifierSong_MNIST`), NHWC, 32x32 input.

      h = MaxPool2(ReLU(Conv5x5(16, pad 2)(c_in x))) + dense_1(SiLU(emb))
      h = MaxPool2(ReLU(Conv5x5(32, pad 2)(h)))       + dense_2(SiLU(emb))
      logits = linear(flatten_CHW(h))                 # 32 * 8 * 8 -> classes

  Attributes:
    num_classes: number of classes.
    sigma_data: EDM sigma_data.
    noise_channels, emb_channels, augment_dim: see `NoiseEmbedding`.
  """
  num_classes: int = 10
  sigma_data: float = 0.5
  noise_channels: int = 128
  emb_channels: int = 512
  augment_dim: int = 9

  @nn.compact
  def __call__(self, x: jax.Array, sigma: jax.Array, train: bool = False,
               augment_labels: jax.Array | None = None) -> jax.Array:
    """Logits (B, num_classes) for noisy NHWC inputs `x` at noise levels `sigma`.

    `train` is accepted for a uniform interface (no BatchNorm/dropout here).
    """
    del train
    h, c_noise = edm_classifier_precond(x, sigma, self.sigma_data)
    emb = NoiseEmbedding(self.noise_channels, self.emb_channels,
                         self.augment_dim, name="embed")(c_noise, augment_labels)
    for i, feats in enumerate((16, 32), start=1):
      h = nn.relu(_conv(feats, 5, 1, f"conv{i}", h, use_bias=True))
      h = nn.max_pool(h, (2, 2), strides=(2, 2))
      h = _add_time(h, emb, f"dense_{i}")
    h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)  # torch order
    self.sow("intermediates", "features", h)
    return _dense(self.num_classes, "linear", h)


class TimeBasicBlock(nn.Module):
  """CIFAR ResNet `BasicBlock` (kuangliu layout, as the authors').

      y = ReLU(BN1(Conv3x3(features, stride)(x)))
      y = BN2(Conv3x3(features)(y))
      out = ReLU(y + shortcut(x)),  shortcut = BN(Conv1x1(stride)) if the shape
                                    changes, else identity.
  """
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = _conv(self.features, 3, self.stride, "conv1", x, use_bias=False)
    y = nn.relu(_batch_norm("bn1", train)(y))
    y = _conv(self.features, 3, 1, "conv2", y, use_bias=False)
    y = _batch_norm("bn2", train)(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = _conv(self.features, 1, self.stride, "shortcut_conv", x,
                use_bias=False)
      x = _batch_norm("shortcut_bn", train)(x)
    return nn.relu(y + x)


class TimeResNet(nn.Module):
  """The authors' time-conditioned CIFAR ResNet (`ClassifierSong`+`ResNet_cond`).

      h = ReLU(BN(Conv3x3(64, stride 1)(c_in x)))           # CIFAR stem
      for i in 1..4:  h = layer_i(h) + dense_i(SiLU(emb))   # 64,128,256,512
      logits = linear(flatten(AvgPool(pool_window)(h)))     # 4 for 32x32

  Stage i > 1 starts with a stride-2 block. BatchNorm as `torch.nn.BatchNorm2d`
  (eps 1e-5, momentum 0.1 in torch terms); running statistics live in the
  'batch_stats' collection (pass `mutable=['batch_stats']` when train=True).

  Attributes:
    num_classes: number of classes.
    stage_sizes: blocks per stage: (2, 2, 2, 2) ResNet-18, (3, 4, 6, 3) -34.
    sigma_data: EDM sigma_data.
    noise_channels, emb_channels, augment_dim: see `NoiseEmbedding`.
    pool_window: final average-pool window (authors: 4; 8 for 64x64 inputs).
  """
  num_classes: int = 10
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  sigma_data: float = 0.5
  noise_channels: int = 128
  emb_channels: int = 512
  augment_dim: int = 9
  pool_window: int = 4

  @nn.compact
  def __call__(self, x: jax.Array, sigma: jax.Array, train: bool = False,
               augment_labels: jax.Array | None = None) -> jax.Array:
    """Logits (B, num_classes) for noisy NHWC inputs `x` at noise levels `sigma`."""
    h, c_noise = edm_classifier_precond(x, sigma, self.sigma_data)
    emb = NoiseEmbedding(self.noise_channels, self.emb_channels,
                         self.augment_dim, name="embed")(c_noise, augment_labels)
    h = _conv(64, 3, 1, "conv1", h, use_bias=False)
    h = nn.relu(_batch_norm("bn1", train)(h))
    for i, n_blocks in enumerate(self.stage_sizes):
      feats = 64 * 2 ** i
      for j in range(n_blocks):
        stride = 2 if (i > 0 and j == 0) else 1
        h = TimeBasicBlock(feats, stride, name=f"layer{i + 1}_{j}")(h, train)
      h = _add_time(h, emb, f"dense_{i + 1}")
    w = self.pool_window
    h = nn.avg_pool(h, (w, w), strides=(w, w))
    h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)  # torch order
    self.sow("intermediates", "features", h)
    return _dense(self.num_classes, "linear", h)


class TimeMLP(nn.Module):
  """Time-conditioned MLP for vector data (e.g. a 2-D Gaussian mixture).

      h = c_in x
      for i in 1..num_layers:  h = SiLU(layer_i(h)) + dense_i(SiLU(emb))
      logits = linear(h)

  Same preconditioning and noise embedding as the image models (no
  augmentation labels by default). Not in the authors' code.

  Attributes:
    num_classes: number of classes.
    hidden: width of the hidden layers.
    num_layers: number of hidden layers.
    sigma_data: EDM sigma_data.
    noise_channels, emb_channels, augment_dim: see `NoiseEmbedding`.
  """
  num_classes: int = 2
  hidden: int = 128
  num_layers: int = 3
  sigma_data: float = 0.5
  noise_channels: int = 64
  emb_channels: int = 128
  augment_dim: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, sigma: jax.Array, train: bool = False,
               augment_labels: jax.Array | None = None) -> jax.Array:
    """Logits (B, num_classes) for noisy vectors `x` (B, D) at levels `sigma`."""
    del train
    h, c_noise = edm_classifier_precond(x, sigma, self.sigma_data)
    emb = NoiseEmbedding(self.noise_channels, self.emb_channels,
                         self.augment_dim, name="embed")(c_noise, augment_labels)
    h = h.reshape(h.shape[0], -1)
    for i in range(1, self.num_layers + 1):
      h = nn.silu(_dense(self.hidden, f"layer{i}", h))
      h = _add_time(h, emb, f"dense_{i}")
    return _dense(self.num_classes, "linear", h)


TIME_CLASSIFIERS: dict[str, Callable[..., nn.Module]] = {
    "cnn": TimeCNN,
    "resnet18": functools.partial(TimeResNet, stage_sizes=(2, 2, 2, 2)),
    "resnet34": functools.partial(TimeResNet, stage_sizes=(3, 4, 6, 3)),
    "mlp": TimeMLP,
}


def get_time_classifier(name: str, num_classes: int, **kw: Any) -> nn.Module:
  """Builds a registered time-dependent classifier.

  Args:
    name: one of `TIME_CLASSIFIERS` ('cnn' MNIST, 'resnet18' CIFAR-10,
      'resnet34' CIFAR-100, 'mlp' vector data).
    num_classes: number of classes.
    **kw: further module attributes (e.g. sigma_data, augment_dim).

  Returns:
    The (unbound) Flax module.

  Raises:
    ValueError: unknown name.
  """
  if name not in TIME_CLASSIFIERS:
    raise ValueError(f"unknown time classifier {name!r}; allowed: "
                     f"{sorted(TIME_CLASSIFIERS)}")
  return TIME_CLASSIFIERS[name](num_classes=num_classes, **kw)
