r"""A tiny CPU config for tests: a few dozen steps on a synthetic 2-D mixture.

    python main.py --config=configs/tiny_test.py --workdir=/tmp/tiny

Arguments: those of `configs.common.classification_config`, e.g.
`--config=configs/tiny_test.py:rate=0.2,seed=3`.
"""

from configs import common


def get_config(arg=None):
  config = common.classification_config("gmm2d", "sym", arg, epochs=2)
  config.dataset.gmm.num_train = 2048
  config.dataset.gmm.num_test = 512
  config.model.hidden = (32, 32)
  config.batch_size = 64
  config.optim.learning_rate = 0.05
  config.eval_batch_size = 256
  config.log_every_steps = 8
  config.checkpoint_every_steps = 16
  config.ema_decay = 0.99
  return config
