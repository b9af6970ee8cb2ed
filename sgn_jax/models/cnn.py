"""Small convolutional network for 28x28 grey-scale images ((Fashion-)MNIST)."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# He-normal (Keras `he_normal`): truncated normal, variance 2 / fan_in.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class SmallCNN(nn.Module):
  """Two conv/pool stages and a two-layer classifier.

  Architecture (NHWC, "SAME" convolutions with bias, 2x2 max pools with stride 2)::

      Conv(c1, k x k) -> ReLU -> MaxPool 2
      Conv(c2, k x k) -> ReLU -> MaxPool 2
      flatten -> Dense(hidden) -> ReLU            # features (head=False stops here)
      Dense(num_outputs)                          # logits

  With the defaults (channels=(32, 64), kernel_size=5, hidden=128) on 28x28x1
  input and 10 classes it has 454,922 parameters:
  conv1 5*5*1*32+32 = 832, conv2 5*5*32*64+64 = 51,264,
  dense1 (7*7*64)*128+128 = 401,536, dense2 128*10+10 = 1,290.

  With batch_norm=False (default) there is no BatchNorm or dropout: no
  "batch_stats" collection, and `train` does not change the output. With
  batch_norm=True a BatchNorm (momentum 0.9, epsilon 1e-5, as the WRN) follows
  each convolution and the hidden dense layer, before the ReLU (+448 scale/bias
  parameters): regression losses such as SGN's, whose initial gradients are
  ~10x those of cross-entropy, diverge on this net at lr 0.01 without it.
  Kernels are He-normal (truncated normal, variance 2/fan_in), biases zero.

  Attributes:
    channels: output channels (c1, c2) of the two convolutions.
    kernel_size: spatial size k of both (square) convolution kernels.
    hidden: width of the hidden dense layer; the feature size for head=False.
    num_outputs: number of logits.
    head: if False, return the penultimate features (N, hidden) instead.
    batch_norm: BatchNorm after each convolution and the hidden dense layer.
    dtype: compute dtype; parameters stay float32. The final dense layer
      computes in float32, so the logits are float32 for any dtype; the
      features of head=False are in `dtype`.
  """
  channels: Sequence[int] = (32, 64)
  kernel_size: int = 5
  hidden: int = 128
  num_outputs: int = 10
  head: bool = True
  batch_norm: bool = False
  dtype: Any = jnp.float32

  def _norm(self, x, train, name):
    if not self.batch_norm:
      return x
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=self.dtype, name=name)(x)

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.asarray(x, self.dtype)
    k = (self.kernel_size, self.kernel_size)
    for i, c in enumerate(self.channels):
      x = nn.Conv(c, k, padding="SAME", kernel_init=he_normal, dtype=self.dtype,
                  name=f"conv{i + 1}")(x)
      x = nn.relu(self._norm(x, train, f"bn{i + 1}"))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(self.hidden, kernel_init=he_normal, dtype=self.dtype,
                 name="dense")(x)
    x = nn.relu(self._norm(x, train, "bn_dense"))
    if not self.head:
      return x
    return nn.Dense(self.num_outputs, kernel_init=he_normal, dtype=jnp.float32,
                    name="classifier")(x)
