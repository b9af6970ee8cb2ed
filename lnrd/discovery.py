r"""Noisy-label discovery with the transition-aware weights (`task="discover"` runs it).

    python main.py --config=configs/mnist_sym.py:task=noisy_classifier,source=idx \
        --config.dataset.path=/work/shared/data/mnist --workdir=CLS_DIR
    python main.py --config=configs/mnist_sym.py:task=discover,source=idx \
        --config.dataset.path=/work/shared/data/mnist \
        --config.discover.classifier_dir=CLS_DIR --workdir=OUT

TDSM's poster: "using the transition-aware weights, we find that the benchmark
dataset also contains examples with noisy or ambiguous labels". Every training
example (x, y~) is scored by the weight of its OWN label,

  w(x_t, y~, y = y~, t) = p_t(Y = y~ | Y~ = y~, x_t)
                        = T[y~, y~] q_y~ / sum_k T[k, y~] q_k        (released form)

(q = h(x_t, t) the forward-corrected clean posterior, T[y, y~] = p(y~ | y)), the
probability that the given label is the true one. Low weight = likely
mislabelled. The score averages it over a few small noise levels,

  s_w(x, y~) = 1/|Sigma| sum_{sigma in Sigma} w(x + sigma n_sigma, y~, y~, sigma),
  n_sigma ~ N(0, I) (one fixed draw per example and sigma),

and is compared with the classifier's plain confidence in the given label at
the smallest sigma, s_c(x, y~) = h~(x_sigma_min)_y~ with h~ = T^T q (or the
classifier's own output when it was trained on the noisy label directly,
`noisy_target`; then the weights take the paper form of `lnrd.weights`).

With a symmetric T (T[y~, y~] = 1 - r, T[k, y~] = r/(C-1) otherwise) the weight
at ONE noise level is a monotone function of q_y~,
w = (1-r) q / ((1-r) q + r/(C-1) (1-q)), so it ranks exactly like the
confidence; the rankings differ through the average over sigma (and, for
asymmetric T, through the class-dependent denominators).

A clean benchmark (noise rate 0) has T = I, where every own-label weight is 1;
the paper then assumes a small symmetric noise rate (`discover.assumed_rate`,
5%: T = 0.95 I + 0.05/(C-1) off the diagonal).

Outputs in WORKDIR: discovery.json (precision/recall@k, average precision and
the Spearman correlation of both scores against the flipped labels), suspects.png
(the `grid_count` lowest-weight examples, lowest first, in reading order),
suspects.json (their training indices, labels, the classifier's argmax, scores),
scores.npz (both scores of every training example, for further analysis) and
metrics.json (the same numbers, flat).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lnrd import images as images_lib
from lnrd import weights as weights_lib
from sgn_jax import noise
from sgn_jax.training import mesh as mesh_lib

DEFAULT_SIGMAS = (0.002, 0.05, 0.2)
DEFAULT_TOP_K = (100, 1000)
DEFAULT_GRID_COUNT = 64
DEFAULT_BATCH_SIZE = 1000
DEFAULT_ASSUMED_RATE = 0.05


@dataclasses.dataclass(frozen=True)
class DiscoverSettings:
  """`task=discover`'s knobs and their defaults: the classifier run, the noise levels
  averaged, the k of precision/recall@k, the suspects shown, the batch, the symmetric
  rate assumed on clean data, and the seed of the x + sigma n draws."""
  classifier_dir: str = ""
  sigmas: tuple = DEFAULT_SIGMAS
  top_k: tuple = DEFAULT_TOP_K
  grid_count: int = DEFAULT_GRID_COUNT
  batch_size: int = DEFAULT_BATCH_SIZE
  assumed_rate: float = DEFAULT_ASSUMED_RATE
  seed: int = 0


# ---- scores and ranking metrics ---------------------------------------------------


def own_label_weight(probs: jax.Array, labels: jax.Array, transition,
                     form: str = "released") -> jax.Array:
  """The weight of each example's own label, w_b = W[b, y~_b, y~_b], (B,).

  released form (probs = q, the clean posterior of a forward-corrected classifier):

    w_b = T[y~_b, y~_b] q_b,y~_b / sum_k T[k, y~_b] q_b,k = p(Y = y~ | Y~ = y~, x)

  paper form (probs = h~, the noisy-label posterior; S, n from T with a uniform
  clean prior, see `lnrd.weights.transition_constants`):

    w_b = S[y~_b, y~_b] n_y~_b / h~_b,y~_b * sum_i S^-1[y~_b, i] h~_b,i / n_i

  Both come from `lnrd.weights` (all noisy labels at once, vmapped over the label
  axis), rows cleaned like the released code (`clean_rows`: clamp to [0, 1],
  renormalise, NaN -> 0), then each example's own entry is picked.

  Args:
    probs: (B, C) classifier probabilities (q or h~, see `form`).
    labels: (B,) int, the given (noisy) labels y~.
    transition: T (C, C), T[y, y~] = p(y~ | y). For the paper form it must be a
      concrete array (S^-1 is computed on the host), not a traced value.
    form: 'released' or 'paper'.
  """
  labels = jnp.asarray(labels, jnp.int32)
  if form == "released":
    all_weights = weights_lib.released_weights(probs, jnp.asarray(transition, jnp.float32))
  elif form == "paper":
    constants = weights_lib.transition_constants(np.asarray(transition, np.float64))
    all_weights = weights_lib.paper_weights(probs, constants["reverse"],
                                            constants["reverse_inv"], constants["noisy_prior"])
  else:
    raise ValueError(f"weight form {form!r} is not known; allowed: "
                     f"{list(weights_lib.WEIGHT_FORMS)}")
  rows = weights_lib.clean_rows(weights_lib.weights_for_labels(all_weights, labels))
  return jnp.take_along_axis(rows, labels[:, None], axis=1)[:, 0]


def noisy_label_confidence(probs: jax.Array, labels: jax.Array, transition,
                           noisy_target: bool = False) -> jax.Array:
  """The classifier's confidence in the given label, h~_b,y~_b, (B,).

  h~ = probs when the classifier was trained on the noisy label (`noisy_target`),
  else the forward-corrected h~_b,j = sum_y q_b,y T[y, j] (the distribution the
  classifier was fitted to).
  """
  probs = jnp.asarray(probs)
  noisy = probs if noisy_target else probs @ jnp.asarray(transition, probs.dtype)
  return jnp.take_along_axis(noisy, jnp.asarray(labels, jnp.int32)[:, None], axis=1)[:, 0]


def suspect_order(scores) -> np.ndarray:
  """Indices from the lowest score up; equal scores keep their index order (stable)."""
  scores = np.asarray(scores)
  if scores.ndim != 1:
    raise ValueError(f"scores must be 1-D, got shape {scores.shape}")
  return np.argsort(scores, kind="stable")


def _check_k(k, n: int) -> int:
  if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= n:
    raise ValueError(f"k={k!r} must be an integer in [1, {n}] (the number of scores)")
  return int(k)


def _check_flipped(scores, is_flipped) -> np.ndarray:
  is_flipped = np.asarray(is_flipped).astype(bool)
  if is_flipped.shape != np.shape(scores):
    raise ValueError(f"is_flipped has shape {is_flipped.shape}, scores {np.shape(scores)}")
  return is_flipped


def precision_at_k(scores, is_flipped, k: int) -> float:
  """Fraction of flipped examples among the k lowest scores: |top_k ∩ F| / k.

  top_k = the first k of `suspect_order(scores)` (lowest first, ties by index).
  """
  is_flipped = _check_flipped(scores, is_flipped)
  k = _check_k(k, is_flipped.size)
  return float(is_flipped[suspect_order(scores)[:k]].mean())


def recall_at_k(scores, is_flipped, k: int) -> float:
  """Fraction of all flipped examples found among the k lowest scores: |top_k ∩ F| / |F|.

  NaN when nothing is flipped.
  """
  is_flipped = _check_flipped(scores, is_flipped)
  k = _check_k(k, is_flipped.size)
  total = int(is_flipped.sum())
  if total == 0:
    return float("nan")
  return float(is_flipped[suspect_order(scores)[:k]].sum() / total)


def average_precision(scores, is_flipped) -> float:
  """AP = 1/|F| sum_{i in F} precision@rank(i) (ranks from `suspect_order`, 1-based).

  NaN when nothing is flipped; 1 when every flipped example ranks before every
  clean one; about |F|/N for a random ranking.
  """
  is_flipped = _check_flipped(scores, is_flipped)
  hits = is_flipped[suspect_order(scores)]
  if not hits.any():
    return float("nan")
  precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
  return float(precision[hits].mean())


def spearman(a, b) -> float:
  """Spearman rank correlation of two score vectors (average ranks for ties)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.spearmanr(np.asarray(a), np.asarray(b)).statistic)


