r"""CIFAR-100 with symmetric label noise: classification (SGN) and diffusion (TDSM).

    python main.py --config=configs/cifar100_sym.py --workdir=WORKDIR
    python main.py --config=configs/cifar100_sym.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

SGN by default (`:method=ce` the CE baseline, or any of the nine baselines);
`:method=dsm|tdsm` trains a diffusion model (TDSM paper), `:task=noisy_classifier` its
time-dependent classifier, `:task=generate` samples. Arguments after the colon: see
`configs.common.classification_config` and `configs.common.diffusion_config`.

`CELL`: CIFAR-10's experiment (`configs/cifar10_sym.py`, every value) on CIFAR-100:
the same WRN-28-2 training (SGN keeps CIFAR-10's mean/std) and EDM network; a ResNet-34
time-dependent classifier and 500 samples per class (50k) for the metrics.
"""

from configs import cifar10_sym
from configs import common

CELL = common.derive(
    cifar10_sym.CELL,
    dataset="cifar100",
    num_classes=100,
    diffusion=dict(
        classifier=dict(arch="resnet34"),  # the time-dependent classifier (SPEC §1)
        evaluate=dict(per_class=500),  # 50k samples for FID/IS
    ),
)


def get_config(arg=None):
  return common.experiment_config(CELL, arg)
