"""A 2-D Gaussian mixture with exact densities, scores and posteriors.

For tests and the quick start. Each class is one isotropic Gaussian component
N(mu_y, std^2 I), the means evenly spaced on a circle of radius `radius`. With
the defaults (4 classes, radius 2, std 0.5) neighbouring means are 2.83 apart,
5.7 standard deviations: clearly separate modes that still overlap a little
(Bayes error about 0.5%).

Everything that takes `sigma` describes the data perturbed by Gaussian noise of
standard deviation sigma (diffusion-model convention): p_sigma(x | y) =
N(x; mu_y, (std^2 + sigma^2) I). `sigma` may be a scalar or an array of shape
`x.shape[:-1]` (one noise level per point). All methods are jax.numpy and safe
under jit, vmap and grad.

Transition matrices follow SPEC.md: T[y, y~] = p(Y~ = y~ | Y = y).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from sgn_jax.data.dataset import InMemoryDataset


@dataclasses.dataclass(frozen=True)
class GaussianMixture2D:
  """Class-conditional 2-D Gaussian mixture; classes = components.

  Attributes:
    num_classes: number of components / classes (>= 2).
    radius: radius of the circle the means lie on; mean k is at angle
      2*pi*k/num_classes.
    std: standard deviation of each component (isotropic).
    weights: class prior; None = uniform. Normalised on construction.
  """
  num_classes: int = 4
  radius: float = 2.0
  std: float = 0.5
  weights: tuple[float, ...] | None = None

  def __post_init__(self):
    if int(self.num_classes) != self.num_classes or self.num_classes < 2:
      raise ValueError(f"num_classes must be an int >= 2, got "
                       f"{self.num_classes!r}.")
    if not self.std > 0:
      raise ValueError(f"std must be > 0, got {self.std!r}.")
    if not self.radius >= 0:
      raise ValueError(f"radius must be >= 0, got {self.radius!r}.")
    if self.weights is None:
      w = (1.0 / self.num_classes,) * self.num_classes
    else:
      w = tuple(float(v) for v in self.weights)
      if len(w) != self.num_classes or min(w) < 0 or sum(w) <= 0:
        raise ValueError(f"weights must be {self.num_classes} non-negative "
                         f"numbers with a positive sum, got {self.weights!r}.")
      w = tuple(v / sum(w) for v in w)
    object.__setattr__(self, "weights", w)

  @property
  def means(self) -> jnp.ndarray:
    """(C, 2) float32 component means."""
    angles = 2 * np.pi * np.arange(self.num_classes) / self.num_classes
    means = self.radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return jnp.asarray(means, dtype=jnp.float32)

  @property
  def log_weights(self) -> jnp.ndarray:
    """(C,) log class prior."""
    return jnp.log(jnp.asarray(self.weights, dtype=jnp.float32))

  def _variance(self, sigma) -> jnp.ndarray:
    sigma = jnp.asarray(sigma, dtype=jnp.float32)
    return self.std ** 2 + sigma ** 2

  def _log_normal_all(self, x, sigma) -> jnp.ndarray:
    """(..., C): log N(x; mu_c, (std^2 + sigma^2) I) for every class c."""
    x = jnp.asarray(x, dtype=jnp.float32)
    var = self._variance(sigma)[..., None]
    sq = jnp.sum((x[..., None, :] - self.means) ** 2, axis=-1)
    return -0.5 * sq / var - jnp.log(2 * math.pi * var)

  def log_joint(self, x, sigma=0.0) -> jnp.ndarray:
    """(..., C): log p(y) + log p_sigma(x | y)."""
    return self.log_weights + self._log_normal_all(x, sigma)

  def sample(self, key: jax.Array, n: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Draws n points: x (n, 2) float32 and their classes y (n,) int32."""
    k_class, k_noise = jax.random.split(key)
    y = jax.random.categorical(k_class, self.log_weights, shape=(n,))
    x = self.means[y] + self.std * jax.random.normal(k_noise, (n, 2),
                                                      dtype=jnp.float32)
    return x.astype(jnp.float32), y.astype(jnp.int32)

  def log_prob_given_class(self, x, y, sigma=0.0) -> jnp.ndarray:
    """log p_sigma(x | y) = log N(x; mu_y, (std^2 + sigma^2) I); shape (...)."""
    x = jnp.asarray(x, dtype=jnp.float32)
    var = self._variance(sigma)
    sq = jnp.sum((x - self.means[y]) ** 2, axis=-1)
    return -0.5 * sq / var - jnp.log(2 * math.pi * var)

  def log_prob(self, x, sigma=0.0) -> jnp.ndarray:
    """Marginal log p_sigma(x) = log sum_y p(y) p_sigma(x | y); shape (...)."""
    return jax.nn.logsumexp(self.log_joint(x, sigma), axis=-1)

  def class_posterior(self, x, sigma=0.0) -> jnp.ndarray:
    """Exact p_sigma(y | x), shape (..., C); rows sum to 1."""
    return jax.nn.softmax(self.log_joint(x, sigma), axis=-1)

  def score(self, x, y, sigma=0.0) -> jnp.ndarray:
    """grad_x log p_sigma(x | y) = -(x - mu_y) / (std^2 + sigma^2); (..., 2)."""
    x = jnp.asarray(x, dtype=jnp.float32)
    return -(x - self.means[y]) / self._variance(sigma)[..., None]

  def marginal_score(self, x, sigma=0.0) -> jnp.ndarray:
    """grad_x log p_sigma(x) = sum_y p_sigma(y | x) score(x, y); (..., 2)."""
    return self._mixed_score(x, self.class_posterior(x, sigma), sigma)

  def noisy_label_posterior(self, x, T, sigma=0.0) -> jnp.ndarray:
    """p_sigma(y~ | x) = sum_y p_sigma(y | x) T[y, y~]; shape (..., C)."""
    return self.class_posterior(x, sigma) @ jnp.asarray(T, dtype=jnp.float32)

  def clean_given_noisy_posterior(self, x, noisy, T, sigma=0.0) -> jnp.ndarray:
    """p_sigma(Y=y | Y~=y~, x) = T[y,y~] p(y|x) / sum_k T[k,y~] p(k|x).

    This is TDSM's weight w(x_t, y~, y, t). Shape (..., C) for `noisy` of
    shape (...).
    """
    T = jnp.asarray(T, dtype=jnp.float32)
    t_col = jnp.moveaxis(T[:, noisy], 0, -1)  # (..., C): T[y, noisy]
    return jax.nn.softmax(self.log_joint(x, sigma) + jnp.log(t_col), axis=-1)

  def log_prob_given_noisy_label(self, x, noisy, T, sigma=0.0) -> jnp.ndarray:
    """log p_sigma(x | y~) = log sum_y p(y | y~) p_sigma(x | y); shape (...).

    p(y | y~) = T[y, y~] p(y) / sum_k T[k, y~] p(k) (Bayes with the prior).
    """
    T = jnp.asarray(T, dtype=jnp.float32)
    log_t = jnp.log(jnp.moveaxis(T[:, noisy], 0, -1))
    log_rev = log_t + self.log_weights
    log_rev = log_rev - jax.nn.logsumexp(log_rev, axis=-1, keepdims=True)
    return jax.nn.logsumexp(log_rev + self._log_normal_all(x, sigma), axis=-1)

  def noisy_label_score(self, x, noisy, T, sigma=0.0) -> jnp.ndarray:
    """grad_x log p_sigma(x | y~) = sum_y w_y score(x, y) (TDSM's identity)."""
    w = self.clean_given_noisy_posterior(x, noisy, T, sigma)
    return self._mixed_score(x, w, sigma)

  def _mixed_score(self, x, w, sigma) -> jnp.ndarray:
    x = jnp.asarray(x, dtype=jnp.float32)
    var = self._variance(sigma)[..., None, None]
    scores = -(x[..., None, :] - self.means) / var  # (..., C, 2)
    return jnp.sum(w[..., None] * scores, axis=-2)


