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
                   (`classifier_weights`, `exact_weights`, or your own) and the
                   estimator of `lnrd.tdsm_loss.TDSMSettings`.
No config is read here: `lnrd.tasks.diffusion` does, once.
"""

from __future__ import annotations

import dataclasses
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
from lnrd import weights as weights_lib
from lnrd.tdsm_loss import TDSMSettings
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


def make_denoiser(model: nn.Module, precond: edm.Preconditioning, num_classes: int) -> Callable:
  """`denoise_fn(variables, x, sigma, labels, *, train=False, key=None,
  augment_labels=None, rows=None)`: the preconditioned network D(x; sigma, y).

  int labels (or None for an unconditional net); `key` is the dropout key when
  training; `rows` selects the augment labels of a sub-batch of the batch.
  `variables` = {"params": ..., plus untrained collections (`state.model_state`)}.
  """
  conditional = bool(getattr(model, "label_dim", 0))

  def denoise_fn(variables, x, sigma, labels, *, train: bool = False, key=None,
                 augment_labels=None, rows=None):
    onehot = jax.nn.one_hot(labels, num_classes) if conditional and labels is not None \
        else None
    augment = augment_labels if rows is None or augment_labels is None \
        else augment_labels[rows]

    def raw(x_in, c_noise):
      rngs = {"dropout": key} if train else {}
      return model.apply(variables, x_in, c_noise, onehot, augment, train=train, rngs=rngs)
    return edm.precondition(raw, x, sigma, precond)
  return denoise_fn


def init_state(model: nn.Module, tx: optax.GradientTransformation, input_shape,
               num_classes: int, key, mesh=None) -> TrainState:
  """The train state of `model` for inputs of `input_shape` (no batch): parameters,
  untrained collections (e.g. NCSN++'s Fourier frequencies, in `model_state`),
  optimizer state, EMA and base key; born replicated on `mesh` when given."""
  input_shape = tuple(input_shape)
  augment_dim = _augment_dim(model)

  def init(key):
    params_key, rng = jax.random.split(key)
    x = jnp.zeros((1,) + input_shape, jnp.float32)
    labels = jnp.zeros((1, num_classes), jnp.float32) if getattr(model, "label_dim", 0) \
        else None
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
  """DSM on the given labels: `(denoise, key, clean, labels) -> (loss (B,), sigma, 1)`."""
  def objective(denoise, key, clean, labels):
    per_example, sigma = edm.dsm_loss(denoise, key, clean, labels, precond)
    return per_example, sigma, jnp.ones_like(sigma)
  return objective


def tdsm_objective(precond: edm.Preconditioning, weight_fn: Callable,
                   settings: TDSMSettings = TDSMSettings()) -> Callable:
  """TDSM: `(denoise, key, clean, labels) -> (loss (B,), sigma, w(y~ | y~))` with the
  weights of `weight_fn(x_t, sigma, noisy_labels) -> (B, C)` (stop-gradient) and the
  estimator of `settings` (`lnrd.tdsm_loss`)."""
  kwargs = dataclasses.asdict(settings)

  def objective(denoise, key, clean, labels):
    per_example, sigma, w = tdsm_loss.tdsm_loss(denoise, weight_fn, key, clean, labels, precond,
                                                **kwargs)
    return per_example, sigma, jnp.take_along_axis(w, labels[:, None], axis=1)[:, 0]
  return objective


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, objective: Callable, *,
                    precond: edm.Preconditioning, num_classes: int,
                    ema_decay: float | Callable, augment: Callable | None = None,
                    preprocess: Callable | None = None) -> Callable:
  """`step(state, batch, key) -> (state, metrics)` on batch = {"image", "label"}.

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
  """
  denoise_fn = make_denoiser(model, precond, num_classes)
  preprocess = preprocess or images_lib.to_model_range
  decay_fn = ema.as_schedule(ema_decay)

  def step(state: TrainState, batch, key):
    augment_key, loss_key, dropout_key = jax.random.split(key, 3)
    clean, labels = preprocess(batch["image"]), batch["label"]
    augment_labels = None
    if augment is not None:
      clean, augment_labels = augment(augment_key, clean)

    def loss_fn(params):
      variables = {"params": params, **state.model_state}

      def denoise(x, sigma, y, rows=None):
        return denoise_fn(variables, x, sigma, y, train=True, key=dropout_key,
                          augment_labels=augment_labels, rows=rows)
      per_example, sigma, w_given = objective(denoise, loss_key, clean, labels)
      return per_example.mean(), (sigma, w_given)

    (loss, (sigma, w_given)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = decay_fn(state.step)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema.ema_update(state.ema_params, params, decay))
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
               "weight_of_given_label": w_given.mean(), "ema_decay": decay,
               "sigma_median": jnp.median(sigma)}
    return new_state, metrics
  return step


# ---- TDSM weights ---------------------------------------------------------------

@dataclasses.dataclass
class WeightModel:
  """Turns (x_t, sigma, y~) into TDSM's weights (B, C): `form` (released | paper) of
  `lnrd.weights` with the transition constants, from `probs_fn(x_t, sigma)`, the clean
  posterior q (or h~ when `noisy_target`: the classifier models the noisy label)."""
  form: str
  constants: dict
  probs_fn: Callable
  noisy_target: bool = False

  def __call__(self, x_t, sigma, noisy_labels):
    probs = self.probs_fn(x_t, sigma)
    consts = {k: jnp.asarray(v) for k, v in self.constants.items()}
    if self.form == "paper" and not self.noisy_target:
      probs = probs @ consts["transition"]  # h~ = T^T q
    return weights_lib.compute_weights(self.form, probs, noisy_labels, consts)


def classifier_weights(classifier, form: str, clean_prior=None,
                       transition=None) -> WeightModel:
  """The weights of a time-dependent classifier (`lnrd.runs.ExportedClassifier`, or any
  object with `.probs(x_t, sigma)`, `.transition`, `.noisy_target`), with its T unless
  `transition` is given. ValueError for the released form with a noisy-label
  classifier (it needs the clean posterior)."""
  if form not in weights_lib.WEIGHT_FORMS:
    raise ValueError(f"tdsm.weight_form={form!r}; allowed: {list(weights_lib.WEIGHT_FORMS)}")
  if form == "released" and classifier.noisy_target:
    raise ValueError(
        "tdsm.weight_form='released' needs a classifier of the clean label (trained with "
        "classifier.transition='known' or 'learned'); this one was trained with "
        "transition='none' and models the noisy label: use tdsm.weight_form='paper'")
  used = classifier.transition if transition is None else transition
  consts = weights_lib.transition_constants(np.asarray(used, np.float64), clean_prior)
  return WeightModel(form, consts, classifier.probs, noisy_target=classifier.noisy_target)


def exact_weights(mixture, transition, form: str = "released", clean_prior=None) -> WeightModel:
  """The exact weights of a 2-D Gaussian mixture (`sgn_jax.data.gmm`): an oracle."""
  consts = weights_lib.transition_constants(np.asarray(transition, np.float64), clean_prior)
  return WeightModel(form, consts, lambda x_t, sigma: mixture.class_posterior(x_t, sigma))


# ---- sampling -----------------------------------------------------------------

def make_sampler(model: nn.Module, precond: edm.Preconditioning, num_classes: int, mesh,
                 settings: sampler_lib.SamplerSettings = sampler_lib.SamplerSettings(),
                 denoise_fn_with_params: Callable | None = None) -> Callable:
  """Jitted `(variables, latents, labels, key) -> samples`, batch sharded over `mesh`.

  `denoise_fn_with_params(variables, x, sigma, labels)` defaults to the
  preconditioned network in eval mode; pass another one for e.g. an affine mix.
  """
  if denoise_fn_with_params is None:
    denoise_fn_with_params = make_denoiser(model, precond, num_classes)  # eval mode
  return sampler_lib.make_sharded_sampler(
      denoise_fn_with_params, mesh, **settings.sampler_kwargs(precond.sampling_range))
