r"""The time-dependent noisy-label classifier that TDSM's weights need (`task="noisy_classifier"`).

    python main.py --config=configs/mnist_sym.py:task=noisy_classifier --workdir=CLS_DIR
    python main.py --config=configs/mnist_sym.py:method=tdsm \
        --config.tdsm.classifier_dir=CLS_DIR --workdir=DIFFUSION_DIR

The classifier h(x_t, sigma) sees noisy inputs x_t = x + sigma n with sigma drawn
from the diffusion model's training distribution and is trained on the given
(noisy) labels y~ with

  classifier.transition='known'    forward correction with the true T:
                                   -log (T^T softmax(h))_y~   (softmax(h) ~ p_t(y | x_t), clean)
  classifier.transition='learned'  VolMinNet: T = rownorm(I + (1 - I) sigmoid(theta)) trained
                                   jointly, plus 1e-4 logdet(T) (the TDSM authors' variant)
  classifier.transition='none'     plain cross-entropy: softmax(h) ~ p_t(y~ | x_t), the paper's h~

Adam with EDM's warm-up, no EMA. Every `eval_every_kimg` the clean test accuracy
of argmax softmax(h) is measured at several fixed noise levels. The run keeps its
own orbax checkpoints (resume) and, at the end, exports WORKDIR/time_classifier/
(variables + meta.json with the architecture and the transition used), which
`load_export` turns into the probability function TDSM training calls.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lnrd import edm
from lnrd import time_classifier
from lnrd import train_loop
from sgn_jax import noise
from sgn_jax import train_data
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers
from sgn_jax.training.train_state import TrainState

TRANSITIONS = ("known", "learned", "none")
EXPORT_DIR = "time_classifier"
EVAL_SIGMAS = (0.002, 0.1, 0.5, 1.0, 2.0, 5.0)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a noisy_classifier config before any data or compute."""
  train_loop.check_data_and_noise(config)
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
  if c.optim.learning_rate <= 0:
    raise ValueError(f"classifier.optim.learning_rate={c.optim.learning_rate} must be > 0")


def _loop_config(config):
  """The classifier's own loop settings, in the shape `train_loop.run` reads."""
  c = config.classifier
  return ml_collections.ConfigDict(dict(
      log_every_steps=c.log_every_steps, checkpoint_every_steps=c.checkpoint_every_steps,
      keep_checkpoints=config.keep_checkpoints, stop_after_steps=config.stop_after_steps))


