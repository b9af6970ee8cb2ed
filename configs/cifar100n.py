r"""CIFAR-100N (CIFAR-100 with human label noise): SGN's classification cell.

    python main.py --config=configs/cifar100n.py --workdir=WORKDIR
    python main.py --config=configs/cifar100n.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

The noisy labels are the CIFAR-N authors' (`dataset.cifar_n_dir`), label set `:label_set=`
noisy (CIFAR-100N has one). `CELL`: CIFAR-100's classification (`configs/cifar100_sym.py`,
SPEC §2) on those labels. Arguments after the colon: see
`configs.common.classification_config`.
"""

from configs import cifar100_sym
from configs import common

CELL = common.derive(
    cifar100_sym.CELL,
    dataset="cifar100_n",
    noise="cifar_n",  # the label set's human labels, no drawn noise
    rate=0.0,  # `:rate=` (unused by cifar_n noise)
    label_set="noisy",  # 40.20% noise (SPEC §3); default of `:label_set=`
    diffusion=None,  # classification only
)


def get_config(arg=None):
  return common.classification_config(CELL, arg)
