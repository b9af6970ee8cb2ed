"""A small MLP denoiser for vector data (the 2-D Gaussian-mixture demo).

Same call signature as the UNets, so EDM preconditioning, the TDSM loss and the
sampler treat it alike: F(x_in, c_noise, class_labels, augment_labels, train).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def sinusoidal_embedding(values: jnp.ndarray, dim: int, max_positions: float = 10_000.0):
  """[cos(v f_k), sin(v f_k)] with f_k = max_positions^(-k/(dim/2)), k < dim/2; (B, dim)."""
  half = dim // 2
  freqs = max_positions ** (-jnp.arange(half, dtype=jnp.float32) / half)
  args = values.astype(jnp.float32)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class MLPDenoiser(nn.Module):
  """Residual SiLU MLP; noise level and class enter through an additive embedding.

  Attributes:
    out_dim: data dimension.
    label_dim: number of classes (one-hot conditioning), 0 = unconditional.
    hidden: widths of the hidden layers (all equal for the residual blocks).
    emb_dim: embedding width of the noise level (scaled by 1000 like EDM's
      positional embedding of c_noise).
    dropout: dropout rate inside the blocks (rng 'dropout' when train).
  """
  out_dim: int = 2
  label_dim: int = 0
  hidden: Sequence[int] = (128, 128, 128)
  emb_dim: int = 64
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, noise_labels, class_labels=None, augment_labels=None, train=False):
    del augment_labels  # vectors are not augmented
    emb = sinusoidal_embedding(noise_labels * 1000.0, self.emb_dim)
    emb = nn.silu(nn.Dense(self.emb_dim * 2, name="map_noise")(emb))
    if self.label_dim:
      emb = emb + nn.Dense(self.emb_dim * 2, use_bias=False, name="map_label")(class_labels)
    h = nn.Dense(self.hidden[0], name="input")(x.reshape(x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      skip = h if h.shape[-1] == width else nn.Dense(width, name=f"skip{i}")(h)
      z = nn.silu(h) + nn.Dense(h.shape[-1], name=f"emb{i}")(nn.silu(emb))
      z = nn.Dense(width, name=f"dense{i}")(z)
      z = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(z))
      h = skip + nn.Dense(width, name=f"out{i}")(z)
    out = nn.Dense(self.out_dim, name="output")(nn.silu(h))
    return out.reshape(x.shape)