# ---- scoring a dataset ----------------------------------------------------------


@dataclasses.dataclass
class SuspectScores:
  """Per-example scores of `suspect_scores` (host arrays, length N)."""
  weight: np.ndarray             # mean own-label weight over sigmas (low = suspect)
  weight_per_sigma: np.ndarray   # (num_sigmas, N)
  confidence: np.ndarray         # h~(x_sigma_min)_y~, the baseline
  prediction: np.ndarray         # argmax of the classifier's output at sigma_min
  sigmas: tuple


def check_sigmas(sigmas) -> tuple:
  sigmas = tuple(float(s) for s in sigmas)
  if not sigmas or not all(s > 0 and math.isfinite(s) for s in sigmas):
    raise ValueError(f"sigmas={sigmas!r} must be a non-empty tuple of positive noise levels")
  return sigmas


def _probs_function(classifier):
  """(variables, probs_fn(variables, x_t, sigma)) with the parameters as jit arguments
  for an `ExportedClassifier`; other objects are called through `.probs` as they are."""
  if dataclasses.is_dataclass(classifier) and hasattr(classifier, "variables"):
    def probs(variables, x_t, sigma):
      return dataclasses.replace(classifier, variables=variables).probs(x_t, sigma)
    return classifier.variables, probs
  return (), lambda variables, x_t, sigma: classifier.probs(x_t, sigma)


