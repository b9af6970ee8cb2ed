"""Training on streamed datasets (Clothing1M, mini-WebVision) end to end, on
fabricated trees in the official layouts; mixup; configs."""

import json

import numpy as np
import pytest

from configs import clothing1m as clothing1m_config
from configs import webvision as webvision_config
from sgn_jax.tasks import classify

from test_classification import _assert_trees_close, _latest_state
from test_large_datasets import make_clothing1m_tree, make_webvision_tree


def _small(config, manual_dir, data_dir):
  config.dataset.manual_dir = str(manual_dir)
  config.dataset.data_dir = str(data_dir)
  # A small network on small crops keeps this fast on a CPU; the backbones
  # themselves are tested in test_backbones.py.
  config.model = config.model.__class__(dict(name="wrn", depth=10, width=1))
  if "model_pretrained" in config:
    config.model_pretrained = "none"  # the small network trains from scratch on purpose
  config.dataset.crop_size, config.dataset.resize = 32, 40
  config.batch_size = 8
  config.eval_batch_size = 8
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  return config


@pytest.mark.parametrize("method", ["sgn"])
def test_clothing1m_streams_trains_evaluates_and_resumes(tmp_path, method):
  make_clothing1m_tree(tmp_path / "c1m")
  config = _small(clothing1m_config.get_config(f"method={method},epochs=1"),
                  tmp_path / "c1m", tmp_path / "tfds")
  config.dataset.samples_per_class = 0  # the fabricated tree has few images per class
  full = classify.train_and_evaluate(config, str(tmp_path / "full"))
  saved = json.loads((tmp_path / "full" / "metrics.json").read_text())
  assert saved["completed"] == 1.0
  for split in ("val", "test"):
    assert 0.0 <= full[f"{split}/accuracy"] <= 1.0 and np.isfinite(full[f"{split}/nll"])
    assert "top5_accuracy" in " ".join(full)
  # Killed after one step (stop_after_steps), resumed: the same final state.
  config.stop_after_steps = 1
  classify.train_and_evaluate(config, str(tmp_path / "resumed"))
  config.stop_after_steps = 0
  classify.train_and_evaluate(config, str(tmp_path / "resumed"))
  _, a = _latest_state(tmp_path / "full")
  _, b = _latest_state(tmp_path / "resumed")
  _assert_trees_close(a, b, rtol=1e-5, atol=1e-6)


def test_webvision_with_mixup_trains(tmp_path):
  make_webvision_tree(tmp_path / "wv")
  config = _small(webvision_config.get_config("method=sgn,epochs=1"),
                  tmp_path / "wv", tmp_path / "tfds")
  assert config.input.mixup_alpha == 0.8 and config.method_args.target_scale == 0.3
  metrics = classify.train_and_evaluate(config, str(tmp_path / "w"))
  assert np.isfinite(metrics["train/loss"])
  assert {"test/accuracy", "test/top5_accuracy", "imagenet/accuracy",
          "imagenet/top5_accuracy"} <= set(metrics)


def test_mixup_with_a_method_without_soft_labels_is_rejected(tmp_path):
  config = webvision_config.get_config("method=ce")
  config.method = "elr"
  with pytest.raises(ValueError, match="mixup_alpha=0.8 needs soft labels.*'elr'"):
    classify.validate_config(config)


def test_streaming_configs_validate_and_reject_synthetic_noise():
  for module in (clothing1m_config, webvision_config):
    config = module.get_config()
    if config.get("model_pretrained_required", False):  # Clothing1M: weights or "none"
      config.model_pretrained = "none"
    classify.validate_config(config)
    config.noise.kind = "sym"
    with pytest.raises(ValueError, match="real label noise"):
      classify.validate_config(config)
  config = clothing1m_config.get_config()
  config.model_pretrained = "/nonexistent/resnet50.npz"
  with pytest.raises(FileNotFoundError, match="resnet50.npz"):
    classify.validate_config(config)


def test_prepare_command_handles_streamed_datasets(tmp_path, capsys):
  from sgn_jax.data import prepare  # pylint: disable=g-import-not-at-top
  make_clothing1m_tree(tmp_path / "c1m")
  assert prepare.main(["--dataset=clothing1m", f"--data_dir={tmp_path / 'tfds'}",
                       f"--manual_dir={tmp_path / 'c1m'}"]) == 0
  assert "clothing1m is prepared" in capsys.readouterr().out
  assert prepare.main(["--dataset=mini_webvision", f"--data_dir={tmp_path / 'tfds2'}",
                       f"--manual_dir={tmp_path / 'missing'}"]) == 1
  assert "train_filelist_google.txt" in capsys.readouterr().err
