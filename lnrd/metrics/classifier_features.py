"""Features of a fixed MNIST classifier, for Density/Coverage (and FID) on digits.

Inception-v3 features of 28x28 digits upsampled to 299x299 separate digit
images poorly, so for MNIST the feature space can instead be that of a
classifier trained on CLEAN MNIST: the time-dependent classifier exported by a
`task=noisy_classifier` run with `rate=0` (`lnrd.runs.load_classifier`),
evaluated at the smallest noise level sigma = 0.002 (essentially clean inputs).

For `TimeCNN` (32x32 inputs) the features are the penultimate activations

  f(x) = flatten_CHW(h_2) in R^{32 * 8 * 8 = 2048},   logits = W f(x) + b,

sown by the module as ("intermediates", "features") right before its final
dense layer `linear` (also `TimeResNet`: its pooled, flattened activations).
The inputs are uint8 images (B, 28, 28, 1), mapped to [-1, 1] and padded (with
-1) to the export's input size by `lnrd.images.to_model_range`, exactly as
the classifier saw them in training. No noise is added: the classifier is only
conditioned on sigma (sigma * n at sigma = 0.002 is below a grey level's step
of 2/255 ~ 0.008), so the features are deterministic.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lnrd import images as images_lib
from lnrd import runs
from lnrd.metrics import sharded_eval

# Noise level the classifier is conditioned on (EDM's sigma_min).
DEFAULT_SIGMA = 0.002


@dataclasses.dataclass
class ClassifierFeatures:
  """Penultimate features and predictions of an exported time-dependent classifier.

  Call it on uint8 images (B, H, W, C) to get float32 features (B, D); `predict`
  gives the argmax labels, `features_and_logits` both; `extract` runs over a
  whole dataset in sharded, padded batches (`sharded_eval.map_batches`).

  Attributes:
    exported: the loaded classifier (`lnrd.runs.ExportedClassifier`).
    sigma: the noise level the classifier is conditioned on.
  """
  exported: runs.ExportedClassifier
  sigma: float = DEFAULT_SIGMA

  def __post_init__(self):
    if not self.sigma > 0:
      raise ValueError(f"sigma={self.sigma} must be > 0 (the classifier takes ln(sigma))")
    if len(self.exported.input_shape) != 3:
      raise ValueError(f"the exported classifier ({self.exported.arch!r}) takes inputs of "
                       f"shape {self.exported.input_shape}; features need an image classifier")
    self._apply = jax.jit(self.features_and_logits_fn)

  @classmethod
  def load(cls, path: str, sigma: float = DEFAULT_SIGMA) -> "ClassifierFeatures":
    """From the workdir of a `noisy_classifier` run (or its time_classifier/ folder)."""
    return cls(runs.load_classifier(path, what="evaluate.feature_classifier_dir"), sigma)

  @property
  def pad_to(self) -> int:
    """The export's image size (32 for the MNIST TimeCNN); inputs are padded to it."""
    return int(self.exported.input_shape[0])

  def features_and_logits_fn(self, images: jax.Array, variables=None
                             ) -> tuple[jax.Array, jax.Array]:
    """Traceable (features, logits) of uint8 images; `variables` default to the
    export's (pass them as an argument to keep them out of a jitted program's
    constants)."""
    x = images_lib.to_model_range(images, self.pad_to)
    sigma = jnp.full((x.shape[0],), self.sigma, jnp.float32)
    logits, state = self.exported.module.apply(
        self.exported.variables if variables is None else variables, x, sigma, train=False,
        mutable=["intermediates"])
    (features,) = state["intermediates"]["features"]
    return features.astype(jnp.float32), logits

  def _check(self, images) -> None:
    shape = tuple(np.shape(images))
    if len(shape) != 4 or shape[-1] != self.exported.input_shape[-1] or shape[1] > self.pad_to:
      raise ValueError(
          f"images have shape {shape}; expected (B, H, W, {self.exported.input_shape[-1]}) "
          f"with H, W <= {self.pad_to} (the classifier's input size)")
    if np.dtype(images.dtype) != np.uint8:
      raise ValueError(f"images have dtype {images.dtype}; expected uint8 in [0, 255] "
                       "(model-range samples: lnrd.images.images_to_uint8)")

  def features_and_logits(self, images) -> tuple[jax.Array, jax.Array]:
    """(features (B, D) float32, logits (B, K)) of uint8 images (B, H, W, C)."""
    self._check(images)
    return self._apply(jnp.asarray(images))

  def __call__(self, images) -> jax.Array:
    """Penultimate features (B, D) float32 (D = 2048 for TimeCNN) of uint8 images."""
    return self.features_and_logits(images)[0]

  def predict(self, images) -> jax.Array:
    """Predicted labels argmax_k logits_k, (B,) int32."""
    return jnp.argmax(self.features_and_logits(images)[1], axis=-1).astype(jnp.int32)

  def extract(self, images, batch_size: int = 500, mesh=None,
              progress: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, D) float32, predicted labels (n,)) of a whole image set.

    Runs in padded global batches sharded over the mesh's data axis
    (`sharded_eval.map_batches`); every image is counted once, in order.
    """
    self._check(images)

    def fn(batch):
      features, logits = self.features_and_logits_fn(batch)
      return features, jnp.argmax(logits, axis=-1).astype(jnp.int32)

    return sharded_eval.map_batches(fn, images, batch_size, mesh, progress=progress)
