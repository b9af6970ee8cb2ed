r"""Clothing1M (14 classes, real label noise): SPEC §2's protocol.

    python main.py --config=configs/clothing1m.py:method=sgn \
        --config.dataset.manual_dir=/data/clothing1m --config.dataset.data_dir=/data/tfds \
        --workdir=WORKDIR

The SGN authors' run (ErikEnglesson/SGN@cebd960 src/clothing1m): the Keras ImageNet
ResNet-50 (`resnet50_keras`, weights from `model_pretrained`, required: the .h5 file
of `tf.keras.applications.ResNet50(weights="imagenet", include_top=False)`), 10
epochs, batch 32, SGD momentum 0.9 without Nesterov, lr 1e-3 (x0.1 at epoch 5), L2
2.5e-3 * sum(w^2) over kernels and biases (BatchNorm excluded), class-balanced
265,664-image subset of the noisy training set per epoch (18,976 per class), random
224 crops of 256x256 resizes and flips, evaluation on the clean val and test sets;
the net of the epoch with the best clean-val accuracy is reported beside the last
(`selected/*` in metrics.json). `--config.model_pretrained=none` trains from scratch.
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
        # tf.keras.applications.ResNet50(weights="imagenet") (clothing1m/sgn.py:223-231)
        model=dict(name="resnet50_keras"),
        # its Keras .h5 weights; required ("" is an error before any data is read that says
        # where to get them; "none" trains from scratch on purpose)
        model_pretrained="",
        model_pretrained_required=True,
        # The authors' Clothing1M mean/std on RGB [0, 1] (sgn.py:157-164), although the
        # Keras weights were trained on Caffe inputs (BGR, 0..255 minus the mean): a mismatch
        # that shaped their numbers, kept here. `sgn_jax.data.streaming.CLOTHING1M_CAFFE`
        # (Preprocess mode "caffe") is the weights' own input. 224 crops and flips happen in
        # the host pipeline.
        input=dict(mean=streaming.CLOTHING1M.mean, std=streaming.CLOTHING1M.std),
        # SGD momentum 0.9, nesterov=False (clothing1m/sgn.py:261-263); lr 1e-3, x0.1 at
        # epoch 5 (utils.py:25,41-45). L2: `FLAGS.l2 * tf.nn.l2_loss(kernels and biases)`
        # with l2=5e-3 (utils.py:40; sgn.py:353-361), and tf.nn.l2_loss = sum(w^2) / 2, so
        # the 1/2 is folded in: 2.5e-3 * sum(w^2), BatchNorm gamma/beta excluded.
        optim=dict(learning_rate=1e-3, momentum=0.9, nesterov=False, weight_decay=2.5e-3,
                   l2_params="no_batchnorm", lr_decay_epochs=(5,), lr_decay_factor=0.1),
        batch_size=32,
        ema_decay=0.9999,  # SGN's fixed decay after every step (ema_warmup=False)
        eval_batch_size=128,
        log_every_steps=200,
        checkpoint_every_steps=2000,
        method_args=dict(sgn=dict(gamma=0.1, alpha=0.7)),  # SGN's Clothing1M gamma and alpha
        # Early stopping (Table 3's main row, "following Liu et al.", paper only; the code
        # logs every epoch and has no selection): the metric is not in the code, so the
        # reported net's (SGN: the EMA's) accuracy on the clean val split, every epoch.
        select=dict(split="val", metric="accuracy", after_epochs=0),
    ),
)


def get_config(arg=None):
  return common.streaming_config(CELL, arg)
