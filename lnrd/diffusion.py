r"""Class-conditional EDM diffusion on noisy labels as pure functions: DSM and TDSM.

    model = diffusion.build_network("ddpmpp_mnist", (32, 32, 1), num_classes=10)
    precond = edm.get_preconditioning("edm")
    tx = edm.adam_with_warmup(1e-3, warmup_kimg=10_000, batch_size=512)
    state = diffusion.init_state(model, tx, (32, 32, 1), 10, jax.random.PRNGKey(0))
    objective = diffusion.tdsm_objective(precond, weight_fn)      # or dsm_objective(precond)
    step = diffusion.make_train_step(model, tx, objective, precond=precond, num_classes=10,
                                     ema_decay=ema.edm_schedule(512, 500.0))
    state, metrics = jax.jit(step)(state, {"image": x, "label": y}, key)

`make_train_step` builds `step(state, batch, key) -> (state, metrics)` from
explicit pieces: a Flax network F (EDM's raw network, called as
`F(x_in, c_noise, onehot_labels, augment_labels, train=...)`), the
preconditioning, an optax transformation, the objective and the EMA decay. One
step maps the images to [-1, 1] (`preprocess`, `lnrd.images.to_model_range`),
applies EDM's non-leaky augmentation (`augment`, with augment labels fed to the
network), evaluates the objective and updates Adam and the EMA: one XLA program
that jits, shards and donates as it is.

Objectives, `objective(denoise, key, clean, labels) -> (per-example loss, sigma,
weight of the given label)`:
  dsm_objective    plain denoising score matching on the given (noisy) labels;
  tdsm_objective   transition-aware weighted DSM (Na et al., ICLR 2024) with the
                   weights of `weight_fn(x_t, sigma, noisy_labels) -> (B, C)`
                   (`classifier_weights`, `exact_weights`, a `WeightModel` pytree
                   of your classifier's parameters and T, or a plain function) and
                   the estimator of `lnrd.tdsm_loss.TDSMSettings`.
Both also take keyword-only `sigma=` (B,) and `noise=` (shape of the images) in
place of the draws, and `return_aux=True` for `(mean loss, aux dict)`.

Conditioning is declared, never guessed: the network's `label_dim` attribute (the
library's networks have one: num_classes, or 0 for unconditional) or
`conditional=` says whether it is fed one-hot labels; `check_conditioning`
refuses a network that declares neither, or one that disagrees with num_classes.
No config is read here: `lnrd.tasks.diffusion` does, once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lnrd import edm
from lnrd import images as images_lib
from lnrd import sampler as sampler_lib
from lnrd import tdsm_loss
from lnrd.tdsm_loss import TDSMSettings
# Built here, evaluated beside the loss (one batch enters each file once, top-down):
# the preconditioned network lives in lnrd.edm, the weights of a classifier in lnrd.weights.
from lnrd.edm import check_conditioning  # pylint: disable=unused-import
from lnrd.edm import make_denoiser
from lnrd.weights import WeightModel  # pylint: disable=unused-import
from lnrd.weights import classifier_weights  # pylint: disable=unused-import
from lnrd.weights import exact_weights  # pylint: disable=unused-import
from sgn_jax.training import ema
from sgn_jax.training.train_state import TrainState
from sgn_jax.training.train_state import init_replicated

METHODS = ("dsm", "tdsm")
WEIGHT_SOURCES = ("classifier", "exact")
UNET_SIZE_KEYS = ("model_channels", "channel_mult", "num_blocks", "attn_resolutions")


def network_spec(arch: str, input_shape, num_classes: int, *, augment_dim: int = 0,
                 dropout: float = 0.0, conditional: bool = True, hidden=(256, 256, 256),
                 **overrides) -> dict[str, Any]:
  """The keyword arguments of `build_network` as plain values (for a run record)."""
  spec = dict(arch=arch, input_shape=[int(d) for d in input_shape], num_classes=int(num_classes),
              augment_dim=int(augment_dim), dropout=float(dropout), conditional=bool(conditional))
  if arch == "mlp":
    spec["hidden"] = [int(h) for h in hidden]
  spec.update({k: list(v) if isinstance(v, (list, tuple)) else v for k, v in overrides.items()
               if v is not None})
  return spec


def build_network(arch: str, input_shape, num_classes: int, *, augment_dim: int = 0,
                  dropout: float = 0.0, conditional: bool = True, hidden=(256, 256, 256),
                  **overrides) -> nn.Module:
  """EDM's raw network F for inputs of `input_shape` (no batch).

  arch: `mlp` (vectors; `hidden` widths) or a `lnrd.networks` preset (ddpmpp,
  ddpmpp_mnist, ncsnpp, adm) with `overrides` of its arguments (e.g. the size
  keys model_channels, channel_mult, num_blocks, attn_resolutions).
  """
  label_dim = num_classes if conditional else 0
  if arch == "mlp":
    from lnrd.networks import mlp as mlp_lib  # pylint: disable=g-import-not-at-top
    return mlp_lib.MLPDenoiser(out_dim=int(np.prod(input_shape)), label_dim=label_dim,
                               hidden=tuple(hidden), dropout=dropout)
  from lnrd import networks  # pylint: disable=g-import-not-at-top
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()
               if v is not None}
  return networks.get_network(
      arch, img_resolution=input_shape[0], in_channels=input_shape[-1],
      out_channels=input_shape[-1], label_dim=label_dim, augment_dim=augment_dim,
      dropout=dropout, **overrides)


def _augment_dim(model: nn.Module) -> int:
  return int(getattr(model, "augment_dim", 0) or 0)


def init_state(model: nn.Module, tx: optax.GradientTransformation, input_shape,
               num_classes: int, key, mesh=None, *,
               conditional: bool | None = None) -> TrainState:
  """The train state of `model` for inputs of `input_shape` (no batch): parameters,
  untrained collections (e.g. NCSN++'s Fourier frequencies, in `model_state`),
  optimizer state, EMA and base key; born replicated on `mesh` when given.
  `conditional`: see `check_conditioning`."""
  input_shape = tuple(input_shape)
  augment_dim = _augment_dim(model)
  conditional = check_conditioning(model, num_classes, conditional)

  def init(key):
    params_key, rng = jax.random.split(key)
    x = jnp.zeros((1,) + input_shape, jnp.float32)
    labels = jnp.zeros((1, num_classes), jnp.float32) if conditional else None
    aug = jnp.zeros((1, augment_dim), jnp.float32) if augment_dim else None
    variables = model.init({"params": params_key}, x, jnp.zeros((1,), jnp.float32), labels, aug,
                           train=False)
    params = variables["params"]
    constants = {k: v for k, v in variables.items() if k != "params"}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=constants,
                      opt_state=tx.init(params), ema_params=params, ema_model_state={},
                      rng=rng)
  return init_replicated(init, key, mesh)


def ema_variables(state) -> dict:
  """The EMA network's variables (for a denoiser or the sampler) of a train state or
  of a restored checkpoint tree (`sgn_jax.runs.Run.restore`)."""
  if isinstance(state, dict):
    return {"params": state["ema_params"], **(state.get("model_state") or {})}
  return {"params": state.ema_params, **state.model_state}


# ---- objectives -----------------------------------------------------------------

def dsm_objective(precond: edm.Preconditioning) -> Callable:
  """DSM on the given labels: `(denoise, key, clean, labels, *, sigma=None, noise=None,
  return_aux=False) -> (loss (B,), sigma, 1)`, or `(mean loss, aux)` with
  `return_aux` (aux: per_example, sigma, noise, weight_of_given_label); sigma and
  noise as in `lnrd.edm.dsm_loss`."""
  def objective(denoise, key, clean, labels, *, sigma=None, noise=None, return_aux=False):
    if return_aux:
      loss, aux = edm.dsm_loss(denoise, key, clean, labels, precond, sigma=sigma, noise=noise,
                               return_aux=True)
      return loss, dict(aux, weight_of_given_label=jnp.ones_like(aux["sigma"]))
    per_example, sigma = edm.dsm_loss(denoise, key, clean, labels, precond, sigma=sigma,
                                      noise=noise)
    return per_example, sigma, jnp.ones_like(sigma)
  return objective


def tdsm_objective(precond: edm.Preconditioning, weight_fn: Callable,
                   settings: TDSMSettings = TDSMSettings(), *, weight_grad: bool = False,
                   num_classes: int | None = None,
                   takes_rows: bool | None = None) -> Callable:
  """TDSM: `(denoise, key, clean, labels, *, sigma=None, noise=None, return_aux=False)
  -> (loss (B,), sigma, w(y~ | y~))`, or `(mean loss, aux)` with `return_aux` (aux:
  per_example, sigma, noise, weights (B, C), weight_of_given_label).

  Args:
    precond: the preconditioning.
    weight_fn: `weight_fn(x_t, sigma, noisy_labels) -> (B, C)`: a function or a
      pytree (`WeightModel`).
    settings: the estimator (`lnrd.tdsm_loss`).
    weight_grad: gradient through the weights into `weight_fn`'s parameters
      (`lnrd.tdsm_loss`); False: stop-gradient, the authors' behaviour. Only a
      caller that differentiates w.r.t. them sees it (e.g. `tdsm_loss.tdsm_loss`
      in a joint step, examples/joint_classifier.py); the denoiser's gradient
      is the same either way.
    num_classes: when given, the weights must have this many columns (ValueError
      when traced otherwise).
    takes_rows: whether the denoiser takes `rows=` (`lnrd.tdsm_loss`); None reads
      its signature (`make_train_step`'s denoiser has it).
  """
  kwargs = dataclasses.asdict(settings)

  def check(w):
    if num_classes is not None and w.shape[-1] != num_classes:
      raise ValueError(f"weight_fn returned weights for {w.shape[-1]} classes but "
                       f"num_classes={num_classes}")

  def objective(denoise, key, clean, labels, *, sigma=None, noise=None, return_aux=False):
    if return_aux:
      loss, aux = tdsm_loss.tdsm_loss(denoise, weight_fn, key, clean, labels, precond,
                                      sigma=sigma, noise=noise, weight_grad=weight_grad,
                                      return_aux=True, takes_rows=takes_rows, **kwargs)
      check(aux["weights"])
      given = jnp.take_along_axis(aux["weights"], labels[:, None], axis=1)[:, 0]
      return loss, dict(aux, weight_of_given_label=given)
    per_example, sigma, w = tdsm_loss.tdsm_loss(denoise, weight_fn, key, clean, labels, precond,
                                                sigma=sigma, noise=noise,
                                                weight_grad=weight_grad, takes_rows=takes_rows,
                                                **kwargs)
    check(w)
    return per_example, sigma, jnp.take_along_axis(w, labels[:, None], axis=1)[:, 0]
  return objective


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, objective: Callable, *,
                    precond: edm.Preconditioning, num_classes: int,
                    ema_decay: float | Callable, augment: Callable | None = None,
                    preprocess: Callable | None = None, conditional: bool | None = None,
                    with_aux: bool = False) -> Callable:
  """`step(state, batch, key) -> (state, metrics)` on batch = {"image", "label"}.

  Optional batch entries "sigma" (B,) and "noise" (the shape of the images after
  `preprocess` and `augment`) replace the objective's draws (they are passed to it
  as keywords only when present, so objectives with the plain signature work).

  Args:
    model: EDM's raw network F (`build_network`, or any Linen module with its call
      signature); its variables are `state.params` plus `state.model_state`.
    tx: the optax transformation (EDM: `lnrd.edm.adam_with_warmup`).
    objective: `dsm_objective` / `tdsm_objective` (or any with their signature).
    precond: the preconditioning (`lnrd.edm`).
    num_classes: C (labels are one-hot encoded for the network).
    ema_decay: a number or a `step -> decay` schedule (EDM's half-life with ramp-up:
      `sgn_jax.training.ema.edm_schedule`).
    augment: EDM's augmentation pipe (`lnrd.augment.AugmentPipe`) or None.
    preprocess: batch images -> model range; default `lnrd.images.to_model_range`
      (uint8 -> [-1, 1], floats unchanged); pass `partial(to_model_range, pad_to=32)`
      to zero-pad MNIST.
    conditional: whether the network takes labels, for a module without a
      `label_dim` attribute (`check_conditioning`: ValueError here when undeclared
      or inconsistent with num_classes).
    with_aux: the step returns `(state, metrics, aux)` with aux = dict(grads (the
      parameters' gradient, before `tx`), per_example (B,), sigma (B,),
      weight_of_given_label (B,)).
  """
  denoise_fn = make_denoiser(model, precond, num_classes, conditional=conditional)
  preprocess = preprocess or images_lib.to_model_range
  decay_fn = ema.as_schedule(ema_decay)

  def step(state: TrainState, batch, key):
    augment_key, loss_key, dropout_key = jax.random.split(key, 3)
    clean, labels = preprocess(batch["image"]), batch["label"]
    augment_labels = None
    if augment is not None:
      clean, augment_labels = augment(augment_key, clean)
    given = {k: batch[k] for k in ("sigma", "noise") if k in batch}

    def loss_fn(params):
      variables = {"params": params, **state.model_state}
      # `denoise(x, sigma, y, rows=None)`: bound here, so the loss calls lnrd.edm directly.
      denoise = functools.partial(denoise_fn, variables, train=True, key=dropout_key,
                                  augment_labels=augment_labels)
      per_example, sigma, w_given = objective(denoise, loss_key, clean, labels, **given)
      if with_aux:
        return per_example.mean(), (sigma, w_given, per_example)
      return per_example.mean(), (sigma, w_given)

    (loss, extra), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    sigma, w_given = extra[:2]
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = decay_fn(state.step)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema.ema_update(state.ema_params, params, decay))
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
               "weight_of_given_label": w_given.mean(), "ema_decay": decay,
               "sigma_median": jnp.median(sigma)}
    if with_aux:
      return new_state, metrics, dict(grads=grads, per_example=extra[2], sigma=sigma,
                                      weight_of_given_label=w_given)
    return new_state, metrics
  return step


# ---- sampling -----------------------------------------------------------------

def make_sampler(model: nn.Module, precond: edm.Preconditioning, num_classes: int, mesh,
                 settings: sampler_lib.SamplerSettings = sampler_lib.SamplerSettings(),
                 denoise_fn_with_params: Callable | None = None, *,
                 conditional: bool | None = None) -> Callable:
  """Jitted `(variables, latents, labels, key) -> samples`, batch sharded over `mesh`.

  `denoise_fn_with_params(variables, x, sigma, labels)` defaults to the
  preconditioned network in eval mode; pass another one for e.g. an affine mix.
  """
  if denoise_fn_with_params is None:
    denoise_fn_with_params = make_denoiser(model, precond, num_classes,
                                           conditional=conditional)  # eval mode
  return sampler_lib.make_sharded_sampler(
      denoise_fn_with_params, mesh, **settings.sampler_kwargs(precond.sampling_range))