class NoisyLabelClassifier:
  """Model, loss and jitted train/eval functions of the time-dependent classifier."""

  def __init__(self, config, mesh, input_shape, num_classes: int, steps_per_epoch: int,
               transition: np.ndarray):
    c = config.classifier
    self.config = config
    self.mesh = mesh
    self.input_shape = tuple(input_shape)
    self.num_classes = num_classes
    self.steps_per_epoch = steps_per_epoch
    self.kind = c.transition
    self.known_transition = jnp.asarray(
        transition if c.transition == "known" else np.eye(num_classes), jnp.float32)
    self.model = time_classifier.get_time_classifier(
        c.arch, num_classes, **dict(c.get("kwargs", {}) or {}))
    self.precond = edm.from_config(config.precond)
    self.tx = train_loop.adam_with_warmup(c.optim, c.batch_size)
    # The authors train the classifier on EDM-augmented images with their augment labels.
    self.augment = train_loop.build_augment(config, self.input_shape)
    self.replicated = mesh_lib.replicated(mesh)

  def init_state(self, key) -> TrainState:
    def init(key):
      params_key, rng = jax.random.split(key)
      x = jnp.zeros((1,) + self.input_shape, jnp.float32)
      variables = self.model.init({"params": params_key}, x, jnp.ones((1,)), train=False)
      params = {"net": variables["params"]}
      if self.kind == "learned":
        params["theta"] = time_classifier.init_volmin_theta(self.num_classes)
      model_state = {k: v for k, v in variables.items() if k != "params"}
      return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                        opt_state=self.tx.init(params), ema_params={}, ema_model_state={},
                        rng=rng)
    return train_loop.init_replicated(init, key, self.mesh)

  def transition(self, params) -> jax.Array:
    if self.kind == "learned":
      return time_classifier.volmin_transition(params["theta"])
    return self.known_transition

  def _apply(self, params, model_state, x_t, sigma, train, augment_labels=None):
    variables = {"params": params["net"], **model_state}
    if train and model_state:
      logits, updates = self.model.apply(variables, x_t, sigma, train=True,
                                         augment_labels=augment_labels,
                                         mutable=list(model_state))
      return logits, updates
    return self.model.apply(variables, x_t, sigma, train=train,
                            augment_labels=augment_labels), model_state

  def train_step(self, state: TrainState, inputs):
    cfg = self.config
    c = cfg.classifier
    key = jax.random.fold_in(state.rng, state.step)
    sigma_key, noise_key, augment_key = jax.random.split(key, 3)
    images, labels, _ = train_loop.draw_batch(inputs, state.step, self.steps_per_epoch,
                                              c.batch_size, self.mesh)
    clean = train_loop.to_model_range(images, cfg.get("pad_to", 0))
    augment_labels = None
    if self.augment is not None:
      clean, augment_labels = self.augment(augment_key, clean)
    sigma = self.precond.sample_sigma(sigma_key, (clean.shape[0],))
    x_t = edm.add_noise(noise_key, clean, sigma)

    def loss_fn(params):
      logits, model_state = self._apply(params, state.model_state, x_t, sigma, train=True,
                                        augment_labels=augment_labels)
      transition = self.transition(params)
      nll = time_classifier.forward_corrected_nll(logits, labels, transition).mean()
      loss = nll
      if self.kind == "learned":
        loss = loss + c.volmin_weight * time_classifier.volmin_regularizer(transition)
      return loss, (nll, logits, model_state)

    (loss, (nll, logits, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "nll": nll, "grad_norm": optax.global_norm(grads),
               "noisy_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return state.replace(step=state.step + 1, params=params, model_state=model_state,
                         opt_state=opt_state), metrics

  def eval_sums_at(self, sigma_value: float) -> Callable:
    """`eval_sums(params, model_state, images, labels, mask)` at a fixed sigma.

    Deterministic noise (key from sigma) so evaluations are comparable over time.
    """
    pad_to = self.config.get("pad_to", 0)

    def eval_sums(params, model_state, images, labels, mask):
      clean = train_loop.to_model_range(images, pad_to)
      sigma = jnp.full((clean.shape[0],), sigma_value, jnp.float32)
      key = jax.random.fold_in(jax.random.PRNGKey(0), int(sigma_value * 1e4))
      x_t = edm.add_noise(key, clean, sigma)
      logits, _ = self._apply(params, model_state, x_t, sigma, train=False)
      w = mask.astype(jnp.float32)
      return {"correct": jnp.sum((jnp.argmax(logits, -1) == labels) * w), "count": jnp.sum(w)}
    return eval_sums


def _export(workdir: str, classifier: NoisyLabelClassifier, state, config) -> str:
  """WORKDIR/time_classifier/{variables.msgpack, meta.json}; returns the folder."""
  folder = os.path.join(workdir, EXPORT_DIR)
  params = jax.device_get(state.params)
  transition = np.asarray(jax.device_get(classifier.transition(params)), np.float64)
  variables = {"params": params["net"], **jax.device_get(state.model_state)}
  if jax.process_index() == 0:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "variables.msgpack"), "wb") as f:
      f.write(flax.serialization.to_bytes(variables))
    meta = dict(arch=config.classifier.arch, num_classes=classifier.num_classes,
                kwargs=dict(config.classifier.get("kwargs", {}) or {}),
                transition=transition.tolist(), learned=classifier.kind == "learned",
                noisy_target=classifier.kind == "none", input_shape=list(classifier.input_shape),
                precond=config.precond.to_dict(), step=int(jax.device_get(state.step)))
    with open(os.path.join(folder, "meta.json"), "w") as f:
      json.dump(meta, f, indent=2)
  return folder


@dataclasses.dataclass
class ExportedClassifier:
  """A trained time-dependent classifier, ready for TDSM's weights."""
  arch: str
  module: Any
  variables: Any
  transition: np.ndarray
  learned: bool
  noisy_target: bool
  input_shape: tuple

  def probs(self, x_t, sigma):
    """softmax h(x_t, sigma): the clean posterior (or h~ when noisy_target), (B, C)."""
    return jax.nn.softmax(self.module.apply(self.variables, x_t, sigma, train=False), axis=-1)


def _export_folder(path: str) -> str:
  return path if os.path.basename(os.path.normpath(path)) == EXPORT_DIR else os.path.join(
      path, EXPORT_DIR)


