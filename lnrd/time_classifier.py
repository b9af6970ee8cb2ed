"""Training of TDSM's time-dependent noisy-label classifier (Na et al., ICLR 2024).

The classifier p_phi(y~ | x_t, sigma) of the *noisy* label given a noisy input
x_t = x + sigma * n, as pure functions: `init_state`, `make_train_step`
(`step(state, batch, key) -> (state, metrics)`), `make_eval_sums_at` and
`transition_of`, plus the authors' optimiser of VolMinNet's theta
(`training/classifier_loop.py`): `volmin_optimizer` with the piecewise-constant
`volmin_learning_rate` and theta frozen from `transition_freeze_step` on.

Its other pieces have their own modules:

* the networks (`TimeCNN`, `TimeResNet`, `TimeMLP`, `get_time_classifier`,
  `TIME_CLASSIFIERS`, `edm_classifier_precond`, `NoiseEmbedding`):
  `lnrd.networks.time_classifiers`;
* the loss (`forward_corrected_nll`, VolMinNet's `init_volmin_theta`,
  `volmin_transition`, `volmin_regularizer`, `VOLMIN_WEIGHT`):
  `lnrd.classifier_loss`;
* the converter of the authors' PyTorch state dicts
  (`torch_state_dict_to_params`): `lnrd.networks.convert_torch_classifier`.

They are re-exported here, so `lnrd.time_classifier.<name>` keeps working for
each of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lnrd import edm
from lnrd import images
# Re-exported: the pieces that used to live in this module.
from lnrd.classifier_loss import DEFAULT_TINY
from lnrd.classifier_loss import VOLMIN_WEIGHT
from lnrd.classifier_loss import forward_corrected_nll
from lnrd.classifier_loss import init_volmin_theta
from lnrd.classifier_loss import volmin_regularizer
from lnrd.classifier_loss import volmin_transition
from lnrd.networks.convert_torch_classifier import torch_state_dict_to_params
from lnrd.networks.time_classifiers import TIME_CLASSIFIERS
from lnrd.networks.time_classifiers import NoiseEmbedding
from lnrd.networks.time_classifiers import TimeBasicBlock
from lnrd.networks.time_classifiers import TimeCNN
from lnrd.networks.time_classifiers import TimeMLP
from lnrd.networks.time_classifiers import TimeResNet
from lnrd.networks.time_classifiers import edm_classifier_precond
from lnrd.networks.time_classifiers import get_time_classifier
from lnrd.networks.time_classifiers import positional_embedding
from sgn_jax.training.train_state import TrainState
from sgn_jax.training.train_state import init_replicated

__all__ = [
    # This module: the optimiser, state, step and evaluation.
    "EVAL_SIGMAS", "TRANSITIONS", "init_state", "make_eval_sums_at", "make_train_step",
    "transition_freeze_step", "transition_of", "volmin_learning_rate", "volmin_optimizer",
    # lnrd.classifier_loss.
    "DEFAULT_TINY", "VOLMIN_WEIGHT", "forward_corrected_nll", "init_volmin_theta",
    "volmin_regularizer", "volmin_transition",
    # lnrd.networks.time_classifiers.
    "TIME_CLASSIFIERS", "NoiseEmbedding", "TimeBasicBlock", "TimeCNN", "TimeMLP", "TimeResNet",
    "edm_classifier_precond", "get_time_classifier", "positional_embedding",
    # lnrd.networks.convert_torch_classifier.
    "torch_state_dict_to_params",
]


# -----------------------------------------------------------------------------
# VolMinNet's optimiser: the authors' learning-rate steps and the frozen transition.


def _first_step_reaching(kimg: float, batch_size: int) -> int:
  """The first step whose images seen before it (step * batch_size) reach kimg * 1000."""
  return -(-int(round(kimg * 1000)) // batch_size)


def volmin_learning_rate(learning_rate: float, *, boundaries_kimg: Sequence[float],
                         factors: Sequence[float], batch_size: int) -> Callable:
  """The authors' piecewise-constant VolMinNet learning rate, as an optax schedule.

  At a step that has seen nimg = step * batch_size images before it, the rate is
  learning_rate * factors[i], i = the number of boundaries with nimg >= 1000 *
  boundaries_kimg[i] (no warm-up). The authors' loop (tdsm@6a57a54
  training/classifier_loop.py:117-126) uses boundaries (1500, 3000, 7500) kimg and
  factors (1, 0.1, 0.01, 1): the rate returns to its full value after 7.5 Mimg.

  Args:
    learning_rate: the base rate.
    boundaries_kimg: strictly increasing, positive, in thousands of images.
    factors: len(boundaries_kimg) + 1 non-negative multipliers.
    batch_size: images per step.

  Returns:
    `schedule(count) -> rate` (count: the optimiser's step count, from 0).

  Raises:
    ValueError: boundaries not positive and increasing, factors of the wrong
      length or negative, batch_size < 1.
  """
  boundaries = tuple(float(b) for b in boundaries_kimg)
  factors = tuple(float(f) for f in factors)
  if not boundaries or any(b <= 0 for b in boundaries) or any(
      b >= c for b, c in zip(boundaries, boundaries[1:])):
    raise ValueError(f"boundaries_kimg={boundaries} must be positive and strictly increasing")
  if len(factors) != len(boundaries) + 1 or any(f < 0 for f in factors):
    raise ValueError(f"factors={factors} must be {len(boundaries) + 1} non-negative numbers "
                     "(one more than boundaries_kimg)")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1")
  steps = jnp.asarray([_first_step_reaching(b, batch_size) for b in boundaries], jnp.int32)
  rates = jnp.asarray([learning_rate * f for f in factors], jnp.float32)

  def schedule(count):
    return rates[jnp.sum(jnp.asarray(count, jnp.int32) >= steps)]
  return schedule


def transition_freeze_step(freeze_kimg: float, batch_size: int) -> int | None:
  """The first step at which VolMinNet's theta is frozen: the first with more than
  freeze_kimg * 1000 images seen before it (the authors set `requires_grad=False` once
  7.5M < cur_nimg, training/classifier_loop.py:102-104); None when freeze_kimg <= 0."""
  if freeze_kimg <= 0:
    return None
  return int(round(freeze_kimg * 1000)) // batch_size + 1


def volmin_optimizer(learning_rate: float, *, batch_size: int, lr_kimg: Sequence[float],
                     lr_factors: Sequence[float], freeze_transition_kimg: float,
                     warmup_kimg: float, beta1: float, beta2: float,
                     eps: float) -> optax.GradientTransformation:
  """Adam of the VolMinNet classifier (params {"net": ..., "theta": ...}), as the authors'.

  EDM's non-finite-gradient sanitising and Adam with `volmin_learning_rate` over
  `lr_kimg` / `lr_factors` (an empty `lr_kimg`: EDM's linear warm-up over
  `warmup_kimg` instead). From `transition_freeze_step(freeze_transition_kimg)` on,
  theta's updates are zero and its Adam moments are no longer updated (torch's Adam
  skips a parameter without gradient), while the network trains on; freeze_transition_kimg
  <= 0 never freezes.
  """
  if lr_kimg:
    schedule = volmin_learning_rate(learning_rate, boundaries_kimg=lr_kimg, factors=lr_factors,
                                    batch_size=batch_size)
  else:
    schedule = edm.edm_learning_rate(learning_rate, warmup_kimg, batch_size)

  def adam():
    return optax.chain(edm.sanitize_gradients(),
                       optax.adam(schedule, b1=beta1, b2=beta2, eps=eps))

  freeze = transition_freeze_step(freeze_transition_kimg, batch_size)
  if freeze is None:
    return adam()
  theta = optax.transforms.conditionally_mask(adam(), lambda step: step < freeze)
  return optax.multi_transform(
      {"net": adam(), "theta": theta},
      lambda params: {k: jax.tree.map(lambda _, k=k: "theta" if k == "theta" else "net", v)
                      for k, v in params.items()})


# -----------------------------------------------------------------------------
# Training: state, train step and evaluation as pure functions.

TRANSITIONS = ("known", "learned", "none")
EVAL_SIGMAS = (0.002, 0.1, 0.5, 1.0, 2.0, 5.0)


def init_state(model: nn.Module, tx, input_shape, num_classes: int, key, *,
               learned_transition: bool = False, mesh=None):
  """The classifier's train state: params {"net": ..., ["theta": VolMinNet logits]},
  model state (BatchNorm statistics), optimizer state, base key; no EMA (the
  authors keep none). Born replicated on `mesh` when given."""
  input_shape = tuple(input_shape)

  def init(key):
    params_key, rng = jax.random.split(key)
    x = jnp.zeros((1,) + input_shape, jnp.float32)
    variables = model.init({"params": params_key}, x, jnp.ones((1,)), train=False)
    params = {"net": variables["params"]}
    if learned_transition:
      params["theta"] = init_volmin_theta(num_classes)
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=tx.init(params), ema_params={}, ema_model_state={}, rng=rng)
  return init_replicated(init, key, mesh)


def transition_of(params, known_transition) -> jax.Array:
  """T of the classifier: VolMinNet's from params["theta"] when learned, else the
  known one (the identity for `transition='none'`)."""
  if "theta" in params:
    return volmin_transition(params["theta"])
  return jnp.asarray(known_transition, jnp.float32)


def _apply(model, params, model_state, x_t, sigma, train, augment_labels=None):
  variables = {"params": params["net"], **model_state}
  if train and model_state:
    return model.apply(variables, x_t, sigma, train=True, augment_labels=augment_labels,
                       mutable=list(model_state))
  return model.apply(variables, x_t, sigma, train=train,
                     augment_labels=augment_labels), model_state


def make_train_step(model: nn.Module, tx, *, precond, transition,
                    volmin_weight: float = VOLMIN_WEIGHT, augment: Callable | None = None,
                    preprocess: Callable | None = None) -> Callable:
  """`step(state, batch, key) -> (state, metrics)` of the time-dependent classifier.

  x_t = x + sigma n with sigma from `precond`'s training distribution (as the
  diffusion model), loss `forward_corrected_nll` with T = `transition` (a (C, C)
  array: the known T, or the identity for the plain noisy-label classifier h~), or
  VolMinNet's learned T (+ volmin_weight * logdet T) when the state holds
  params["theta"] (`init_state(learned_transition=True)`). `augment`: EDM's pipe
  (the authors train the classifier on augmented images with their augment
  labels); `preprocess`: images -> model range (default `lnrd.images.to_model_range`).
  """
  preprocess = preprocess or images.to_model_range
  known = jnp.asarray(transition, jnp.float32)

  def step(state, batch, key):
    sigma_key, noise_key, augment_key = jax.random.split(key, 3)
    clean, labels = preprocess(batch["image"]), batch["label"]
    augment_labels = None
    if augment is not None:
      clean, augment_labels = augment(augment_key, clean)
    sigma = precond.sample_sigma(sigma_key, (clean.shape[0],))
    x_t = edm.add_noise(noise_key, clean, sigma)

    def loss_fn(params):
      logits, model_state = _apply(model, params, state.model_state, x_t, sigma, train=True,
                                   augment_labels=augment_labels)
      t = transition_of(params, known)
      nll = forward_corrected_nll(logits, labels, t).mean()
      loss = nll + volmin_weight * volmin_regularizer(t) if "theta" in params else nll
      return loss, (nll, logits, model_state)

    (loss, (nll, logits, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "nll": nll, "grad_norm": optax.global_norm(grads),
               "noisy_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return state.replace(step=state.step + 1, params=params, model_state=model_state,
                         opt_state=opt_state), metrics
  return step


def make_eval_sums_at(model: nn.Module, sigma_value: float,
                      preprocess: Callable | None = None) -> Callable:
  """`eval_sums(params, model_state, images, labels, mask)`: correct argmax
  predictions and count at a fixed sigma (noise drawn from a key of sigma, so
  evaluations are comparable over time)."""
  preprocess = preprocess or images.to_model_range

  def eval_sums(params, model_state, batch_images, labels, mask):
    clean = preprocess(batch_images)
    sigma = jnp.full((clean.shape[0],), sigma_value, jnp.float32)
    key = jax.random.fold_in(jax.random.PRNGKey(0), int(sigma_value * 1e4))
    x_t = edm.add_noise(key, clean, sigma)
    logits, _ = _apply(model, params, model_state, x_t, sigma, train=False)
    w = mask.astype(jnp.float32)
    return {"correct": jnp.sum((jnp.argmax(logits, -1) == labels) * w), "count": jnp.sum(w)}
  return eval_sums
