"""EDM noise parameterisations: preconditioning, sigma sampling, loss weights, DSM loss.

Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative
Models") write every diffusion model as a denoiser

    D(x; sigma, y) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma), y)

around a raw network F, trained by denoising score matching

    L = E_{sigma, x, n} lambda(sigma) || D(x + sigma n; sigma, y) - x ||^2 ,

with the score recovered as grad log p_sigma(x | y) = (D(x; sigma, y) - x) / sigma^2.
The three parameterisations of the paper differ in the coefficients, in how
sigma is drawn during training and in lambda(sigma):

  EDM   c_skip = s_d^2/(sigma^2+s_d^2), c_out = sigma s_d/sqrt(sigma^2+s_d^2),
        c_in = 1/sqrt(sigma^2+s_d^2), c_noise = ln(sigma)/4;
        ln sigma ~ N(P_mean, P_std^2); lambda = (sigma^2+s_d^2)/(sigma s_d)^2.
  VP    c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2+1),
        c_noise = (M-1) t(sigma); sigma = sigma(t), t ~ U(eps_t, 1),
        sigma(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1); lambda = 1/sigma^2.
  VE    c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma/2);
        sigma = sigma_min (sigma_max/sigma_min)^u, u ~ U(0,1); lambda = 1/sigma^2.

Everything here is a pure function of arrays: usable from any JAX code, shaped
for images (B, H, W, C) or vectors (B, D) alike (sigma is (B,)).

`make_denoiser` binds a Flax network F into D (one-hot labels, augment labels,
dropout; `check_conditioning` refuses an undeclared or inconsistent network): the
denoiser the losses call, so a batch reaches the network from here, never back
through `lnrd.diffusion` (which re-exports both).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

PRECONDITIONINGS = ("edm", "vp", "ve")


def _expand(sigma: jax.Array, ndim: int) -> jax.Array:
  """sigma (B,) -> (B, 1, ..., 1) broadcastable against an array of rank `ndim`."""
  sigma = jnp.asarray(sigma, jnp.float32)
  return sigma.reshape(sigma.shape + (1,) * (ndim - sigma.ndim))


@dataclasses.dataclass(frozen=True)
class Preconditioning:
  """One of EDM's parameterisations (`kind` in PRECONDITIONINGS) and its constants.

  Attributes:
    kind: 'edm' | 'vp' | 've'.
    sigma_data: EDM's data standard deviation s_d (0.5 for images in [-1, 1]).
    p_mean, p_std: EDM's log-normal training distribution of sigma.
    beta_d, beta_min, m, epsilon_t: VP schedule (Song et al. 2021).
    ve_sigma_min, ve_sigma_max: VE training range.
  """
  kind: str = "edm"
  sigma_data: float = 0.5
  p_mean: float = -1.2
  p_std: float = 1.2
  beta_d: float = 19.9
  beta_min: float = 0.1
  m: int = 1000
  epsilon_t: float = 1e-5
  ve_sigma_min: float = 0.02
  ve_sigma_max: float = 100.0

  def __post_init__(self):
    if self.kind not in PRECONDITIONINGS:
      raise ValueError(f"preconditioning {self.kind!r} is not known; allowed: {list(PRECONDITIONINGS)}")
    if self.sigma_data <= 0 or self.p_std <= 0:
      raise ValueError(f"sigma_data={self.sigma_data} and p_std={self.p_std} must be > 0")

  # VP schedule sigma(t) and its inverse.
  def vp_sigma(self, t):
    """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
    t = jnp.asarray(t, jnp.float32)
    return jnp.sqrt(jnp.expm1(0.5 * self.beta_d * t**2 + self.beta_min * t))

  def vp_sigma_inv(self, sigma):
    """t(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d."""
    sigma = jnp.asarray(sigma, jnp.float32)
    return (jnp.sqrt(self.beta_min**2 + 2 * self.beta_d * jnp.log1p(sigma**2))
            - self.beta_min) / self.beta_d

  def coefficients(self, sigma):
    """(c_skip, c_out, c_in, c_noise) for noise levels `sigma` (any shape)."""
    sigma = jnp.asarray(sigma, jnp.float32)
    if self.kind == "edm":
      sd2 = self.sigma_data**2
      c_skip = sd2 / (sigma**2 + sd2)
      c_out = sigma * self.sigma_data / jnp.sqrt(sigma**2 + sd2)
      c_in = 1.0 / jnp.sqrt(sigma**2 + sd2)
      c_noise = jnp.log(sigma) / 4.0
    elif self.kind == "vp":
      c_skip = jnp.ones_like(sigma)
      c_out = -sigma
      c_in = 1.0 / jnp.sqrt(sigma**2 + 1.0)
      c_noise = (self.m - 1) * self.vp_sigma_inv(sigma)
    else:  # ve
      c_skip = jnp.ones_like(sigma)
      c_out = sigma
      c_in = jnp.ones_like(sigma)
      c_noise = jnp.log(0.5 * sigma)
    return c_skip, c_out, c_in, c_noise

  def sample_sigma(self, key: jax.Array, shape) -> jax.Array:
    """Training noise levels: log-normal (EDM), VP's sigma(U(eps_t, 1)), VE's log-uniform."""
    if self.kind == "edm":
      return jnp.exp(self.p_mean + self.p_std * jax.random.normal(key, shape))
    u = jax.random.uniform(key, shape)
    if self.kind == "vp":
      return self.vp_sigma(1.0 + u * (self.epsilon_t - 1.0))
    return self.ve_sigma_min * (self.ve_sigma_max / self.ve_sigma_min) ** u

  def loss_weight(self, sigma):
    """lambda(sigma): (sigma^2 + s_d^2)/(sigma s_d)^2 for EDM, 1/sigma^2 for VP and VE."""
    sigma = jnp.asarray(sigma, jnp.float32)
    if self.kind == "edm":
      return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
    return 1.0 / sigma**2

  @property
  def sampling_range(self) -> tuple[float, float]:
    """(sigma_min, sigma_max) the sampler should use with this parameterisation."""
    if self.kind == "vp":
      return float(self.vp_sigma(self.epsilon_t)), float(self.vp_sigma(1.0))
    if self.kind == "ve":
      return self.ve_sigma_min, self.ve_sigma_max
    return 0.002, 80.0


