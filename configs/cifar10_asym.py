r"""CIFAR-10 with asymmetric label noise: classification (SGN) and diffusion (TDSM).

    python main.py --config=configs/cifar10_asym.py --workdir=WORKDIR
    python main.py --config=configs/cifar10_asym.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

SGN by default (`:method=ce` the CE baseline, or any of the nine baselines);
`:method=dsm|tdsm` trains a diffusion model (TDSM paper), `:task=noisy_classifier` its
time-dependent classifier, `:task=generate` samples. Arguments after the colon: see
`configs.common.classification_config` and `configs.common.diffusion_config`.

`CELL`: CIFAR-10's experiment (`configs/cifar10_sym.py`, every value) with
asymmetric noise.
"""

from configs import cifar10_sym
from configs import common

CELL = common.derive(
    cifar10_sym.CELL,
    noise="asym",  # 9->1, 2->0, 4->7, 3<->5 (SPEC §1); the pairs are the same in both conventions
)


def get_config(arg=None):
  return common.experiment_config(CELL, arg)
