r"""SGN's loss in your own classifier loop: your arrays, your Flax module, your optax loop.

    python examples/sgn_own_loop.py                        # 3 Gaussian blobs, 40% noise
    python examples/sgn_own_loop.py --steps=2000 --noise=0.4

SGN (Englesson & Azizpour, ICLR 2024) regresses the ilr-transformed, smoothed
one-hot label t = ilr(LS(y)) with a Gaussian whose mean is shifted towards an
EMA network's prediction as training goes on (label correction):

    loss = -log N(t - (1 - alpha^e)(t - mu_ema); mu(x), Sigma(x)),

where the network outputs the mean mu (K - 1 values) and a rank-one scale r
(K - 1 values), so its head has 2 (K - 1) outputs. Predictions are
softmax-of-clr: `losses.sgn_predict_probs(mu)`. Everything below is plain JAX,
Flax and optax plus `sgn_jax.losses` and `sgn_jax.noise`: no config, no
workdir, no trainer. Swap in your own data and network.
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import numpy as np
import optax

from sgn_jax import losses
from sgn_jax import noise


class Net(nn.Module):
  """Any network whose head gives 2 (K - 1) outputs: the mean and the scale r."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(64)(x))
    x = nn.relu(nn.Dense(64)(x))
    return nn.Dense(2 * (self.num_classes - 1))(x)


def make_blobs(n: int, num_classes: int, seed: int):
  """Your own arrays: points around `num_classes` centres on a circle, clean labels."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, n)
  angles = 2 * np.pi * labels / num_classes
  x = np.stack([np.cos(angles), np.sin(angles)], 1) * 2.0 + rng.normal(size=(n, 2)) * 0.5
  return x.astype(np.float32), labels.astype(np.int32)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--num_classes", type=int, default=3)
  parser.add_argument("--noise", type=float, default=0.4, help="symmetric noise rate")
  parser.add_argument("--num_train", type=int, default=4096)
  args = parser.parse_args(argv)
  k = args.num_classes

  x_train, clean = make_blobs(args.num_train, k, seed=0)
  x_test, y_test = make_blobs(2048, k, seed=1)
  # Noisy labels: drawn once from a transition matrix (or use your own noisy labels).
  noisy, _ = noise.make_noisy_labels(clean, "sym", num_classes=k, rate=args.noise, seed=0)
  steps_per_epoch = args.num_train // args.batch_size

  model = Net(k)
  params = model.init(jax.random.PRNGKey(0), x_train[:1])
  tx = optax.sgd(0.05, momentum=0.9, nesterov=True)
  opt_state = tx.init(params)
  ema_params = params
  ema_decay = 0.99

  def loss_fn(params, ema_params, x, y, epoch):
    out, ema_out = model.apply(params, x), model.apply(ema_params, x)
    mean, r = out[:, :k - 1], out[:, k - 1:]
    per_example = losses.sgn_loss(mean, r, y, ema_out[:, :k - 1], num_classes=k,
                                  gamma=0.01, alpha=0.995, epoch=epoch)
    return per_example.mean()

  @jax.jit
  def train_step(params, ema_params, opt_state, x, y, step):
    epoch = step / steps_per_epoch
    loss, grads = jax.value_and_grad(loss_fn)(params, ema_params, x, y, epoch)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema_params,
                              params)
    return params, ema_params, opt_state, loss

  rng = np.random.default_rng(2)
  for step in range(args.steps):
    rows = rng.choice(args.num_train, args.batch_size, replace=False)
    params, ema_params, opt_state, loss = train_step(
        params, ema_params, opt_state, x_train[rows], noisy[rows], step)
    if step % 200 == 0 or step == args.steps - 1:
      print(f"step {step}: SGN loss {float(loss):.4f}")

  def accuracy(p):
    mean = model.apply(p, x_test)[:, :k - 1]
    return float(np.mean(np.argmax(losses.sgn_predict_probs(mean), -1) == y_test))

  result = {"noisy_label_rate": float(np.mean(noisy != clean)),
            "test_accuracy": accuracy(params), "ema_test_accuracy": accuracy(ema_params)}
  print(result)
  return result


if __name__ == "__main__":
  main()