def get_preconditioning(kind: str = "edm", **kwargs) -> Preconditioning:
  """A `Preconditioning`; unknown keyword arguments raise a ValueError naming them."""
  fields = {f.name for f in dataclasses.fields(Preconditioning)} - {"kind"}
  unknown = set(kwargs) - fields
  if unknown:
    raise ValueError(f"unknown preconditioning arguments {sorted(unknown)}; allowed: {sorted(fields)}")
  return Preconditioning(kind=kind, **kwargs)


def from_fields(fields: Mapping[str, Any]) -> Preconditioning:
  """`get_preconditioning` from a mapping {kind, sigma_data, p_mean, ...} (e.g. a run
  record's "precond")."""
  fields = dict(fields)
  return get_preconditioning(fields.pop("kind", "edm"), **fields)


def precondition(raw_net: Callable, x: jax.Array, sigma: jax.Array,
                 precond: Preconditioning, *args, **kwargs) -> jax.Array:
  """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, *args, **kwargs).

  `raw_net(x_in, c_noise, *args, **kwargs)` is the network F (e.g. a SongUNet's
  apply with its variables bound); x is (B, ...), sigma (B,). Output float32.
  """
  c_skip, c_out, c_in, c_noise = precond.coefficients(sigma)
  x = jnp.asarray(x, jnp.float32)
  expand = lambda c: _expand(c, x.ndim)
  f_x = raw_net(expand(c_in) * x, c_noise.reshape(-1), *args, **kwargs)
  return expand(c_skip) * x + expand(c_out) * f_x.astype(jnp.float32)


# ---- the preconditioned network D: what the loss calls ---------------------------

