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


def get_config(arg=None):
  config = common.streaming_config("mini_webvision", arg, epochs=100)
  config.model = common.ml_collections.ConfigDict(dict(name="inception_resnet_v2"))
  config.input.mean = streaming.WEBVISION.mean
  config.input.std = streaming.WEBVISION.std
  config.input.mixup_alpha = 0.8
  config.batch_size = 64
  config.eval_batch_size = 128
  config.optim.learning_rate = 0.02
  config.optim.weight_decay = 5e-4
  config.checkpoint_every_steps = 2000
  config.log_every_steps = 200
  return config
