"""Heteroscedastic softmax output head, HET (Collier et al., CVPR 2021).

The SGN authors' HET baseline (`ErikEnglesson/SGN` `src/cifar/heteroscedastic.py`)
builds Uncertainty Baselines' `wide_resnet_heteroscedastic(version=2,
temperature=1.3, num_factors=2, num_mc_samples=10000)`, whose output layer is
edward2's `MCSoftmaxDenseFA(train_mc_samples=test_mc_samples=10000,
share_samples_across_batch=True, logits_only=True, eps=1e-5)`
(`edward2/tensorflow/layers/heteroscedastic.py`). The net is trained with
plain CE on the head's output, which is a vector of log-probabilities (so
`softmax(output) == exp(output)` up to the eps clip).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# edward2 MIN_SCALE_MONTE_CARLO: added to the softplus diagonal scale.
MIN_SCALE_MONTE_CARLO = 1e-3

# Keras' default Dense initialisation (edward2 sets no initialiser).
glorot_uniform = nn.initializers.xavier_uniform()


class HeteroscedasticHead(nn.Module):
  """Monte-Carlo heteroscedastic softmax over `num_outputs` classes.

  From features x (..., D):

      mu  = Dense(K)(x)                                  location logits
      V   = Dense(K * R)(x) reshaped (K, R)              factor loadings (R = num_factors)
      d   = softplus(Dense(K)(x)) + min_scale            diagonal scale
      u_s = mu + V eps_s + d * eps'_s,   eps_s ~ N(0, I_R), eps'_s ~ N(0, I_K)
      out = log(clip(1/S sum_s softmax(u_s / temperature), eps, 1))

  S = num_mc_samples. Returns (..., K) float32 log-probabilities (train with CE
  on them as logits). num_factors=0 drops V (edward2's `MCSoftmaxDense`:
  diagonal noise only).

  Randomness: the "het" rng stream, e.g. `apply(..., rngs={"het": key})`.
  It is required with train=True. With train=False it is used when given,
  otherwise a fixed key (0) makes evaluation deterministic (edward2 also
  samples at test time, with the same number of samples).
  share_samples_across_batch=True (as the authors ran it): one set of S noise
  draws is shared by all examples of the call.

  Cost: an (N, S, K) float32 tensor of samples; with the authors' S = 10000,
  N = 128, K = 100 that is 512 MB (plus its gradient); lower S if needed.

  Attributes:
    num_outputs: K, the number of classes.
    num_factors: R, rank of the low-rank covariance factor (2, SGN and SPEC).
    temperature: softmax temperature (1.3, SGN and SPEC).
    num_mc_samples: S (SGN authors: 10000; edward2's default is 1000, UB's 5000).
    share_samples_across_batch: one noise draw for all examples (True as UB).
    eps: lower clip of the averaged probabilities before the log (UB: 1e-5).
    min_scale: constant added to the softplus diagonal scale (edward2: 1e-3).
    dtype: compute dtype of the three Dense layers (parameters stay float32);
      the sampling and softmax run in float32.
  """
  num_outputs: int = 10
  num_factors: int = 2
  temperature: float = 1.3
  num_mc_samples: int = 10000
  share_samples_across_batch: bool = True
  eps: float = 1e-5
  min_scale: float = MIN_SCALE_MONTE_CARLO
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    k, r, s = self.num_outputs, self.num_factors, self.num_mc_samples
    if r < 0 or s < 1:
      raise ValueError(f"HeteroscedasticHead needs num_factors >= 0 and "
                       f"num_mc_samples >= 1; got {r}, {s}.")
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, kernel_init=glorot_uniform,
                                     name=name)
    x = jnp.asarray(x, self.dtype)
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    n = x.shape[0]
    loc = dense(k, "loc_layer")(x).astype(jnp.float32)
    diag = nn.softplus(dense(k, "diag_layer")(x).astype(jnp.float32)) + self.min_scale

    if train or self.has_rng("het"):
      key = self.make_rng("het")
    else:
      key = jax.random.key(0)
    k_diag, k_factor = jax.random.split(key)
    n_noise = 1 if self.share_samples_across_batch else n
    diag_eps = jax.random.normal(k_diag, (n_noise, s, k), jnp.float32)
    latents = loc[:, None, :] + diag[:, None, :] * diag_eps            # (n, S, K)
    if r > 0:
      factors = dense(k * r, "scale_layer")(x).astype(jnp.float32).reshape(n, k, r)
      factor_eps = jax.random.normal(k_factor, (n_noise, s, r), jnp.float32)
      if self.share_samples_across_batch:
        latents = latents + jnp.einsum("nkr,sr->nsk", factors, factor_eps[0])
      else:
        latents = latents + jnp.einsum("nkr,nsr->nsk", factors, factor_eps)
    probs = jnp.mean(jax.nn.softmax(latents / self.temperature, axis=-1), axis=1)
    log_probs = jnp.log(jnp.clip(probs, self.eps, 1.0))
    return log_probs.reshape(*lead, k)
