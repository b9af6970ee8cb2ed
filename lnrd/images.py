"""Images between the data (uint8 NHWC) and the diffusion model's range [-1, 1].

  to_model_range     uint8 -> float32 in [-1, 1] (x / 127.5 - 1), zero-padded
                     (value -1) to pad_to x pad_to (MNIST: 28 -> 32)
  images_to_uint8    model range -> uint8 with EDM's rounding
  crop_to            undo the padding of samples (32 -> 28)
  model_input_shape  the network's input shape of a data shape and pad_to
  save_png           an image (grid) to a PNG file
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np


def to_model_range(images: jax.Array, pad_to: int = 0) -> jax.Array:
  """uint8 images -> float32 in [-1, 1] (x/127.5 - 1), zero-padded (value -1) to pad_to.

  Float inputs (already in model range, or 2-D mixture points) are returned as
  float32 unchanged.
  """
  if images.dtype != jnp.uint8:
    return images.astype(jnp.float32)
  x = images.astype(jnp.float32) / 127.5 - 1.0
  if pad_to and x.ndim == 4 and x.shape[1] < pad_to:
    top = (pad_to - x.shape[1]) // 2
    left = (pad_to - x.shape[2]) // 2
    x = jnp.pad(x, ((0, 0), (top, pad_to - x.shape[1] - top),
                    (left, pad_to - x.shape[2] - left), (0, 0)), constant_values=-1.0)
  return x


def images_to_uint8(samples: np.ndarray) -> np.ndarray:
  """Model-range [-1, 1] images -> uint8 [0, 255] (EDM's rounding)."""
  return np.clip(np.rint(np.asarray(samples) * 127.5 + 128), 0, 255).astype(np.uint8)


def crop_to(images: np.ndarray, shape) -> np.ndarray:
  """Center-crop NHWC samples to the data's (H, W) (undoes `to_model_range`'s zero
  padding, e.g. MNIST 32x32 -> 28x28)."""
  h, w = int(shape[0]), int(shape[1])
  top = (images.shape[1] - h) // 2
  left = (images.shape[2] - w) // 2
  return images[:, top:top + h, left:left + w]


def model_input_shape(data_shape, pad_to: int = 0) -> tuple:
  """The network's input shape (no batch): images zero-padded up to pad_to x pad_to."""
  shape = tuple(int(d) for d in data_shape)
  if len(shape) == 3 and pad_to:
    shape = (max(pad_to, shape[0]), max(pad_to, shape[1]), shape[2])
  return shape


def save_png(path: str, grid: np.ndarray) -> None:
  """A uint8 (H, W, C) image (C = 1 or 3) to a PNG file, making its folder."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  array = grid[..., 0] if grid.shape[-1] == 1 else grid
  Image.fromarray(array).save(path)
