"""Multi-layer perceptron for low-dimensional inputs (the 2-D Gaussian-mixture toy)."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """Dense -> SiLU, repeated for each entry of `hidden`, then Dense(num_outputs).

  Input (N, D) float vectors; output (N, num_outputs) float32 logits, or with
  head=False the last hidden activations (N, hidden[-1]) in `dtype` (the input
  itself if `hidden` is empty). Flax default initialisation (LeCun-normal
  kernels, zero biases). No BatchNorm or dropout; `train` is accepted for a
  uniform call signature.

  Attributes:
    hidden: widths of the hidden layers.
    num_outputs: number of logits.
    head: if False, return the last hidden activations.
    dtype: compute dtype of the hidden layers; parameters stay float32 and the
      output layer computes in float32.
  """
  hidden: Sequence[int] = (128, 128)
  num_outputs: int = 10
  head: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = jnp.asarray(x, self.dtype)
    for i, h in enumerate(self.hidden):
      x = nn.silu(nn.Dense(h, dtype=self.dtype, name=f"dense{i + 1}")(x))
    if not self.head:
      return x
    return nn.Dense(self.num_outputs, dtype=jnp.float32, name="classifier")(x)
