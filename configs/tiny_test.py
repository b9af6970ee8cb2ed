r"""A tiny CPU config for tests: a few dozen steps on a synthetic 2-D mixture.

    python main.py --config=configs/tiny_test.py --workdir=/tmp/tiny

Arguments: those of `configs.common.classification_config`, e.g.
`--config=configs/tiny_test.py:rate=0.2,seed=3`.
"""

from configs import common

CELL = dict(
    dataset="gmm2d",
    num_classes=4,
    source="gmm",  # `:source=`
    noise="sym",
    rate=0.4,  # default of `:rate=`
    gmm=dict(num_classes=4, num_train=2048, num_test=512),  # a small mixture
    classify=dict(
        default_method="ce",  # the tests' baseline (dataset files default to SGN)
        convention="tdsm",
        epochs=2,
        val_fraction=0.0,
        model=dict(name="mlp", hidden=(32, 32)),
        input=dict(mean=(0.0, 0.0), std=(1.0, 1.0), crop_padding=0, flip=False),
        optim=dict(learning_rate=0.05, momentum=0.9, nesterov=True, weight_decay=2.5e-4,
                   lr_decay_epochs=(), lr_decay_factor=0.1),
        batch_size=64,
        ema_decay=0.99,
        eval_batch_size=256,
        log_every_steps=8,
        checkpoint_every_steps=16,
    ),
)


def get_config(arg=None):
  return common.classification_config(CELL, arg)
