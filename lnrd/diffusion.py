r"""Training class-conditional EDM diffusion models on noisy labels (`task="diffusion"`).

    python main.py --config=configs/mnist_sym.py:method=tdsm \
        --config.tdsm.classifier_dir=CLASSIFIER_WORKDIR --workdir=WORKDIR

`method="dsm"` is plain denoising score matching on the given (noisy) labels;
`method="tdsm"` is the transition-aware weighted DSM of Na et al. (ICLR 2024),
with the weights of a time-dependent classifier trained before
(`task="noisy_classifier"`, `lnrd.noisy_classifier`) and the estimator chosen by
`tdsm.estimator` (`lnrd.tdsm_loss`). Both use the same loop: the data lives on
the devices, each jitted, state-donating step draws its batch by index, applies
EDM's non-leaky augmentation, draws sigma and the noise, evaluates the loss and
updates Adam (with EDM's warm-up) and the EMA (half-life with ramp-up).
Duration and intervals are in kimg (thousands of training images) as in EDM.
Sample grids of the EMA network go to TensorBoard and WORKDIR/samples/.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lnrd import edm
from lnrd import sampler as sampler_lib
from lnrd import tdsm_loss
from lnrd import train_loop
from lnrd import weights as weights_lib
from lnrd.networks import mlp as mlp_lib
from sgn_jax import train_data
from sgn_jax.data import gmm as gmm_lib
from sgn_jax.training import ema
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers
from sgn_jax.training.train_state import TrainState

METHODS = ("dsm", "tdsm")
WEIGHT_SOURCES = ("classifier", "exact")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a diffusion config before any data or compute; ValueError names the key."""
  if config.method not in METHODS:
    raise ValueError(f"method={config.method!r} is not a diffusion method; allowed: {list(METHODS)}")
  train_loop.check_data_and_noise(config)
  edm.from_config(config.precond)
  for key in ("batch_size", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    if int(config[key]) <= 0:
      raise ValueError(f"{key}={config[key]} must be a positive integer")
  for key in ("duration_kimg", "snapshot_every_kimg"):
    if not config[key] > 0:
      raise ValueError(f"{key}={config[key]} must be > 0")
  if config.stop_after_steps < 0:
    raise ValueError(f"stop_after_steps={config.stop_after_steps} must be >= 0 (0: off)")
  if config.optim.learning_rate <= 0:
    raise ValueError(f"optim.learning_rate={config.optim.learning_rate} must be > 0")
  if not 0.0 <= config.augment.p <= 1.0:
    raise ValueError(f"augment.p={config.augment.p} must be in [0, 1]")
  if config.method == "tdsm":
    t = config.tdsm
    if t.estimator not in tdsm_loss.ESTIMATORS:
      raise ValueError(f"tdsm.estimator={t.estimator!r} is not known; allowed: "
                       f"{list(tdsm_loss.ESTIMATORS)}")
    if t.weight_form not in weights_lib.WEIGHT_FORMS:
      raise ValueError(f"tdsm.weight_form={t.weight_form!r}; allowed: {list(weights_lib.WEIGHT_FORMS)}")
    if t.weight_source not in WEIGHT_SOURCES:
      raise ValueError(f"tdsm.weight_source={t.weight_source!r}; allowed: {list(WEIGHT_SOURCES)}")
    if t.weight_source == "exact" and config.dataset.name != "gmm2d":
      raise ValueError("tdsm.weight_source='exact' needs the synthetic mixture (dataset gmm2d); "
                       f"dataset.name={config.dataset.name!r} needs weight_source='classifier'")
    if t.weight_source == "classifier":
      from lnrd import noisy_classifier  # pylint: disable=g-import-not-at-top
      noisy_classifier.check_export(t.classifier_dir)
    if t.estimator == "topk" and not 1 <= t.top_k <= config.num_classes:
      raise ValueError(f"tdsm.top_k={t.top_k} must be in [1, num_classes={config.num_classes}]")
    if t.estimator == "sampled" and t.num_samples < 1:
      raise ValueError(f"tdsm.num_samples={t.num_samples} must be >= 1")


def build_network(config, input_shape, num_classes: int, augment_dim: int) -> nn.Module:
  """The raw network F of `config.network` for inputs of `input_shape` (no batch)."""
  net = config.network
  label_dim = num_classes if config.get("conditional", True) else 0
  if net.arch == "mlp":
    return mlp_lib.MLPDenoiser(out_dim=int(np.prod(input_shape)), label_dim=label_dim,
                               hidden=tuple(net.hidden), dropout=net.dropout)
  from lnrd import networks  # pylint: disable=g-import-not-at-top
  overrides = dict(net.get("overrides", {}) or {})
  for key in ("model_channels", "channel_mult", "num_blocks", "attn_resolutions"):
    if net.get(key) is not None:
      overrides[key] = tuple(net[key]) if isinstance(net[key], (list, tuple)) else net[key]
  return networks.get_network(
      net.arch, img_resolution=input_shape[0], in_channels=input_shape[-1],
      out_channels=input_shape[-1], label_dim=label_dim, augment_dim=augment_dim,
      dropout=net.dropout, **overrides)


@dataclasses.dataclass
class WeightModel:
  """Everything TDSM needs to turn (x_t, sigma, y~) into weights (B, C)."""
  form: str
  constants: dict
  probs_fn: Callable  # (x_t, sigma) -> (B, C) clean posterior q (or h~ when noisy_target)
  noisy_target: bool = False  # the classifier models the noisy label (paper's h~) directly

  def __call__(self, x_t, sigma, noisy_labels):
    probs = self.probs_fn(x_t, sigma)
    consts = {k: jnp.asarray(v) for k, v in self.constants.items()}
    if self.form == "paper" and not self.noisy_target:
      probs = probs @ consts["transition"]  # h~ = T^T q
    return weights_lib.compute_weights(self.form, probs, noisy_labels, consts)


def build_weight_model(config, transition: np.ndarray, clean_prior=None) -> WeightModel:
  """The TDSM weight model: exact mixture posteriors (gmm2d) or a trained classifier."""
  t = config.tdsm
  if t.weight_source == "exact":
    mixture = gmm_lib.mixture_from_config(config.dataset.gmm)
    consts = weights_lib.transition_constants(transition, clean_prior)
    return WeightModel(t.weight_form, consts, lambda x_t, sigma: mixture.class_posterior(
        x_t, sigma))
  from lnrd import noisy_classifier  # pylint: disable=g-import-not-at-top
  bundle = noisy_classifier.load_export(t.classifier_dir)
  used = bundle.transition
  logging.info("TDSM weights from the time-dependent classifier in %s (%s, T %s)",
               t.classifier_dir, bundle.arch, "learned" if bundle.learned else "known")
  if t.weight_form == "released" and bundle.noisy_target:
    raise ValueError(
        f"tdsm.weight_form='released' needs a classifier of the clean label (trained with "
        f"classifier.transition='known' or 'learned'); {t.classifier_dir} was trained with "
        "transition='none' and models the noisy label: use tdsm.weight_form='paper'")
  consts = weights_lib.transition_constants(used, clean_prior)
  return WeightModel(t.weight_form, consts, bundle.probs, noisy_target=bundle.noisy_target)


class Diffusion:
  """The model, its denoiser, the jitted train step and the sampler of a run."""

  def __init__(self, config, mesh, input_shape, num_classes: int, steps_per_epoch: int,
               weight_model: WeightModel | None = None):
    self.config = config
    self.mesh = mesh
    self.input_shape = tuple(input_shape)  # model input (padded), no batch
    self.num_classes = num_classes
    self.steps_per_epoch = steps_per_epoch
    self.precond = edm.from_config(config.precond)
    self.augment = train_loop.build_augment(config, self.input_shape)
    augment_dim = self.augment.augment_dim if self.augment is not None else 0
    self.augment_dim = augment_dim
    self.model = build_network(config, self.input_shape, num_classes, augment_dim)
    self.tx = train_loop.adam_with_warmup(config.optim, config.batch_size)
    self.weight_model = weight_model
    self.replicated = mesh_lib.replicated(mesh)
    self.data_sharded = mesh_lib.data_sharded(mesh)
    self._sample_fns: dict[Any, Callable] = {}

  # ---- model ---------------------------------------------------------------
  def _example_inputs(self, batch=1):
    x = jnp.zeros((batch,) + self.input_shape, jnp.float32)
    labels = jnp.zeros((batch, self.num_classes), jnp.float32) if self.model.label_dim else None
    aug = jnp.zeros((batch, self.augment_dim), jnp.float32) if self.augment_dim else None
    return x, jnp.zeros((batch,), jnp.float32), labels, aug

  def init_state(self, key) -> TrainState:
    """Parameters born replicated on the mesh (shapes by eval_shape, one jitted init)."""
    def init(key):
      params_key, rng = jax.random.split(key)
      variables = self.model.init({"params": params_key}, *self._example_inputs(), train=False)
      params = variables["params"]
      # Untrained collections (e.g. NCSN++'s Fourier frequencies in 'constants').
      constants = {k: v for k, v in variables.items() if k != "params"}
      return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=constants,
                        opt_state=self.tx.init(params), ema_params=params, ema_model_state={},
                        rng=rng)
    return train_loop.init_replicated(init, key, self.mesh)

  def denoiser(self, variables, *, train: bool = False, key=None,
               augment_labels=None) -> Callable:
    """`denoise(x, sigma, labels, rows=None)`: the preconditioned network D(x; sigma, y).

    int labels; `rows` selects the augment labels of a sub-batch of the batch.

    `variables`: {'params': ..., plus untrained collections (`state.model_state`)}.
    """
    conditional = bool(self.model.label_dim)

    def denoise(x, sigma, labels, rows=None):
      onehot = jax.nn.one_hot(labels, self.num_classes) if conditional and labels is not None \
          else None
      augment = augment_labels if rows is None or augment_labels is None \
          else augment_labels[rows]

      def raw(x_in, c_noise):
        rngs = {"dropout": key} if train else {}
        return self.model.apply(variables, x_in, c_noise, onehot, augment,
                                train=train, rngs=rngs)
      return edm.precondition(raw, x, sigma, self.precond)
    return denoise

  # ---- training ------------------------------------------------------------
  def train_step(self, state: TrainState, inputs):
    cfg = self.config
    step_key = jax.random.fold_in(state.rng, state.step)
    augment_key, loss_key, dropout_key = jax.random.split(step_key, 3)
    images, labels, _ = train_loop.draw_batch(inputs, state.step, self.steps_per_epoch,
                                              cfg.batch_size, self.mesh)
    clean = train_loop.to_model_range(images, cfg.get("pad_to", 0))
    augment_labels = None
    if self.augment is not None:
      clean, augment_labels = self.augment(augment_key, clean)

    def loss_fn(params):
      denoise = self.denoiser({"params": params, **state.model_state}, train=True,
                              key=dropout_key, augment_labels=augment_labels)
      if cfg.method == "dsm":
        per_example, sigma = edm.dsm_loss(denoise, loss_key, clean, labels, self.precond)
        w_given = jnp.ones_like(sigma)
      else:
        t = cfg.tdsm
        per_example, sigma, w = tdsm_loss.tdsm_loss(
            denoise, self.weight_model, loss_key, clean, labels, self.precond,
            estimator=t.estimator, tau=t.tau, top_k=t.top_k, num_samples=t.num_samples,
            residual_capacity=t.get("residual_capacity", 0.25))
        w_given = jnp.take_along_axis(w, labels[:, None], axis=1)[:, 0]
      return per_example.mean(), (sigma, w_given)

    (loss, (sigma, w_given)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    nimg = (state.step + 1).astype(jnp.float32) * cfg.batch_size
    decay = ema.edm_ema_decay(nimg, cfg.batch_size, cfg.ema_halflife_kimg, cfg.ema_rampup_ratio)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema.ema_update(state.ema_params, params, decay))
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
               "weight_of_given_label": w_given.mean(), "ema_decay": decay,
               "sigma_median": jnp.median(sigma)}
    return new_state, metrics

  # ---- sampling ------------------------------------------------------------
  def sample_fn(self, sampler_config, denoise_fn_with_params: Callable | None = None) -> Callable:
    """Jitted `(params, latents, labels, key) -> samples`, batch sharded over the mesh.

    `denoise_fn_with_params(params, x, sigma, labels)` defaults to this run's
    preconditioned network (eval mode); pass another one for e.g. an affine mix.
    """
    lo, hi = self.precond.sampling_range
    own = denoise_fn_with_params is None
    cache_key = tuple(sorted(sampler_config.to_dict().items())) if own else None
    if own and cache_key in self._sample_fns:
      return self._sample_fns[cache_key]
    if own:
      denoise_fn_with_params = lambda variables, x, sigma, labels: self.denoiser(variables)(
          x, sigma, labels)
    fn = sampler_lib.make_sharded_sampler(
        denoise_fn_with_params, self.mesh, num_steps=sampler_config.num_steps,
        rho=sampler_config.rho, s_churn=sampler_config.s_churn,
        s_min=sampler_config.get("s_min", 0.0), s_max=sampler_config.get("s_max", float("inf")),
        s_noise=sampler_config.get("s_noise", 1.0), solver=sampler_config.solver,
        sigma_min=sampler_config.get("sigma_min") or lo,
        sigma_max=sampler_config.get("sigma_max") or hi)
    if own:
      self._sample_fns[cache_key] = fn
    return fn

  def sample(self, variables, labels: np.ndarray, key, sampler_config,
             batch_size: int | None = None,
             denoise_fn_with_params: Callable | None = None) -> np.ndarray:
    """Samples for int `labels` (N,), in batches divisible by the device count.

    Latents and churn noise come from `key` folded with each batch's offset, so
    the samples do not depend on the device count.
    """
    fn = self.sample_fn(sampler_config, denoise_fn_with_params)
    n = len(labels)
    devices = mesh_lib.num_data_shards(self.mesh)
    batch = max(devices, ((batch_size or n) // devices) * devices)
    out = []
    for start in range(0, n, batch):
      chunk = np.asarray(labels[start:start + batch], np.int32)
      real = len(chunk)
      chunk = np.concatenate([chunk, np.zeros(batch - real, np.int32)])
      chunk_key = jax.random.fold_in(key, start)
      latents = jax.random.normal(jax.random.fold_in(chunk_key, 1), (batch,) + self.input_shape)
      samples = fn(variables, latents, jnp.asarray(chunk), jax.random.fold_in(chunk_key, 2))
      out.append(np.asarray(jax.device_get(samples))[:real])
    return np.concatenate(out)


def images_to_uint8(samples: np.ndarray) -> np.ndarray:
  """Model-range [-1, 1] images -> uint8 [0, 255] (EDM's rounding)."""
  return np.clip(np.rint(samples * 127.5 + 128), 0, 255).astype(np.uint8)


def class_grid(diffusion: Diffusion, variables, key, sampler_config, per_class: int,
               max_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """Samples, `per_class` for each of the first `max_classes` classes: (images, labels)."""
  classes = min(diffusion.num_classes, max_classes)
  labels = np.repeat(np.arange(classes), per_class).astype(np.int32)
  return diffusion.sample(variables, labels, key, sampler_config), labels


def save_png(path: str, grid: np.ndarray) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  array = grid[..., 0] if grid.shape[-1] == 1 else grid
  Image.fromarray(array).save(path)


def write_sample_grid(diffusion: Diffusion, variables, key, sampler_config, per_class: int,
                      writer, step: int, workdir: str) -> None:
  """A class-per-row grid of EMA samples to TensorBoard and WORKDIR/samples/."""
  if len(diffusion.input_shape) != 3:
    return
  samples, _ = class_grid(diffusion, variables, key, sampler_config, per_class)
  grid = writers.image_grid(images_to_uint8(samples), num_columns=per_class)
  writer.write_images(step, {"samples/ema": grid[None]})
  if jax.process_index() == 0:
    save_png(os.path.join(workdir, "samples", f"step_{step:08d}.png"), grid)


def create_diffusion(config, mesh, data) -> Diffusion:
  """The Diffusion of `config` for the data of `train_data.InMemoryData`."""
  shape = train_loop.model_input_shape(data.input_shape, config.get("pad_to", 0))
  weight_model = None
  if config.method == "tdsm":
    transition = data.splits.transition
    if transition is None:
      transition = np.eye(data.num_classes)
    prior = np.bincount(data.splits.train_clean_labels, minlength=data.num_classes) \
        if config.tdsm.use_clean_prior else None
    weight_model = build_weight_model(config, transition, prior)
  return Diffusion(config, mesh, shape, data.num_classes, data.steps_per_epoch, weight_model)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, Any]:
  """Trains a DSM or TDSM diffusion model as `config` says; returns the final metrics."""
  validate_config(config)
  mesh = mesh_lib.create_mesh(devices)
  mesh_lib.check_divisible(config.batch_size, mesh, "batch_size")
  data = train_data.InMemoryData(config, mesh)
  if data.steps_per_epoch == 0:
    raise ValueError(f"batch_size={config.batch_size} is larger than the training set "
                     f"({data.num_train} examples)")
  diffusion = create_diffusion(config, mesh, data)
  total_steps = max(1, int(round(config.duration_kimg * 1000 / config.batch_size)))
  logging.info("%s; %d steps of %d images (%.1f kimg), method %s", data.describe(), total_steps,
               config.batch_size, config.duration_kimg, config.method)
  state = diffusion.init_state(jax.random.PRNGKey(config.seed))
  logging.info("network %s: %d parameters", config.network.arch,
               train_loop.num_params(state.params))
  writer = writers.create_writer(workdir)
  if int(jax.device_get(state.step)) == 0:
    writer.write_scalars(0, {"noise/realised_rate": data.noise_summary["realised_noise_rate"]})
  train_step = jax.jit(diffusion.train_step, donate_argnums=0)
  sample_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 7)

  def snapshot(step, state):
    write_sample_grid(diffusion, ema_variables(state), sample_key, config.sample,
                      config.sample.grid_per_class, writer, step, workdir)

  snapshot_steps = max(1, int(round(config.snapshot_every_kimg * 1000 / config.batch_size)))
  start = time.time()
  state, step, last, steps_run = train_loop.run(
      config, workdir, state, train_step, data.train_inputs, total_steps, config.batch_size,
      mesh, writer, periodic=(train_loop.Periodic(snapshot_steps, snapshot),))
  seconds = time.time() - start
  final = {**{f"train/{k}": v for k, v in last.items()}, "step": step,
           "kimg": step * config.batch_size / 1000, "completed": float(step >= total_steps),
           "noise/realised_rate": data.noise_summary["realised_noise_rate"],
           "train_seconds_this_run": seconds, "steps_this_run": steps_run}
  writers.write_metrics_json(os.path.join(workdir, "metrics.json"), final)
  writer.close()
  return final


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run wrote to WORKDIR/config.json (main.py writes it)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: {workdir!r} is not a diffusion run's workdir "
                            "(main.py writes config.json there)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_ema_params(config, workdir: str, mesh, devices=None, step: int | None = None):
  """(Diffusion, EMA variables, data) of the latest checkpoint (or the one at `step`)
  of the run in `workdir`."""
  from sgn_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  data = train_data.InMemoryData(config, mesh)
  diffusion = create_diffusion(config, mesh, data) if config.method == "dsm" else None
  if diffusion is None:  # TDSM's weights are not needed for sampling
    dsm_config = ml_collections.ConfigDict(config.to_dict())
    dsm_config.method = "dsm"
    diffusion = create_diffusion(dsm_config, mesh, data)
  state = diffusion.init_state(jax.random.PRNGKey(config.seed))
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                            save_every_steps=1 << 30, keep=1)
  if checkpointer.latest_step is None:
    checkpointer.close()
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
  try:
    state = checkpointer.restore_or(state, step)
  finally:
    checkpointer.close()
  return diffusion, ema_variables(state), data


def ema_variables(state: TrainState) -> dict:
  """The EMA network's variables for `Diffusion.denoiser` / sampling."""
  return {"params": state.ema_params, **state.model_state}
