r"""MNIST with symmetric label noise: classification (SGN) and diffusion (TDSM).

    python main.py --config=configs/mnist_sym.py --workdir=WORKDIR
    python main.py --config=configs/mnist_sym.py:method=ce,rate=0.4,seed=1 --workdir=WORKDIR

SGN by default (`:method=ce` the CE baseline, or any of the nine baselines);
`:method=dsm|tdsm` trains a diffusion model (TDSM paper), `:task=noisy_classifier` its
time-dependent classifier, `:task=generate` samples. `CELL` below holds every value that
defines this experiment (mnist_asym.py and fashion_mnist_*.py derive theirs from it);
arguments after the colon: see `configs.common.classification_config` and
`configs.common.diffusion_config`.
"""

from configs import common
from sgn_jax.data import dataset

MNIST = dataset.get_info("mnist")

CELL = dict(
    dataset="mnist",
    num_classes=10,
    source="tfds",  # `:source=`
    noise="sym",  # relabel uniformly with probability rate; the convention picks the classes
    rate=0.4,  # default of `:rate=`
    classify=dict(
        convention="tdsm",  # TDSM's, SPEC §1 (SGN has no MNIST experiment)
        epochs=3,  # a few minutes on a 2-core CPU
        val_fraction=0.0,
        model=dict(name="cnn", batch_norm=True),  # SGN's regression loss diverges without BN
        input=dict(mean=MNIST.mean, std=MNIST.std, crop_padding=0, flip=False),
        # SPEC §2's optimiser (SGD, Nesterov 0.9, constant lr), batch and EMA, as on CIFAR.
        optim=dict(learning_rate=0.01, momentum=0.9, nesterov=True, weight_decay=2.5e-4,
                   lr_decay_epochs=(), lr_decay_factor=0.1),
        batch_size=128,
        # Not a paper cell and a short run (3 epochs, 1,404 steps): the schedule constants
        # follow its length. EMA with warm-up, min(0.9999, (1+t)/(10+t)) at step t (a
        # fixed 0.9999 would keep 87% of the random start); SGN's alpha such that the
        # label correction 1 - alpha^epochs at the end is CIFAR's 0.995 after 600 epochs
        # (95%): alpha = 0.995^(600 / epochs), 0.367 at 3 epochs.
        ema_decay=0.9999,
        ema_warmup=True,
        sgn_alpha_like=(0.995, 600),
        method_args=dict(sgn=dict(gamma=0.001)),  # SPEC §2 (CIFAR's gamma)
    ),
    diffusion=dict(  # SPEC §1: EDM's training (train.py) as the authors ran it
        convention="tdsm",  # TDSM's: flips to the other classes only (SPEC §1)
        duration_kimg=200_000.0,  # 200 Mimg; `:kimg=`
        pad_to=32,  # zero-padded from 28x28
        precond=dict(sigma_data=0.5),
        network=dict(arch="ddpmpp_mnist", dropout=0.13),  # 32 channels, 1 block per resolution
        augment=dict(p=0.12),  # EDM's non-leaky augmentation, augment labels to the net
        optim=dict(learning_rate=1e-3, warmup_kimg=10_000.0),  # Adam, 10 Mimg linear warm-up
        batch_size=512,
        ema_halflife_kimg=500.0,  # 0.5 Mimg (ramp-up ratio 0.05: configs.common)
        snapshot_every_kimg=5_000.0,  # sample grids
        # the authors' gradient path (tdsm@6a57a54 training/loss.py:309-319); `:estimator=`
        estimator="official",
        classifier=dict(  # the time-dependent classifier (2-conv CNN)
            arch="cnn",
            # tdsm@6a57a54 train_classifier.py:48 (200 Mimg; README.md:64 loads its
            # network-snapshot-200000.pkl), README.md:53-54 (--batch 1024)
            duration_kimg=200_000.0,  # `:classifier_kimg=`
            batch_size=1024,
            eval_batch_size=1000,
            eval_every_kimg=2_000.0,
            # Adam 1e-3, 10 Mimg linear warm-up (tdsm@6a57a54 training/classifier_loop.py:36,128)
            optim=dict(learning_rate=1e-3, warmup_kimg=10_000.0),
        ),
        evaluate=dict(  # task=evaluate: the paper's metrics (MNIST: Density/Coverage/CAS, SPEC §1)
            per_class=1_000,
            num_real=10_000,  # real reference images (0: all)
            metrics=("density_coverage", "cw_density_coverage", "cas"),
            feature_nets=("inception", "classifier"),  # classifier: evaluate.feature_classifier_dir
            # the authors' CAS network (tdsm@6a57a54 training/networks.py:1015-1041)
            cas_arch="tdsm_cnn",
        ),
    ),
)


def get_config(arg=None):
  return common.experiment_config(CELL, arg)
