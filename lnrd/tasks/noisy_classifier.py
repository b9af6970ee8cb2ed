r"""`task="noisy_classifier"`: the time-dependent noisy-label classifier TDSM's weights need.

    python main.py --config=configs/mnist_sym.py:task=noisy_classifier --workdir=CLS_DIR
    python main.py --config=configs/mnist_sym.py:method=tdsm,classifier_dir=CLS_DIR \
        --workdir=DIFFUSION_DIR

The classifier h(x_t, sigma) sees noisy inputs x_t = x + sigma n with sigma drawn
from the diffusion model's training distribution and is trained on the given
(noisy) labels y~ with (`lnrd.time_classifier.make_train_step`)

  classifier.transition='known'    forward correction with the true T:
                                   -log (T^T softmax(h))_y~   (softmax(h) ~ p_t(y | x_t), clean)
  classifier.transition='learned'  VolMinNet: T = rownorm(I + (1 - I) sigmoid(theta)) trained
                                   jointly, plus 1e-4 logdet(T) (the TDSM authors' variant)
  classifier.transition='none'     plain cross-entropy: softmax(h) ~ p_t(y~ | x_t), the paper's h~

Adam with EDM's warm-up, no EMA, EDM augmentation with augment labels (as the
authors); for 'learned' the authors' VolMinNet schedule instead: the learning rate
times `classifier.volmin_lr_factors` between the `classifier.volmin_lr_kimg`
boundaries (no warm-up; `()` keeps the warm-up) and theta frozen from
`classifier.freeze_transition_kimg` on (0: never). With `noise.assumed_rate` (clean
labels) 'known' is forward correction with that assumed symmetric T. Every `classifier.eval_every_kimg` the clean test accuracy of argmax
softmax(h) is measured at several fixed noise levels. The run keeps its own
checkpoints (resume) and, at the end, exports WORKDIR/time_classifier/
(`lnrd.runs.export_classifier`), which TDSM loads with `lnrd.runs.load_classifier`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from lnrd import images
from lnrd import runs as lnrd_runs
from lnrd import time_classifier
from lnrd.tasks import common as lnrd_common
from sgn_jax import errors
from sgn_jax import noise
from sgn_jax import runs
from sgn_jax.tasks import common
from sgn_jax.training import loop
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers
from sgn_jax.training.train_state import num_params

TRANSITIONS = time_classifier.TRANSITIONS
EVAL_SIGMAS = time_classifier.EVAL_SIGMAS
# The config keys that define a classifier run, and those among them that may change on a
# resume (beyond sgn_jax.tasks.common.MAY_CHANGE).
DEFINES = ("seed", "num_classes", "dataset", "noise", "pad_to", "precond", "augment",
           "classifier")
MAY_CHANGE = ("classifier.duration_kimg", "classifier.eval_every_kimg",
              "classifier.eval_batch_size", "classifier.log_every_steps",
              "classifier.checkpoint_every_steps")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a noisy_classifier config before any data or compute."""
  common.check_data_and_noise(config)
  c = config.classifier
  if c.arch not in time_classifier.TIME_CLASSIFIERS:
    raise ValueError(f"classifier.arch={c.arch!r} is not known; allowed: "
                     f"{sorted(time_classifier.TIME_CLASSIFIERS)}")
  if c.transition not in TRANSITIONS:
    raise ValueError(f"classifier.transition={c.transition!r}; allowed: {list(TRANSITIONS)}")
  for key in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps"):
    if int(c[key]) <= 0:
      raise ValueError(f"classifier.{key}={c[key]} must be a positive integer")
  if not c.duration_kimg > 0:
    raise ValueError(f"classifier.duration_kimg={c.duration_kimg} must be > 0")
  common.check_learning_rate(c.optim.learning_rate, "classifier.optim.learning_rate")
  common.check_widths(c.get("kwargs"), "classifier.kwargs.")
  common.loop_settings(c, config)
  lnrd_common.preconditioning(config)
  lnrd_common.matmul_precision(config)
  if c.transition == "learned":
    volmin_schedule(c)


def volmin_schedule(c: ml_collections.ConfigDict) -> tuple[tuple, tuple, float]:
  """(lr boundaries in kimg, lr factors, freeze kimg) of the learned-T classifier
  (`classifier.volmin_lr_kimg`, `volmin_lr_factors`, `freeze_transition_kimg`), checked."""
  example = "e.g. the authors' (1500.0, 3000.0, 7500.0) with factors (1.0, 0.1, 0.01, 1.0)"
  try:
    bounds = tuple(float(b) for b in c.volmin_lr_kimg)
    factors = tuple(float(f) for f in c.volmin_lr_factors)
  except (TypeError, ValueError):
    raise ValueError(f"classifier.volmin_lr_kimg={c.volmin_lr_kimg!r} and "
                     f"classifier.volmin_lr_factors={c.volmin_lr_factors!r} must be tuples of "
                     f"numbers, {example}") from None
  if any(b <= 0 for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:])):
    raise ValueError(f"classifier.volmin_lr_kimg={c.volmin_lr_kimg!r} must be positive and "
                     f"strictly increasing kimg, {example}; () keeps classifier.optim's warm-up")
  if bounds and (len(factors) != len(bounds) + 1 or any(f < 0 for f in factors)):
    raise ValueError(f"classifier.volmin_lr_factors={c.volmin_lr_factors!r} must hold "
                     f"{len(bounds) + 1} non-negative factors, one more than the "
                     f"{len(bounds)} boundaries of classifier.volmin_lr_kimg, {example}")
  freeze = float(c.freeze_transition_kimg)
  if not freeze >= 0:
    raise ValueError(f"classifier.freeze_transition_kimg={c.freeze_transition_kimg!r} must be "
                     ">= 0 (0: theta is never frozen; the authors: 7500.0)")
  return bounds, factors, freeze