def check_conditioning(model: Any, num_classes: int,
                       conditional: bool | None = None) -> bool:
  """Whether `model` is fed one-hot class labels (B, num_classes), checked at build time.

  Args:
    model: the raw network F. Its `label_dim` attribute, when it has one, declares
      the conditioning (num_classes: conditional; 0: unconditional).
    num_classes: C of the labels.
    conditional: declares it for a module without `label_dim` (or confirms it);
      None: the module's `label_dim` decides.

  Returns:
    True for a conditional network, False for an unconditional one.

  Raises:
    ValueError: the module declares no `label_dim` and `conditional` is None while
      num_classes > 0 (nothing says whether labels are fed); `label_dim` differs
      from num_classes; `conditional` contradicts `label_dim`.
  """
  name = type(model).__name__
  label_dim = getattr(model, "label_dim", None)
  if label_dim is None:
    if conditional is None:
      if num_classes > 0:
        raise ValueError(
            f"{name} declares no `label_dim`, so it is not known whether it takes class "
            f"labels: pass conditional=True (one-hot labels of num_classes={num_classes} "
            f"classes) or conditional=False (unconditional), or give the module a "
            f"`label_dim` attribute ({num_classes}, or 0)")
      return False
    if conditional and num_classes < 1:
      raise ValueError(f"conditional=True needs num_classes >= 1, got {num_classes}")
    return bool(conditional)
  label_dim = int(label_dim)
  if conditional is None:
    conditional = label_dim > 0
  if conditional and label_dim != num_classes:
    raise ValueError(f"{name}.label_dim={label_dim} but num_classes={num_classes}: build the "
                     f"network with label_dim={num_classes} (or 0 for an unconditional one)")
  if not conditional and label_dim != 0:
    raise ValueError(f"conditional=False but {name}.label_dim={label_dim} declares a "
                     f"conditional network: build it with label_dim=0")
  return bool(conditional)


def make_denoiser(model: Any, precond: Preconditioning, num_classes: int, *,
                  conditional: bool | None = None) -> Callable:
  """`denoise_fn(variables, x, sigma, labels, *, train=False, key=None,
  augment_labels=None, rows=None)`: the preconditioned network D(x; sigma, y).

  int labels (or None for an unconditional net); `key` is the dropout key when
  training; `rows` selects the augment labels of a sub-batch of the batch.
  `variables` = {"params": ..., plus untrained collections (`state.model_state`)}.
  `conditional`: see `check_conditioning` (ValueError when undeclared or
  inconsistent with num_classes).
  """
  conditional = check_conditioning(model, num_classes, conditional)

  def denoise_fn(variables, x, sigma, labels, *, train: bool = False, key=None,
                 augment_labels=None, rows=None):
    onehot = jax.nn.one_hot(labels, num_classes) if conditional and labels is not None \
        else None
    augment = augment_labels if rows is None or augment_labels is None \
        else augment_labels[rows]

    def raw(x_in, c_noise):
      rngs = {"dropout": key} if train else {}
      return model.apply(variables, x_in, c_noise, onehot, augment, train=train, rngs=rngs)
    return precondition(raw, x, sigma, precond)
  return denoise_fn


def add_noise(key: jax.Array, x: jax.Array, sigma: jax.Array) -> jax.Array:
  """x_t = x + sigma n, n ~ N(0, I), sigma (B,)."""
  return x + _expand(sigma, x.ndim) * jax.random.normal(key, x.shape, x.dtype)


def noisy_input(sigma_key: jax.Array, noise_key: jax.Array, clean: jax.Array,
                precond: Preconditioning, sigma: jax.Array | None = None,
                noise: jax.Array | None = None):
  """(sigma, n, x_t = x + sigma n) with sigma and n drawn from their keys unless given.

  Args:
    sigma_key, noise_key: keys of the draws (unused for what is given).
    clean: data x (B, ...).
    precond: sigma's training distribution.
    sigma: (B,) noise levels, or None.
    noise: n with the shape of `clean`, or None (N(0, I) in x's dtype).

  Raises:
    ValueError: a given sigma or noise of the wrong shape.
  """
  batch = clean.shape[0]
  if sigma is None:
    sigma = precond.sample_sigma(sigma_key, (batch,))
  else:
    sigma = jnp.asarray(sigma)
    if sigma.shape != (batch,):
      raise ValueError(f"sigma must have shape ({batch},) (one per example), got {sigma.shape}")
  if noise is None:
    noise = jax.random.normal(noise_key, clean.shape, clean.dtype)
  else:
    noise = jnp.asarray(noise)
    if noise.shape != tuple(clean.shape):
      raise ValueError(f"noise must have the shape of the data {tuple(clean.shape)}, got "
                       f"{noise.shape}")
  return sigma, noise, clean + _expand(sigma, clean.ndim) * noise


