"""EDM's `SongUNet`: the DDPM++ and NCSN++ architectures (Song et al., ICLR 2021).

A Flax Linen port of `SongUNet` in EDM's `training/networks.py`, layer for
layer and with the same parameter count, on NHWC images. Submodule names are
EDM's with the `enc.`/`dec.` dictionaries flattened to `enc_<name>` /
`dec_<name>` (e.g. `enc_32x32_block0`), which `convert_torch` relies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lnrd.networks import layers


class SongUNet(nn.Module):
  """DDPM++ / NCSN++ U-Net (EDM's `SongUNet`).

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
      train=True (classifier-free guidance; rng 'dropout').
    embedding_type: 'positional' (DDPM++) or 'fourier' (NCSN++).
    channel_mult_noise: noise-embedding size = model_channels * channel_mult_noise.
    encoder_type: 'standard', 'skip' or 'residual'.
    decoder_type: 'standard' or 'skip'.
    resample_filter: 1-D resampling taps ([1, 1] DDPM++, [1, 3, 3, 1] NCSN++).
    dtype: compute dtype (e.g. bfloat16); parameters and output are float32.
  """
  img_resolution: int
  in_channels: int
  out_channels: int
  label_dim: int = 0
  augment_dim: int = 0
  model_channels: int = 128
  channel_mult: Sequence[int] = (1, 2, 2, 2)
  channel_mult_emb: int = 4
  num_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.10
  label_dropout: float = 0.0
  embedding_type: str = "positional"
  channel_mult_noise: int = 1
  encoder_type: str = "standard"
  decoder_type: str = "standard"
  resample_filter: Sequence[float] = (1, 1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, noise_labels: jax.Array, class_labels: jax.Array | None = None,
               augment_labels: jax.Array | None = None, train: bool = False) -> jax.Array:
    """Applies the network.

    Args:
      x: (B, H, W, in_channels) images (already scaled by c_in).
      noise_labels: (B,) noise conditioning (EDM's c_noise).
      class_labels: (B, label_dim) one-hot labels; None is read as all-zero
        labels (as EDM's preconditioners pass) when label_dim > 0.
      augment_labels: (B, augment_dim) augmentation labels or None.
      train: enables dropout and label dropout (rng 'dropout').

    Returns:
      (B, H, W, out_channels) float32 output.
    """
    if self.embedding_type not in ("fourier", "positional"):
      raise ValueError(f"embedding_type must be 'fourier' or 'positional', got {self.embedding_type!r}.")
    if self.encoder_type not in ("standard", "skip", "residual"):
      raise ValueError(f"encoder_type must be 'standard', 'skip' or 'residual', got {self.encoder_type!r}.")
    if self.decoder_type not in ("standard", "skip"):
      raise ValueError(f"decoder_type must be 'standard' or 'skip', got {self.decoder_type!r}.")

    emb_channels = self.model_channels * self.channel_mult_emb
    noise_channels = self.model_channels * self.channel_mult_noise
    init = layers.WeightInit("xavier_uniform")
    init_zero = layers.WeightInit("xavier_uniform", weight=1e-5)
    init_attn = layers.WeightInit("xavier_uniform", weight=float(np.sqrt(0.2)))
    resample_filter = tuple(self.resample_filter)

    def block(out_channels, name, **kwargs):
      return layers.UNetBlock(
          out_channels, num_heads=1, dropout=self.dropout, skip_scale=float(np.sqrt(0.5)), eps=1e-6,
          resample_filter=resample_filter, resample_proj=True, adaptive_scale=False,
          init=init, init_zero=init_zero, init_attn=init_attn, dtype=self.dtype, name=name, **kwargs)

    # Mapping.
    if self.embedding_type == "positional":
      emb = layers.PositionalEmbedding(noise_channels, endpoint=True, name="map_noise")(noise_labels)
    else:
      emb = layers.FourierEmbedding(noise_channels, name="map_noise")(noise_labels)
    emb = jnp.concatenate([emb[:, noise_channels // 2:], emb[:, :noise_channels // 2]], axis=1)  # sin, cos
    emb = emb.astype(self.dtype)
    batch = x.shape[0]
    if self.label_dim:
      labels = (jnp.zeros((batch, self.label_dim), self.dtype) if class_labels is None
                else jnp.asarray(class_labels, self.dtype))
      if train and self.label_dropout:
        labels = layers.drop_labels(labels, self.label_dropout, self.make_rng("dropout"))
      emb = emb + layers.Linear(noise_channels, init=init, dtype=self.dtype, name="map_label")(
          labels * np.sqrt(self.label_dim))
    if self.augment_dim and augment_labels is not None:
      emb = emb + layers.Linear(noise_channels, use_bias=False, init=init, dtype=self.dtype,
                                name="map_augment")(augment_labels)
    elif self.augment_dim and self.is_initializing():
      # Create the parameters even when init sees no augment labels.
      layers.Linear(noise_channels, use_bias=False, init=init, dtype=self.dtype,
                    name="map_augment")(jnp.zeros((batch, self.augment_dim), self.dtype))
    emb = nn.silu(layers.Linear(emb_channels, init=init, dtype=self.dtype, name="map_layer0")(emb))
    emb = nn.silu(layers.Linear(emb_channels, init=init, dtype=self.dtype, name="map_layer1")(emb))

    # Encoder.
    x = jnp.asarray(x, self.dtype)
    skips = []
    aux = x
    for level, mult in enumerate(self.channel_mult):
      res = self.img_resolution >> level
      if level == 0:
        x = layers.Conv2d(self.model_channels, kernel=3, init=init, dtype=self.dtype,
                          name=f"enc_{res}x{res}_conv")(x)
        skips.append(x)
      else:
        x = block(x.shape[-1], f"enc_{res}x{res}_down", down=True)(x, emb, train)
        skips.append(x)
        if self.encoder_type == "skip":
          aux = layers.Conv2d(aux.shape[-1], kernel=0, down=True, resample_filter=resample_filter,
                              dtype=self.dtype, name=f"enc_{res}x{res}_aux_down")(aux)
          x = x + layers.Conv2d(x.shape[-1], kernel=1, init=init, dtype=self.dtype,
                                name=f"enc_{res}x{res}_aux_skip")(aux)
          skips[-1] = x
        if self.encoder_type == "residual":
          residual = layers.Conv2d(x.shape[-1], kernel=3, down=True, resample_filter=resample_filter,
                                   fused_resample=True, init=init, dtype=self.dtype,
                                   name=f"enc_{res}x{res}_aux_residual")(aux)
          x = (x + residual) / np.sqrt(2)
          skips[-1] = aux = x
      for idx in range(self.num_blocks):
        x = block(self.model_channels * mult, f"enc_{res}x{res}_block{idx}",
                  attention=res in self.attn_resolutions)(x, emb, train)
        skips.append(x)

    # Decoder.
    aux = None
    last_level = len(self.channel_mult) - 1
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = self.img_resolution >> level
      channels = x.shape[-1]
      if level == last_level:
        x = block(channels, f"dec_{res}x{res}_in0", attention=True)(x, emb, train)
        x = block(channels, f"dec_{res}x{res}_in1")(x, emb, train)
      else:
        x = block(channels, f"dec_{res}x{res}_up", up=True)(x, emb, train)
      for idx in range(self.num_blocks + 1):
        x = jnp.concatenate([x, skips.pop()], axis=-1)
        attention = idx == self.num_blocks and res in self.attn_resolutions
        x = block(self.model_channels * mult, f"dec_{res}x{res}_block{idx}",
                  attention=attention)(x, emb, train)
      if self.decoder_type == "skip" or level == 0:
        if self.decoder_type == "skip" and level < last_level:
          aux = layers.Conv2d(self.out_channels, kernel=0, up=True, resample_filter=resample_filter,
                              dtype=self.dtype, name=f"dec_{res}x{res}_aux_up")(aux)
        tmp = layers.GroupNorm(eps=1e-6, dtype=self.dtype, name=f"dec_{res}x{res}_aux_norm")(x)
        tmp = layers.Conv2d(self.out_channels, kernel=3, init=init_zero, dtype=self.dtype,
                            name=f"dec_{res}x{res}_aux_conv")(nn.silu(tmp))
        aux = tmp if aux is None else tmp + aux
    return aux.astype(jnp.float32)
