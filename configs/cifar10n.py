r"""cifar10_n classification with cifar_n label noise.

    python main.py --config=configs/cifar10n.py --workdir=WORKDIR
    python main.py --config=configs/cifar10n.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

Arguments after the colon: see `configs.common.classification_config`.
"""

from configs import common


def get_config(arg=None):
  return common.classification_config("cifar10_n", "cifar_n", arg)
