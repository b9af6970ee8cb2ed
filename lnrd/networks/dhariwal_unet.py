"""EDM's `DhariwalUNet`: the ADM architecture (Dhariwal & Nichol, NeurIPS 2021).

A Flax Linen port of `DhariwalUNet` in EDM's `training/networks.py`, layer for
layer and with the same parameter count, on NHWC images. Submodule names are
EDM's with `enc.`/`dec.` flattened to `enc_<name>` / `dec_<name>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lnrd.networks import layers


class DhariwalUNet(nn.Module):
  """ADM U-Net (EDM's `DhariwalUNet`).

  Differences from `SongUNet`, as in EDM: kaiming-uniform init scaled by
  sqrt(1/3) with zero-init output convs, FiLM (adaptive scale) in every block,
  skip_scale 1, GroupNorm eps 1e-5, parameter-free resampled skips, heads of
  `channels_per_head` channels, attention in every block at
  `attn_resolutions`, class labels added after the noise MLP (no bias), no
  sin/cos swap in the noise embedding.

  Attributes:
    img_resolution: image height and width.
    in_channels: input image channels.
    out_channels: output image channels.
    label_dim: number of classes; 0 for unconditional.
    augment_dim: augmentation-label size; 0 for none.
    model_channels: base channel count.
    channel_mult: per-resolution channel multipliers.
    channel_mult_emb: embedding size = model_channels * channel_mult_emb.
    num_blocks: residual blocks per resolution.
    attn_resolutions: resolutions with self-attention.
    dropout: dropout rate inside the blocks (rng 'dropout' when train=True).
    label_dropout: probability of zeroing a sample's class labels when
      train=True (rng 'dropout').
    channels_per_head: attention channels per head (EDM fixes 64; exposed for
      small test networks).
    dtype: compute dtype; parameters and output are float32.
  """
  img_resolution: int
  in_channels: int
  out_channels: int
  label_dim: int = 0
  augment_dim: int = 0
  model_channels: int = 192
  channel_mult: Sequence[int] = (1, 2, 3, 4)
  channel_mult_emb: int = 4
  num_blocks: int = 3
  attn_resolutions: Sequence[int] = (32, 16, 8)
  dropout: float = 0.10
  label_dropout: float = 0.0
  channels_per_head: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, noise_labels: jax.Array, class_labels: jax.Array | None = None,
               augment_labels: jax.Array | None = None, train: bool = False) -> jax.Array:
    """Applies the network.

    Args:
      x: (B, H, W, in_channels) images (already scaled by c_in).
      noise_labels: (B,) noise conditioning (EDM's c_noise).
      class_labels: (B, label_dim) one-hot labels; None is read as all-zero
        labels when label_dim > 0.
      augment_labels: (B, augment_dim) augmentation labels or None.
      train: enables dropout and label dropout (rng 'dropout').

    Returns:
      (B, H, W, out_channels) float32 output.
    """
    emb_channels = self.model_channels * self.channel_mult_emb
    init = layers.WeightInit("kaiming_uniform", weight=float(np.sqrt(1 / 3)), bias=float(np.sqrt(1 / 3)))
    init_zero = layers.WeightInit("kaiming_uniform", weight=0.0, bias=0.0)

    def block(out_channels, name, **kwargs):
      return layers.UNetBlock(
          out_channels, channels_per_head=self.channels_per_head, dropout=self.dropout,
          init=init, init_zero=init_zero, dtype=self.dtype, name=name, **kwargs)

    # Mapping.
    batch = x.shape[0]
    emb = layers.PositionalEmbedding(self.model_channels, name="map_noise")(noise_labels).astype(self.dtype)
    if self.augment_dim and (augment_labels is not None or self.is_initializing()):
      if augment_labels is None:  # init without augment labels still creates the parameters
        map_augment = layers.Linear(self.model_channels, use_bias=False, init=init_zero,
                                    dtype=self.dtype, name="map_augment")
        map_augment(jnp.zeros((batch, self.augment_dim), self.dtype))
      else:
        emb = emb + layers.Linear(self.model_channels, use_bias=False, init=init_zero,
                                  dtype=self.dtype, name="map_augment")(augment_labels)
    emb = nn.silu(layers.Linear(emb_channels, init=init, dtype=self.dtype, name="map_layer0")(emb))
    emb = layers.Linear(emb_channels, init=init, dtype=self.dtype, name="map_layer1")(emb)
    if self.label_dim:
      labels = (jnp.zeros((batch, self.label_dim), self.dtype) if class_labels is None
                else jnp.asarray(class_labels, self.dtype))
      if train and self.label_dropout:
        labels = layers.drop_labels(labels, self.label_dropout, self.make_rng("dropout"))
      label_init = layers.WeightInit("kaiming_normal", weight=float(np.sqrt(self.label_dim)))
      emb = emb + layers.Linear(emb_channels, use_bias=False, init=label_init, dtype=self.dtype,
                                name="map_label")(labels)
    emb = nn.silu(emb)

    # Encoder.
    x = jnp.asarray(x, self.dtype)
    skips = []
    for level, mult in enumerate(self.channel_mult):
      res = self.img_resolution >> level
      if level == 0:
        x = layers.Conv2d(self.model_channels * mult, kernel=3, init=init, dtype=self.dtype,
                          name=f"enc_{res}x{res}_conv")(x)
      else:
        x = block(x.shape[-1], f"enc_{res}x{res}_down", down=True)(x, emb, train)
      skips.append(x)
      for idx in range(self.num_blocks):
        x = block(self.model_channels * mult, f"enc_{res}x{res}_block{idx}",
                  attention=res in self.attn_resolutions)(x, emb, train)
        skips.append(x)

    # Decoder.
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = self.img_resolution >> level
      channels = x.shape[-1]
      if level == len(self.channel_mult) - 1:
        x = block(channels, f"dec_{res}x{res}_in0", attention=True)(x, emb, train)
        x = block(channels, f"dec_{res}x{res}_in1")(x, emb, train)
      else:
        x = block(channels, f"dec_{res}x{res}_up", up=True)(x, emb, train)
      for idx in range(self.num_blocks + 1):
        x = jnp.concatenate([x, skips.pop()], axis=-1)
        x = block(self.model_channels * mult, f"dec_{res}x{res}_block{idx}",
                  attention=res in self.attn_resolutions)(x, emb, train)
    x = layers.GroupNorm(dtype=self.dtype, name="out_norm")(x)
    x = layers.Conv2d(self.out_channels, kernel=3, init=init_zero, dtype=self.dtype, name="out_conv")(nn.silu(x))
    return x.astype(jnp.float32)
