r"""CIFAR-100 with symmetric label noise: classification (SGN) and diffusion (TDSM).

    python main.py --config=configs/cifar100_sym.py --workdir=WORKDIR
    python main.py --config=configs/cifar100_sym.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

SGN by default (`:method=ce` the CE baseline, or any of the nine baselines);
`:method=dsm|tdsm` trains a diffusion model (TDSM paper), `:task=noisy_classifier` its
time-dependent classifier, `:task=generate` samples. `CELL` below holds every value that
defines this experiment; arguments after the colon: see
`configs.common.classification_config` and `configs.common.diffusion_config`.
"""

from configs import common

CELL = dict(
    dataset="cifar100",
    num_classes=100,
    source="tfds",  # `:source=`
    noise="sym",  # relabel uniformly with probability rate; the convention picks the classes
    rate=0.4,  # default of `:rate=`
    classify=dict(  # SPEC §2, CIFAR training (all methods alike)
        convention="sgn",  # SGN's: the random label may be the true class
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
    diffusion=dict(  # SPEC §1: EDM's training (train.py) as the authors ran it
        convention="tdsm",  # TDSM's: flips to the other classes only (SPEC §1)
        duration_kimg=200_000.0,  # 200 Mimg; `:kimg=`
        pad_to=0,
        precond=dict(sigma_data=0.5),
        network=dict(arch="ddpmpp", dropout=0.13),  # SongUNet, 128 channels
        augment=dict(p=0.12),  # EDM's non-leaky augmentation, augment labels to the net
        optim=dict(learning_rate=1e-3, warmup_kimg=10_000.0),  # Adam, 10 Mimg linear warm-up
        batch_size=512,
        ema_halflife_kimg=500.0,  # 0.5 Mimg (ramp-up ratio 0.05: configs.common)
        snapshot_every_kimg=5_000.0,  # sample grids
        classifier=dict(  # the time-dependent classifier (ResNet-34)
            arch="resnet34",
            duration_kimg=20_000.0,  # `:classifier_kimg=`
            batch_size=512,
            eval_batch_size=1000,
            eval_every_kimg=2_000.0,
            optim=dict(learning_rate=1e-3, warmup_kimg=1_000.0),  # Adam (SPEC §1: 10 Mimg warm-up)
        ),
        evaluate=dict(  # task=evaluate: the paper's metrics
            per_class=500,  # 50k samples for FID/IS
            num_real=50_000,  # real reference images (0: all)
            metrics=("fid", "is", "density_coverage", "cw_fid", "cw_density_coverage", "cas"),
            feature_nets=("inception",),
        ),
    ),
)


def get_config(arg=None):
  return common.experiment_config(CELL, arg)
