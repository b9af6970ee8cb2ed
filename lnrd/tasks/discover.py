r"""`task="discover"`: noisy-label discovery with TDSM's transition-aware weights.

    python main.py --config=configs/mnist_sym.py:task=noisy_classifier,source=idx \
        --config.dataset.path=/work/shared/data/mnist --workdir=CLS_DIR
    python main.py --config=configs/mnist_sym.py:task=discover,source=idx \
        --config.dataset.path=/work/shared/data/mnist \
        --config.discover.classifier_dir=CLS_DIR --workdir=OUT

Scores every training example by the weight of its own label averaged over
`discover.sigmas` and by the classifier's confidence (`lnrd.discovery`), and
writes discovery.json, suspects.json, suspects.png, scores.npz and metrics.json
(see `lnrd.discovery` for the definitions).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from lnrd import discovery
from lnrd import images
from lnrd import runs as lnrd_runs
from lnrd.tasks import common as lnrd_common
from sgn_jax import errors
from sgn_jax import noise
from sgn_jax import runs
from sgn_jax.tasks import common
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers


def discover_settings(config: ml_collections.ConfigDict) -> discovery.DiscoverSettings:
  """`config.discover` as `lnrd.discovery.DiscoverSettings` (its defaults for absent
  keys), checked before anything loads."""
  given = config.get("discover", None)
  given = given.to_dict() if given is not None else {}
  known = {f.name for f in dataclasses.fields(discovery.DiscoverSettings)}
  unknown = sorted(set(given) - known)
  if unknown:
    raise ValueError(f"discover.{unknown[0]} is not known; allowed: {sorted(known)}")
  settings = discovery.DiscoverSettings(**given)
  how = ("train one first: python main.py --config=configs/<dataset>_<noise>.py:"
         "task=noisy_classifier --workdir=CLS_DIR, then pass "
         "--config.discover.classifier_dir=CLS_DIR")
  if not settings.classifier_dir:
    raise ValueError(f"task=discover needs discover.classifier_dir (a time-dependent "
                     f"classifier); {how}")
  lnrd_runs.check_classifier_export(settings.classifier_dir, "discover.classifier_dir")
  try:
    sigmas = discovery.check_sigmas(settings.sigmas)
  except (TypeError, ValueError):
    raise ValueError(f"discover.sigmas={settings.sigmas!r} must be a non-empty tuple of "
                     f"positive noise levels, e.g. {discovery.DEFAULT_SIGMAS}") from None
  top_k = tuple(settings.top_k or ())
  if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in top_k):
    raise ValueError(f"discover.top_k={settings.top_k!r} must be a tuple of positive "
                     f"integers, e.g. {discovery.DEFAULT_TOP_K}")
  if not isinstance(settings.batch_size, int) or settings.batch_size < 1:
    raise ValueError(f"discover.batch_size={settings.batch_size!r} must be a positive integer")
  if not isinstance(settings.grid_count, int) or settings.grid_count < 0:
    raise ValueError(f"discover.grid_count={settings.grid_count!r} must be an integer >= 0 "
                     "(0: no suspects.png)")
  if not 0.0 < float(settings.assumed_rate) < 1.0:
    raise ValueError(f"discover.assumed_rate={settings.assumed_rate!r} must lie in (0, 1) "
                     "(with 0 every own-label weight is 1)")
  return dataclasses.replace(settings, sigmas=sigmas, top_k=top_k,
                             assumed_rate=assumed_rate(settings, common.noise_spec(config)))


def assumed_rate(settings: discovery.DiscoverSettings, noise_spec) -> float:
  """The symmetric rate assumed for clean labels: `noise.assumed_rate` when set (the
  rate the classifier was trained with), else `discover.assumed_rate`. ValueError when
  both are set (discover's away from its default) and differ."""
  given = float(noise_spec.assumed_rate)
  if not given:
    return float(settings.assumed_rate)
  own = float(settings.assumed_rate)
  if own != discovery.DEFAULT_ASSUMED_RATE and own != given:
    raise ValueError(
        f"discover.assumed_rate={own} and noise.assumed_rate={given} differ: both give the "
        "symmetric T assumed for clean labels; set one of them (noise.assumed_rate, as the "
        "classifier was trained, or leave discover.assumed_rate at its default "
        f"{discovery.DEFAULT_ASSUMED_RATE})")
  return given


def choose_transition(noise_spec, classifier, splits, assumed_rate: float
                      ) -> tuple[np.ndarray, str]:
  """T for the weights and where it came from.

  noise rate 0 (or kind none): symmetric at `assumed_rate` (TDSM convention,
  other classes only; `noise.assumed_rate`'s convention when that is set); else the
  classifier's own T (known or learned), or the data's true T when the classifier
  carries none (`noisy_target`).
  """
  c = splits.num_classes
  if noise_spec.kind == "none" or float(noise_spec.rate) == 0.0:
    convention = noise_spec.convention if noise_spec.assumed_rate else "tdsm"
    return (noise.transition_matrix("sym", c, assumed_rate, convention=convention),
            "assumed_symmetric")
  if getattr(classifier, "noisy_target", False):
    if splits.transition is None:
      raise ValueError(f"noise.kind={noise_spec.kind!r} has no known transition and the "
                       "classifier was trained on the noisy labels (classifier.transition="
                       "'none'); train it with transition 'known' or 'learned'")
    return np.asarray(splits.transition, np.float64), "data"
  transition = np.asarray(classifier.transition, np.float64)
  if np.allclose(transition, np.eye(c), atol=1e-6):
    logging.warning("noise.rate=%g but the classifier's T is the identity (trained on clean "
                    "labels?): every own-label weight is 1 and the ranking is by index",
                    noise_spec.rate)
  learned = getattr(classifier, "learned", False)
  return transition, "classifier_learned" if learned else "classifier"


def _finite(value: float) -> float | None:
  """NaN/Inf -> None (JSON null)."""
  return value if math.isfinite(value) else None


def _by_k(fn, scores, is_flipped, ks) -> dict[str, float | None]:
  return {str(k): _finite(fn(scores, is_flipped, k)) for k in ks}


@runs.one_writer
@lnrd_common.with_matmul_precision
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, Any]:
  """task=discover: ranks the training set by own-label weight; writes the reports.

  No training happens: the classifier of `discover.classifier_dir` scores every
  training example (`suspect_scores`), the noisy labels being drawn from the
  seed exactly as in training (`prepare_splits`). Returns the flat metrics.
  """
  with errors.user_input():
    settings = discover_settings(config)
    common.check_data_and_noise(config)
    runs.check_not_inside(workdir, settings.classifier_dir, "discover.classifier_dir")
    allowed = common.check_resume(config, workdir, "discover", compare=())
    start = time.time()
    classifier = lnrd_runs.load_classifier(settings.classifier_dir, "discover.classifier_dir")
    noise_spec = common.noise_spec(config)
    splits = common.prepare_splits(config)
    if np.shape(classifier.transition) != (splits.num_classes, splits.num_classes):
      raise ValueError(f"discover.classifier_dir={settings.classifier_dir!r} has "
                       f"{np.shape(classifier.transition)[0]} classes, the dataset "
                       f"{splits.num_classes}")
    transition, source = choose_transition(noise_spec, classifier, splits,
                                           settings.assumed_rate)
    runs.start_run(workdir, config.to_dict(), dict(
        task="discover", classifier_dir=settings.classifier_dir), allowed)
  mesh = mesh_lib.create_mesh(jax.local_devices() if devices is None else devices)
  batch_size = settings.batch_size
  shards = mesh_lib.num_data_shards(mesh)
  if batch_size % shards:
    batch_size = -(-batch_size // shards) * shards
    logging.info("discover.batch_size rounded up to %d (a multiple of %d devices)",
                 batch_size, shards)
  key = jax.random.fold_in(jax.random.PRNGKey(settings.seed), 17)
  scores = discovery.suspect_scores(classifier, splits.train_images, splits.train_labels,
                                    settings.sigmas, key, batch_size, transition=transition,
                                    mesh=mesh)
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
      precision_at_k={name: _by_k(discovery.precision_at_k, s, is_flipped, ks)
                      for name, s in named.items()},
      recall_at_k={name: _by_k(discovery.recall_at_k, s, is_flipped, ks)
                   for name, s in named.items()},
      average_precision={name: _finite(discovery.average_precision(s, is_flipped))
                         for name, s in named.items()},
      spearman_weight_confidence=_finite(discovery.spearman(scores.weight, scores.confidence)),
      random_precision=num_flipped / n, seconds=seconds)
  order = discovery.suspect_order(scores.weight)
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
    suspect_images = splits.train_images[shown]
    if len(shown) and suspect_images.ndim == 4:
      if suspect_images.dtype != np.uint8:
        suspect_images = images.images_to_uint8(suspect_images)
      grid = writers.image_grid(suspect_images,
                                num_columns=int(math.ceil(math.sqrt(len(shown)))))
      images.save_png(os.path.join(workdir, "suspects.png"), grid)
    np.savez_compressed(os.path.join(workdir, "scores.npz"), weight=scores.weight,
                        weight_per_sigma=scores.weight_per_sigma, sigmas=np.asarray(scores.sigmas),
                        confidence=scores.confidence, prediction=scores.prediction,
                        given_label=splits.train_labels, clean_label=splits.train_clean_labels)
    writers.write_metrics_json(os.path.join(workdir, "metrics.json"), flat)
  return flat
