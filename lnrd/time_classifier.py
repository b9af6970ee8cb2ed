"""Time-dependent noisy-label classifiers of TDSM (Na et al., ICLR 2024).

TDSM needs a classifier p_phi(y~ | x_t, sigma) of the *noisy* label y~ given a
noisy input x_t = x + sigma * n. This module ports the authors' classifiers
(`training/networks.py`, `training/resnet_cond.py` of byeonghu-na/tdsm) to Flax
Linen with NHWC images:

* `TimeCNN`: MNIST (32x32, 1 channel; `ClassifierSong_MNIST`).
* `TimeResNet`: CIFAR-style ResNet-18 (CIFAR-10) / ResNet-34 (CIFAR-100)
  (`ClassifierSong` with `ResNet_cond`).
* `TimeMLP`: a small MLP for 2-D vector data (no counterpart in the authors'
  code; same preconditioning and time embedding).

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

Noisy-label pieces (pure functions):

* `forward_corrected_nll`: -log((softmax(logits) @ T)[y~] + tiny), the loss
  of the authors' `EDMClassifierLoss` / `EDMClassifierWithVMLoss`.
* VolMinNet-style learned transition (`EDMPrecond_classifier_with_transition_
  matrix` + `EDMClassifierWithVMLoss`): `init_volmin_theta`,
  `volmin_transition`, `volmin_regularizer`, and the authors' optimiser of it
  (`training/classifier_loop.py`): `volmin_optimizer` with the piecewise-constant
  `volmin_learning_rate` and theta frozen from `transition_freeze_step` on.

`torch_state_dict_to_params` converts the authors' classifier state dicts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lnrd import edm
from lnrd import images
from sgn_jax.training.train_state import TrainState
from sgn_jax.training.train_state import init_replicated

# Weight of the VolMinNet regulariser in the authors' `EDMClassifierWithVMLoss`
# (added, as a scalar, to every per-example loss).
VOLMIN_WEIGHT = 1e-4

# Constant inside the log of the authors' `EDMClassifierWithVMLoss`.
DEFAULT_TINY = 1e-12


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


# -----------------------------------------------------------------------------
# Noisy-label losses and the VolMinNet transition matrix.


def forward_corrected_nll(logits: jax.Array, noisy_labels: jax.Array,
                          transition: jax.Array,
                          tiny: float = DEFAULT_TINY) -> jax.Array:
  """Forward-corrected negative log-likelihood of noisy labels, per example.

      loss_b = -log( sum_y softmax(logits_b)[y] * T[y, y~_b] + tiny )

  with T[y, y~] = p(y~ | y) (rows = clean class). Computed in log space,
  -logaddexp(logsumexp_y(log_softmax_y + log T[y, y~]), log tiny), so large
  logit gaps do not underflow. Entries T == 0 contribute nothing (and get zero
  gradient). With T = I and tiny -> 0 this is the softmax cross-entropy.

  Args:
    logits: (B, K) clean-class logits.
    noisy_labels: (B,) integer noisy labels y~.
    transition: (K, K) row-stochastic matrix T.
    tiny: constant inside the log (authors: 1e-12); 0 disables it.

  Returns:
    (B,) per-example losses.
  """
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  t_cols = jnp.asarray(transition, jnp.float32)[:, noisy_labels].T  # (B, K)
  pos = t_cols > 0
  log_t = jnp.where(pos, jnp.log(jnp.where(pos, t_cols, 1.0)), -jnp.inf)
  z = logp + log_t
  zmax = jnp.max(z, axis=-1, keepdims=True)
  zmax = jax.lax.stop_gradient(jnp.where(jnp.isfinite(zmax), zmax, 0.0))
  log_q = jnp.log(jnp.sum(jnp.exp(z - zmax), axis=-1)) + zmax[:, 0]
  if tiny > 0:
    log_q = jnp.logaddexp(log_q, math.log(tiny))
  return -log_q


def init_volmin_theta(num_classes: int, init: float = -2.0) -> jax.Array:
  """Initial transition logits theta_0 = init * ones((K, K)) (authors: -2).

  The authors keep theta as the parameter `transition_matrix` of their
  `EDMPrecond_classifier_with_transition_matrix` wrapper (outside the
  classifier network) and train it with the same Adam optimiser. Its diagonal
  is unused (masked in `volmin_transition`).
  """
  return jnp.full((num_classes, num_classes), init, jnp.float32)


def volmin_transition(theta: jax.Array) -> jax.Array:
  """VolMinNet transition matrix from logits theta (authors' formula).

      A = I + (1 - I) * sigmoid(theta)           # diagonal fixed to 1
      T[i, :] = A[i, :] / max(sum_j |A[i, j]|, 1e-12)

  (`torch.nn.functional.normalize(A, p=1, dim=1)`), so rows sum to 1. At
  theta = c everywhere: T_ii = 1 / (1 + (K - 1) s), T_ij = s / (1 + (K - 1) s),
  s = sigmoid(c) (c = -2, K = 10: 0.4824 and 0.0575).

  Args:
    theta: (K, K) unconstrained logits.

  Returns:
    (K, K) row-stochastic T with T[y, y~] = p(y~ | y).
  """
  theta = jnp.asarray(theta, jnp.float32)
  eye = jnp.eye(theta.shape[-1], dtype=jnp.float32)
  a = eye + (1.0 - eye) * jax.nn.sigmoid(theta)
  norm = jnp.maximum(jnp.sum(jnp.abs(a), axis=-1, keepdims=True), 1e-12)
  return a / norm


def volmin_regularizer(transition: jax.Array) -> jax.Array:
  """Volume regulariser logdet(T) (`torch.logdet`: NaN if det(T) < 0).

  The authors' `EDMClassifierWithVMLoss` adds `VOLMIN_WEIGHT * logdet(T)`
  (1e-4) to every per-example forward-corrected NLL, i.e. the batch-mean
  objective is mean_b NLL_b + 1e-4 * logdet(T).

  Args:
    transition: (K, K) matrix.

  Returns:
    Scalar log-determinant.
  """
  sign, logabs = jnp.linalg.slogdet(jnp.asarray(transition, jnp.float32))
  return jnp.where(sign > 0, logabs, jnp.where(sign == 0, -jnp.inf, jnp.nan))


# -----------------------------------------------------------------------------
# VolMinNet's optimiser: the authors' learning-rate steps and the frozen transition.


def _first_step_reaching(kimg: float, batch_size: int) -> int:
  """The first step whose images seen before it (step * batch_size) reach kimg * 1000."""
  return -(-int(round(kimg * 1000)) // batch_size)


def volmin_learning_rate(learning_rate: float, *, boundaries_kimg: Sequence[float],
                         factors: Sequence[float], batch_size: int) -> Callable:
  """The authors' piecewise-constant VolMinNet learning rate, as an optax schedule.

  At a step that has seen nimg = step * batch_size images before it, the rate is
  learning_rate * factors[i], i = the number of boundaries with nimg >= 1000 *
  boundaries_kimg[i] (no warm-up). The authors' loop (tdsm@6a57a54
  training/classifier_loop.py:117-126) uses boundaries (1500, 3000, 7500) kimg and
  factors (1, 0.1, 0.01, 1): the rate returns to its full value after 7.5 Mimg.

  Args:
    learning_rate: the base rate.
    boundaries_kimg: strictly increasing, positive, in thousands of images.
    factors: len(boundaries_kimg) + 1 non-negative multipliers.
    batch_size: images per step.

  Returns:
    `schedule(count) -> rate` (count: the optimiser's step count, from 0).

  Raises:
    ValueError: boundaries not positive and increasing, factors of the wrong
      length or negative, batch_size < 1.
  """
  boundaries = tuple(float(b) for b in boundaries_kimg)
  factors = tuple(float(f) for f in factors)
  if not boundaries or any(b <= 0 for b in boundaries) or any(
      b >= c for b, c in zip(boundaries, boundaries[1:])):
    raise ValueError(f"boundaries_kimg={boundaries} must be positive and strictly increasing")
  if len(factors) != len(boundaries) + 1 or any(f < 0 for f in factors):
    raise ValueError(f"factors={factors} must be {len(boundaries) + 1} non-negative numbers "
                     "(one more than boundaries_kimg)")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1")
  steps = jnp.asarray([_first_step_reaching(b, batch_size) for b in boundaries], jnp.int32)
  rates = jnp.asarray([learning_rate * f for f in factors], jnp.float32)

  def schedule(count):
    return rates[jnp.sum(jnp.asarray(count, jnp.int32) >= steps)]
  return schedule


def transition_freeze_step(freeze_kimg: float, batch_size: int) -> int | None:
  """The first step at which VolMinNet's theta is frozen: the first with more than
  freeze_kimg * 1000 images seen before it (the authors set `requires_grad=False` once
  7.5M < cur_nimg, training/classifier_loop.py:102-104); None when freeze_kimg <= 0."""
  if freeze_kimg <= 0:
    return None
  return int(round(freeze_kimg * 1000)) // batch_size + 1


def volmin_optimizer(learning_rate: float, *, batch_size: int, lr_kimg: Sequence[float],
                     lr_factors: Sequence[float], freeze_transition_kimg: float,
                     warmup_kimg: float, beta1: float, beta2: float,
                     eps: float) -> optax.GradientTransformation:
  """Adam of the VolMinNet classifier (params {"net": ..., "theta": ...}), as the authors'.

  EDM's non-finite-gradient sanitising and Adam with `volmin_learning_rate` over
  `lr_kimg` / `lr_factors` (an empty `lr_kimg`: EDM's linear warm-up over
  `warmup_kimg` instead). From `transition_freeze_step(freeze_transition_kimg)` on,
  theta's updates are zero and its Adam moments are no longer updated (torch's Adam
  skips a parameter without gradient), while the network trains on; freeze_transition_kimg
  <= 0 never freezes.
  """
  if lr_kimg:
    schedule = volmin_learning_rate(learning_rate, boundaries_kimg=lr_kimg, factors=lr_factors,
                                    batch_size=batch_size)
  else:
    schedule = edm.edm_learning_rate(learning_rate, warmup_kimg, batch_size)

  def adam():
    return optax.chain(edm.sanitize_gradients(),
                       optax.adam(schedule, b1=beta1, b2=beta2, eps=eps))

  freeze = transition_freeze_step(freeze_transition_kimg, batch_size)
  if freeze is None:
    return adam()
  theta = optax.transforms.conditionally_mask(adam(), lambda step: step < freeze)
  return optax.multi_transform(
      {"net": adam(), "theta": theta},
      lambda params: {k: jax.tree.map(lambda _, k=k: "theta" if k == "theta" else "net", v)
                      for k, v in params.items()})


# -----------------------------------------------------------------------------
# Training: state, train step and evaluation as pure functions.

TRANSITIONS = ("known", "learned", "none")
EVAL_SIGMAS = (0.002, 0.1, 0.5, 1.0, 2.0, 5.0)


def init_state(model: nn.Module, tx, input_shape, num_classes: int, key, *,
               learned_transition: bool = False, mesh=None):
  """The classifier's train state: params {"net": ..., ["theta": VolMinNet logits]},
  model state (BatchNorm statistics), optimizer state, base key; no EMA (the
  authors keep none). Born replicated on `mesh` when given."""
  input_shape = tuple(input_shape)

  def init(key):
    params_key, rng = jax.random.split(key)
    x = jnp.zeros((1,) + input_shape, jnp.float32)
    variables = model.init({"params": params_key}, x, jnp.ones((1,)), train=False)
    params = {"net": variables["params"]}
    if learned_transition:
      params["theta"] = init_volmin_theta(num_classes)
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=tx.init(params), ema_params={}, ema_model_state={}, rng=rng)
  return init_replicated(init, key, mesh)


def transition_of(params, known_transition) -> jax.Array:
  """T of the classifier: VolMinNet's from params["theta"] when learned, else the
  known one (the identity for `transition='none'`)."""
  if "theta" in params:
    return volmin_transition(params["theta"])
  return jnp.asarray(known_transition, jnp.float32)


def _apply(model, params, model_state, x_t, sigma, train, augment_labels=None):
  variables = {"params": params["net"], **model_state}
  if train and model_state:
    return model.apply(variables, x_t, sigma, train=True, augment_labels=augment_labels,
                       mutable=list(model_state))
  return model.apply(variables, x_t, sigma, train=train,
                     augment_labels=augment_labels), model_state


def make_train_step(model: nn.Module, tx, *, precond, transition,
                    volmin_weight: float = VOLMIN_WEIGHT, augment: Callable | None = None,
                    preprocess: Callable | None = None) -> Callable:
  """`step(state, batch, key) -> (state, metrics)` of the time-dependent classifier.

  x_t = x + sigma n with sigma from `precond`'s training distribution (as the
  diffusion model), loss `forward_corrected_nll` with T = `transition` (a (C, C)
  array: the known T, or the identity for the plain noisy-label classifier h~), or
  VolMinNet's learned T (+ volmin_weight * logdet T) when the state holds
  params["theta"] (`init_state(learned_transition=True)`). `augment`: EDM's pipe
  (the authors train the classifier on augmented images with their augment
  labels); `preprocess`: images -> model range (default `lnrd.images.to_model_range`).
  """
  preprocess = preprocess or images.to_model_range
  known = jnp.asarray(transition, jnp.float32)

  def step(state, batch, key):
    sigma_key, noise_key, augment_key = jax.random.split(key, 3)
    clean, labels = preprocess(batch["image"]), batch["label"]
    augment_labels = None
    if augment is not None:
      clean, augment_labels = augment(augment_key, clean)
    sigma = precond.sample_sigma(sigma_key, (clean.shape[0],))
    x_t = edm.add_noise(noise_key, clean, sigma)

    def loss_fn(params):
      logits, model_state = _apply(model, params, state.model_state, x_t, sigma, train=True,
                                   augment_labels=augment_labels)
      t = transition_of(params, known)
      nll = forward_corrected_nll(logits, labels, t).mean()
      loss = nll + volmin_weight * volmin_regularizer(t) if "theta" in params else nll
      return loss, (nll, logits, model_state)

    (loss, (nll, logits, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "nll": nll, "grad_norm": optax.global_norm(grads),
               "noisy_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return state.replace(step=state.step + 1, params=params, model_state=model_state,
                         opt_state=opt_state), metrics
  return step


def make_eval_sums_at(model: nn.Module, sigma_value: float,
                      preprocess: Callable | None = None) -> Callable:
  """`eval_sums(params, model_state, images, labels, mask)`: correct argmax
  predictions and count at a fixed sigma (noise drawn from a key of sigma, so
  evaluations are comparable over time)."""
  preprocess = preprocess or images.to_model_range

  def eval_sums(params, model_state, batch_images, labels, mask):
    clean = preprocess(batch_images)
    sigma = jnp.full((clean.shape[0],), sigma_value, jnp.float32)
    key = jax.random.fold_in(jax.random.PRNGKey(0), int(sigma_value * 1e4))
    x_t = edm.add_noise(key, clean, sigma)
    logits, _ = _apply(model, params, model_state, x_t, sigma, train=False)
    w = mask.astype(jnp.float32)
    return {"correct": jnp.sum((jnp.argmax(logits, -1) == labels) * w), "count": jnp.sum(w)}
  return eval_sums


# -----------------------------------------------------------------------------
# Conversion of the authors' PyTorch state dicts.


def _to_numpy(v: Any) -> np.ndarray:
  if hasattr(v, "detach"):  # torch.Tensor, without importing torch
    v = v.detach().cpu().numpy()
  return np.asarray(v)


def _torch_module_path(name: str, flax_path: tuple[str, ...]) -> str:
  """Torch module path (without 'model.') of a Flax module path."""
  if flax_path[0] == "embed":
    return flax_path[1]
  if name == "cnn":
    mod = flax_path[0]
    return f"classifier.{mod}.0" if mod.startswith("conv") else \
        f"classifier.{mod}"
  # ResNet.
  mod = flax_path[0]
  if mod.startswith("layer"):
    stage, block = mod[len("layer"):].split("_")
    sub = {"shortcut_conv": "shortcut.0", "shortcut_bn": "shortcut.1"}.get(
        flax_path[1], flax_path[1])
    return f"classifier.layer{stage}.{block}.{sub}"
  return f"classifier.{mod}"


def torch_state_dict_to_params(state_dict: Mapping[str, Any], name: str,
                               num_classes: int, example_x: Any,
                               **kw: Any) -> dict[str, Any]:
  """Converts the authors' classifier state dict to Flax variables.

  Accepts the state dict of their `EDMPrecond_classifier` (keys 'model.*'),
  of `EDMPrecond_classifier_with_transition_matrix` (plus 'transition_matrix',
  returned as `variables['volmin_theta']`; pop it before `apply`), or of the
  bare `ClassifierSong`/`ClassifierSong_MNIST` (no 'model.' prefix). Linear
  weights (out, in) become kernels (in, out); conv weights (O, I, kh, kw)
  become (kh, kw, I, O); BN weight/bias/running_mean/running_var become
  scale/bias and batch_stats mean/var; `num_batches_tracked` is dropped.

  Args:
    state_dict: name -> torch tensor or array.
    name: 'cnn', 'resnet18' or 'resnet34' ('mlp' has no authors' version).
    num_classes: number of classes.
    example_x: an NHWC example input (B, H, W, C) fixing the shapes.
    **kw: module attributes, as for `get_time_classifier`.

  Returns:
    {'params': ..., ['batch_stats': ...], ['volmin_theta': (K, K)]} as numpy.

  Raises:
    ValueError: 'mlp', a missing key or shape mismatch, or unused keys.
  """
  if name == "mlp":
    raise ValueError("'mlp' has no counterpart in the authors' code")
  model = get_time_classifier(name, num_classes, **kw)
  x = jnp.zeros(np.shape(example_x), jnp.float32)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), x, jnp.ones((x.shape[0],))))

  sd: dict[str, np.ndarray] = {}
  for k, v in state_dict.items():
    kk = k[len("model."):] if k.startswith("model.") else k
    if kk in sd:
      raise ValueError(f"duplicate key after stripping 'model.': {k}")
    sd[kk] = v
  unused = set(sd)

  def take(key: str) -> np.ndarray:
    if key not in sd:
      raise ValueError(f"missing key in state dict: {key}")
    if key not in unused:
      raise ValueError(f"key used twice: {key}")
    unused.remove(key)
    return _to_numpy(sd[key]).astype(np.float32)

  out: dict[str, Any] = {}
  for coll, tree in shapes.items():
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      keys = tuple(p.key for p in path)
      tpath = _torch_module_path(name, keys[:-1])
      leaf_name = keys[-1]
      if coll == "params":
        tname = {"kernel": "weight", "scale": "weight"}.get(leaf_name,
                                                            leaf_name)
        arr = take(f"{tpath}.{tname}")
        if leaf_name == "kernel":
          arr = arr.T if arr.ndim == 2 else np.transpose(arr, (2, 3, 1, 0))
      else:  # batch_stats
        arr = take(f"{tpath}.running_{leaf_name}")
        nbt = f"{tpath}.num_batches_tracked"
        if nbt in unused:
          unused.remove(nbt)
      if arr.shape != tuple(leaf.shape):
        raise ValueError(f"shape mismatch for {tpath}.{leaf_name}: "
                         f"torch {arr.shape} vs flax {tuple(leaf.shape)}")
      flat[keys] = arr
    out[coll] = _unflatten(flat)
  if "transition_matrix" in unused:
    out["volmin_theta"] = take("transition_matrix")
  if unused:
    raise ValueError(f"unused keys in state dict: {sorted(unused)}")
  return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for keys, v in flat.items():
    node = tree
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = v
  return tree
