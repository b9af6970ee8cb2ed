r"""When does VolMinNet's learned T recover the noise? A 2-D Gaussian-mixture study.

    python experiments/volmin_gmm.py                 # the grid below, ~5 min on a CPU core
    python experiments/volmin_gmm.py --quick         # pair noise, 2k-step rows only

3 or 4 classes (`sgn_jax.data.gmm.GaussianMixture2D`: means on a circle of radius 2,
std 0.5), 20,000 training points, 30% noise: symmetric (TDSM convention) or pair
flips i -> i+1; the true diagonal is 0.70 in each. A small MLP f (2 -> 64 -> 64 -> 4, SiLU)
and VolMinNet's logits theta are trained together with Adam on

    mean_b -log((softmax(f(x_b)) @ T(theta))[y~_b]) + lam * logdet T(theta)

(`lnrd.time_classifier.forward_corrected_nll`, `volmin_regularizer`,
`sgn_jax.noise_estimation.volmin_transition`), batch 256. Each row varies one of:
the number of steps, theta's learning rate, lam, theta's start. Printed: the learned
diagonal (mean), the mean L1 row error to the true T (`transition_error`), the
clean test accuracy of argmax f, and the diagonal along the way; first the anchor
estimate (Patrini, 97th percentile) from a plain cross-entropy classifier and from
the exact Bayes posteriors for comparison. The table is in the module docstring of
`sgn_jax.noise_estimation`.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lnrd import time_classifier as tc
from sgn_jax import noise
from sgn_jax import noise_estimation as ne
from sgn_jax.data.gmm import GaussianMixture2D


class MLP(nn.Module):
  num_classes: int = 4
  hidden: int = 64

  @nn.compact
  def __call__(self, x):
    for _ in range(2):
      x = nn.silu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)


def pair_transition(num_classes: int, rate: float) -> np.ndarray:
  """Pair flips i -> i + 1 (mod C) with probability `rate`."""
  return (1 - rate) * np.eye(num_classes) + rate * np.roll(np.eye(num_classes), 1, axis=1)


NOISES = {  # name: (num_classes, T)
    "4-class sym 30%": (4, noise.transition_matrix("sym", 4, 0.3, convention="tdsm")),
    "4-class pair 30%": (4, pair_transition(4, 0.3)),
    "3-class sym 30%": (3, noise.transition_matrix("sym", 3, 0.3, convention="tdsm")),
}


def make_data(n: int, T: np.ndarray, seed: int = 0):
  """(x, clean, noisy, mixture) of the toy problem: noisy labels drawn from T."""
  gmm = GaussianMixture2D(T.shape[0])
  x, clean = gmm.sample(jax.random.PRNGKey(seed), n)
  noisy = noise.sample_noisy_labels(np.asarray(clean), T, seed=seed + 1)
  return np.asarray(x), np.asarray(clean), noisy, gmm


def train(x, noisy, *, steps: int, lam: float, lr: float = 1e-3, lr_theta: float | None = None,
          theta0=None, learned: bool = True, batch: int = 256, seed: int = 0,
          record_every: int = 0):
  """Trains f (and theta when `learned`); returns (params, history of T's mean diagonal)."""
  c = int(noisy.max()) + 1
  model = MLP(c)
  params = {"net": model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 2)))["params"]}
  if learned:
    params["theta"] = jnp.asarray(tc.init_volmin_theta(c) if theta0 is None else theta0,
                                  jnp.float32)
  lr_theta = lr if lr_theta is None else lr_theta
  tx = optax.multi_transform({"net": optax.adam(lr), "theta": optax.adam(lr_theta)},
                             {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()})
  opt_state = tx.init(params)
  x, noisy = jnp.asarray(x), jnp.asarray(noisy)

  def loss_fn(p, xb, yb):
    t = ne.volmin_transition(p["theta"]) if learned else jnp.eye(c)
    nll = tc.forward_corrected_nll(model.apply({"params": p["net"]}, xb), yb, t).mean()
    return nll + lam * tc.volmin_regularizer(t) if learned else nll

  def step(carry, idx):
    p, s = carry
    grads = jax.grad(loss_fn)(p, x[idx], noisy[idx])
    updates, s = tx.update(grads, s, p)
    return (optax.apply_updates(p, updates), s), None

  @jax.jit
  def run(p, s, idx):
    return jax.lax.scan(step, (p, s), idx)[0]

  idx = jax.random.randint(jax.random.PRNGKey(seed + 100), (steps, batch), 0, x.shape[0])
  chunk = record_every or steps
  history = []
  for start in range(0, steps, chunk):
    params, opt_state = run(params, opt_state, idx[start:start + chunk])
    if learned:
      history.append((start + chunk, float(jnp.mean(jnp.diag(
          ne.volmin_transition(params["theta"]))))))
  return params, history


