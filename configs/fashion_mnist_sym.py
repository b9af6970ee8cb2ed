r"""Fashion-MNIST with symmetric label noise: classification (SGN) and diffusion (TDSM).

    python main.py --config=configs/fashion_mnist_sym.py --workdir=WORKDIR
    python main.py --config=configs/fashion_mnist_sym.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

SGN by default (`:method=ce` the CE baseline, or any of the nine baselines);
`:method=dsm|tdsm` trains a diffusion model (TDSM paper), `:task=noisy_classifier` its
time-dependent classifier, `:task=generate` samples. Arguments after the colon: see
`configs.common.classification_config` and `configs.common.diffusion_config`.

`CELL`: MNIST's experiment (`configs/mnist_sym.py`, every value) on Fashion-MNIST:
the same networks, schedules and noise, Fashion-MNIST's normalisation.
"""

from configs import common
from configs import mnist_sym
from sgn_jax.data import dataset

FASHION_MNIST = dataset.get_info("fashion_mnist")

CELL = common.derive(
    mnist_sym.CELL,
    dataset="fashion_mnist",
    classify=dict(input=dict(mean=FASHION_MNIST.mean, std=FASHION_MNIST.std)),
)


def get_config(arg=None):
  return common.experiment_config(CELL, arg)
