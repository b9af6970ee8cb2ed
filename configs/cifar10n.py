r"""CIFAR-10N (CIFAR-10 with human label noise): SGN's classification cell.

    python main.py --config=configs/cifar10n.py --workdir=WORKDIR
    python main.py --config=configs/cifar10n.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

The noisy labels are the CIFAR-N authors' (`dataset.cifar_n_dir`), label set `:label_set=`
aggre | random1 | random2 | random3 | worse. `CELL`: CIFAR-10's classification
(`configs/cifar10_sym.py`, SPEC §2) on those labels. Arguments after the colon: see
`configs.common.classification_config`.
"""

from configs import cifar10_sym
from configs import common

CELL = common.derive(
    cifar10_sym.CELL,
    dataset="cifar10_n",
    noise="cifar_n",  # the label set's human labels, no drawn noise
    rate=0.0,  # `:rate=` (unused by cifar_n noise)
    label_set="worse",  # 40.21% noise (SPEC §3); default of `:label_set=`
    diffusion=None,  # classification only
)


def get_config(arg=None):
  return common.classification_config(CELL, arg)
