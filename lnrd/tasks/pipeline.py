r"""`task="pipeline"`: one config, the whole chain: [corrector ->] classifier -> diffusion -> evaluate.

    python main.py --config=configs/mnist_sym.py:task=pipeline,method=tdsm,corrector=sgn \
        --workdir=WORKDIR

Stages, each in its own folder of WORKDIR (a finished stage is skipped, a
killed one resumes from its checkpoints when the pipeline is started again):

  corrector/    (`pipeline.corrector`, e.g. "sgn") a classifier of `task=classify`
                trained on the noisy labels with that method: `pipeline.classify`,
                the classification config of the same config file (the argument
                `:corrector=sgn` puts it there), with this config's dataset keys
                and `pipeline.corrector_epochs` (0: its default); then
                `sgn_jax.corrector.correct_labels`
                writes corrector/corrected_labels.npz: its label for every training
                image and the estimated transition of those labels
  classifier/   (method tdsm) the time-dependent classifier, on the corrected
                labels with their estimated T when there is a corrector
  diffusion/    DSM or TDSM (`method`), on the corrected labels when there is a
                corrector, TDSM's weights from classifier/
  evaluate/     (`pipeline.evaluate`) `task=evaluate` of diffusion/

This is the TDSM paper's pipeline result (a noisy-label corrector followed by
TDSM); without a corrector it is the plain classifier -> TDSM chain. Every
other key of the config applies to the stage that uses it (`classifier.*`,
`network.*`, `evaluate.*`, ...). Each stage folder gets its own config.json.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from absl import logging

from lnrd.tasks import common as lnrd_common
from lnrd.tasks import diffusion as diffusion_task
from lnrd.tasks import evaluate as evaluate_task
from lnrd.tasks import noisy_classifier as classifier_task
from sgn_jax import corrector
from sgn_jax import errors
from sgn_jax import methods
from sgn_jax import runs
from sgn_jax.tasks import classify as classify_task
from sgn_jax.tasks import common

STAGES = ("corrector", "classifier", "diffusion", "evaluate")
DATASET_KEYS = ("path", "data_dir", "manual_dir", "download", "cifar_n_dir", "seed", "gmm",
                "train_subset")


def _finished(workdir: str) -> bool:
  if not os.path.exists(os.path.join(workdir, runs.CONFIG_FILE)):
    return False
  return runs.open_run(workdir).finished


def _stopped_early(results: dict, stage: str) -> bool:
  """True (with a warning) when the stage just run stopped before its end (preemption,
  stop_after_steps): the later stages need it finished."""
  if results.get(stage, {}).get("completed", 1.0):
    return False
  logging.warning("pipeline: the %s stage stopped early; rerun the pipeline to resume it", stage)
  return True


def corrector_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The corrector's classification config: `pipeline.classify` with this config's
  dataset location keys, labels file and `pipeline.corrector_epochs`."""
  p = config.pipeline
  cls = ml_collections.ConfigDict(p.classify.to_dict())
  for key in DATASET_KEYS:
    if key in config.dataset and key in cls.dataset:
      cls.dataset[key] = config.dataset[key]
  cls.noise.labels_file = config.noise.get("labels_file", "") or ""
  if p.corrector_epochs:
    cls.num_epochs = int(p.corrector_epochs)
  return cls


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the pipeline's own keys before any stage runs."""
  corrector_method = config.pipeline.corrector
  if corrector_method and corrector_method not in methods.METHODS:
    raise ValueError(f"pipeline.corrector={corrector_method!r} is not a classification method; "
                     f"allowed: '' (none) or {sorted(methods.METHODS)}")
  if corrector_method and "classify" not in config.pipeline:
    raise ValueError(f"pipeline.corrector={corrector_method!r} needs pipeline.classify, the "
                     "corrector's classification config: choose the corrector with the config "
                     f"argument, e.g. --config=configs/<file>.py:task=pipeline,method=tdsm,"
                     f"corrector={corrector_method}")
  if config.method not in ("dsm", "tdsm"):
    raise ValueError(f"method={config.method!r}; the pipeline trains dsm or tdsm")
  lnrd_common.matmul_precision(config)
  assumed = common.noise_spec(config).assumed_rate
  if corrector_method and assumed:
    raise ValueError(f"noise.assumed_rate={assumed} assumes a T for clean "
                     f"labels, but pipeline.corrector={corrector_method!r} gives the stages "
                     "corrected labels with their own estimated T: set noise.assumed_rate=0 "
                     "or pipeline.corrector=''")
  if corrector_method and config.dataset.source == "stream":
    raise ValueError("pipeline.corrector needs an in-memory dataset (not dataset.source=stream)")
  if corrector_method:
    classify_task.validate_config(corrector_config(config))
  if config.pipeline.evaluate and evaluate_task.uses_inception(config):
    evaluate_task.inception_weights_path(config)  # before hours of training, not after


@runs.one_writer
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, Any]:
  """Runs the stages of `config` in WORKDIR/<stage>; returns {stage: final metrics}."""
  with errors.user_input():
    validate_config(config)
    allowed = common.check_resume(config, workdir, "pipeline", compare=())
    runs.start_run(workdir, config.to_dict(), dict(task="pipeline"), allowed)
  results: dict[str, Any] = {}
  overrides: dict[str, Any] = {}
  if config.pipeline.corrector:
    folder = os.path.join(workdir, "corrector")
    if not _finished(folder):
      logging.info("pipeline: training the corrector (%s) in %s", config.pipeline.corrector,
                   folder)
      stage = classify_task.train_and_evaluate(corrector_config(config), folder, devices)
      if _stopped_early({"corrector": stage}, "corrector"):
        return results
    labels_file = os.path.join(folder, corrector.LABELS_FILE)
    if not os.path.exists(labels_file):
      results["corrector"] = corrector.correct_labels(
          folder, labels_file, floor=float(config.pipeline.corrector_floor),
          params=config.pipeline.get("corrector_params", "best"), devices=devices)
    else:
      results["corrector"] = runs.read_json(os.path.join(folder, corrector.REPORT_FILE))
    overrides["noise.labels_file"] = labels_file
  if config.method == "tdsm":
    folder = os.path.join(workdir, "classifier")
    if not _finished(folder):
      logging.info("pipeline: training the time-dependent classifier in %s", folder)
      stage = common.with_overrides(config, task="noisy_classifier", **overrides)
      results["classifier"] = classifier_task.train_and_evaluate(stage, folder, devices)
      if _stopped_early(results, "classifier"):
        return results
    overrides["tdsm.classifier_dir"] = folder
  folder = os.path.join(workdir, "diffusion")
  if not _finished(folder):
    logging.info("pipeline: training %s in %s", config.method.upper(), folder)
    stage = common.with_overrides(config, task="diffusion", **overrides)
    results["diffusion"] = diffusion_task.train_and_evaluate(stage, folder, devices)
    if _stopped_early(results, "diffusion"):
      return results
  if config.pipeline.evaluate:
    out = os.path.join(workdir, "evaluate")
    if not os.path.exists(os.path.join(out, runs.METRICS_FILE)):
      stage = common.with_overrides(config, task="evaluate", **{"evaluate.run_dir": folder})
      results["evaluate"] = evaluate_task.train_and_evaluate(stage, out, devices)
  return results
