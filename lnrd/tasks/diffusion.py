r"""`task="diffusion"`: class-conditional EDM diffusion models on noisy labels, DSM or TDSM.

    python main.py --config=configs/mnist_sym.py:method=tdsm,classifier_dir=CLS_DIR \
        --workdir=WORKDIR

`method="dsm"` is plain denoising score matching on the given (noisy) labels;
`method="tdsm"` is the transition-aware weighted DSM of Na et al. (ICLR 2024),
with the weights of a time-dependent classifier trained before
(`task="noisy_classifier"`, loaded with `lnrd.runs.load_classifier`) and the
estimator chosen by `tdsm.estimator` (`lnrd.tdsm_loss`). The data lives on the
devices, each jitted, state-donating step draws its batch by index
(`sgn_jax.data.device_data.BatchDrawer`), and `lnrd.diffusion.make_train_step`
applies EDM's non-leaky augmentation, draws sigma and the noise, evaluates the
loss and updates Adam (with EDM's warm-up) and the EMA (half-life with
ramp-up); the loop is `sgn_jax.training.loop.run`. Duration and intervals are
in kimg (thousands of training images) as in EDM. Sample grids of the EMA
network go to TensorBoard and WORKDIR/samples/. The run record (run.json) holds
the network and preconditioning that `lnrd.runs.load_diffusion` rebuilds.

On clean labels (`:rate=0`) TDSM's T is the identity and TDSM equals DSM, unless
`noise.assumed_rate` assumes a symmetric T (the paper's clean benchmark:
`:rate=0,assumed_rate=0.05`, with a classifier trained the same way). The networks'
matmuls and convolutions run at `matmul_precision` (default float32, "highest", as
the authors, who disable TF32).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from lnrd import diffusion as diffusion_lib
from lnrd import images
from lnrd import runs as lnrd_runs
from lnrd import sampler as sampler_lib
from lnrd import weights as weights_lib
from lnrd.tasks import common as lnrd_common
from sgn_jax import errors
from sgn_jax import noise
from sgn_jax import runs
from sgn_jax.data import gmm as gmm_lib
from sgn_jax.tasks import common
from sgn_jax.training import ema
from sgn_jax.training import loop
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers
from sgn_jax.training.train_state import num_params

METHODS = diffusion_lib.METHODS
# The config keys that define a diffusion run (and "tdsm" for TDSM), and those among
# them that may change on a resume (beyond sgn_jax.tasks.common.MAY_CHANGE).
DEFINES = ("method", "seed", "num_classes", "dataset", "noise", "pad_to", "conditional",
           "precond", "network", "augment", "optim", "batch_size", "ema_halflife_kimg",
           "ema_rampup_ratio")
MAY_CHANGE = ("duration_kimg", "snapshot_every_kimg")


def tdsm_settings(config: ml_collections.ConfigDict) -> diffusion_lib.TDSMSettings:
  t = config.tdsm
  return diffusion_lib.TDSMSettings(
      estimator=t.estimator, tau=float(t.tau), top_k=int(t.top_k),
      num_samples=int(t.num_samples), residual_capacity=float(t.residual_capacity))


def network_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The preset overrides of `config.network` (size keys and `overrides.*`)."""
  net = config.network
  overrides = dict(net.get("overrides", {}) or {})
  for key in diffusion_lib.UNET_SIZE_KEYS:
    if net.get(key) is not None:
      overrides[key] = net[key]
  return overrides


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a diffusion config before any data or compute; ValueError names the key."""
  if config.method not in METHODS:
    raise common.method_choice_error(config.method, "diffusion", METHODS)
  common.check_data_and_noise(config)
  lnrd_common.preconditioning(config)
  lnrd_common.matmul_precision(config)
  if int(config.batch_size) <= 0:
    raise ValueError(f"batch_size={config.batch_size} must be a positive integer")
  common.loop_settings(config)
  for key in ("duration_kimg", "snapshot_every_kimg"):
    if not config[key] > 0:
      raise ValueError(f"{key}={config[key]} must be > 0")
  common.check_learning_rate(config.optim.learning_rate, "optim.learning_rate")
  common.check_widths(config.network, "network.")
  common.check_widths(config.network.get("overrides"), "network.overrides.")
  if not 0.0 <= config.augment.p <= 1.0:
    raise ValueError(f"augment.p={config.augment.p} must be in [0, 1]")
  lnrd_common.sampler_settings(config)
  if config.method == "tdsm":
    t = config.tdsm
    tdsm_settings(config).check(config.num_classes)
    if t.weight_form not in weights_lib.WEIGHT_FORMS:
      raise ValueError(f"tdsm.weight_form={t.weight_form!r}; allowed: "
                       f"{list(weights_lib.WEIGHT_FORMS)}")
    if t.weight_source not in diffusion_lib.WEIGHT_SOURCES:
      raise ValueError(f"tdsm.weight_source={t.weight_source!r}; allowed: "
                       f"{list(diffusion_lib.WEIGHT_SOURCES)}")
    if t.weight_source == "exact" and config.dataset.name != "gmm2d":
      raise ValueError("tdsm.weight_source='exact' needs the synthetic mixture (dataset gmm2d); "
                       f"dataset.name={config.dataset.name!r} needs weight_source='classifier'")
    if t.weight_source == "classifier":
      lnrd_runs.check_classifier_export(t.classifier_dir)


def weight_model(config: ml_collections.ConfigDict, data,
                 facts: dict) -> diffusion_lib.WeightModel:
  """TDSM's weights: the exact mixture posteriors (gmm2d) or those of the trained
  classifier, which must fit this run (`lnrd.runs.check_classifier_fits`)."""
  t = config.tdsm
  transition = lnrd_common.transition_or_identity(data)
  if t.weight_form == "paper":  # S^-1 of the reverse transition
    noise.check_informative(transition, "the noise's transition matrix T (tdsm.weight_form="
                            "'paper' inverts its reverse S)")
  prior = (np.bincount(data.splits.train_clean_labels, minlength=data.num_classes)
           if t.use_clean_prior else None)
  if t.weight_source == "exact":
    mixture = gmm_lib.mixture_from_fields(config.dataset.gmm.to_dict())
    return diffusion_lib.exact_weights(mixture, transition, t.weight_form, prior)
  classifier = lnrd_runs.load_classifier(t.classifier_dir)
  lnrd_runs.check_classifier_fits(classifier, facts, t.classifier_dir)
  lnrd_common.warn_if_classifier_at_chance(classifier, t.classifier_dir)
  logging.info("TDSM weights from the time-dependent classifier in %s (%s, T %s)",
               t.classifier_dir, classifier.arch, "learned" if classifier.learned else "known")
  try:
    return diffusion_lib.classifier_weights(classifier, t.weight_form, prior)
  except ValueError as e:
    raise ValueError(f"tdsm.classifier_dir={t.classifier_dir!r}: {e}") from None


def write_sample_grid(sample_fn, variables, key, *, num_classes: int, input_shape,
                      per_class: int, writer, step: int, workdir: str, mesh) -> None:
  """A class-per-row grid of EMA samples (first 10 classes) to TensorBoard and
  WORKDIR/samples/step_XXXXXXXX.png."""
  labels = np.repeat(np.arange(min(num_classes, 10)), per_class).astype(np.int32)
  samples = sampler_lib.sample_for_labels(sample_fn, variables, labels, key, input_shape, mesh)
  grid = writers.image_grid(images.images_to_uint8(samples), num_columns=per_class)
  writer.write_images(step, {"samples/ema": grid[None]})
  if jax.process_index() == 0:
    images.save_png(os.path.join(workdir, "samples", f"step_{step:08d}.png"), grid)


@runs.one_writer
@lnrd_common.with_matmul_precision
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, Any]:
  """Trains a DSM or TDSM diffusion model as `config` says; returns the final metrics."""
  with errors.user_input():
    validate_config(config)
    allowed = common.check_resume(
        config, workdir, "diffusion", may_change=MAY_CHANGE,
        compare=DEFINES + (("tdsm",) if config.method == "tdsm" else ()))
    mesh = mesh_lib.create_mesh(devices)
    mesh_lib.check_divisible(config.batch_size, mesh, "batch_size")
    data = lnrd_common.in_memory_data(config, mesh, config.batch_size, config.batch_size)
    shape = images.model_input_shape(data.input_shape, config.get("pad_to", 0))
    facts = lnrd_common.data_record(config, data, shape)
    augment = lnrd_common.augment_pipe(config, shape)
    spec = diffusion_lib.network_spec(
        config.network.arch, shape, data.num_classes,
        augment_dim=augment.augment_dim if augment is not None else 0,
        dropout=config.network.dropout, conditional=config.get("conditional", True),
        hidden=tuple(config.network.hidden), **network_kwargs(config))
    model = diffusion_lib.build_network(**spec)
    precond = lnrd_common.preconditioning(config)
    if config.method == "tdsm":
      objective = diffusion_lib.tdsm_objective(precond, weight_model(config, data, facts),
                                               tdsm_settings(config))
    else:
      objective = diffusion_lib.dsm_objective(precond)
    tx = lnrd_common.edm_optimizer(config.optim, config.batch_size)
    runs.start_run(workdir, config.to_dict(), dict(
        task="diffusion", method=config.method, network=spec,
        precond=config.precond.to_dict(), batch_size=int(config.batch_size),
        tdsm=dict(config.tdsm.to_dict()) if config.method == "tdsm" else None,
        matmul_precision=lnrd_common.matmul_precision(config), **facts),
        allowed, after_restore=True)
  total_steps = common.kimg_steps(config.duration_kimg, config.batch_size)
  logging.info("%s; %d steps of %d images (%.1f kimg), method %s", data.describe(), total_steps,
               config.batch_size, config.duration_kimg, config.method)
  state = diffusion_lib.init_state(model, tx, shape, data.num_classes,
                                   jax.random.PRNGKey(config.seed), mesh)
  logging.info("network %s: %d parameters", config.network.arch, num_params(state.params))
  ema_decay = ema.edm_schedule(int(config.batch_size), float(config.ema_halflife_kimg),
                               float(config.ema_rampup_ratio))
  lnrd_common.warn_if_warmup_exceeds_run("", float(config.optim.warmup_kimg),
                                         float(config.duration_kimg))
  ema.warn_if_cold(ema_decay, total_steps, uses="samples come from the EMA network",
                   fix="lower ema_halflife_kimg or raise ema_rampup_ratio for a short run")
  train_step = diffusion_lib.make_train_step(
      model, tx, objective, precond=precond, num_classes=data.num_classes,
      ema_decay=ema_decay, augment=augment, preprocess=lnrd_common.preprocess(config))
  writer = writers.create_writer(workdir)
  noise_rate = data.noise_summary["realised_noise_rate"]
  sample_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 7)
  sample_fn = diffusion_lib.make_sampler(model, precond, data.num_classes, mesh,
                                         lnrd_common.sampler_settings(config))

  def snapshot(step, state):
    if len(shape) == 3:
      write_sample_grid(sample_fn, diffusion_lib.ema_variables(state), sample_key,
                        num_classes=data.num_classes, input_shape=shape,
                        per_class=int(config.sample.grid_per_class), writer=writer, step=step,
                        workdir=workdir, mesh=mesh)

  result = loop.run(
      state, loop.jit_step(train_step, data.drawer()), data.train_inputs,
      total_steps=total_steps, workdir=workdir, settings=common.loop_settings(config),
      mesh=mesh, writer=writer, items_per_step=int(config.batch_size),
      periodic=(loop.Periodic(common.kimg_steps(config.snapshot_every_kimg, config.batch_size),
                              snapshot, name="samples"),),
      log_scalars=lambda step: {"kimg": step * config.batch_size / 1000},
      at_start=lambda state, inputs: writer.write_scalars(0, {"noise/realised_rate": noise_rate}))
  final = {**result.summary(), "kimg": result.step * config.batch_size / 1000,
           "noise/realised_rate": noise_rate}
  writers.write_metrics_json(os.path.join(workdir, "metrics.json"), final)
  writer.close()
  return final
