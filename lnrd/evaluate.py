r"""The TDSM paper's metrics from a trained diffusion run (`task="evaluate"`).

    python main.py --config=configs/cifar10_sym.py:task=evaluate \
        --config.evaluate.run_dir=DIFFUSION_WORKDIR --workdir=OUT

1. Restores the EMA network of `evaluate.run_dir` (its latest checkpoint, or
   `evaluate.checkpoint_step`).
2. Samples `evaluate.per_class` images for every class with the run's EDM
   sampler settings (`sample.*`: Heun, 18 steps), `evaluate.batch_size` at a
   time, sharded over the devices. Each batch is saved to
   OUT/samples/batch_XXXXX.npz as it finishes, so a killed evaluation resumes
   where it stopped; progress (images/s, ETA) goes to the log and TensorBoard.
   With several processes each samples its own share of the batches (latents
   from the seed and the batch index, so the samples do not depend on the
   process or device count), and each extracts the features of its share of
   the images on its own devices before they are gathered
   (`features_all_processes`). The metrics are computed from the gathered
   features; for FID, whose float64 sufficient statistics could instead be
   summed across hosts, see `lnrd.metrics.frechet.merge_across_processes`.
3. The real reference: `evaluate.num_real` examples of the training set drawn
   once from `evaluate.seed` (all when 0), with their CLEAN labels, so that
   class-wise metrics compare each class with the real images of that class.
4. Features, for each net in `evaluate.feature_nets`:
     inception   the FID Inception (pool3, 2048-d; its 1008 logits give the
                 Inception Score when the weights have them), weights from
                 `evaluate.inception_weights` (`lnrd.metrics.inception_weights`);
     classifier  the penultimate layer of a time-dependent classifier trained on
                 CLEAN labels (`task=noisy_classifier` with rate=0), read at
                 sigma = 0.002 (`evaluate.feature_classifier_dir`): for MNIST,
                 whose upsampled digits give weak Inception features.
5. Metrics (keys of OUT/metrics.json; OUT/evaluation.json adds the run, the
   checkpoint and the sampler settings), per feature net f:
     f/fid, f/density, f/coverage            all samples vs the real reference
     f/cw_fid, f/cw_density, f/cw_coverage   per class vs the real images of that
                                             class, averaged over classes
     inception/is                            Inception Score, 10 splits
     cas/accuracy                            CAS: a classifier trained from scratch
                                             on the samples and their conditioning
                                             labels, accuracy on the real test set
   Density and coverage use k = `evaluate.k` (5) nearest neighbours. The metrics
   to compute are `evaluate.metrics` (any of fid, is, density_coverage, cw_fid,
   cw_density_coverage, cas). Also written: OUT/samples.png (a grid of the first
   samples of up to 10 classes) and TensorBoard scalars.
"""

from __future__ import annotations

import glob
import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from lnrd import diffusion as diffusion_lib
from lnrd import sampler as sampler_lib
from lnrd.metrics import density_coverage as dc_lib
from lnrd.metrics import frechet
from lnrd.metrics import sharded_eval
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers

