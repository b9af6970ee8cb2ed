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


def get_config(arg=None):
  config = common.streaming_config("clothing1m", arg)
  config.dataset.samples_per_class = 18_976
  config.model = common.ml_collections.ConfigDict(dict(name="resnet50"))
  config.model_pretrained = ""  # path of ImageNet weights (torchvision layout), "" = none
  config.input.mean = streaming.CLOTHING1M.mean
  config.input.std = streaming.CLOTHING1M.std
  config.batch_size = 32
  config.eval_batch_size = 128
  config.optim.learning_rate = 1e-3
  config.optim.lr_decay_epochs = (5,)
  config.optim.lr_decay_factor = 0.1
  config.optim.weight_decay = 1e-3
  config.checkpoint_every_steps = 2000
  config.log_every_steps = 200
  return config
