r"""CIFAR-10 with symmetric label noise: classification (SGN) and diffusion (TDSM).

    python main.py --config=configs/cifar10_sym.py --workdir=WORKDIR
    python main.py --config=configs/cifar10_sym.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

SGN by default (`:method=ce` the CE baseline, or any of the nine baselines);
`:method=dsm|tdsm` trains a diffusion model (TDSM paper), `:task=noisy_classifier` its
time-dependent classifier, `:task=generate` samples. `CELL` below holds every value that
defines this experiment (cifar10_asym.py, cifar100_*.py, cifar10n.py and cifar100n.py
derive theirs from it); arguments after the colon: see
`configs.common.classification_config` and `configs.common.diffusion_config`.
"""

from configs import common
from sgn_jax.data import dataset

CIFAR10 = dataset.get_info("cifar10")

CELL = dict(
    dataset="cifar10",
    num_classes=10,
    source="tfds",  # `:source=`
    noise="sym",  # relabel uniformly with probability rate; the convention picks the classes
    rate=0.4,  # default of `:rate=`
    classify=dict(  # SPEC §2, CIFAR training (all methods alike)
        convention="sgn",  # SGN's: the random label may be the true class
        epochs=600,
        val_fraction=0.1,  # 90% train / 10% noisy validation
        # the LAST 5,000 rows of the TFDS train split, the same for every seed
        # (train_proportion 0.9, cifar/utils.py:432; UB@c539452 datasets/base.py:57-62:
        # ReadInstruction('train', from_=-5000))
        val_split="last",
        model=dict(name="wrn", depth=28, width=2),  # WRN-28-2, pre-activation
        # SGN and LN: the authors' wide_resnet_factors head, two separate Dense layers (loc
        # and scale; SGN K-1 units each, LN K) with Keras' default glorot_uniform
        # (cifar/wide_resnet_factors.py:223-251); the baselines keep UB's one He-normal Dense
        model_by_method=dict(sgn=dict(head_init="glorot_uniform", split_head=True),
                             ln=dict(head_init="glorot_uniform", split_head=True)),
        # CIFAR-10's mean/std (SGN's for CIFAR-100 too), pad-2 random crops, horizontal flips.
        input=dict(mean=CIFAR10.mean, std=CIFAR10.std, crop_padding=2, flip=True),
        # SGD, Nesterov momentum 0.9, constant lr 0.01, L2 2.5e-4 on all weights.
        optim=dict(learning_rate=0.01, momentum=0.9, nesterov=True, weight_decay=2.5e-4,
                   lr_decay_epochs=(), lr_decay_factor=0.1),
        batch_size=128,
        ema_decay=0.9999,  # SGN's fixed decay after every step (ema_warmup=False)
        method_args=dict(
            sgn=dict(gamma=0.001, alpha=0.995),  # SGN's CIFAR gamma and alpha
            # SOP as the authors' TF code ran it: the L1 normalisation over the whole batch
            # (`tf.norm(prediction, ord=1)` without an axis, cifar/sop.py:405-406), an
            # authors' defect that shaped their SOP numbers; "row" is the SOP paper's
            sop=dict(normalization="batch"),
        ),
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
        # the authors' gradient path (tdsm@6a57a54 training/loss.py:309-319); `:estimator=`
        estimator="official",
        classifier=dict(  # the time-dependent classifier (CIFAR-style ResNet-18)
            arch="resnet18",
            # tdsm@6a57a54 train_classifier.py:48 (200 Mimg; README.md:64 loads its
            # network-snapshot-200000.pkl), README.md:53-54 (--batch 1024)
            duration_kimg=200_000.0,  # `:classifier_kimg=`
            batch_size=1024,
            eval_batch_size=1000,
            eval_every_kimg=2_000.0,
            # Adam 1e-3, 10 Mimg linear warm-up (tdsm@6a57a54 training/classifier_loop.py:36,128)
            optim=dict(learning_rate=1e-3, warmup_kimg=10_000.0),
        ),
        evaluate=dict(  # task=evaluate: the paper's metrics
            per_class=5_000,  # 50k samples for FID/IS
            num_real=50_000,  # real reference images (0: all)
            metrics=("fid", "is", "density_coverage", "cw_fid", "cw_density_coverage", "cas"),
            feature_nets=("inception",),
            # the authors' CAS network (tdsm@6a57a54 training/networks.py:977-992)
            cas_arch="resnet50_imagenet_stem",
        ),
    ),
)


def get_config(arg=None):
  return common.experiment_config(CELL, arg)
