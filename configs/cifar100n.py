r"""CIFAR-100N (CIFAR-100 with human label noise): SGN's classification cell.

    python main.py --config=configs/cifar100n.py --workdir=WORKDIR
    python main.py --config=configs/cifar100n.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

The noisy labels are the CIFAR-N authors' (`dataset.cifar_n_dir`), label set `:label_set=`
noisy (CIFAR-100N has one). `CELL` below holds every value that defines this experiment;
arguments after the colon: see `configs.common.classification_config`.
"""

from configs import common

CELL = dict(
    dataset="cifar100_n",
    num_classes=100,
    source="tfds",  # `:source=`
    noise="cifar_n",  # the label set's human labels, no drawn noise
    rate=0.0,  # `:rate=` (unused by cifar_n noise)
    label_set="noisy",  # 40.20% noise (SPEC §3); default of `:label_set=`
    classify=dict(  # SPEC §2, CIFAR training (all methods alike)
        convention="sgn",
        epochs=600,
        val_fraction=0.1,  # 90% train / 10% noisy validation
        model=dict(name="wrn", depth=28, width=2),  # WRN-28-2, pre-activation
        # CIFAR-10's mean/std (SGN's, for CIFAR-100 too), pad-2 random crops, horizontal flips.
        input=dict(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), crop_padding=2,
                   flip=True),
        # SGD, Nesterov momentum 0.9, constant lr 0.01, L2 2.5e-4 on all weights.
        optim=dict(learning_rate=0.01, momentum=0.9, nesterov=True, weight_decay=2.5e-4,
                   lr_decay_epochs=(), lr_decay_factor=0.1),
        batch_size=128,
        ema_decay=0.9999,  # SGN's fixed decay after every step (ema_warmup=False)
        method_args=dict(sgn=dict(gamma=0.001, alpha=0.995)),  # SGN's CIFAR gamma and alpha
    ),
)


def get_config(arg=None):
  return common.classification_config(CELL, arg)
