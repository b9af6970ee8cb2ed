"""Classification losses as plain jnp functions (usable from any JAX code).

The classification losses take logits (..., K) and integer labels (...); the
SGN losses (below) work in the (K−1)-dimensional ilr space (`sgn_jax.ilr`). All
return per-example values; reduce them yourself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sgn_jax import ilr


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Cross-entropy  -log softmax(logits)[label]  per example.

  logits: (..., K) float; labels: (...) int in [0, K).
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Cross-entropy  -sum_k q_k log softmax(logits)_k  against a distribution q (e.g. mixup)."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(targets.astype(jnp.float32) * log_probs, axis=-1)


L2_PARAMS = ("all", "no_batchnorm")


def l2_penalty(params, mask=None) -> jax.Array:
  """sum_w w^2 over the leaves of `params` (`mask`: a pytree of bools of the same
  structure, e.g. `l2_mask`, True for the leaves to include; None: every leaf, i.e.
  weights, biases and BN scales alike)."""
  leaves = jax.tree.leaves(params)
  if mask is not None:
    included = jax.tree.leaves(mask)
    if len(included) != len(leaves):
      raise ValueError(f"l2_penalty: the mask has {len(included)} leaves, params {len(leaves)}")
    leaves = [p for p, keep in zip(leaves, included) if keep]
  return sum(jnp.sum(jnp.square(p.astype(jnp.float32))) for p in leaves) if leaves \
      else jnp.zeros((), jnp.float32)


def l2_mask(params, model_state=None, which: str = "all"):
  """Which leaves of `params` an L2 penalty covers: a pytree of Python bools.

  which="all": every leaf. which="no_batchnorm": every leaf but the scale (gamma) and
  bias (beta) of BatchNorm layers, i.e. convolution and dense kernels and biases only,
  as the SGN authors' Clothing1M / WebVision code (`'kernel' in var.name or 'bias' in
  var.name` over Keras variables). A BatchNorm layer is recognised as the module that
  keeps running statistics: its path in `params` is also a module path of
  `model_state["batch_stats"]` (Flax's `nn.BatchNorm`, whatever it is named), so no
  naming convention is assumed. Without batch statistics nothing is excluded.
  """
  if which not in L2_PARAMS:
    raise ValueError(f"l2_params={which!r} is not known; allowed: {list(L2_PARAMS)}")
  if which == "all":
    return jax.tree.map(lambda _: True, params)
  stats = (model_state or {}).get("batch_stats", {})
  bn_modules = {tuple(_key_name(k) for k in path[:-1])
                for path, _ in jax.tree_util.tree_leaves_with_path(stats)}

  def keep(path, _):
    names = tuple(_key_name(k) for k in path)
    return not (names[:-1] in bn_modules and names[-1] in ("scale", "bias"))
  return jax.tree_util.tree_map_with_path(keep, params)


def _key_name(key) -> str:
  return str(getattr(key, "key", getattr(key, "name", key)))


# --------------------------------------------------------------------------- #
# SGN: Gaussian likelihoods in ilr space (Englesson & Azizpour, ICLR 2024).
# --------------------------------------------------------------------------- #
# Every NLL below is per example over the last axis (the D = K − 1 ilr
# coordinates) and INCLUDES the normalising constant 0.5·D·log(2π), so the
# values are exact negative log densities (they match
# scipy.stats.multivariate_normal(mean, cov).logpdf up to sign).

_LOG_2PI = float(np.log(2.0 * np.pi))

COVARIANCES = ("rank_one", "isotropic", "diagonal")
RANK_ONE_PARAMETERIZATIONS = ("scale", "covariance")


def _as_float(x) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def gaussian_nll_identity_plus_rank_one(t: jax.Array, mean: jax.Array, r: jax.Array, *,
                                        parameterization: str = "scale") -> jax.Array:
  """−log N(t; mean, Σ) with an identity-plus-rank-one form, O(D) per example.

  t, mean, r: (..., D) (``r`` may also be (..., D, 1), the authors' layout).
  ``d = t − mean``, ``ρ = rᵀr``, ``c = rᵀd``.

  ``parameterization="scale"`` (default; the authors' released code, which uses
  ``tfd.MultivariateNormalDiagPlusLowRank(loc, scale_diag=1,
  scale_perturb_factor=r)``): the SCALE matrix is ``S = I + r rᵀ`` and the
  covariance is ``Σ = S Sᵀ = (I + r rᵀ)² = I + (2 + ρ) r rᵀ``. By the matrix
  determinant lemma ``log det S = log(1 + ρ)`` (so ``log det Σ = 2 log(1 + ρ)``)
  and by Sherman–Morrison ``S⁻¹ d = d − r·c/(1 + ρ)``:

      NLL = ½‖d − r·c/(1 + ρ)‖² + log(1 + ρ) + ½·D·log 2π.

  ``parameterization="covariance"``: the covariance itself is
  ``Σ = I + r rᵀ``, ``Σ⁻¹ = I − r rᵀ/(1 + ρ)``, ``log det Σ = log(1 + ρ)``:

      NLL = ½(‖d‖² − c²/(1 + ρ)) + ½·log(1 + ρ) + ½·D·log 2π.

  No K×K matrix is formed. Returns (...).
  """
  if parameterization not in RANK_ONE_PARAMETERIZATIONS:
    raise ValueError(f"unknown rank-one parameterization {parameterization!r}; "
                     f"expected one of {RANK_ONE_PARAMETERIZATIONS}")
  t, mean, r = _as_float(t), _as_float(mean), _as_float(r)
  d = t - mean
  if r.ndim == d.ndim + 1 and r.shape[-1] == 1:
    r = r[..., 0]
  dim = d.shape[-1]
  rho = jnp.sum(jnp.square(r), axis=-1)
  c = jnp.sum(r * d, axis=-1)
  if parameterization == "scale":
    y = d - r * (c / (1.0 + rho))[..., None]
    quad = jnp.sum(jnp.square(y), axis=-1)
    half_log_det = jnp.log1p(rho)
  else:
    quad = jnp.sum(jnp.square(d), axis=-1) - jnp.square(c) / (1.0 + rho)
    half_log_det = 0.5 * jnp.log1p(rho)
  return 0.5 * quad + half_log_det + 0.5 * dim * _LOG_2PI


def gaussian_nll_isotropic(t: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """−log N(t; mean, σ²·I) with a per-example variance (the poster's form).

  t, mean: (..., D); log_var = log σ²: (...) or (..., 1).

      NLL = ‖t − mean‖²/(2σ²) + ½·D·log σ² + ½·D·log 2π.

  Returns (...).
  """
  t, mean, log_var = _as_float(t), _as_float(mean), _as_float(log_var)
  d = t - mean
  if log_var.ndim == d.ndim and log_var.shape[-1] == 1:
    log_var = log_var[..., 0]
  dim = d.shape[-1]
  sq = jnp.sum(jnp.square(d), axis=-1)
  return 0.5 * sq * jnp.exp(-log_var) + 0.5 * dim * log_var + 0.5 * dim * _LOG_2PI


def gaussian_nll_diagonal(t: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """−log N(t; mean, diag(σ²)) with per-coordinate variances.

  t, mean, log_var = log σ²: (..., D).

      NLL = Σ_j [(t_j − mean_j)²/(2σ_j²) + ½ log σ_j²] + ½·D·log 2π.

  Returns (...).
  """
  t, mean, log_var = _as_float(t), _as_float(mean), _as_float(log_var)
  d = t - mean
  dim = d.shape[-1]
  return (0.5 * jnp.sum(jnp.square(d) * jnp.exp(-log_var) + log_var, axis=-1)
          + 0.5 * dim * _LOG_2PI)


def sgn_shift(t: jax.Array, ema_mean: jax.Array, alpha, epoch) -> jax.Array:
  """SGN label-correction shift ``Δ = (1 − α^e)·(t − stop_gradient(μ_EMA))``.

  ``e`` is the continuous epoch counted from 0 (``epoch + step/steps_per_epoch``,
  as in the authors' code), ``α ∈ (0, 1]`` (released defaults: CIFAR 0.995,
  Clothing1M 0.7, WebVision 0.999). ``1 − α^e`` is computed as
  ``−expm1(e·log α)``. At e = 0 the shift is 0; as α^e → 0 it becomes
  ``t − μ_EMA``. No gradient flows into ``ema_mean``.

  A concrete ``alpha`` outside (0, 1] raises ValueError; a traced one (jit/vmap
  over α) cannot raise, so the shift is NaN there instead, and a training loop
  stops on the NaN loss (`sgn_jax.training.loop.NonFiniteLossError`).
  """
  a = ilr.concrete_float(alpha)
  if a is not None and not 0.0 < a <= 1.0:
    raise ValueError(f"alpha must be in (0, 1], got alpha={alpha!r}")
  t, ema_mean = _as_float(t), _as_float(ema_mean)
  e = jnp.asarray(epoch, t.dtype)
  alpha = jnp.asarray(alpha, t.dtype)
  factor = -jnp.expm1(e * jnp.log(alpha))
  if a is None:  # traced: no exception possible, make a bad alpha visible as NaN
    factor = jnp.where((alpha > 0) & (alpha <= 1), factor, jnp.nan)
  return factor * (t - jax.lax.stop_gradient(ema_mean))


def sgn_loss(mean: jax.Array, scale_params, labels: jax.Array, ema_mean, *,
             num_classes: int, gamma, alpha, epoch, covariance: str = "rank_one",
             loss_reweighting: bool = True, label_correction: bool = True,
             rank_one_parameterization: str = "scale", soft_labels=None,
             target_scale=1.0) -> jax.Array:
  """Per-example Shifted Gaussian Noise (SGN) loss.

  mean = μ(x): (B..., K−1) from the main network; ``labels`` (B...) int;
  ``ema_mean`` = μ_EMA(x): (B..., K−1) from the EMA network (the authors run it
  on the same augmented batch in training mode); ``scale_params`` by
  ``covariance``:

  * ``"rank_one"`` (default, released code): ``r`` (B..., K−1); ``Σ = S Sᵀ`` with
    ``S = I + r rᵀ`` (``rank_one_parameterization="covariance"`` uses
    ``Σ = I + r rᵀ`` instead), see `gaussian_nll_identity_plus_rank_one`;
  * ``"isotropic"`` (poster): ``log σ²`` (B...) or (B..., 1); ``Σ = σ² I``;
  * ``"diagonal"``: ``log σ²`` (B..., K−1); ``Σ = diag(σ²)``.

  With ``t = ilr(LS(y))`` = `ilr_targets` (labels, K, γ) and
  ``Δ = (1 − α^e)·(t − stop_gradient(μ_EMA))`` (`sgn_shift`):

      loss = −log N(t; μ + Δ, Σ) = −log N(t − Δ; μ, Σ).

  The constant ½(K−1)·log 2π is included. Ablation switches (paper Table 4):

  * ``loss_reweighting=False`` (no LR): Σ = I fixed and ``scale_params`` is
    ignored (may be None): ``loss = ½‖t − Δ − μ‖² + ½(K−1)·log 2π``.
  * ``label_correction=False`` (no LC): Δ = 0 (``ema_mean`` may be None).
  * EMA prediction (EP) is NOT part of the loss: it selects which network (the
    EMA one or the trained one) is used for prediction.

  Soft labels (e.g. mixup): ``soft_labels`` (B..., K) probabilities replace the
  one-hot labels, ``t = ilr(LS(soft))`` (``labels`` is then ignored).
  ``target_scale`` τ (the authors' WebVision "temperature", 0.3) regresses
  ``τ·t`` instead of ``t``; predict with ``sgn_predict_probs(μ / τ)`` then.

  Predict with `sgn_predict_probs` (μ) and argmax. Returns (B...).
  """
  if covariance not in COVARIANCES:
    raise ValueError(f"unknown covariance {covariance!r}; expected one of {COVARIANCES}")
  k = ilr.check_num_classes(num_classes)
  ilr.check_gamma(gamma)
  mean = _as_float(mean)
  if mean.shape[-1] != k - 1:
    raise ValueError(f"mean must have K-1 = {k - 1} trailing entries for "
                     f"num_classes={k}, got shape {mean.shape}")
  if soft_labels is None:
    t = ilr.ilr_targets(labels, k, gamma, dtype=mean.dtype)
  else:
    smoothed = ilr.label_smoothing(_as_float(soft_labels), gamma)
    t = ilr.ilr_from_log(jnp.log(smoothed)).astype(mean.dtype)
  t = target_scale * t
  if label_correction:
    if ema_mean is None:
      raise ValueError("label_correction=True needs ema_mean (the EMA network's mean)")
    t = t - sgn_shift(t, ema_mean, alpha, epoch)
  if not loss_reweighting:
    d = t - mean
    return 0.5 * jnp.sum(jnp.square(d), axis=-1) + 0.5 * (k - 1) * _LOG_2PI
  if scale_params is None:
    raise ValueError(f"covariance={covariance!r} with loss_reweighting=True needs scale_params")
  if covariance == "rank_one":
    return gaussian_nll_identity_plus_rank_one(t, mean, scale_params,
                                               parameterization=rank_one_parameterization)
  if covariance == "isotropic":
    return gaussian_nll_isotropic(t, mean, scale_params)
  return gaussian_nll_diagonal(t, mean, scale_params)


def sgn_predict_probs(mean: jax.Array) -> jax.Array:
  """Class probabilities ``ilr⁻¹(μ) = softmax(μ H)`` (predict by argmax)."""
  return ilr.ilr_inverse(mean)
