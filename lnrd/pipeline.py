r"""One config, the whole chain: [corrector ->] classifier -> diffusion -> evaluate.

    python main.py --config=configs/mnist_sym.py:task=pipeline,method=tdsm,corrector=sgn \
        --workdir=WORKDIR

Stages, each in its own folder of WORKDIR (a finished stage is skipped, a
killed one resumes from its checkpoints when the pipeline is started again):

  corrector/    (`pipeline.corrector`, e.g. "sgn") a classifier of `task=classify`
                trained on the noisy labels with that method, the classification
                config of the same dataset and noise (`pipeline.corrector_epochs`,
                0: that config's default); then `sgn_jax.corrector.correct_labels`
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

import json
import os
from typing import Any

import jax
import ml_collections
from absl import logging
from etils import epath

STAGES = ("corrector", "classifier", "diffusion", "evaluate")


def _finished(workdir: str) -> bool:
  path = os.path.join(workdir, "metrics.json")
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f).get("completed", 1.0) == 1.0


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    (epath.Path(workdir) / "config.json").write_text(
        config.to_json_best_effort(indent=2, sort_keys=True))


def _stage_config(config: ml_collections.ConfigDict, task: str, **dotted):
  """A copy of the pipeline config with `task` and the `a.b=value` overrides."""
  from lnrd import train_loop  # pylint: disable=g-import-not-at-top
  stage = train_loop.with_overrides(config, **dotted)
  stage.task = task
  return stage


def corrector_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The classification config of the corrector: same dataset, noise and seed."""
  from configs import common  # pylint: disable=g-import-not-at-top
  p = config.pipeline
  arg = (f"method={p.corrector},rate={config.noise.rate},seed={config.seed},"
         f"source={config.dataset.source},convention={config.noise.convention},"
         f"subset={config.dataset.train_subset}")
  if p.corrector_epochs:
    arg += f",epochs={int(p.corrector_epochs)}"
  cls = common.classification_config(config.dataset.name, config.noise.kind, arg)
  for key in ("path", "data_dir", "manual_dir", "download", "cifar_n_dir", "seed", "gmm"):
    if key in config.dataset:
      cls.dataset[key] = config.dataset[key]
  if config.noise.get("labels_file"):
    cls.noise.labels_file = config.noise.labels_file
  return cls


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the pipeline's own keys before any stage runs."""
  from sgn_jax import methods  # pylint: disable=g-import-not-at-top
  corrector = config.pipeline.corrector
  if corrector and corrector not in methods.METHODS:
    raise ValueError(f"pipeline.corrector={corrector!r} is not a classification method; "
                     f"allowed: '' (none) or {sorted(methods.METHODS)}")
  if config.method not in ("dsm", "tdsm"):
    raise ValueError(f"method={config.method!r}; the pipeline trains dsm or tdsm")
  if corrector and config.dataset.source == "stream":
    raise ValueError("pipeline.corrector needs an in-memory dataset (not dataset.source=stream)")


def run(config: ml_collections.ConfigDict, workdir: str, devices=None) -> dict[str, Any]:
  """Runs the stages of `config` in WORKDIR/<stage>; returns {stage: final metrics}."""
  from lnrd import diffusion  # pylint: disable=g-import-not-at-top
  from lnrd import noisy_classifier  # pylint: disable=g-import-not-at-top
  validate_config(config)
  results: dict[str, Any] = {}
  overrides: dict[str, Any] = {}
  if config.pipeline.corrector:
    from sgn_jax import classification  # pylint: disable=g-import-not-at-top
    from sgn_jax import corrector  # pylint: disable=g-import-not-at-top
    folder = os.path.join(workdir, "corrector")
    cls_config = corrector_config(config)
    classification.validate_config(cls_config)
    if not _finished(folder):
      logging.info("pipeline: training the corrector (%s) in %s", config.pipeline.corrector,
                   folder)
      _write_config(cls_config, folder)
      classification.train_and_evaluate(cls_config, folder, devices)
    labels_file = os.path.join(folder, corrector.LABELS_FILE)
    if not os.path.exists(labels_file):
      results["corrector"] = corrector.correct_labels(
          folder, labels_file, floor=float(config.pipeline.corrector_floor),
          params=config.pipeline.get("corrector_params", "best"), devices=devices)
    else:
      with open(os.path.join(folder, corrector.REPORT_FILE)) as f:
        results["corrector"] = json.load(f)
    overrides["noise.labels_file"] = labels_file
  if config.method == "tdsm":
    folder = os.path.join(workdir, "classifier")
    stage = _stage_config(config, "noisy_classifier", **overrides)
    if not _finished(folder):
      logging.info("pipeline: training the time-dependent classifier in %s", folder)
      _write_config(stage, folder)
      results["classifier"] = noisy_classifier.train_and_evaluate(stage, folder, devices)
    overrides["tdsm.classifier_dir"] = folder
  folder = os.path.join(workdir, "diffusion")
  stage = _stage_config(config, "diffusion", **overrides)
  if not _finished(folder):
    logging.info("pipeline: training %s in %s", config.method.upper(), folder)
    _write_config(stage, folder)
    results["diffusion"] = diffusion.train_and_evaluate(stage, folder, devices)
    if not results["diffusion"].get("completed", 1.0):
      logging.warning("pipeline: the diffusion run stopped early; rerun to resume")
      return results
  if config.pipeline.evaluate:
    from lnrd import evaluate  # pylint: disable=g-import-not-at-top
    out = os.path.join(workdir, "evaluate")
    stage = _stage_config(config, "evaluate", **{"evaluate.run_dir": folder})
    if not os.path.exists(os.path.join(out, "metrics.json")):
      _write_config(stage, out)
      results["evaluate"] = evaluate.evaluate(stage, out, devices)
  return results
