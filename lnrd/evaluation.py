r"""The TDSM paper's evaluation of a diffusion model, as functions (`task=evaluate` runs them).

  sample_in_batches       samples per class in saved, resumable batches
  feature_nets            the FID Inception and a clean classifier's penultimate layer
  compute_features        a feature net over an image set in padded sharded batches
  features_all_processes  the same with the rows split over processes, all-gathered
  feature_metrics         FID, Density/Coverage and their class-wise averages
  real_reference          the real images (with CLEAN labels) to compare with
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np

from lnrd.metrics import density_coverage as dc_lib
from lnrd.metrics import frechet
from lnrd.metrics import sharded_eval
from sgn_jax import safe_load
from sgn_jax.training import mesh as mesh_lib

METRICS = ("fid", "is", "density_coverage", "cw_fid", "cw_density_coverage", "cas")
FEATURE_NETS = ("inception", "classifier")


# ---- sampling -----------------------------------------------------------------

def sample_in_batches(model, labels: np.ndarray, key, mesh, settings, batch_size: int,
                      folder: str, progress: Callable | None = None) -> np.ndarray:
  """Samples for int `labels`, one saved batch at a time; returns model-range samples.

  `model`: a `lnrd.runs.DiffusionModel` (its `sample(labels, key, mesh, settings,
  batch_size)` draws one batch). Batch i covers labels[i*B:(i+1)*B], draws its
  latents from fold_in(key, i) and is stored in folder/batch_{i:05d}.npz; stored
  batches are loaded instead of being sampled again. With several processes,
  process p samples the batches i = p, p + P, ... and every process then reads
  all of them (the folder must be shared, e.g. a bucket or NFS).
  """
  os.makedirs(folder, exist_ok=True)
  num_batches = -(-len(labels) // batch_size)
  redo = "delete it and run the same command again: that batch is sampled again"
  for i in range(num_batches):  # batches stored by an earlier call, checked before sampling
    path = os.path.join(folder, f"batch_{i:05d}.npz")
    if os.path.exists(path):
      safe_load.check_npz(path, fix=redo)
  done = 0
  for i in range(num_batches):
    path = os.path.join(folder, f"batch_{i:05d}.npz")
    chunk = labels[i * batch_size:(i + 1) * batch_size]
    if not os.path.exists(path) and i % jax.process_count() == jax.process_index():
      samples = model.sample(chunk, jax.random.fold_in(key, i), mesh, settings,
                             batch_size=batch_size)
      np.savez(path + ".tmp.npz", samples=samples, labels=chunk)
      os.replace(path + ".tmp.npz", path)  # a killed write never leaves a partial batch
    done += len(chunk)
    if progress is not None:
      progress(done, len(labels))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("lnrd_evaluate_samples")
  out = []
  for i in range(num_batches):
    with safe_load.open_npz(os.path.join(folder, f"batch_{i:05d}.npz")) as data:  # allow_pickle=False
      if not np.array_equal(data["labels"], labels[i * batch_size:(i + 1) * batch_size]):
        raise ValueError(f"{folder}/batch_{i:05d}.npz was made with other labels (another "
                         "per_class or batch_size); use a fresh workdir")
      out.append(data["samples"])
  return np.concatenate(out)


# ---- features -----------------------------------------------------------------

def feature_nets(names, *, inception_weights: str | None = None,
                 classifier_dir: str | None = None,
                 inception_variables: Any = None) -> dict[str, tuple[Callable, Any]]:
  """name -> (fn, params): jittable `fn(params, images_uint8 (B, H, W, C))` ->
  {"features": (B, D)[, "logits": (B, 1008)]} and the net's variables.

  `inception`: the FID Inception (its variables `inception_variables` when given, else
  loaded from `inception_weights`, None: the default of `lnrd.metrics.inception_weights`);
  `classifier`: the penultimate layer of the time-dependent classifier exported in
  `classifier_dir` (trained on clean labels).
  """
  unknown = set(names) - set(FEATURE_NETS)
  if unknown:
    raise ValueError(f"unknown feature nets {sorted(unknown)}; allowed: {list(FEATURE_NETS)}")
  nets: dict[str, tuple[Callable, Any]] = {}
  for name in names:
    if name == "inception":
      from lnrd.metrics import inception  # pylint: disable=g-import-not-at-top
      net = (inception.InceptionFeatures(inception_variables) if inception_variables is not None
             else inception.InceptionFeatures.load(inception_weights or None))

      def inception_fn(variables, images, net=net):
        out = net.module.apply(variables, inception.preprocess(images, net.mode))
        result = {"features": out["pool3"]}
        if "logits" in out:
          result["logits"] = out["logits"]
        return result
      nets[name] = (inception_fn, net.variables)
    else:
      from lnrd.metrics import classifier_features  # pylint: disable=g-import-not-at-top
      net = classifier_features.ClassifierFeatures.load(classifier_dir)

      def classifier_fn(variables, images, net=net):
        return {"features": net.features_and_logits_fn(images, variables)[0]}
      nets[name] = (classifier_fn, net.exported.variables)
  return nets


def compute_features(fn: Callable, images: np.ndarray, batch_size: int, mesh,
                     params: Any = None, progress: Callable | None = None
                     ) -> dict[str, np.ndarray]:
  """fn over all `images` in padded, sharded batches (`sharded_eval.map_batches`),
  each example exactly once, float32 on the host; `params` (replicated) is fn's
  first argument when given."""
  devices = mesh_lib.num_data_shards(mesh)
  batch = max(devices, (batch_size // devices) * devices)
  out = sharded_eval.map_batches(fn, images, batch, mesh, progress=progress, params=params)
  return {k: np.asarray(v, np.float32) for k, v in out.items()}


def split_rows(n: int, num_processes: int, index: int) -> np.ndarray:
  """The rows i = index, index + P, ... of n that process `index` of P handles."""
  return np.arange(index, n, num_processes)


def merge_rows(parts: list[np.ndarray], n: int) -> np.ndarray:
  """Inverse of `split_rows`: parts[p] holds rows p, p + P, ... (possibly padded
  at the end); returns the n rows in their original order."""
  num = len(parts)
  out = np.empty((n,) + parts[0].shape[1:], parts[0].dtype)
  for p, part in enumerate(parts):
    rows = split_rows(n, num, p)
    out[rows] = part[:len(rows)]
  return out


def features_all_processes(fn: Callable, images: np.ndarray, batch_size: int, mesh,
                           params: Any = None, progress: Callable | None = None
                           ) -> dict[str, np.ndarray]:
  """`compute_features` of all images, the work split over processes: process p
  extracts rows p, p + P, ... on its own devices (`mesh` of its local devices),
  then every process receives every row (`process_allgather`) in order."""
  num = jax.process_count()
  if num == 1:
    return compute_features(fn, images, batch_size, mesh, params, progress)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  n = len(images)
  rows = split_rows(n, num, jax.process_index())
  per_process = -(-n // num)
  local = compute_features(fn, images[rows], batch_size, mesh, params, progress)
  merged = {}
  for key, value in local.items():
    padded = np.zeros((per_process,) + value.shape[1:], value.dtype)
    padded[:len(value)] = value
    gathered = np.asarray(multihost_utils.process_allgather(padded, tiled=False))
    merged[key] = merge_rows(list(gathered), n)
  return merged


# ---- metrics ------------------------------------------------------------------

def feature_metrics(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray,
                    fake_labels: np.ndarray, num_classes: int, metrics, k: int = 5,
                    prefix: str = "") -> dict[str, float]:
  """FID, Density/Coverage and their class-wise averages on one feature space."""
  result: dict[str, float] = {}
  if "fid" in metrics:
    result[f"{prefix}fid"] = frechet.fid(real, fake)
  if "density_coverage" in metrics:
    dc = dc_lib.density_coverage(real, fake, k=k)
    result[f"{prefix}density"] = float(dc["density"])
    result[f"{prefix}coverage"] = float(dc["coverage"])
  if "cw_fid" in metrics:
    result[f"{prefix}cw_fid"] = dc_lib.classwise(frechet.fid, real, real_labels, fake,
                                                 fake_labels, num_classes)
  if "cw_density_coverage" in metrics:
    cw = dc_lib.classwise(lambda r, f: dc_lib.density_coverage(r, f, k=k), real, real_labels,
                          fake, fake_labels, num_classes)
    result[f"{prefix}cw_density"] = cw["density"]
    result[f"{prefix}cw_coverage"] = cw["coverage"]
  return result


def real_reference(splits, num_real: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(images, clean labels) of `num_real` training examples of `splits`
  (`sgn_jax.train_data.Splits`) drawn once from `seed` (all of them, in order,
  when num_real is 0 or at least the training set)."""
  images, labels = splits.train_images, splits.train_clean_labels
  if num_real and num_real < len(labels):
    rows = np.sort(np.random.default_rng(seed).choice(len(labels), num_real, replace=False))
    return images[rows], labels[rows]
  return images, labels


