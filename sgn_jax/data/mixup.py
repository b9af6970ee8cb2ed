"""Mixup (Zhang et al., 2018) on the device, in the form the SGN authors use for WebVision.

The SGN authors' WebVision script (ErikEnglesson/SGN, src/webvision/sgn.py
with augmentation.py, from the TF Model Garden's MixupAndCutmix) mixes every
training batch (probability 1, CutMix off) with

    lam_i ~ Beta(alpha, alpha), independently PER EXAMPLE, alpha = 0.8
    x_i   <- lam_i * x_i + (1 - lam_i) * x_{B-1-i}          (the batch reversed)
    t_i   <- lam_i * LS(y_i) + (1 - lam_i) * LS(y_{B-1-i})

where LS is label smoothing (their gamma = 0.01 for WebVision; pass the
already smoothed targets here). That is the default: `per_example=True`,
`partner="reverse"`. `per_example=False` draws one lam for the whole batch
(Zhang et al.'s original form), and `partner="permutation"` mixes with a
random permutation instead of the reversed batch.

Everything is jnp and jit-compatible; on a batch sharded over the "data" axis
the partner gather is a cross-device permutation that XLA inserts. Because
mixing is affine with weights summing to one, mixing normalised or raw images
gives the same result up to the normalisation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PARTNERS = ("reverse", "permutation")


def mix(images: jax.Array, targets: jax.Array, lam: jax.Array,
        partner: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mixes every example with example `partner[i]` using weight `lam`.

  Args:
    images: (B, ...) inputs (integer inputs are mixed as float32).
    targets: (B, K) one-hot labels or probabilities.
    lam: () one weight for the batch, or (B,) one per example.
    partner: (B,) int indices into the batch.

  Returns:
    (lam * images + (1 - lam) * images[partner],
     lam * targets + (1 - lam) * targets[partner]), lam broadcast per example.
  """
  lam = jnp.asarray(lam, jnp.float32)
  if lam.ndim not in (0, 1):
    raise ValueError(f"lam must be a scalar or (B,), got shape {lam.shape}.")
  out_dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) \
      else jnp.float32
  t_dtype = targets.dtype if jnp.issubdtype(targets.dtype, jnp.floating) \
      else jnp.float32

  def blend(x, dtype):
    x = x.astype(jnp.float32)
    w = lam.reshape(lam.shape + (1,) * (x.ndim - lam.ndim))
    return (w * x + (1.0 - w) * x[partner]).astype(dtype)

  return blend(images, out_dtype), blend(targets, t_dtype)


def mixup(key: jax.Array, images: jax.Array, targets: jax.Array,
          alpha: float = 0.8, *, per_example: bool = True,
          partner: str = "reverse", return_aux: bool = False):
  """Mixup of a batch: lam ~ Beta(alpha, alpha), mixed with a partner example.

  Defaults follow the SGN authors (per-example lam, batch reversed).

  Args:
    key: PRNG key.
    images: (B, H, W, C) (or any (B, ...)) inputs.
    targets: (B, K) one-hot or (smoothed) probabilities.
    alpha: Beta parameter (0.8 for WebVision); must be > 0.
    per_example: one lam per example (authors) or one per batch.
    partner: "reverse" (example i with B-1-i, the authors') or
      "permutation" (a random permutation of the batch).
    return_aux: also return lam and the partner indices.

  Returns:
    (mixed_images, mixed_targets), or with `return_aux`
    (mixed_images, mixed_targets, lam, partner_indices).
  """
  if not alpha > 0:
    raise ValueError(f"alpha must be positive, got {alpha}.")
  if partner not in PARTNERS:
    raise ValueError(f"partner must be one of {PARTNERS}, got {partner!r}.")
  if targets.ndim != 2 or targets.shape[0] != images.shape[0]:
    raise ValueError(f"targets must be (B, K) with B = {images.shape[0]}, got "
                     f"{targets.shape}.")
  batch = images.shape[0]
  lam_key, perm_key = jax.random.split(key)
  lam = jax.random.beta(lam_key, alpha, alpha,
                        (batch,) if per_example else (), jnp.float32)
  if partner == "reverse":
    idx = jnp.arange(batch - 1, -1, -1)
  else:
    idx = jax.random.permutation(perm_key, batch)
  mixed_images, mixed_targets = mix(images, targets, lam, idx)
  if return_aux:
    return mixed_images, mixed_targets, lam, idx
  return mixed_images, mixed_targets