METRICS = ("fid", "is", "density_coverage", "cw_fid", "cw_density_coverage", "cas")
FEATURE_NETS = ("inception", "classifier")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks `config.evaluate` before anything is loaded; errors name the key."""
  e = config.evaluate
  if not e.run_dir:
    raise ValueError("task=evaluate needs evaluate.run_dir, the workdir of a diffusion run "
                     "(--config.evaluate.run_dir=DIR)")
  if not os.path.isdir(os.path.join(e.run_dir, "checkpoints")):
    raise FileNotFoundError(f"evaluate.run_dir={e.run_dir!r} has no checkpoints/ folder; "
                            "train it first with task=diffusion")
  for key in ("per_class", "batch_size", "k"):
    if int(e[key]) < 1:
      raise ValueError(f"evaluate.{key}={e[key]} must be >= 1")
  if int(e.num_real) < 0:
    raise ValueError(f"evaluate.num_real={e.num_real} must be >= 0 (0: all)")
  unknown = set(e.metrics) - set(METRICS)
  if unknown:
    raise ValueError(f"evaluate.metrics has unknown {sorted(unknown)}; allowed: {list(METRICS)}")
  unknown = set(e.feature_nets) - set(FEATURE_NETS)
  if unknown:
    raise ValueError(f"evaluate.feature_nets has unknown {sorted(unknown)}; "
                     f"allowed: {list(FEATURE_NETS)}")
  feature_metrics = set(e.metrics) - {"cas"}
  if feature_metrics and not e.feature_nets:
    raise ValueError(f"evaluate.metrics {sorted(feature_metrics)} need evaluate.feature_nets")
  if "classifier" in e.feature_nets:
    from lnrd import noisy_classifier  # pylint: disable=g-import-not-at-top
    if not e.feature_classifier_dir:
      raise ValueError(
          "evaluate.feature_nets has 'classifier' but evaluate.feature_classifier_dir is "
          "empty: train a classifier on CLEAN labels first (python main.py "
          "--config=configs/<dataset>_sym.py:task=noisy_classifier,rate=0 --workdir=DIR)")
    noisy_classifier.check_export(e.feature_classifier_dir)
  if "is" in e.metrics and "inception" not in e.feature_nets:
    raise ValueError("evaluate.metrics has 'is' (Inception Score), which needs 'inception' "
                     "in evaluate.feature_nets")


# ---- sampling -----------------------------------------------------------------

class _Progress:
  """Logs images/s and the ETA of a long loop, and writes the rate to TensorBoard."""

  def __init__(self, what: str, total: int, writer=None, every_seconds: float = 30.0):
    self.what, self.total, self.writer = what, total, writer
    self.every = every_seconds
    self.start = self.last = time.time()
    self.first_done: int | None = None

  def __call__(self, done: int, _total: int | None = None) -> None:
    if self.first_done is None:
      self.first_done = done
      self.start = time.time()
      return
    now = time.time()
    if now - self.last < self.every and done < self.total:
      return
    self.last = now
    rate = (done - self.first_done) / max(now - self.start, 1e-9)
    eta = (self.total - done) / rate if rate > 0 else float("inf")
    logging.info("%s: %d/%d (%.1f%%) | %.1f img/s | ETA %dm%02ds", self.what, done,
                 self.total, 100.0 * done / self.total, rate, int(eta // 60), int(eta % 60))
    if self.writer is not None:
      self.writer.write_scalars(done, {f"evaluate/{self.what}_per_second": rate})


def crop_to(images: np.ndarray, shape) -> np.ndarray:
  """Center-crop NHWC samples to the data's (H, W) (undoes `train_loop.to_model_range`'s
  zero padding, e.g. MNIST 32x32 -> 28x28)."""
  h, w = int(shape[0]), int(shape[1])
  top = (images.shape[1] - h) // 2
  left = (images.shape[2] - w) // 2
  return images[:, top:top + h, left:left + w]


def sample_in_batches(diffusion: diffusion_lib.Diffusion, variables, labels: np.ndarray,
                      key, sampler_config, batch_size: int, folder: str,
                      progress: Callable | None = None) -> np.ndarray:
  """Samples for int `labels`, one saved batch at a time; returns model-range samples.

  Batch i covers labels[i*B:(i+1)*B], draws its latents from fold_in(key, i)
  and is stored in folder/batch_{i:05d}.npz; stored batches are loaded instead
  of being sampled again. With several processes, process p samples the
  batches i = p, p + P, ... and every process then reads all of them (the
  folder must be shared, e.g. a bucket or NFS).
  """
  os.makedirs(folder, exist_ok=True)
  num_batches = -(-len(labels) // batch_size)
  done = 0
  for i in range(num_batches):
    path = os.path.join(folder, f"batch_{i:05d}.npz")
    chunk = labels[i * batch_size:(i + 1) * batch_size]
    if not os.path.exists(path) and i % jax.process_count() == jax.process_index():
      samples = diffusion.sample(variables, chunk, jax.random.fold_in(key, i), sampler_config,
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
    with np.load(os.path.join(folder, f"batch_{i:05d}.npz")) as data:
      if not np.array_equal(data["labels"], labels[i * batch_size:(i + 1) * batch_size]):
        raise ValueError(f"{folder}/batch_{i:05d}.npz was made with other labels (another "
                         "per_class or batch_size); use a fresh workdir")
      out.append(data["samples"])
  return np.concatenate(out)


# ---- features -----------------------------------------------------------------

def _feature_nets(config) -> dict[str, tuple[Callable, Any]]:
  """name -> (fn, params): jittable `fn(params, images_uint8 (B, H, W, C))` ->
  {"features": (B, D)[, "logits": (B, 1008)]} and the net's variables."""
  e = config.evaluate
  nets: dict[str, tuple[Callable, Any]] = {}
  for name in e.feature_nets:
    if name == "inception":
      from lnrd.metrics import inception  # pylint: disable=g-import-not-at-top
      net = inception.InceptionFeatures.load(e.inception_weights or None)

      def inception_fn(variables, images, net=net):
        out = net.module.apply(variables, inception.preprocess(images, net.mode))
        result = {"features": out["pool3"]}
        if "logits" in out:
          result["logits"] = out["logits"]
        return result
      nets[name] = (inception_fn, net.variables)
    else:
      from lnrd.metrics import classifier_features  # pylint: disable=g-import-not-at-top
      net = classifier_features.ClassifierFeatures.load(e.feature_classifier_dir)

      def classifier_fn(variables, images, net=net):
        return {"features": net._features_and_logits(images, variables)[0]}  # pylint: disable=protected-access
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


