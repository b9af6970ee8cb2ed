"""The EDM sampler (Karras et al. 2022, Algorithm 2) in JAX, plus TDSM's affine score.

A denoiser is any callable `denoise(x, sigma, class_labels) -> D(x; sigma, y)`
returning the x_0 prediction of an EDM-preconditioned network: x is (B, ...)
(images NHWC or vectors), sigma is (B,) float32, class_labels (B,) int or None.
The score is grad log p_sigma(x | y) = (D(x; sigma, y) - x) / sigma^2, so the
probability-flow ODE dx/dsigma = -sigma grad log p_sigma(x) reads

    dx/dsigma = (x - D(x; sigma, y)) / sigma .

Time steps (EDM's discretisation, i = 0 .. N-1, plus t_N = 0):

    t_i = (sigma_max^{1/rho} + i/(N-1) (sigma_min^{1/rho} - sigma_max^{1/rho}))^rho .

One step i (t_cur = t_i, t_next = t_{i+1}), starting from x_0 = t_0 * latents:

  churn   gamma_i = min(S_churn/N, sqrt(2) - 1) if S_min <= t_cur <= S_max else 0,
          t_hat = t_cur (1 + gamma_i),
          x_hat = x_cur + sqrt(t_hat^2 - t_cur^2) S_noise eps,  eps ~ N(0, I);
  Euler   d = (x_hat - D(x_hat; t_hat)) / t_hat,
          x_next = x_hat + (t_next - t_hat) d;
  Heun    (2nd-order correction, every step but the last, where t_next = 0)
          d' = (x_next - D(x_next; t_next)) / t_next,
          x_next = x_hat + (t_next - t_hat) (d + d') / 2 .

Heun with N steps costs 2N - 1 network evaluations (35 at N = 18), Euler N.

Differences from the reference implementation (NVlabs/edm `generate.py`,
`edm_sampler`):
* Everything runs in float32; EDM casts the latents, the time steps and every
  network output to float64 for the step arithmetic. The time steps are
  computed in float64 NumPy and then rounded to float32 once. The churn noise
  scale sqrt(t_hat^2 - t_cur^2) is evaluated as t_cur sqrt(gamma (2 + gamma)),
  algebraically identical but free of the cancellation float32 would suffer.
* EDM clamps sigma_min / sigma_max to the network's supported range and
  applies `net.round_sigma` (the identity for EDM/VP/VE preconditioning); here
  the caller passes the range it wants.
* The churn noise of step i is `jax.random.normal(fold_in(key, i), x.shape)`
  for the whole batch: a sample's noise depends on the key and its position
  in the batch (EDM uses one torch generator per seed). It does not depend on
  how the batch is sharded (JAX's threefry is partitionable).
* EDM's formula divides by N - 1 and gives NaN for N = 1; here N = 1 is a
  single Euler step from sigma_max to 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from sgn_jax.training import mesh as mesh_lib

Denoiser = Callable[[jax.Array, jax.Array, "jax.Array | None"], jax.Array]

SOLVERS = ("heun", "euler")
MAX_GAMMA = math.sqrt(2.0) - 1.0


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  """EDM sampler settings (the defaults: Heun, 18 steps, rho 7, deterministic).

  sigma_min / sigma_max None take the preconditioning's sampling range
  (`lnrd.edm.Preconditioning.sampling_range`, [0.002, 80] for EDM).
  """
  num_steps: int = 18
  rho: float = 7.0
  s_churn: float = 0.0
  s_min: float = 0.0
  s_max: float = float("inf")
  s_noise: float = 1.0
  solver: str = "heun"
  sigma_min: float | None = None
  sigma_max: float | None = None

  def __post_init__(self):
    _check_sampler_kwargs(**self.sampler_kwargs((0.002, 80.0)))

  def sampler_kwargs(self, sampling_range) -> dict:
    """Keyword arguments of `edm_sample` / `make_sharded_sampler`, the sigma range
    filled in from `sampling_range` (lo, hi) where not set."""
    lo, hi = sampling_range
    fields = dataclasses.asdict(self)
    fields["sigma_min"] = self.sigma_min or lo
    fields["sigma_max"] = self.sigma_max or hi
    return fields


def edm_sigma_steps(num_steps: int = 18, sigma_min: float = 0.002,
                    sigma_max: float = 80.0, rho: float = 7.0) -> np.ndarray:
  """EDM's noise levels t_0 > t_1 > ... > t_{N-1} = sigma_min, then t_N = 0.

  t_i = (sigma_max^{1/rho} + i/(N-1) (sigma_min^{1/rho} - sigma_max^{1/rho}))^rho
  for i = 0 .. N-1, computed in float64 and returned as float32. For N = 1 the
  only level is sigma_max.

  Args:
    num_steps: N >= 1, the number of sampling steps.
    sigma_min: lowest positive noise level (> 0).
    sigma_max: highest noise level (>= sigma_min).
    rho: the schedule's exponent (> 0); 7 in EDM.

  Returns:
    float32 NumPy array of length N + 1, the last entry 0.

  Raises:
    ValueError: on an invalid argument.
  """
  _check_schedule(num_steps, sigma_min, sigma_max, rho)
  i = np.arange(num_steps, dtype=np.float64)
  frac = i / (num_steps - 1) if num_steps > 1 else np.zeros_like(i)
  lo, hi = float(sigma_min) ** (1.0 / rho), float(sigma_max) ** (1.0 / rho)
  steps = (hi + frac * (lo - hi)) ** rho
  return np.concatenate([steps, [0.0]]).astype(np.float32)


def _check_schedule(num_steps, sigma_min, sigma_max, rho) -> None:
  if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}.")
  if not 0 < sigma_min <= sigma_max < math.inf:
    raise ValueError(f"need 0 < sigma_min <= sigma_max < inf, got "
                     f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}.")
  if not rho > 0:
    raise ValueError(f"rho must be > 0, got {rho!r}.")


def _check_sampler_kwargs(num_steps, sigma_min, sigma_max, rho, s_churn,
                          s_min, s_max, s_noise, solver) -> None:
  _check_schedule(num_steps, sigma_min, sigma_max, rho)
  if solver not in SOLVERS:
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
  if not s_churn >= 0:
    raise ValueError(f"s_churn must be >= 0, got {s_churn!r}.")
  if not s_min <= s_max:
    raise ValueError(f"need s_min <= s_max, got {s_min!r} > {s_max!r}.")
  if not math.isfinite(s_noise):
    raise ValueError(f"s_noise must be finite, got {s_noise!r}.")


def churn_gammas(t_steps, num_steps: int, s_churn: float, s_min: float,
                 s_max: float) -> np.ndarray:
  """Per-step churn gamma_i = min(S_churn/N, sqrt(2)-1) if S_min <= t_i <= S_max else 0.

  Args:
    t_steps: the N + 1 noise levels from `edm_sigma_steps`.
    num_steps: N.
    s_churn, s_min, s_max: EDM's S_churn, S_min, S_max.

  Returns:
    float32 array of length N.
  """
  t = np.asarray(t_steps, dtype=np.float64)[:num_steps]
  gamma = min(float(s_churn) / num_steps, MAX_GAMMA)
  return np.where((s_min <= t) & (t <= s_max), gamma, 0.0).astype(np.float32)


def edm_sample(denoise: Denoiser,
               latents: jax.Array,
               class_labels: jax.Array | None,
               key: jax.Array | None,
               *,
               num_steps: int = SamplerSettings.num_steps,
               sigma_min: float = 0.002,
               sigma_max: float = 80.0,
               rho: float = SamplerSettings.rho,
               s_churn: float = SamplerSettings.s_churn,
               s_min: float = SamplerSettings.s_min,
               s_max: float = SamplerSettings.s_max,
               s_noise: float = SamplerSettings.s_noise,
               solver: str = SamplerSettings.solver) -> jax.Array:
  """Draws samples with EDM's sampler (Algorithm 2; see the module docstring).

  Traceable: under `jax.jit` the whole loop is one program (`lax.fori_loop`
  over the steps; the sampler settings are Python constants).

  Args:
    denoise: `denoise(x, sigma, class_labels) -> D(x; sigma, y)`, sigma (B,).
    latents: (B, ...) standard normal draws; the sampler starts from
      x_0 = t_0 * latents (t_0 = sigma_max).
    class_labels: (B,) int labels passed to `denoise` unchanged, or None.
    key: PRNG key for the churn noise (step i uses `fold_in(key, i)`); may be
      None when no step churns (s_churn = 0 or no t_i in [s_min, s_max]).
    num_steps: N >= 1.
    sigma_min, sigma_max, rho: the time-step schedule (`edm_sigma_steps`).
    s_churn, s_min, s_max, s_noise: EDM's stochasticity S_churn, S_min, S_max,
      S_noise. s_churn = 0 is the deterministic sampler.
    solver: "heun" (2nd order, 2N - 1 evaluations) or "euler" (N).

  Returns:
    float32 samples with the shape of `latents`.

  Raises:
    ValueError: unknown solver, num_steps < 1, invalid schedule, or a churning
      sampler without a key.
  """
  _check_sampler_kwargs(num_steps, sigma_min, sigma_max, rho, s_churn, s_min,
                        s_max, s_noise, solver)
  t_np = edm_sigma_steps(num_steps, sigma_min, sigma_max, rho)
  gamma_np = churn_gammas(t_np, num_steps, s_churn, s_min, s_max)
  churns = bool(np.any(gamma_np > 0))
  if churns and key is None:
    raise ValueError("a PRNG key is needed when s_churn > 0.")

  latents = jnp.asarray(latents, jnp.float32)
  batch = latents.shape[0]
  t_steps = jnp.asarray(t_np)
  # sqrt(t_hat^2 - t_cur^2) / t_cur, and t_hat / t_cur, per step.
  noise_scale = jnp.asarray(np.sqrt(gamma_np * (2.0 + gamma_np)), jnp.float32)
  t_hat_steps = t_steps[:-1] * (1.0 + jnp.asarray(gamma_np))

  def bcast(t):
    return t.reshape((1,) * latents.ndim)  # scalar -> broadcastable to x

  def slope(x, t):
    """d = (x - D(x; t)) / t for a scalar noise level t > 0."""
    denoised = denoise(x, jnp.full((batch,), t, jnp.float32), class_labels)
    return (x - jnp.asarray(denoised, jnp.float32)) / bcast(t)

  def churn(i, x):
    """x_hat, t_hat of step i."""
    t_hat = t_hat_steps[i]
    if not churns:
      return x, t_hat
    eps = jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
    sigma_add = t_steps[i] * noise_scale[i] * s_noise
    return x + bcast(sigma_add) * eps, t_hat

  def euler_step(i, x):
    x_hat, t_hat = churn(i, x)
    return x_hat + bcast(t_steps[i + 1] - t_hat) * slope(x_hat, t_hat)

  def heun_step(i, x):
    x_hat, t_hat = churn(i, x)
    t_next = t_steps[i + 1]
    h = bcast(t_next - t_hat)
    d_cur = slope(x_hat, t_hat)
    x_euler = x_hat + h * d_cur
    d_prime = slope(x_euler, t_next)
    return x_hat + h * (0.5 * d_cur + 0.5 * d_prime)

  x = latents * t_steps[0]
  if solver == "euler":
    return jax.lax.fori_loop(0, num_steps, euler_step, x)
  # Heun on steps 0 .. N-2; the last step (to t_N = 0) is a plain Euler step.
  x = jax.lax.fori_loop(0, num_steps - 1, heun_step, x)
  return euler_step(num_steps - 1, x)


def affine_denoiser(denoise_a: Denoiser, denoise_b: Denoiser, lam) -> Denoiser:
  """TDSM's "affine score": D = (1 + lam) D_a - lam D_b.

  In TDSM's released `generate.py`, D_a is the main network (`--network`, the
  TDSM-trained model) and D_b the second one (`--network_2`, "noisy-label
  conditional score", i.e. a model trained with plain conditional DSM on the
  noisy labels); lam is `--affine_weight` (default 0, restricted there to
  lam >= 0). Both get the same x, sigma and labels. Since the score is
  (D - x)/sigma^2, this is the same affine combination of the two scores:
  s = (1 + lam) s_a - lam s_b. lam = 0 is D_a alone.

  Args:
    denoise_a: the denoiser weighted 1 + lam.
    denoise_b: the denoiser weighted -lam.
    lam: the weight (float or scalar array; negative values are allowed here).

  Returns:
    A denoiser with the same call signature.
  """
  def denoise(x, sigma, class_labels):
    d_a = jnp.asarray(denoise_a(x, sigma, class_labels), jnp.float32)
    d_b = jnp.asarray(denoise_b(x, sigma, class_labels), jnp.float32)
    return (1.0 + lam) * d_a - lam * d_b
  return denoise


def make_sharded_sampler(denoise_fn_with_params: Callable, mesh: jax.sharding.Mesh,
                         **sampler_kwargs) -> Callable:
  """A jitted data-parallel EDM sampler over `mesh`'s "data" axis.

  Args:
    denoise_fn_with_params: `f(params, x, sigma, class_labels) -> D`.
    mesh: a mesh with a "data" axis (`sgn_jax.training.mesh.create_mesh`).
    **sampler_kwargs: keyword arguments of `edm_sample` (num_steps, solver,
      s_churn, ...), fixed for the returned function.

  Returns:
    `sample(params, latents, class_labels, key) -> samples`: params and key are
    replicated, latents / class_labels (None allowed) / samples are split over
    the data axis (NamedSharding). The batch size must be a positive multiple
    of the number of devices on that axis (ValueError otherwise). The result
    equals `edm_sample` on one device up to float rounding.

  Raises:
    ValueError: on invalid sampler settings (checked here, once).
  """
  defaults = SamplerSettings().sampler_kwargs((0.002, 80.0))
  unknown = set(sampler_kwargs) - set(defaults)
  if unknown:
    raise TypeError(f"unknown sampler arguments {sorted(unknown)}.")
  _check_sampler_kwargs(**{**defaults, **sampler_kwargs})

  rep = mesh_lib.replicated(mesh)
  shard = mesh_lib.data_sharded(mesh)
  sync = mesh_lib.needs_step_sync(mesh)

  @jax.jit
  def run(params, latents, class_labels, key):
    latents = jax.lax.with_sharding_constraint(latents, shard)
    denoise = lambda x, sigma, y: denoise_fn_with_params(params, x, sigma, y)
    out = edm_sample(denoise, latents, class_labels, key, **sampler_kwargs)
    return jax.lax.with_sharding_constraint(out, shard)

  def sample(params, latents, class_labels, key):
    batch = int(np.shape(latents)[0])
    mesh_lib.check_divisible(batch, mesh, "batch size")
    if class_labels is not None and int(np.shape(class_labels)[0]) != batch:
      raise ValueError(f"class_labels has {np.shape(class_labels)[0]} rows, "
                       f"latents {batch}.")
    params = jax.device_put(params, rep)
    latents = jax.device_put(jnp.asarray(latents, jnp.float32), shard)
    if class_labels is not None:
      class_labels = jax.device_put(jnp.asarray(class_labels), shard)
    if key is not None:
      key = jax.device_put(key, rep)
    out = run(params, latents, class_labels, key)
    if sync:
      out.block_until_ready()
    return out

  return sample


def class_balanced_labels(num_per_class: int, num_classes: int) -> np.ndarray:
  """int32 labels [0]*n + [1]*n + ... + [C-1]*n (n = num_per_class, C = num_classes)."""
  for what, v in (("num_per_class", num_per_class), ("num_classes", num_classes)):
    if isinstance(v, bool) or int(v) != v or v < 1:
      raise ValueError(f"{what} must be an int >= 1, got {v!r}.")
  return np.repeat(np.arange(int(num_classes), dtype=np.int32), int(num_per_class))


def sample_for_labels(sample_fn: Callable, params, labels: np.ndarray, key, input_shape,
                      mesh: jax.sharding.Mesh, batch_size: int | None = None) -> np.ndarray:
  """Samples for int `labels` (N,) with `sample_fn` (`make_sharded_sampler`), in
  batches of `batch_size` rounded to the device count (the last one padded).

  Latents and churn noise come from `key` folded with each batch's offset, so
  the samples do not depend on the device count. Returns host float32 (N, ...).
  """
  n = len(labels)
  devices = mesh_lib.num_data_shards(mesh)
  batch = max(devices, ((batch_size or n) // devices) * devices)
  out = []
  for start in range(0, n, batch):
    chunk = np.asarray(labels[start:start + batch], np.int32)
    real = len(chunk)
    chunk = np.concatenate([chunk, np.zeros(batch - real, np.int32)])
    chunk_key = jax.random.fold_in(key, start)
    latents = jax.random.normal(jax.random.fold_in(chunk_key, 1), (batch,) + tuple(input_shape))
    samples = sample_fn(params, latents, jnp.asarray(chunk), jax.random.fold_in(chunk_key, 2))
    out.append(np.asarray(jax.device_get(samples))[:real])
  return np.concatenate(out)
