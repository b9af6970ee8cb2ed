r"""MNIST with asymmetric label noise: classification (SGN) and diffusion (TDSM).

    python main.py --config=configs/mnist_asym.py --workdir=WORKDIR
    python main.py --config=configs/mnist_asym.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

SGN by default (`:method=ce` the CE baseline, or any of the nine baselines);
`:method=dsm|tdsm` trains a diffusion model (TDSM paper), `:task=noisy_classifier` its
time-dependent classifier, `:task=generate` samples. Arguments after the colon: see
`configs.common.classification_config` and `configs.common.diffusion_config`.

`CELL`: MNIST's experiment (`configs/mnist_sym.py`, every value) with asymmetric noise.
"""

from configs import common
from configs import mnist_sym

CELL = common.derive(
    mnist_sym.CELL,
    noise="asym",  # 2->7, 3->8, 5<->6 (SPEC §1); both conventions as in mnist_sym
)


def get_config(arg=None):
  return common.experiment_config(CELL, arg)
