"""Config files: they load, take their arguments, and reject bad ones clearly."""

import importlib
import pathlib

import ml_collections
import pytest

from configs import common
from sgn_jax import classification

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(p.stem for p in CONFIG_DIR.glob("*.py")
                      if p.stem not in ("__init__", "common"))
EXPECTED = {"mnist_sym", "mnist_asym", "fashion_mnist_sym", "fashion_mnist_asym",
            "cifar10_sym", "cifar10_asym", "cifar100_sym", "cifar100_asym", "cifar10n",
            "cifar100n", "gmm2d", "tiny_test"}


def test_all_required_config_files_exist():
  assert EXPECTED <= set(CONFIG_FILES)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_loads_and_validates(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  assert isinstance(config, ml_collections.ConfigDict)
  assert config.task == "classify"
  classification.validate_config(config)
  assert config.num_classes == common.NUM_CLASSES[config.dataset.name]


@pytest.mark.parametrize("name,kind,convention,model", [
    ("mnist_sym", "sym", "tdsm", "cnn"), ("mnist_asym", "asym", "tdsm", "cnn"),
    ("fashion_mnist_sym", "sym", "tdsm", "cnn"), ("cifar10_sym", "sym", "sgn", "wrn"),
    ("cifar100_asym", "asym", "sgn", "wrn"), ("cifar10n", "cifar_n", "sgn", "wrn"),
])
def test_config_defaults_follow_spec(name, kind, convention, model):
  config = importlib.import_module(f"configs.{name}").get_config()
  assert (config.noise.kind, config.noise.convention, config.model.name) == (
      kind, convention, model)
  if model == "wrn":  # SGN's CIFAR protocol
    assert (config.model.depth, config.model.width) == (28, 2)
    assert config.num_epochs == 600 and config.batch_size == 128
    assert config.optim.learning_rate == 0.01 and config.optim.nesterov
    assert config.optim.weight_decay == 2.5e-4 and config.ema_decay == 0.9999
    assert config.dataset.val_fraction == 0.1
    assert config.input.crop_padding == 2 and config.input.flip


def test_arguments_are_typed_from_defaults():
  from configs import mnist_sym
  config = mnist_sym.get_config("method=ce,rate=0.2,seed=7,epochs=5,subset=1000,source=idx")
  assert config.noise.rate == 0.2 and isinstance(config.noise.rate, float)
  assert config.seed == 7 and isinstance(config.seed, int)
  assert config.num_epochs == 5 and config.dataset.train_subset == 1000
  assert config.dataset.source == "idx"
  assert mnist_sym.get_config("rate=0").noise.rate == 0.0


@pytest.mark.parametrize("arg,match", [
    ("methd=ce", r"unknown config argument 'methd'; allowed keys: \[.*'method'"),
    ("rate", "not of the form key=value"),
    ("epochs=2.5", "epochs='2.5' is not an integer"),
    ("rate=abc", "rate='abc' is not a number"),
])
def test_bad_arguments_are_rejected(arg, match):
  from configs import mnist_sym
  with pytest.raises(ValueError, match=match):
    mnist_sym.get_config(arg)


def test_parse_arg_booleans():
  parsed = common.parse_arg("flip=no,big=YES", flip=True, big=False)
  assert parsed.flip is False and parsed.big is True
  with pytest.raises(ValueError, match="not a boolean"):
    common.parse_arg("flip=maybe", flip=True)


def test_config_is_locked_against_typos():
  from configs import cifar10_sym
  config = cifar10_sym.get_config()
  config.lock()
  with pytest.raises(AttributeError, match="learning_rat"):
    config.optim.learning_rat = 0.1


def test_asymmetric_noise_of_a_dataset_without_pairs_is_rejected():
  from configs import tiny_test
  config = tiny_test.get_config()
  config.noise.kind = "asym"
  with pytest.raises(ValueError, match="gmm2d"):
    classification.validate_config(config)