def posteriors(params, x, learned: bool):
  """(clean posteriors softmax f, noisy posteriors softmax f @ T) on x."""
  c = params["net"]["Dense_2"]["bias"].shape[0]
  probs = jax.nn.softmax(MLP(c).apply({"params": params["net"]}, jnp.asarray(x)))
  t = ne.volmin_transition(params["theta"]) if learned else jnp.eye(c)
  return np.asarray(probs, np.float64), np.asarray(probs @ t, np.float64)


GRID = (  # name, kwargs of train ("anchors": theta_0 from the anchor estimate)
    ("authors: lam 1e-4, lr 1e-3, 2k steps", dict(steps=2000, lam=1e-4)),
    ("authors, 20k steps", dict(steps=20000, lam=1e-4)),
    ("lam 1e-2", dict(steps=2000, lam=1e-2)),
    ("lam 1e-1", dict(steps=2000, lam=1e-1)),
    ("lam 1e-1, 20k steps", dict(steps=20000, lam=1e-1)),
    ("theta lr 1e-2 (10x the net's)", dict(steps=2000, lam=1e-4, lr_theta=1e-2)),
    ("theta_0 at the anchor estimate", dict(steps=2000, lam=1e-4, theta0="anchors")),
    ("theta_0 = -6 (T_ii ~ 0.99)", dict(steps=2000, lam=1e-4, theta0=-6.0)),
)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="2k-step rows of the pair noise only")
  args = parser.parse_args(argv)
  print(f"{'noise':17s} {'setting':34s} {'diag':>6s} {'err':>6s} {'acc':>6s}  diagonal along the way")
  for noise_name, (c, T) in NOISES.items():
    if args.quick and "pair" not in noise_name:
      continue
    x, clean, noisy, gmm = make_data(20000, T)
    x_test, clean_test, _, _ = make_data(4000, T, seed=7)
    # Anchors: a plain cross-entropy classifier on the noisy labels, and the exact posteriors.
    params, _ = train(x, noisy, steps=2000, lam=0.0, learned=False)
    _, ce_probs = posteriors(params, x, learned=False)
    exact = np.asarray(gmm.noisy_label_posterior(x, T), np.float64)
    anchors = ne.anchor_transition(ce_probs, quantile=0.97)
    for name, t in (("anchors, CE classifier", anchors),
                    ("anchors, exact posteriors", ne.anchor_transition(exact, quantile=0.97))):
      print(f"{noise_name:17s} {name:34s} {np.diag(t).mean():6.3f} {ne.transition_error(t, T):6.3f}")
    for name, kw in GRID:
      if args.quick and kw["steps"] > 2000:
        continue
      kw = dict(kw)
      if kw.get("theta0") == "anchors":
        kw["theta0"] = ne.volmin_theta(anchors)
      elif isinstance(kw.get("theta0"), float):
        kw["theta0"] = np.full((c, c), kw["theta0"])
      t0 = time.time()
      params, hist = train(x, noisy, record_every=kw["steps"] // 5, **kw)
      t = np.asarray(ne.volmin_transition(params["theta"]), np.float64)
      acc = np.mean(posteriors(params, x_test, True)[0].argmax(1) == clean_test)
      print(f"{noise_name:17s} {name:34s} {np.diag(t).mean():6.3f} "
            f"{ne.transition_error(t, T):6.3f} {acc:6.3f}  "
            + " ".join(f"{s}:{d:.3f}" for s, d in hist) + f"  ({time.time() - t0:.0f}s)",
            flush=True)


if __name__ == "__main__":
  main()
