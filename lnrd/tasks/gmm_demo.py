r"""`task="gmm_demo"`: DSM vs TDSM on a noisily labelled 2-D Gaussian mixture (the quick start).

    python main.py --config=configs/gmm2d.py --workdir=/tmp/gmm2d

Runs the whole TDSM chain on the synthetic mixture of `configs/gmm2d.py` (4
classes, 40% symmetric label noise by default), each stage with the library's
own task and its own sub-workdir:

  classifier/   the time-dependent noisy-label classifier (forward-corrected, known T)
  dsm/          class-conditional DSM on the noisy labels
  tdsm/         TDSM with the classifier's weights (estimator `tdsm.estimator`)
  tdsm_exact/   TDSM with the exact mixture posteriors as weights (an oracle; optional)

then draws `demo.samples_per_class` samples per class from each EMA network and
measures, per class, the sliced Wasserstein distance SW_2 to fresh samples of
the CLEAN class-conditional distribution. Writes WORKDIR/metrics.json,
weight_contours.png (w(x_t, y~, y, t) at several sigma, exact and learned, as
on the poster) and samples.png (clean data, noisy-labelled data, DSM, TDSM).
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from lnrd import plots
from lnrd import runs as lnrd_runs
from lnrd import weights as weights_lib
from lnrd.metrics import sliced_wasserstein
from lnrd.tasks import common as lnrd_common
from lnrd.tasks import diffusion as diffusion_task
from lnrd.tasks import noisy_classifier as classifier_task
from sgn_jax import errors
from sgn_jax import runs
from sgn_jax.data import gmm as gmm_lib
from sgn_jax.tasks import common
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers


@runs.one_writer
@lnrd_common.with_matmul_precision
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, Any]:
  """Classifier, DSM, TDSM (and oracle TDSM) on the mixture; SW_2 per class; figures."""
  with errors.user_input():
    if config.dataset.name != "gmm2d":
      raise ValueError(f"task=gmm_demo runs on dataset gmm2d, not {config.dataset.name!r}")
    allowed = common.check_resume(config, workdir, "gmm_demo", compare=())
    runs.start_run(workdir, config.to_dict(), dict(task="gmm_demo"), allowed)
  start = time.time()
  mesh = mesh_lib.create_mesh(devices)
  mixture = gmm_lib.mixture_from_fields(config.dataset.gmm.to_dict())
  num_classes = config.num_classes
  paths = {name: os.path.join(workdir, name)
           for name in ("classifier", "dsm", "tdsm", "tdsm_exact")}

  cls_config = common.with_overrides(config, task="noisy_classifier")
  cls_metrics = classifier_task.train_and_evaluate(cls_config, paths["classifier"], devices)
  stages = [("dsm", dict(method="dsm")),
            ("tdsm", dict(method="tdsm", **{"tdsm.weight_source": "classifier",
                                            "tdsm.classifier_dir": paths["classifier"]}))]
  if config.demo.exact_weights:
    stages.append(("tdsm_exact", dict(method="tdsm", **{"tdsm.weight_source": "exact"})))

  ref_key, sample_key = jax.random.split(jax.random.PRNGKey(config.seed + 1000))
  n_ref = config.demo.samples_per_class * num_classes
  reference, reference_labels = (np.asarray(a) for a in mixture.sample(ref_key, 4 * n_ref))
  labels = np.repeat(np.arange(num_classes), config.demo.samples_per_class).astype(np.int32)
  results: dict[str, Any] = {"classifier": cls_metrics}
  samples_by_stage = {}
  for name, changes in stages:
    stage_config = common.with_overrides(config, task="diffusion", **changes)
    train_metrics = diffusion_task.train_and_evaluate(stage_config, paths[name], devices)
    model = lnrd_runs.load_diffusion(paths[name], mesh=mesh)
    samples = model.sample(labels, sample_key, mesh, lnrd_common.sampler_settings(config))
    samples_by_stage[name] = samples
    sw = sliced_wasserstein.classwise_sliced_wasserstein(
        samples, labels, reference, reference_labels, num_classes)
    results[name] = {"sw_per_class": sw, "sw_mean": sw["mean"],
                     "train_loss": train_metrics.get("train/loss")}
    logging.info("%s: mean per-class SW_2 to the clean classes %.4f", name, sw["mean"])

  # What DSM is fitting: the noisy-label class distributions of the training set.
  data = common.prepare_splits(config)
  noisy_sw = sliced_wasserstein.classwise_sliced_wasserstein(
      data.train_images, data.train_labels, reference, reference_labels, num_classes)
  results["noisy_training_data"] = {"sw_per_class": noisy_sw, "sw_mean": noisy_sw["mean"]}
  results["tdsm_over_dsm_sw"] = results["tdsm"]["sw_mean"] / results["dsm"]["sw_mean"]
  results["seconds"] = time.time() - start

  if jax.process_index() == 0:
    _figures(config, workdir, mixture, data, samples_by_stage, labels, paths)
    writers.write_metrics_json(os.path.join(workdir, "metrics.json"),
                               writers.flatten_metrics(results))
  logging.info("DSM SW_2 %.4f, TDSM SW_2 %.4f (noisy data %.4f) in %.0f s",
               results["dsm"]["sw_mean"], results["tdsm"]["sw_mean"], noisy_sw["mean"],
               results["seconds"])
  return results


def _figures(config, workdir, mixture, data, samples_by_stage, labels, paths) -> None:
  transition = data.transition
  consts = weights_lib.transition_constants(transition)
  classifier = lnrd_runs.load_classifier(paths["classifier"])

  def exact(x, sigma, noisy):
    return mixture.clean_given_noisy_posterior(x, noisy, transition, sigma)

  def learned(x, sigma, noisy):
    return weights_lib.compute_weights("released", classifier.probs(x, sigma), noisy, consts)

  plots.weight_contours(os.path.join(workdir, "weight_contours.png"),
                        [("exact", exact), ("classifier", learned)],
                        tuple(config.demo.contour_sigmas), config.demo.noisy_label,
                        config.num_classes)
  panels = [("clean data (true labels)", data.train_images, data.train_clean_labels),
            ("training data (noisy labels)", data.train_images, data.train_labels)]
  panels += [(f"{name} samples", s, labels) for name, s in samples_by_stage.items()]
  plots.scatter_by_class(os.path.join(workdir, "samples.png"), None, None, panels=panels)
