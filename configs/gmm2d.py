r"""2-D Gaussian mixture with 40% symmetric label noise: the quick start, no download.

    python main.py --config=configs/gmm2d.py --workdir=/tmp/gmm2d

By default (`task=gmm_demo`) trains, on 4 Gaussian classes whose labels are 40%
symmetrically corrupted, a time-dependent noisy-label classifier, then a
class-conditional DSM and a TDSM diffusion model (small MLP score networks)
and compares their samples with the clean classes (per-class sliced
Wasserstein distance); writes metrics.json, weight_contours.png and
samples.png (about a minute on a CPU). Arguments: rate, seed, kimg,
classifier_kimg, estimator (see `configs.common.diffusion_config`).

    --config=configs/gmm2d.py:method=tdsm,task=diffusion   one stage on its own
    --config=configs/gmm2d.py:method=ce                    noisy-label classification

Demo keys: demo.samples_per_class (samples per class per model), demo.contour_sigmas
(noise levels of weight_contours.png), demo.noisy_label (the y~ plotted),
demo.exact_weights (also train TDSM with the mixture's exact posteriors as weights).
"""

import ml_collections

from configs import common

CELL = dict(
    dataset="gmm2d",
    num_classes=4,
    source="gmm",  # synthetic, drawn from dataset.seed; `:source=`
    noise="sym",
    rate=0.4,  # default of `:rate=`
    gmm=dict(num_classes=4, num_train=20_000, num_test=4_000),
    classify=dict(  # `:method=ce` etc.: a small MLP
        convention="tdsm",
        epochs=10,
        val_fraction=0.0,
        model=dict(name="mlp", hidden=(128, 128)),
        input=dict(mean=(0.0, 0.0), std=(1.0, 1.0), crop_padding=0, flip=False),
        optim=dict(learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=0.0,
                   lr_decay_epochs=(), lr_decay_factor=0.1),
        batch_size=128,
        ema_decay=0.9999,
        ema_warmup=True,  # 1,560 steps: schedule constants follow the run (see mnist_sym)
        sgn_alpha_like=(0.995, 600),
        log_every_steps=50,
        method_args=dict(sgn=dict(gamma=0.001)),
    ),
    diffusion=dict(  # MLP score network and classifier, EDM preconditioning
        convention="tdsm",
        duration_kimg=256.0,  # `:kimg=`
        pad_to=0,
        precond=dict(sigma_data=1.5),  # the mixture's scale, not images' 0.5
        network=dict(arch="mlp", dropout=0.0, hidden=(128, 128, 128)),
        augment=dict(p=0.0),
        optim=dict(learning_rate=1e-3, warmup_kimg=20.0),
        batch_size=256,
        ema_halflife_kimg=5.0,
        snapshot_every_kimg=100.0,
        log_every_steps=200,
        classifier=dict(
            arch="mlp",
            duration_kimg=128.0,  # `:classifier_kimg=`
            batch_size=256,
            eval_batch_size=512,
            eval_every_kimg=50.0,
            log_every_steps=200,
            optim=dict(learning_rate=1e-3, warmup_kimg=10.0),
        ),
        evaluate=dict(  # the image metrics' settings; the demo reports sliced Wasserstein
            per_class=1_000,
            num_real=10_000,
            metrics=("fid", "is", "density_coverage", "cw_fid", "cw_density_coverage", "cas"),
            feature_nets=("inception",),
        ),
    ),
)
DEMO = dict(
    samples_per_class=1000, contour_sigmas=(0.05, 0.5, 1.0, 2.0), noisy_label=0,
    exact_weights=False)  # True: also TDSM with the exact posteriors


def get_config(arg=None):
  pre = common.parse_arg(arg, lazy=True, method="", task="")
  if pre.task == "classify" or pre.method not in ("", *common.DIFFUSION_METHODS):
    return common.classification_config(CELL, common.drop_arg(arg, "task"))
  demo = not pre.task
  if demo:  # the demo runs every stage itself
    arg = common.drop_arg(arg, "method")
  config = common.diffusion_config(CELL, arg)
  if demo:
    config.task = "gmm_demo"
  config.demo = ml_collections.ConfigDict(DEMO)
  return config