def mixture_from_fields(fields) -> GaussianMixture2D:
  """The mixture of a `dataset.gmm` mapping (its num_classes, std, radius; the sizes
  num_train / num_test are ignored)."""
  return GaussianMixture2D(**{k: v for k, v in dict(fields).items()
                              if k in ("num_classes", "std", "radius")})


def load_gmm(num_classes: int = 4,
             num_train: int = 10_000,
             num_test: int = 2_000,
             seed: int = 0,
             **kwargs) -> InMemoryDataset:
  """Samples a `GaussianMixture2D` train and test set as an InMemoryDataset.

  Args:
    num_classes: number of classes / components.
    num_train: train points.
    num_test: test points.
    seed: PRNG seed; train and test use independent keys derived from it.
    **kwargs: further `GaussianMixture2D` fields (radius, std, weights).

  Returns:
    Dataset "gmm2d" with (N, 2) float32 "images", int32 labels, identity
    `train_index` and class names "0".."C-1".
  """
  for what, n in (("num_train", num_train), ("num_test", num_test)):
    if isinstance(n, bool) or int(n) != n or n < 1:
      raise ValueError(f"{what} must be a positive int, got {n!r}.")
  mixture = GaussianMixture2D(num_classes=num_classes, **kwargs)
  k_train, k_test = jax.random.split(jax.random.PRNGKey(seed))
  x_train, y_train = mixture.sample(k_train, int(num_train))
  x_test, y_test = mixture.sample(k_test, int(num_test))
  return InMemoryDataset(
      name="gmm2d",
      num_classes=num_classes,
      train_images=np.asarray(x_train, dtype=np.float32),
      train_labels=np.asarray(y_train, dtype=np.int32),
      test_images=np.asarray(x_test, dtype=np.float32),
      test_labels=np.asarray(y_test, dtype=np.int32),
      train_index=np.arange(int(num_train), dtype=np.int64),
      label_sets={},
      class_names=tuple(str(i) for i in range(num_classes)),
  )