def suspect_scores(classifier, images, labels, sigmas: Sequence[float] = DEFAULT_SIGMAS,
                   key=None, batch_size: int = DEFAULT_BATCH_SIZE, transition=None,
                   mesh=None) -> SuspectScores:
  """Own-label weight and confidence of every example (lower = more suspect).

  For each sigma in `sigmas`, x_sigma = x + sigma n with n ~ N(0, I) drawn from
  fold_in(fold_in(key, sigma's position), example index), so the scores do not
  depend on the batch size or the mesh. Then

    weight     = mean_sigma own_label_weight(h(x_sigma, sigma), y~, T)
    confidence = noisy_label_confidence(h(x_sigma_min, sigma_min), y~, T)

  (paper form and h~ = h when `classifier.noisy_target`).

  Args:
    classifier: an `ExportedClassifier` or any object with `.probs(x_t, sigma)`,
      `.transition`, `.noisy_target` and `.input_shape`.
    images: (N, ...) uint8 images (mapped to [-1, 1] and zero-padded to the
      classifier's input size as in training) or float model-range inputs.
    labels: (N,) the given labels y~.
    sigmas: the noise levels (positive).
    key: PRNG key of the noise (default PRNGKey(0)).
    batch_size: examples per jitted call (the last batch is padded, the padding dropped).
    transition: T overriding `classifier.transition` (e.g. the assumed 5%
      symmetric T of a clean dataset).
    mesh: optional device mesh; batches are split over its data axis
      (batch_size must divide evenly). Process-local devices only.
  """
  sigmas = check_sigmas(sigmas)
  images, labels = np.asarray(images), np.asarray(labels, np.int32)
  n = len(labels)
  if images.shape[0] != n or labels.ndim != 1:
    raise ValueError(f"images {images.shape} and labels {labels.shape} must be (N, ...) and (N,)")
  if n == 0:
    raise ValueError("suspect_scores needs at least one example")
  if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
  batch_size = int(batch_size)
  if mesh is not None:
    mesh_lib.check_divisible(batch_size, mesh, "discover.batch_size")
  transition = np.asarray(classifier.transition if transition is None else transition,
                          np.float64)
  # Exports store T in float32: renormalise the rows before the 1e-6 row-sum check.
  transition = noise.check_transition(transition / transition.sum(axis=-1, keepdims=True))
  num_classes = transition.shape[0]
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels lie in [{labels.min()}, {labels.max()}], outside the "
                     f"transition's [0, {num_classes})")
  input_shape = tuple(classifier.input_shape)
  pad_to = input_shape[0] if images.ndim == 4 and images.shape[1] < input_shape[0] else 0
  model_shape = images_lib.model_input_shape(images.shape[1:], pad_to)
  if tuple(model_shape) != input_shape:
    raise ValueError(f"examples of shape {images.shape[1:]} (model input {model_shape}) do not "
                     f"fit the classifier's input shape {input_shape}")
  noisy_target = bool(getattr(classifier, "noisy_target", False))
  form = "paper" if noisy_target else "released"
  smallest = int(np.argmin(sigmas))
  key = jax.random.PRNGKey(0) if key is None else key
  variables, probs_fn = _probs_function(classifier)

  def score(variables, batch_images, batch_labels, indices, key):
    x = images_lib.to_model_range(batch_images, pad_to)
    weights, confidence, prediction = [], None, None
    for position, sigma in enumerate(sigmas):
      sigma_key = jax.random.fold_in(key, position)
      draw = jax.vmap(lambda i, k=sigma_key: jax.random.normal(
          jax.random.fold_in(k, i), x.shape[1:], x.dtype))(indices)
      sigma_batch = jnp.full((x.shape[0],), sigma, jnp.float32)
      probs = probs_fn(variables, x + sigma * draw, sigma_batch)
      weights.append(own_label_weight(probs, batch_labels, transition, form))
      if position == smallest:
        confidence = noisy_label_confidence(probs, batch_labels, transition, noisy_target)
        prediction = jnp.argmax(probs, axis=-1)
    per_sigma = jnp.stack(weights)
    return per_sigma.mean(0), per_sigma, confidence, prediction

  score = jax.jit(score)
  if mesh is not None:
    variables = jax.device_put(variables, mesh_lib.replicated(mesh))
    key = jax.device_put(key, mesh_lib.replicated(mesh))

  def put(array):
    return jnp.asarray(array) if mesh is None else jax.device_put(
        array, mesh_lib.data_sharded(mesh))

  outputs = []
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    indices = np.arange(start, start + batch_size, dtype=np.int32)
    rows = np.minimum(indices, n - 1)  # padding repeats the last example, then is dropped
    result = score(variables, put(images[rows]), put(labels[rows]), put(indices), key)
    outputs.append([np.asarray(a)[..., :stop - start] for a in result])
  weight, per_sigma, confidence, prediction = (
      np.concatenate([o[i] for o in outputs], axis=-1) for i in range(4))
  return SuspectScores(weight=weight, weight_per_sigma=per_sigma, confidence=confidence,
                       prediction=prediction.astype(np.int32), sigmas=sigmas)
