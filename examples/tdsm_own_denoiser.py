r"""TDSM with your own Flax denoiser and your own arrays: no config, no workdir, no trainer.

    python examples/tdsm_own_denoiser.py                  # 3 classes, 40% symmetric noise
    python examples/tdsm_own_denoiser.py --steps=4000

Transition-aware weighted denoising score matching (Na et al., ICLR 2024) trains
a class-conditional diffusion model on noisily labelled data so that it samples
the CLEAN class-conditionals. It needs (1) a time-dependent classifier of the
noisy label, here the library's small MLP trained with
`lnrd.time_classifier.make_train_step`, which gives the weights
w(x_t, y~, y, t) = p(y | y~, x_t) (`lnrd.diffusion.WeightModel`), and (2) a
denoiser network: any Flax Linen module with EDM's raw-network signature

    __call__(x, noise_labels, class_labels, augment_labels=None, train=False)

(x: (B, ...) inputs already scaled by c_in, noise_labels: (B,) c_noise,
class_labels: (B, C) one-hot), wrapped by EDM's preconditioning
(`lnrd.edm`). Both train steps are pure `step(state, batch, key)` functions
you jit and call in your own loop; `lnrd.sampler.edm_sample` then draws
samples. The script trains DSM and TDSM on the same noisy labels and prints,
per model, how often a sample lands nearest the centre of the class it was
conditioned on (DSM imitates the noisy labels: about 1 - rate; TDSM recovers
the clean classes).
"""

from __future__ import annotations

import argparse
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lnrd import diffusion
from lnrd import edm
from lnrd import sampler
from lnrd import time_classifier
from lnrd import weights
from sgn_jax import noise


class MyDenoiser(nn.Module):
  """Your network F: an MLP on [x, embedding of c_noise, one-hot label]."""
  out_dim: int
  width: int = 128
  label_dim: int = 0  # read by the library: 0 = unconditional

  @nn.compact
  def __call__(self, x, noise_labels, class_labels, augment_labels=None, train=False):
    freqs = jnp.exp(jnp.linspace(0.0, 4.0, 8))
    emb = jnp.concatenate([jnp.sin(noise_labels[:, None] * freqs),
                           jnp.cos(noise_labels[:, None] * freqs)], -1)
    h = jnp.concatenate([x, emb, class_labels], -1)
    for _ in range(3):
      h = nn.silu(nn.Dense(self.width)(h))
    return nn.Dense(self.out_dim)(h)


def centres(num_classes: int) -> np.ndarray:
  angles = 2 * np.pi * np.arange(num_classes) / num_classes
  return np.stack([np.cos(angles), np.sin(angles)], 1) * 3.0


def make_data(n: int, num_classes: int, seed: int):
  """Your own arrays: 2-D points around class centres, clean labels."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, n)
  x = centres(num_classes)[labels] + rng.normal(size=(n, 2)) * 0.4
  return x.astype(np.float32), labels.astype(np.int32)


def train(step_fn, state, x, y, steps: int, batch_size: int, seed: int):
  """Your loop: numpy batches, one key per step, the jitted pure step."""
  step_fn = jax.jit(step_fn)
  rng = np.random.default_rng(seed)
  key = jax.random.PRNGKey(seed)
  for i in range(steps):
    rows = rng.choice(len(y), batch_size, replace=False)
    state, metrics = step_fn(state, {"image": x[rows], "label": y[rows]},
                             jax.random.fold_in(key, i))
  return state, {k: float(v) for k, v in metrics.items()}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--classifier_steps", type=int, default=1500)
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--num_classes", type=int, default=3)
  parser.add_argument("--noise", type=float, default=0.4, help="symmetric noise rate")
  parser.add_argument("--samples_per_class", type=int, default=300)
  args = parser.parse_args(argv)
  c = args.num_classes
  x, clean = make_data(8192, c, seed=0)
  transition = noise.transition_matrix("sym", c, args.noise, convention="tdsm")
  noisy = noise.sample_noisy_labels(clean, transition, seed=1).astype(np.int32)
  precond = edm.get_preconditioning("edm", sigma_data=1.5)

  # 1. The time-dependent noisy-label classifier, forward-corrected with the known T.
  classifier = time_classifier.get_time_classifier("mlp", c, hidden=64, num_layers=2,
                                                   sigma_data=1.5)
  tx = optax.adam(1e-3)
  cls_state = time_classifier.init_state(classifier, tx, (2,), c, jax.random.PRNGKey(1))
  cls_step = time_classifier.make_train_step(classifier, tx, precond=precond,
                                             transition=transition)
  cls_state, cls_metrics = train(cls_step, cls_state, x, noisy, args.classifier_steps,
                                 args.batch_size, seed=2)
  print(f"classifier: {cls_metrics}")
  cls_vars = {"params": cls_state.params["net"], **cls_state.model_state}
  probs_fn = lambda x_t, sigma: jax.nn.softmax(classifier.apply(cls_vars, x_t, sigma), -1)
  weight_fn = diffusion.WeightModel("released", weights.transition_constants(transition),
                                    probs_fn)

  # 2. DSM and TDSM with your denoiser: the same step factory, two objectives.
  results = {}
  for name, objective in (("dsm", diffusion.dsm_objective(precond)),
                          ("tdsm", diffusion.tdsm_objective(precond, weight_fn))):
    model = MyDenoiser(out_dim=2, label_dim=c)
    tx = optax.adam(2e-3)
    state = diffusion.init_state(model, tx, (2,), c, jax.random.PRNGKey(3))
    step = diffusion.make_train_step(model, tx, objective, precond=precond, num_classes=c,
                                     ema_decay=0.995)
    state, metrics = train(step, state, x, noisy, args.steps, args.batch_size, seed=4)

    # 3. Samples of the EMA network with EDM's sampler (Heun, 18 steps).
    denoise = functools.partial(diffusion.make_denoiser(model, precond, c),
                                diffusion.ema_variables(state))
    labels = jnp.repeat(jnp.arange(c), args.samples_per_class)
    latents = jax.random.normal(jax.random.PRNGKey(5), (len(labels), 2))
    samples = jax.jit(lambda z, y: sampler.edm_sample(
        denoise, z, y, None, sigma_max=40.0))(latents, labels)
    nearest = np.argmin(((np.asarray(samples)[:, None] - centres(c)) ** 2).sum(-1), 1)
    results[name] = float(np.mean(nearest == np.asarray(labels)))
    print(f"{name}: loss {metrics['loss']:.4f}, samples nearest their own class "
          f"{results[name]:.3f}")
  results["noisy_label_rate"] = float(np.mean(noisy != clean))
  print(results)
  return results


if __name__ == "__main__":
  main()
