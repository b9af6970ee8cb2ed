r"""cifar100_n classification with cifar_n label noise.

    python main.py --config=configs/cifar100n.py --workdir=WORKDIR
    python main.py --config=configs/cifar100n.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

Arguments after the colon: see `configs.common.classification_config`.
"""

from configs import common


def get_config(arg=None):
  return common.classification_config("cifar100_n", "cifar_n", arg)
