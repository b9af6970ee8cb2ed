r"""Noisy-label discovery with the transition-aware weights (`task="discover"`).

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
import json
import math
import os
import time
import types
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from lnrd import diffusion as diffusion_lib
from lnrd import noisy_classifier
from lnrd import train_loop
from lnrd import weights as weights_lib
from sgn_jax import noise
from sgn_jax import train_data
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers

DEFAULT_SIGMAS = (0.002, 0.05, 0.2)
DEFAULT_TOP_K = (100, 1000)
DEFAULT_GRID_COUNT = 64
DEFAULT_BATCH_SIZE = 1000
DEFAULT_ASSUMED_RATE = 0.05
# discover.* keys and their defaults (used when a config does not have them yet).
DEFAULTS = dict(classifier_dir="", sigmas=DEFAULT_SIGMAS, top_k=DEFAULT_TOP_K,
                grid_count=DEFAULT_GRID_COUNT, batch_size=DEFAULT_BATCH_SIZE,
                assumed_rate=DEFAULT_ASSUMED_RATE, seed=0)


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


def _check_sigmas(sigmas) -> tuple:
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
  sigmas = _check_sigmas(sigmas)
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
  model_shape = train_loop.model_input_shape(images.shape[1:], pad_to)
  if tuple(model_shape) != input_shape:
    raise ValueError(f"examples of shape {images.shape[1:]} (model input {model_shape}) do not "
                     f"fit the classifier's input shape {input_shape}")
  noisy_target = bool(getattr(classifier, "noisy_target", False))
  form = "paper" if noisy_target else "released"
  smallest = int(np.argmin(sigmas))
  key = jax.random.PRNGKey(0) if key is None else key
  variables, probs_fn = _probs_function(classifier)

  def score(variables, batch_images, batch_labels, indices, key):
    x = train_loop.to_model_range(batch_images, pad_to)
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


# ---- task=discover -------------------------------------------------------------


def discover_settings(config: ml_collections.ConfigDict) -> types.SimpleNamespace:
  """`config.discover` with `DEFAULTS` for missing keys, checked before anything loads."""
  given = config.get("discover", None)
  unknown = sorted(set(dict(given or {})) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"discover.{unknown[0]} is not known; allowed: {sorted(DEFAULTS)}")
  settings = types.SimpleNamespace(**{**DEFAULTS, **dict(given or {})})
  how = ("train one first: python main.py --config=configs/<dataset>_<noise>.py:"
         "task=noisy_classifier --workdir=CLS_DIR, then pass "
         "--config.discover.classifier_dir=CLS_DIR")
  if not settings.classifier_dir:
    raise ValueError(f"task=discover needs discover.classifier_dir (a time-dependent "
                     f"classifier); {how}")
  try:
    noisy_classifier.check_export(settings.classifier_dir)
  except (ValueError, FileNotFoundError) as e:
    raise FileNotFoundError(f"discover.classifier_dir={settings.classifier_dir!r} has no "
                            f"exported classifier ({e}); {how}") from None
  try:
    settings.sigmas = _check_sigmas(settings.sigmas)
  except (TypeError, ValueError):
    raise ValueError(f"discover.sigmas={settings.sigmas!r} must be a non-empty tuple of "
                     f"positive noise levels, e.g. {DEFAULT_SIGMAS}") from None
  top_k = tuple(settings.top_k or ())
  if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in top_k):
    raise ValueError(f"discover.top_k={settings.top_k!r} must be a tuple of positive "
                     f"integers, e.g. {DEFAULT_TOP_K}")
  settings.top_k = top_k
  if not isinstance(settings.batch_size, int) or settings.batch_size < 1:
    raise ValueError(f"discover.batch_size={settings.batch_size!r} must be a positive integer")
  if not isinstance(settings.grid_count, int) or settings.grid_count < 0:
    raise ValueError(f"discover.grid_count={settings.grid_count!r} must be an integer >= 0 "
                     "(0: no suspects.png)")
  if not 0.0 < float(settings.assumed_rate) < 1.0:
    raise ValueError(f"discover.assumed_rate={settings.assumed_rate!r} must lie in (0, 1) "
                     "(with 0 every own-label weight is 1)")
  return settings


def choose_transition(config, classifier, splits, assumed_rate: float) -> tuple[np.ndarray, str]:
  """T for the weights and where it came from.

  noise rate 0 (or kind none): symmetric at `assumed_rate` (TDSM convention,
  other classes only); else the classifier's own T (known or learned), or the
  data's true T when the classifier carries none (`noisy_target`).
  """
  c = splits.num_classes
  if config.noise.kind == "none" or float(config.noise.rate) == 0.0:
    return noise.transition_matrix("sym", c, assumed_rate, convention="tdsm"), "assumed_symmetric"
  if getattr(classifier, "noisy_target", False):
    if splits.transition is None:
      raise ValueError(f"noise.kind={config.noise.kind!r} has no known transition and the "
                       "classifier was trained on the noisy labels (classifier.transition="
                       "'none'); train it with transition 'known' or 'learned'")
    return np.asarray(splits.transition, np.float64), "data"
  transition = np.asarray(classifier.transition, np.float64)
  if np.allclose(transition, np.eye(c), atol=1e-6):
    logging.warning("noise.rate=%g but the classifier's T is the identity (trained on clean "
                    "labels?): every own-label weight is 1 and the ranking is by index",
                    config.noise.rate)
  learned = getattr(classifier, "learned", False)
  return transition, "classifier_learned" if learned else "classifier"


def _finite(value: float) -> float | None:
  """NaN/Inf -> None (JSON null)."""
  return value if math.isfinite(value) else None


def _by_k(fn, scores, is_flipped, ks) -> dict[str, float | None]:
  return {str(k): _finite(fn(scores, is_flipped, k)) for k in ks}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, Any]:
  """task=discover: ranks the training set by own-label weight; writes the reports.

  No training happens: the classifier of `discover.classifier_dir` scores every
  training example (`suspect_scores`), the noisy labels being drawn from the
  seed exactly as in training (`prepare_splits`). Returns the flat metrics.
  """
  settings = discover_settings(config)
  train_loop.check_data_and_noise(config)
  start = time.time()
  classifier = noisy_classifier.load_export(settings.classifier_dir)
  splits = train_data.prepare_splits(config)
  if np.shape(classifier.transition) != (splits.num_classes, splits.num_classes):
    raise ValueError(f"the classifier of discover.classifier_dir={settings.classifier_dir!r} has "
                     f"{np.shape(classifier.transition)[0]} classes, the dataset "
                     f"{splits.num_classes}")
  transition, source = choose_transition(config, classifier, splits, settings.assumed_rate)
  mesh = mesh_lib.create_mesh(jax.local_devices() if devices is None else devices)
  batch_size = settings.batch_size
  shards = mesh_lib.num_data_shards(mesh)
  if batch_size % shards:
    batch_size = -(-batch_size // shards) * shards
    logging.info("discover.batch_size rounded up to %d (a multiple of %d devices)",
                 batch_size, shards)
  key = jax.random.fold_in(jax.random.PRNGKey(settings.seed), 17)
  scores = suspect_scores(classifier, splits.train_images, splits.train_labels,
                          settings.sigmas, key, batch_size, transition=transition, mesh=mesh)
  seconds = time.time() - start
  n = len(splits.train_labels)
  is_flipped = splits.train_labels != splits.train_clean_labels
  num_flipped = int(is_flipped.sum())
  ks = sorted({min(k, n) for k in settings.top_k} | ({num_flipped} if num_flipped else set()))
  named = {"weight": scores.weight, "confidence": scores.confidence}
  report = dict(
      num_examples=n, num_flipped=num_flipped, noise_kind=config.noise.kind,
      noise_rate=float(config.noise.rate), classifier_dir=settings.classifier_dir,
      weight_form="paper" if classifier.noisy_target else "released",
      transition_source=source, transition=transition.tolist(),
      sigmas=list(settings.sigmas), top_k=ks,
      precision_at_k={name: _by_k(precision_at_k, s, is_flipped, ks) for name, s in named.items()},
      recall_at_k={name: _by_k(recall_at_k, s, is_flipped, ks) for name, s in named.items()},
      average_precision={name: _finite(average_precision(s, is_flipped))
                         for name, s in named.items()},
      spearman_weight_confidence=_finite(spearman(scores.weight, scores.confidence)),
      random_precision=num_flipped / n, seconds=seconds)
  order = suspect_order(scores.weight)
  shown = order[:min(settings.grid_count, n)]
  suspects = [dict(index=int(i), given_label=int(splits.train_labels[i]),
                   clean_label=int(splits.train_clean_labels[i]), flipped=bool(is_flipped[i]),
                   prediction=int(scores.prediction[i]), weight=float(scores.weight[i]),
                   confidence=float(scores.confidence[i])) for i in shown]
  flat = {"num_examples": n, "num_flipped": num_flipped, "seconds": seconds,
          "spearman_weight_confidence": report["spearman_weight_confidence"] or float("nan")}
  for metric in ("precision_at_k", "recall_at_k"):
    for name, values in report[metric].items():
      for k, v in values.items():
        flat[f"{metric.replace('_at_k', '')}_at_{k}/{name}"] = float("nan") if v is None else v
  for name, v in report["average_precision"].items():
    flat[f"average_precision/{name}"] = float("nan") if v is None else v
  logging.info("discover: %d examples, %d flipped, %.1f s; %s", n, num_flipped, seconds,
               ", ".join(f"{k}={v:.4f}" for k, v in flat.items() if "/" in k))
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "discovery.json"), "w") as f:
      json.dump(report, f, indent=2)
    with open(os.path.join(workdir, "suspects.json"), "w") as f:
      json.dump(dict(order="lowest weight first", suspects=suspects), f, indent=2)
    images = splits.train_images[shown]
    if len(shown) and images.ndim == 4:
      if images.dtype != np.uint8:
        images = diffusion_lib.images_to_uint8(images)
      grid = writers.image_grid(images, num_columns=int(math.ceil(math.sqrt(len(shown)))))
      diffusion_lib.save_png(os.path.join(workdir, "suspects.png"), grid)
    np.savez_compressed(os.path.join(workdir, "scores.npz"), weight=scores.weight,
                        weight_per_sigma=scores.weight_per_sigma, sigmas=np.asarray(scores.sigmas),
                        confidence=scores.confidence, prediction=scores.prediction,
                        given_label=splits.train_labels, clean_label=splits.train_clean_labels)
    writers.write_metrics_json(os.path.join(workdir, "metrics.json"), flat)
  return flat