def check_export(path: str | None) -> None:
  """ValueError/FileNotFoundError with the commands to make one when `path` has no classifier."""
  how = ("train one first: python main.py --config=configs/<dataset>_<noise>.py:"
         "task=noisy_classifier --workdir=CLS_DIR, then pass --config.tdsm.classifier_dir=CLS_DIR")
  if not path:
    raise ValueError(f"method=tdsm needs tdsm.classifier_dir (a time-dependent classifier); {how}")
  folder = _export_folder(path)
  for name in ("variables.msgpack", "meta.json"):
    if not os.path.exists(os.path.join(folder, name)):
      raise FileNotFoundError(
          f"tdsm.classifier_dir={path!r}: {os.path.join(folder, name)} not found (the "
          f"classifier run exports it when it finishes); {how}")


def load_export(path: str) -> ExportedClassifier:
  """The classifier exported by a finished `noisy_classifier` run in `path`."""
  check_export(path)
  folder = _export_folder(path)
  with open(os.path.join(folder, "meta.json")) as f:
    meta = json.load(f)
  module = time_classifier.get_time_classifier(meta["arch"], meta["num_classes"],
                                               **meta["kwargs"])
  x = jnp.zeros((1,) + tuple(meta["input_shape"]), jnp.float32)
  template = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x, jnp.ones((1,)),
                                                train=False))
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
  with open(os.path.join(folder, "variables.msgpack"), "rb") as f:
    variables = flax.serialization.from_bytes(template, f.read())
  return ExportedClassifier(meta["arch"], module, jax.tree.map(jnp.asarray, variables),
                            np.asarray(meta["transition"]), meta["learned"],
                            meta["noisy_target"], tuple(meta["input_shape"]))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       devices=None) -> dict[str, Any]:
  """Trains the time-dependent classifier of `config`; exports it; returns final metrics."""
  validate_config(config)
  c = config.classifier
  mesh = mesh_lib.create_mesh(devices)
  mesh_lib.check_divisible(c.batch_size, mesh, "classifier.batch_size")
  mesh_lib.check_divisible(c.eval_batch_size, mesh, "classifier.eval_batch_size")
  data_config = ml_collections.ConfigDict(config.to_dict())
  data_config.batch_size = c.batch_size
  data_config.eval_batch_size = c.eval_batch_size
  data = train_data.InMemoryData(data_config, mesh)
  if data.steps_per_epoch == 0:
    raise ValueError(f"classifier.batch_size={c.batch_size} is larger than the training set")
  transition = data.splits.transition if data.splits.transition is not None else np.eye(
      data.num_classes)
  if c.transition == "known":
    noise.check_invertible(transition)
  shape = train_loop.model_input_shape(data.input_shape, config.get("pad_to", 0))
  classifier = NoisyLabelClassifier(config, mesh, shape, data.num_classes, data.steps_per_epoch,
                                    transition)
  total_steps = max(1, int(round(c.duration_kimg * 1000 / c.batch_size)))
  state = classifier.init_state(jax.random.fold_in(jax.random.PRNGKey(config.seed), 11))
  logging.info("time-dependent classifier %s: %d parameters, transition %s, %d steps", c.arch,
               train_loop.num_params(state.params["net"]), c.transition, total_steps)
  writer = writers.create_writer(workdir)
  eval_fns = {s: classifier.eval_sums_at(s) for s in EVAL_SIGMAS}
  results: dict[str, float] = {}

  def evaluate(step, state):
    for s, fn in eval_fns.items():
      totals, n = data.evaluate("test", fn, state.params, state.model_state)
      results[f"test/accuracy_sigma_{s:g}"] = float(totals["correct"]) / n
    writer.write_scalars(step, results)
    logging.info("step %d: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in results.items()))

  eval_steps = max(1, int(round(c.eval_every_kimg * 1000 / c.batch_size)))
  train_step = jax.jit(classifier.train_step, donate_argnums=0)
  state, step, last, steps_run = train_loop.run(
      _loop_config(config), workdir, state, train_step, data.train_inputs, total_steps,
      c.batch_size, mesh, writer, periodic=(train_loop.Periodic(eval_steps, evaluate),))
  if not results:
    evaluate(step, state)
  final = {**results, **{f"train/{k}": v for k, v in last.items()}, "step": step,
           "completed": float(step >= total_steps), "steps_this_run": steps_run}
  if step >= total_steps:
    folder = _export(workdir, classifier, state, config)
    logging.info("exported the classifier to %s", folder)
    if c.transition == "learned":
      learned = np.asarray(jax.device_get(classifier.transition(state.params)))
      final["learned_transition_error"] = float(np.abs(learned - transition).sum(1).mean())
  writers.write_metrics_json(os.path.join(workdir, "metrics.json"), final)
  writer.close()
  return final

