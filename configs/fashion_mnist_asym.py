r"""Fashion-MNIST with asymmetric label noise: classification (SGN) and diffusion (TDSM).

    python main.py --config=configs/fashion_mnist_asym.py --workdir=WORKDIR
    python main.py --config=configs/fashion_mnist_asym.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

SGN by default (`:method=ce` the CE baseline, or any of the nine baselines);
`:method=dsm|tdsm` trains a diffusion model (TDSM paper), `:task=noisy_classifier` its
time-dependent classifier, `:task=generate` samples. Arguments after the colon: see
`configs.common.classification_config` and `configs.common.diffusion_config`.

`CELL`: `configs/fashion_mnist_sym.py`'s experiment with asymmetric noise.
"""

from configs import common
from configs import fashion_mnist_sym

CELL = common.derive(
    fashion_mnist_sym.CELL,
    noise="asym",  # 0->6, 2->4, 5->7, 7->9 (this library's pairs, sgn_jax.noise)
)


def get_config(arg=None):
  return common.experiment_config(CELL, arg)
