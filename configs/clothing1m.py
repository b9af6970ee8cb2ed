r"""Clothing1M (14 classes, real label noise): SPEC §2's protocol.

    python main.py --config=configs/clothing1m.py:method=sgn \
        --config.dataset.manual_dir=/data/clothing1m --config.dataset.data_dir=/data/tfds \
        --workdir=WORKDIR

ResNet-50 (ImageNet-pretrained weights from `model_pretrained`, a torchvision
state dict as .npz or .pth), 10 epochs, batch 32, SGD Nesterov lr 1e-3 (x0.1 at
epoch 5), L2 1e-3, class-balanced 265,664-image
subset of the noisy training set per epoch (18,976 per class), random 224 crops
of 256x256 resizes and flips, evaluation on the clean val and test sets.
Arguments: method, seed, epochs, from_files (read the JPEGs of manual_dir directly).
"""

from configs import common
from sgn_jax.data import streaming

CELL = dict(
    dataset="clothing1m",
    num_classes=14,
    source="stream",  # images streamed from manual_dir / data_dir, per host
    noise="none",  # the dataset's own (real) noisy labels
    rate=0.0,
    classify=dict(
        method="sgn",  # default of `:method=`
        convention="sgn",  # unused: no drawn noise
        epochs=10,
        samples_per_class=18_976,  # 18,976 x 14 = 265,664 images per epoch
        model=dict(name="resnet50"),
        model_pretrained="",  # path of ImageNet weights (torchvision layout), "" = none
        # The authors' Clothing1M statistics; 224 crops and flips happen in the host pipeline.
        input=dict(mean=streaming.CLOTHING1M.mean, std=streaming.CLOTHING1M.std),
        optim=dict(learning_rate=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-3,
                   lr_decay_epochs=(5,), lr_decay_factor=0.1),
        batch_size=32,
        ema_decay=0.9999,  # SGN's fixed decay after every step (ema_warmup=False)
        eval_batch_size=128,
        log_every_steps=200,
        checkpoint_every_steps=2000,
        method_args=dict(sgn=dict(gamma=0.1, alpha=0.7)),  # SGN's Clothing1M gamma and alpha
    ),
)


def get_config(arg=None):
  return common.streaming_config(CELL, arg)
