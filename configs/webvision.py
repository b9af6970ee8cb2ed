r"""Mini-WebVision (first 50 classes, Google subset; real label noise): SPEC §2.

    python main.py --config=configs/webvision.py:method=sgn \
        --config.dataset.manual_dir=/data/webvision --config.dataset.data_dir=/data/tfds \
        --workdir=WORKDIR

InceptionResNetV2 from scratch, random 227 crops of 256x256 resizes and flips,
mixup alpha 0.8, lr 0.02, batch 64, L2 5e-4; evaluated (top-1/top-5) on the
WebVision val set ("test") and the ImageNet val images of the same 50 classes
("imagenet"). SGN uses gamma 0.01, alpha 0.999 and the authors' target scale
("temperature") 0.3. Arguments: method (ce or sgn with mixup), seed, epochs,
from_files.
"""

from configs import common
from sgn_jax.data import streaming

CELL = dict(
    dataset="mini_webvision",
    num_classes=50,
    source="stream",  # images streamed from manual_dir / data_dir, per host
    noise="none",  # the dataset's own (real) noisy labels
    rate=0.0,
    classify=dict(
        method="sgn",  # default of `:method=`
        convention="sgn",  # unused: no drawn noise
        epochs=100,
        model=dict(name="inception_resnet_v2"),  # from scratch
        # ImageNet statistics; 227 crops and flips happen in the host pipeline.
        input=dict(mean=streaming.WEBVISION.mean, std=streaming.WEBVISION.std, mixup_alpha=0.8),
        optim=dict(learning_rate=0.02, momentum=0.9, nesterov=True, weight_decay=5e-4,
                   lr_decay_epochs=(), lr_decay_factor=0.1),
        batch_size=64,
        ema_decay=0.9999,  # SGN's fixed decay after every step (ema_warmup=False)
        eval_batch_size=128,
        log_every_steps=200,
        checkpoint_every_steps=2000,
        # SGN's WebVision gamma and alpha, and the authors' target scale ("temperature").
        method_args=dict(sgn=dict(gamma=0.01, alpha=0.999, target_scale=0.3)),
    ),
)


def get_config(arg=None):
  return common.streaming_config(CELL, arg)