def optimizer(c: ml_collections.ConfigDict):
  """`classifier.optim`'s Adam with EDM's warm-up; for transition='learned' the authors'
  VolMinNet schedule (`lnrd.time_classifier.volmin_optimizer`)."""
  if c.transition != "learned":
    return lnrd_common.edm_optimizer(c.optim, c.batch_size)
  bounds, factors, freeze = volmin_schedule(c)
  o = c.optim
  return time_classifier.volmin_optimizer(
      float(o.learning_rate), batch_size=int(c.batch_size), lr_kimg=bounds, lr_factors=factors,
      freeze_transition_kimg=freeze, warmup_kimg=float(o.warmup_kimg), beta1=float(o.beta1),
      beta2=float(o.beta2), eps=float(o.eps))


@runs.one_writer
@lnrd_common.with_matmul_precision
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, Any]:
  """Trains the time-dependent classifier of `config`; exports it; returns final metrics."""
  c = config.classifier
  with errors.user_input():
    validate_config(config)
    allowed = common.check_resume(config, workdir, "noisy_classifier", compare=DEFINES,
                                  may_change=MAY_CHANGE)
    mesh = mesh_lib.create_mesh(devices)
    mesh_lib.check_divisible(c.batch_size, mesh, "classifier.batch_size")
    mesh_lib.check_divisible(c.eval_batch_size, mesh, "classifier.eval_batch_size")
    data = lnrd_common.in_memory_data(config, mesh, c.batch_size, c.eval_batch_size)
    transition = lnrd_common.transition_or_identity(data)
    if c.transition == "known":
      noise.check_invertible(transition, "the noise's transition matrix T (forward correction "
                             "with classifier.transition='known' needs T^-1 to be identifiable)")
      noise.check_informative(transition)
    shape = images.model_input_shape(data.input_shape, config.get("pad_to", 0))
    kwargs = dict(c.get("kwargs", {}) or {})
    model = time_classifier.get_time_classifier(c.arch, data.num_classes, **kwargs)
    precond = lnrd_common.preconditioning(config)
    tx = optimizer(c)
    facts = lnrd_common.data_record(config, data, shape)
    runs.start_run(workdir, config.to_dict(), dict(
        task="noisy_classifier", method=f"time_classifier/{c.transition}", arch=c.arch,
        kwargs=kwargs, transition_kind=c.transition, precond=config.precond.to_dict(),
        matmul_precision=lnrd_common.matmul_precision(config), **facts), allowed,
        after_restore=True)

  total_steps = common.kimg_steps(c.duration_kimg, c.batch_size)
  if c.transition != "learned" or not c.volmin_lr_kimg:  # else no warm-up
    lnrd_common.warn_if_warmup_exceeds_run("classifier.", float(c.optim.warmup_kimg),
                                           float(c.duration_kimg))
  state = time_classifier.init_state(
      model, tx, shape, data.num_classes, jax.random.fold_in(jax.random.PRNGKey(config.seed), 11),
      learned_transition=c.transition == "learned", mesh=mesh)
  logging.info("time-dependent classifier %s: %d parameters, transition %s, %d steps", c.arch,
               num_params(state.params["net"]), c.transition, total_steps)
  preprocess = lnrd_common.preprocess(config)
  # the true T for forward correction ('known'); 'none' uses the identity, 'learned' its own
  trained_with = transition if c.transition == "known" else np.eye(data.num_classes)
  train_step = time_classifier.make_train_step(
      model, tx, precond=precond,
      transition=trained_with, volmin_weight=float(c.volmin_weight),
      augment=lnrd_common.augment_pipe(config, shape), preprocess=preprocess)
  writer = writers.create_writer(workdir)
  eval_fns = {s: time_classifier.make_eval_sums_at(model, s, preprocess) for s in EVAL_SIGMAS}
  results: dict[str, float] = {}

  def evaluate(step, state):
    for s, fn in eval_fns.items():
      totals, n = data.evaluate("test", fn, state.params, state.model_state)
      results[f"test/accuracy_sigma_{s:g}"] = float(totals["correct"]) / n
    writer.write_scalars(step, results)
    logging.info("step %d: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in results.items()))

  result = loop.run(
      state, loop.jit_step(train_step, data.drawer()), data.train_inputs,
      total_steps=total_steps, workdir=workdir, settings=common.loop_settings(c, config),
      mesh=mesh, writer=writer, items_per_step=int(c.batch_size),
      periodic=(loop.Periodic(common.kimg_steps(c.eval_every_kimg, c.batch_size), evaluate,
                              name="eval"),),
      log_scalars=lambda step: {"kimg": step * c.batch_size / 1000})
  if not results:
    evaluate(result.step, result.state)
  final = {**results, **result.summary()}
  if result.completed:
    params = jax.device_get(result.state.params)
    used = np.asarray(time_classifier.transition_of(params, trained_with), np.float64)
    folder = lnrd_runs.export_classifier(
        workdir, arch=c.arch, kwargs=kwargs,
        variables={"params": params["net"], **jax.device_get(result.state.model_state)},
        transition=used, learned=c.transition == "learned", noisy_target=c.transition == "none",
        input_shape=shape, precond=config.precond.to_dict(), step=result.step,
        facts={**{k: v for k, v in facts.items() if k != "transition"},
               "clean_accuracy": {k.split("/", 1)[1]: v for k, v in results.items()}})
    logging.info("exported the classifier to %s", folder)
    if c.transition == "learned":
      final["learned_transition_error"] = float(np.abs(used - transition).sum(1).mean())
  writers.write_metrics_json(os.path.join(workdir, "metrics.json"), final)
  writer.close()
  return final