def evaluate(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict[str, Any]:
  """Samples from `config.evaluate.run_dir` and writes the metric table to `workdir`."""
  validate_config(config)
  e = config.evaluate
  mesh = mesh_lib.create_mesh(devices if devices is not None else
                              (jax.local_devices() if jax.process_count() > 1 else None))
  run_config = diffusion_lib.load_run_config(e.run_dir)
  step = e.get("checkpoint_step")
  diffusion, variables, data = diffusion_lib.restore_ema_params(
      run_config, e.run_dir, mesh, step=step if step is not None and step >= 0 else None)
  if len(diffusion.input_shape) != 3:
    raise ValueError(f"evaluate needs an image dataset; {e.run_dir!r} trains on vectors")
  num_classes = diffusion.num_classes
  writer = writers.create_writer(workdir)
  labels = sampler_lib.class_balanced_labels(int(e.per_class), num_classes)
  sample_config = ml_collections.ConfigDict(config.sample.to_dict())
  start = time.time()
  samples = sample_in_batches(
      diffusion, variables, labels, jax.random.PRNGKey(e.seed), sample_config,
      int(e.batch_size), os.path.join(workdir, "samples"),
      _Progress("samples", len(labels), writer))
  sample_seconds = time.time() - start
  fake = crop_to(diffusion_lib.images_to_uint8(samples), data.input_shape)
  real, real_labels = real_reference(data.splits, int(e.num_real), int(e.seed))
  logging.info("%d samples (%d per class) vs %d real training images", len(fake),
               e.per_class, len(real))

  results: dict[str, Any] = {}
  start = time.time()
  for name, (fn, params) in _feature_nets(config).items():
    f_fake = features_all_processes(fn, fake, int(e.feature_batch_size), mesh, params,
                                    _Progress(f"{name}_features_fake", len(fake)))
    f_real = features_all_processes(fn, real, int(e.feature_batch_size), mesh, params,
                                    _Progress(f"{name}_features_real", len(real)))
    results.update(feature_metrics(f_real["features"], real_labels, f_fake["features"], labels,
                                   num_classes, e.metrics, int(e.k), prefix=f"{name}/"))
    if name == "inception" and "is" in e.metrics:
      if "logits" not in f_fake:
        logging.warning("the Inception weights have no 1008-way logits (e.g. the TorchScript "
                        "port): no Inception Score; use pytorch-fid's .pth for it")
      else:
        from lnrd.metrics import inception_score  # pylint: disable=g-import-not-at-top
        results["inception/is"] = float(inception_score.inception_score(
            f_fake["logits"], num_splits=10, from_logits=True))
  feature_seconds = time.time() - start
  if "cas" in e.metrics:
    from lnrd.metrics import cas  # pylint: disable=g-import-not-at-top
    c = e.cas
    cas_result = cas.classification_accuracy_score(
        fake, labels, data.splits.test_images, data.splits.test_labels,
        dataset=run_config.dataset.name, workdir=workdir,
        arch=c.arch or None, epochs=int(c.epochs) or None,
        batch_size=int(c.batch_size) or None, learning_rate=float(c.learning_rate) or None,
        seed=int(e.seed), devices=list(mesh.devices.flat))
    results["cas/accuracy"] = float(cas_result["accuracy"])

  final = {
      **results,
      "run_dir": e.run_dir,
      "method": run_config.method,
      "checkpoint_kimg": _checkpoint_kimg(e.run_dir, run_config, step),
      "num_samples": int(len(fake)),
      "num_real": int(len(real)),
      "sample_seconds": sample_seconds,
      "feature_seconds": feature_seconds,
      "sampler": sample_config.to_dict(),
  }
  writer.write_scalars(0, {k: v for k, v in results.items()})
  if jax.process_index() == 0:
    shown = labels < 10
    per_row = min(int(e.per_class), 16)
    keep = shown & (np.arange(len(labels)) % int(e.per_class) < per_row)
    grid = writers.image_grid(fake[keep], num_columns=per_row)
    diffusion_lib.save_png(os.path.join(workdir, "samples.png"), grid)
    writer.write_images(0, {"evaluate/samples": grid[None]})
    with open(os.path.join(workdir, "evaluation.json"), "w") as f:  # with the run's facts
      json.dump(final, f, indent=2, sort_keys=True)
    writers.write_metrics_json(os.path.join(workdir, "metrics.json"), {
        k: v for k, v in final.items() if isinstance(v, (int, float))})
  writer.close()
  logging.info("metrics: %s", json.dumps(results, indent=1, sort_keys=True))
  return final


def _checkpoint_kimg(run_dir: str, run_config, step) -> float:
  if step is None or step < 0:
    steps = [int(os.path.basename(p)) for p in glob.glob(os.path.join(run_dir, "checkpoints", "*"))
             if os.path.basename(p).isdigit()]
    step = max(steps) if steps else 0
  return step * run_config.batch_size / 1000.0


train_and_evaluate = evaluate  # the name main.py's task table uses for every task
