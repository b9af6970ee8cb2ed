"""Reading TDSM runs: the time-dependent classifier's export and a diffusion run's network.

Built on `sgn_jax.runs` (the run folder, its record and checkpoints). What a
consumer needs is rebuilt from the run's record (run.json), never from its
config or from a task's internals:

    classifier = lnrd.runs.load_classifier(CLS_DIR)        # a noisy_classifier run
    probs = classifier.probs(x_t, sigma)                  # (B, C), its T: classifier.transition
    model = lnrd.runs.load_diffusion(TDSM_DIR, mesh=mesh)   # a diffusion run, EMA network
    samples = model.sample(labels, key, mesh)             # model range [-1, 1]

The classifier run exports WORKDIR/time_classifier/ when it finishes
(`export_classifier`): variables.msgpack (the network's variables) and
meta.json (architecture and its arguments, classes, input shape, the transition
matrix it was trained with, whether T was learned or the classifier models the
noisy label, the preconditioning, the step).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from lnrd import diffusion as diffusion_lib
from lnrd import edm
from lnrd import sampler as sampler_lib
from lnrd import time_classifier
from sgn_jax import runs
from sgn_jax.training import writers
from sgn_jax.runs import RunError
from sgn_jax.runs import RunNotFoundError

EXPORT_DIR = "time_classifier"
TRAIN_CLASSIFIER = ("train one first: python main.py --config=configs/<dataset>_<noise>.py:"
                    "task=noisy_classifier --workdir=CLS_DIR")


# ---- the time-dependent classifier -------------------------------------------------

@dataclasses.dataclass
class ExportedClassifier:
  """A trained time-dependent classifier, ready for TDSM's weights.

  probs(x_t, sigma): softmax h(x_t, sigma), the clean posterior q (or h~ when
  `noisy_target`: trained on the noisy labels without a transition), (B, C).
  """
  arch: str
  module: Any
  variables: Any
  transition: np.ndarray
  learned: bool
  noisy_target: bool
  input_shape: tuple
  meta: dict = dataclasses.field(default_factory=dict)

  @property
  def num_classes(self) -> int:
    return int(np.shape(self.transition)[0])

  def probs(self, x_t, sigma):
    return jax.nn.softmax(self.module.apply(self.variables, x_t, sigma, train=False), axis=-1)


def export_folder(path: str) -> str:
  """WORKDIR/time_classifier of a classifier run (or `path` itself when it is that folder)."""
  return path if os.path.basename(os.path.normpath(path)) == EXPORT_DIR else os.path.join(
      path, EXPORT_DIR)


def check_classifier_export(path: str | None, what: str = "tdsm.classifier_dir") -> str:
  """The export folder of the classifier run `path`; errors name `what` and how to make one."""
  if not path:
    raise RunError(f"{what} is empty: it must name a time-dependent classifier run; "
                   f"{TRAIN_CLASSIFIER}, then pass --config.{what}=CLS_DIR")
  folder = export_folder(path)
  run_dir = os.path.dirname(os.path.normpath(folder))
  runs.check_not_busy(run_dir, what)
  metrics_path = os.path.join(run_dir, runs.METRICS_FILE)
  if os.path.exists(metrics_path) and runs.read_json(metrics_path).get("completed") == 0.0:
    raise RunError(f"{what}={path!r} has not finished (metrics.json says completed=0: its "
                   "last call stopped early, e.g. an extension that was killed); rerun its "
                   f"command with that workdir to finish it, then pass --config.{what}=CLS_DIR")
  for name in ("variables.msgpack", "meta.json"):
    if not os.path.exists(os.path.join(folder, name)):
      raise RunNotFoundError(
          f"{what}={path!r}: {os.path.join(folder, name)} not found (the classifier run "
          f"exports it when it finishes); {TRAIN_CLASSIFIER}, then pass --config.{what}=CLS_DIR")
  return folder


def export_classifier(workdir: str, *, arch: str, kwargs: dict, variables, transition,
                      learned: bool, noisy_target: bool, input_shape, precond: dict,
                      step: int, facts: dict | None = None) -> str:
  """Writes WORKDIR/time_classifier/{variables.msgpack, meta.json} (process 0); `facts`
  (the run record's data facts: dataset, noise, seed, labels checksum, shapes) go into
  meta.json too, for `check_classifier_fits`."""
  folder = os.path.join(workdir, EXPORT_DIR)
  if jax.process_index() == 0:
    os.makedirs(folder, exist_ok=True)
    writers.write_atomic(os.path.join(folder, "variables.msgpack"),
                         flax.serialization.to_bytes(jax.device_get(variables)))
    meta = {**(facts or {}), **dict(
        arch=arch, num_classes=int(np.shape(transition)[0]), kwargs=dict(kwargs),
        transition=np.asarray(transition, np.float64).tolist(), learned=bool(learned),
        noisy_target=bool(noisy_target), input_shape=[int(d) for d in input_shape],
        precond=dict(precond), step=int(step))}
    writers.write_atomic(os.path.join(folder, "meta.json"), json.dumps(meta, indent=2))
  return folder


def load_classifier(path: str, what: str = "tdsm.classifier_dir") -> ExportedClassifier:
  """The classifier exported by a finished `noisy_classifier` run in `path`."""
  folder = check_classifier_export(path, what)
  meta = runs.read_json(os.path.join(folder, "meta.json"))
  module = time_classifier.get_time_classifier(meta["arch"], meta["num_classes"],
                                               **meta["kwargs"])
  x = jnp.zeros((1,) + tuple(meta["input_shape"]), jnp.float32)
  template = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x, jnp.ones((1,)),
                                                train=False))
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
  variables_path = os.path.join(folder, "variables.msgpack")
  with open(variables_path, "rb") as f:
    data = f.read()
  try:
    variables = flax.serialization.from_bytes(template, data)
  except Exception as e:  # pylint: disable=broad-except  (msgpack raises several types)
    raise RunError(f"{variables_path} is damaged or does not fit the classifier its meta.json "
                   f"describes ({type(e).__name__}: {e}); retrain the classifier run "
                   "(or restore the file)") from None
  return ExportedClassifier(meta["arch"], module, jax.tree.map(jnp.asarray, variables),
                            np.asarray(meta["transition"]), meta["learned"],
                            meta["noisy_target"], tuple(meta["input_shape"]), meta)


def _noise_text(facts: dict) -> str:
  noise, dataset = facts.get("noise") or {}, facts.get("dataset") or {}
  text = (f"{dataset.get('name', '?')} with {noise.get('kind', '?')} noise at rate "
          f"{noise.get('rate', '?')} ({noise.get('convention', '?')} convention), seed "
          f"{facts.get('seed', '?')}")
  if noise.get("labels_file"):
    text += f", labels from {noise['labels_file']}"
  if noise.get("assumed_rate"):
    text += f", T assumed symmetric at noise.assumed_rate={noise['assumed_rate']}"
  return text


def check_classifier_fits(classifier: ExportedClassifier, facts: dict, path: str,
                          what: str = "tdsm.classifier_dir") -> None:
  """RunError unless the exported classifier was trained for this run: the same
  classes, input shape (padding included), training labels (dataset, noise, rate,
  seed: their checksum) and, for a known-T classifier, the same transition matrix.
  `facts`: the run record's data facts (`lnrd.tasks.common.data_record`)."""
  meta = classifier.meta
  problems = []
  if classifier.num_classes != int(facts["num_classes"]):
    problems.append(f"it has {classifier.num_classes} classes, this run {facts['num_classes']}")
  if tuple(classifier.input_shape) != tuple(facts["input_shape"]):
    problems.append(f"its input shape is {tuple(classifier.input_shape)}, this run's "
                    f"{tuple(facts['input_shape'])} (pad_to={facts.get('pad_to', 0)})")
  if "labels_checksum" not in meta:
    problems.append("its export does not record the data it was trained on (written by an "
                    "older version)")
  elif meta["labels_checksum"] != facts["labels_checksum"]:
    problems.append(f"it was trained on other labels: {_noise_text(meta)}; this run trains on "
                    f"{_noise_text(facts)}")
  transition = facts.get("transition")
  if (not problems and not classifier.learned and not classifier.noisy_target
      and transition is not None):
    gap = float(np.max(np.abs(np.asarray(classifier.transition) - np.asarray(transition))))
    if gap > 1e-5:
      problems.append(f"its transition matrix differs from this run's (max |dT| = {gap:.3g}): "
                      f"it was trained for {_noise_text(meta)}; this run is {_noise_text(facts)}")
  if problems:
    raise RunError(
        f"{what}={path!r} does not fit this run: " + "; ".join(problems)
        + ". Train the classifier on this run's data and noise (the same config with "
        ":task=noisy_classifier) and pass its workdir")


# ---- a diffusion run -------------------------------------------------------------

@dataclasses.dataclass
class DiffusionModel:
  """The EMA network of a diffusion run, rebuilt from its record.

  input_shape: the network's input (padded, e.g. 32x32x1 for MNIST);
  data_shape: the dataset's (28x28x1); `images.crop_to` undoes the padding.
  """
  run: runs.Run
  model: Any
  precond: edm.Preconditioning
  num_classes: int
  input_shape: tuple
  data_shape: tuple
  variables: Any
  step: int

  @property
  def is_image(self) -> bool:
    return len(self.input_shape) == 3

  def denoiser(self, variables=None) -> Callable:
    """`denoise(x, sigma, labels)`: the preconditioned EMA network in eval mode."""
    fn = diffusion_lib.make_denoiser(self.model, self.precond, self.num_classes)
    variables = self.variables if variables is None else variables
    return lambda x, sigma, labels: fn(variables, x, sigma, labels)

  def sampler(self, mesh, settings: sampler_lib.SamplerSettings = sampler_lib.SamplerSettings(),
              denoise_fn_with_params: Callable | None = None) -> Callable:
    """`sample(variables, latents, labels, key)` jitted and sharded over `mesh`."""
    return diffusion_lib.make_sampler(self.model, self.precond, self.num_classes, mesh,
                                      settings, denoise_fn_with_params)

  def sample(self, labels, key, mesh,
             settings: sampler_lib.SamplerSettings = sampler_lib.SamplerSettings(),
             batch_size: int | None = None, sample_fn: Callable | None = None,
             variables=None) -> np.ndarray:
    """Samples (model range) for int `labels`; see `lnrd.sampler.sample_for_labels`."""
    fn = sample_fn or self.sampler(mesh, settings)
    return sampler_lib.sample_for_labels(
        fn, self.variables if variables is None else variables, np.asarray(labels), key,
        self.input_shape, mesh, batch_size)


def load_diffusion(workdir: str, *, mesh=None, step: int | None = None,
                   what: str = "run_dir", finished: bool = False) -> DiffusionModel:
  """The EMA network of the diffusion run in `workdir` (latest checkpoint, or `step`)."""
  run = runs.open_run(workdir, tasks=("diffusion",), finished=finished, what=what)
  record = run.record
  if "network" not in record:
    raise RunError(f"{what}={workdir!r} has no run record with its network (run.json); it "
                   "was written by an older version: retrain it")
  spec = dict(record["network"])
  model = diffusion_lib.build_network(**spec)
  tree = run.restore(mesh, step)
  return DiffusionModel(
      run=run, model=model, precond=edm.from_fields(record["precond"]),
      num_classes=int(record["num_classes"]), input_shape=tuple(spec["input_shape"]),
      data_shape=tuple(record["data_shape"]), variables=diffusion_lib.ema_variables(tree),
      step=int(tree["step"]))
