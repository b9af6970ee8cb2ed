r"""CIFAR-100 with asymmetric label noise: classification (SGN) and diffusion (TDSM).

    python main.py --config=configs/cifar100_asym.py --workdir=WORKDIR
    python main.py --config=configs/cifar100_asym.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

SGN by default (`:method=ce` the CE baseline, or any of the nine baselines);
`:method=dsm|tdsm` trains a diffusion model (TDSM paper), `:task=noisy_classifier` its
time-dependent classifier, `:task=generate` samples. Arguments after the colon: see
`configs.common.classification_config` and `configs.common.diffusion_config`.

`CELL`: `configs/cifar100_sym.py`'s experiment with asymmetric noise.
"""

from configs import cifar100_sym
from configs import common

CELL = common.derive(
    cifar100_sym.CELL,
    # class-dependent flips; the convention picks the target: SGN's i -> (i+1) mod 100 for
    # classification, TDSM's next fine class within the superclass for diffusion (SPEC §1)
    noise="asym",
)


def get_config(arg=None):
  return common.experiment_config(CELL, arg)