def denoising_error(denoised: jax.Array, clean: jax.Array, sigma: jax.Array,
                    precond: Preconditioning) -> jax.Array:
  """Per-example DSM loss lambda(sigma) * sum over dims of (D - x)^2, shape (B,).

  EDM sums the squared error over pixels and averages over the batch; the mean
  of this vector is that loss.
  """
  sq = jnp.square(denoised.astype(jnp.float32) - clean.astype(jnp.float32))
  return precond.loss_weight(sigma) * sq.reshape(sq.shape[0], -1).sum(axis=1)


def dsm_loss(denoise: Callable, key: jax.Array, clean: jax.Array, labels,
             precond: Preconditioning, *, sigma: jax.Array | None = None,
             noise: jax.Array | None = None, return_aux: bool = False):
  """Plain denoising score matching on (possibly noisy) labels.

  Args:
    denoise: `denoise(x_t, sigma, labels) -> D`, the preconditioned denoiser.
    key: PRNG key for sigma and the noise (split as if neither were given).
    clean: data x (B, ...).
    labels: conditioning labels passed through to `denoise` (or None).
    precond: the parameterisation (sigma distribution and lambda).
    sigma: noise levels (B,); None: drawn from `precond`.
    noise: n with the shape of `clean` (x_t = x + sigma n); None: drawn N(0, I).
    return_aux: return `(mean loss, aux)` instead (for
      `jax.value_and_grad(..., has_aux=True)`).

  Returns:
    (per-example loss (B,), sigma (B,)); with `return_aux`,
    (mean loss, dict(per_example=(B,), sigma=(B,), noise=n)).
  """
  sigma_key, noise_key = jax.random.split(key)
  sigma, noise, x_t = noisy_input(sigma_key, noise_key, clean, precond, sigma, noise)
  loss = denoising_error(denoise(x_t, sigma, labels), clean, sigma, precond)
  if return_aux:
    return loss.mean(), dict(per_example=loss, sigma=sigma, noise=noise)
  return loss, sigma


def score_from_denoiser(denoised: jax.Array, x: jax.Array, sigma: jax.Array) -> jax.Array:
  """grad_x log p_sigma(x) = (D(x; sigma) - x) / sigma^2."""
  return (denoised - x) / jnp.square(_expand(sigma, x.ndim))


def denoiser_from_score(score: jax.Array, x: jax.Array, sigma: jax.Array) -> jax.Array:
  """D(x; sigma) = x + sigma^2 grad_x log p_sigma(x) (Tweedie)."""
  return x + jnp.square(_expand(sigma, x.ndim)) * score


# ---- EDM's optimiser ------------------------------------------------------------

def edm_learning_rate(lr: float, warmup_kimg: float, batch_size: int) -> Callable:
  """lr * min(nimg / (warmup_kimg * 1000), 1) with nimg = step * batch_size (EDM's ramp-up)."""
  def schedule(count):
    if warmup_kimg <= 0:
      return jnp.asarray(lr, jnp.float32)
    nimg = jnp.asarray(count, jnp.float32) * batch_size
    return lr * jnp.minimum(nimg / (warmup_kimg * 1000.0), 1.0)
  return schedule


def sanitize_gradients() -> optax.GradientTransformation:
  """EDM's `nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5)` before the update."""
  return optax.stateless(lambda updates, params=None: jax.tree.map(
      lambda g: jnp.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5), updates))


def adam_with_warmup(learning_rate: float = 1e-3, *, warmup_kimg: float = 10_000.0,
                     batch_size: int = 512, beta1: float = 0.9, beta2: float = 0.999,
                     eps: float = 1e-8) -> optax.GradientTransformation:
  """EDM's optimiser: Adam with a linear learning-rate warm-up over `warmup_kimg`
  thousand images (`batch_size` per step), after non-finite gradients are replaced."""
  return optax.chain(
      sanitize_gradients(),
      optax.adam(edm_learning_rate(learning_rate, warmup_kimg, batch_size), b1=beta1, b2=beta2,
                 eps=eps))


def log_normal_sigma_quantiles(precond: Preconditioning, probs) -> list[float]:
  """sigma at the given quantiles of EDM's training distribution (for plots/logs)."""
  from statistics import NormalDist  # pylint: disable=g-import-not-at-top
  return [math.exp(precond.p_mean + precond.p_std * NormalDist().inv_cdf(p)) for p in probs]
