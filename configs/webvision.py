r"""Mini-WebVision (first 50 classes, Google subset; real label noise): SPEC §2.

    python main.py --config=configs/webvision.py:method=sgn \
        --config.dataset.manual_dir=/data/webvision --config.dataset.data_dir=/data/tfds \
        --workdir=WORKDIR

The SGN authors' run (ErikEnglesson/SGN@cebd960 src/webvision): InceptionResNetV2
from scratch (BatchNorm momentum 0.9 with a learnable scale), random 227 crops of
256x256 resizes and flips, mixup alpha 0.8, SGD momentum 0.9 without Nesterov, lr
0.02 after a 1-epoch linear warm-up, batch 64, L2 2.5e-4 * sum(w^2) over kernels and
biases, 600 epochs; evaluated (top-1/top-5) on the WebVision val set ("test") and the
ImageNet val images of the same 50 classes ("imagenet"). SGN uses gamma 0.01, alpha
0.999 and the authors' target scale ("temperature") 0.3. The EMA net of the evaluation
with the best WebVision-val top-1 after epoch 76 is reported beside the last
(`selected/*` in metrics.json). Arguments: method (ce or sgn with mixup), seed,
epochs, from_files.
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
        # `train_epochs` flag default 600 (webvision/utils.py:63); the README runs each
        # script with its flag defaults
        epochs=600,
        # from scratch; BatchNorm momentum 0.9 and a learnable gamma, the authors' copy of
        # Keras' InceptionResNetV2 (webvision/inception_resnetv2.py:49-51,326)
        model=dict(name="inception_resnet_v2", bn_momentum=0.9, bn_scale=True),
        # ImageNet statistics; 227 crops and flips happen in the host pipeline.
        input=dict(mean=streaming.WEBVISION.mean, std=streaming.WEBVISION.std, mixup_alpha=0.8),
        # SGD momentum 0.9, nesterov=False (webvision/sgn.py:305-307); lr 0.02 constant
        # (ExponentialDecay with lr_decay_ratio 1.0, sgn.py:294-298, utils.py:25,44) after a
        # linear warm-up from 0 over lr_warmup_epochs=1 (utils.py:47; sgn.py:300-302, UB's
        # AddWarmupDecaySchedule). L2: `FLAGS.l2 * tf.nn.l2_loss(kernels and biases)` with
        # l2=5e-4 (utils.py:42; sgn.py:411-419), and tf.nn.l2_loss = sum(w^2) / 2, so the
        # 1/2 is folded in: 2.5e-4 * sum(w^2), BatchNorm gamma/beta excluded.
        optim=dict(learning_rate=0.02, momentum=0.9, nesterov=False, weight_decay=2.5e-4,
                   l2_params="no_batchnorm", warmup_epochs=1.0, lr_decay_epochs=(),
                   lr_decay_factor=0.1),
        batch_size=64,
        ema_decay=0.9999,  # SGN's fixed decay after every step (ema_warmup=False)
        eval_batch_size=128,
        log_every_steps=200,
        checkpoint_every_steps=2000,
        # SGN's WebVision gamma and alpha, and the authors' target scale ("temperature").
        method_args=dict(sgn=dict(gamma=0.01, alpha=0.999, target_scale=0.3)),
        # Early stopping as the authors' code: the EMA net's (`model_delta`) WebVision-val
        # top-1 ("test" here, also a reported column), best after `epoch > 75` on a 0-based
        # epoch index, i.e. from the end of the 77th epoch (webvision/sgn.py:581-586).
        select=dict(split="test", metric="accuracy", after_epochs=76),
    ),
)


def get_config(arg=None):
  return common.streaming_config(CELL, arg)
