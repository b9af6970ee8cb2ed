"""Tests of the Flax ports of EDM's SongUNet (DDPM++/NCSN++) and DhariwalUNet (ADM).

Parameter counts are those of the authors' PyTorch networks (EDM's
`training/networks.py`; TDSM's `ddpmpp_mnist` preset), measured with their
code. The golden fixtures tests/data/edm_*_golden.npz hold, for tiny configs
(`GOLDEN_CONFIGS`), a state dict of the authors' network with every parameter
randomised, fixed inputs (NHWC), and the network's eval-mode outputs with and
without augment labels.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnrd import networks
from lnrd.networks import convert_torch
from lnrd.networks import layers

DATA = pathlib.Path(__file__).resolve().parent / "data"

CIFAR = dict(img_resolution=32, in_channels=3, out_channels=3)
MNIST = dict(img_resolution=32, in_channels=1, out_channels=1)

PARAM_COUNTS = [
    ("ddpmpp", dict(CIFAR, label_dim=10, augment_dim=9), 55_735_299),
    ("ddpmpp", dict(CIFAR, label_dim=10, augment_dim=0), 55_734_147),
    ("ddpmpp", dict(CIFAR, label_dim=0, augment_dim=9), 55_733_891),
    ("ddpmpp_mnist", dict(MNIST, label_dim=10, augment_dim=9), 1_559_425),
    ("ddpmpp_mnist", dict(MNIST, label_dim=10, augment_dim=0), 1_559_137),
    ("ncsnpp", dict(CIFAR, label_dim=10, augment_dim=9), 56_400_643),
    ("adm", dict(CIFAR, label_dim=10, augment_dim=9), 279_633_603),
]

_TINY = dict(img_resolution=16, in_channels=3, out_channels=3, label_dim=3, augment_dim=9,
             model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.0)
GOLDEN_CONFIGS = {
    "song_ddpmpp": (networks.SongUNet, dict(
        _TINY, embedding_type="positional", encoder_type="standard", decoder_type="standard",
        channel_mult_noise=1, resample_filter=(1, 1))),
    "song_ncsnpp": (networks.SongUNet, dict(
        _TINY, embedding_type="fourier", encoder_type="residual", decoder_type="standard",
        channel_mult_noise=2, resample_filter=(1, 3, 3, 1))),
    "song_skip": (networks.SongUNet, dict(
        _TINY, embedding_type="positional", encoder_type="skip", decoder_type="skip",
        channel_mult_noise=1, resample_filter=(1, 3, 3, 1))),
    # Heads of 8 channels (EDM fixes 64) so that the tiny net has 2- and 4-head attention.
    "dhariwal": (networks.DhariwalUNet, dict(_TINY, channels_per_head=8)),
}


def _load_golden(name):
  with np.load(DATA / f"edm_{name}_golden.npz") as data:
    arrays = {key: data[key] for key in data.files}
  state_dict = {key[len("state/"):]: value for key, value in arrays.items() if key.startswith("state/")}
  return state_dict, arrays


def _build_golden(name):
  network_class, config = GOLDEN_CONFIGS[name]
  module = network_class(**config)
  state_dict, arrays = _load_golden(name)
  inputs = (arrays["x"], arrays["noise_labels"], arrays["class_labels"], arrays["augment_labels"])
  return module, state_dict, arrays, inputs


def _assert_close(actual, expected):
  actual = np.asarray(actual)
  scale = float(np.abs(expected).max())
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("arch,kwargs,expected", PARAM_COUNTS,
                         ids=[f"{a}-label{k['label_dim']}-aug{k['augment_dim']}" for a, k, _ in PARAM_COUNTS])
def test_param_count_matches_authors_network(arch, kwargs, expected):
  assert networks.count_params(networks.get_network(arch, dropout=0.13, **kwargs)) == expected


def test_presets_follow_edm_and_tdsm_train_py():
  mnist = networks.get_network("ddpmpp_mnist", **MNIST, label_dim=10)
  assert (mnist.model_channels, tuple(mnist.channel_mult), mnist.num_blocks) == (32, (2, 2, 2), 1)
  ncsnpp = networks.get_network("ncsnpp", **CIFAR)
  assert ncsnpp.embedding_type == "fourier" and ncsnpp.encoder_type == "residual"
  assert tuple(ncsnpp.resample_filter) == (1, 3, 3, 1) and ncsnpp.channel_mult_noise == 2
  adm = networks.get_network("adm", **CIFAR, model_channels=64, label_dropout=0.1)
  assert isinstance(adm, networks.DhariwalUNet)
  assert (adm.model_channels, tuple(adm.channel_mult), adm.label_dropout) == (64, (1, 2, 3, 4), 0.1)


def test_unknown_arch_names_allowed_ones():
  with pytest.raises(ValueError, match="'unet9000'.*adm.*ddpmpp.*ddpmpp_mnist.*ncsnpp"):
    networks.get_network("unet9000", **CIFAR)


@pytest.mark.parametrize("name", sorted(GOLDEN_CONFIGS))
def test_matches_authors_outputs(name):
  module, state_dict, arrays, inputs = _build_golden(name)
  variables = convert_torch.torch_state_dict_to_variables(state_dict, module, inputs)

  @jax.jit
  def outputs(variables, inputs):
    with_augment = module.apply(variables, *inputs)
    without_augment = module.apply(variables, *inputs[:3], None)
    # Training mode with dropout 0 and no label dropout is the same function.
    trained = module.apply(variables, *inputs, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
    return with_augment, without_augment, trained

  with_augment, without_augment, trained = outputs(variables, inputs)
  _assert_close(with_augment, arrays["output"])
  _assert_close(without_augment, arrays["output_no_augment"])
  _assert_close(trained, arrays["output"])


def test_init_variables_have_the_converted_structure():
  module, state_dict, _, inputs = _build_golden("song_ncsnpp")
  converted = convert_torch.torch_state_dict_to_variables(state_dict, module, inputs)
  initialised = networks.init_shapes(module, inputs)
  assert (jax.tree_util.tree_structure(jax.tree_util.tree_map(np.shape, converted))
          == jax.tree_util.tree_structure(jax.tree_util.tree_map(lambda leaf: leaf.shape, dict(initialised))))
  assert converted["constants"]["map_noise"]["freqs"].shape == (16,)


def _converted_golden(name):
  module, state_dict, arrays, inputs = _build_golden(name)
  return module, convert_torch.torch_state_dict_to_variables(state_dict, module, inputs), arrays, inputs


def test_dropout_and_label_dropout_use_the_dropout_rng():
  base, variables, _, inputs = _converted_golden("song_ddpmpp")
  module = base.clone(dropout=0.5, label_dropout=1.0)
  zero_labels = (inputs[0], inputs[1], np.zeros_like(inputs[2]), inputs[3])
  train = jax.jit(lambda variables, inputs, key: module.apply(variables, *inputs, train=True,
                                                              rngs={"dropout": key}))
  # label_dropout = 1 drops every label (same output as all-zero labels for the
  # same rng); activation dropout depends on the rng. (Evaluation mode ignores
  # both: test_matches_authors_outputs.)
  first = np.asarray(train(variables, inputs, jax.random.PRNGKey(0)))
  _assert_close(np.asarray(train(variables, zero_labels, jax.random.PRNGKey(0))), first)
  assert not np.allclose(np.asarray(train(variables, inputs, jax.random.PRNGKey(1))), first, atol=1e-3)


def test_bfloat16_compute_stays_close():
  module, variables, arrays, inputs = _converted_golden("dhariwal")
  out = jax.jit(module.clone(dtype=jnp.bfloat16).apply)(variables, *inputs)
  assert out.dtype == jnp.float32
  assert all(leaf.dtype == np.float32 for leaf in jax.tree_util.tree_leaves(variables))
  error = np.abs(np.asarray(out) - arrays["output"]).max()
  assert error < 0.1 * np.abs(arrays["output"]).max()


def test_converter_accepts_precond_prefix_and_round_trips():
  module, state_dict, _, inputs = _build_golden("dhariwal")
  prefixed = {f"model.{key}": value for key, value in state_dict.items()}
  params = convert_torch.torch_state_dict_to_params(prefixed, module, inputs)
  unprefixed = convert_torch.torch_state_dict_to_params(state_dict, module, inputs)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, unprefixed)
  back = convert_torch.params_to_torch_state_dict(params)
  expected = {key: value for key, value in state_dict.items() if not key.endswith(".resample_filter")}
  assert sorted(back) == sorted(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_converter_rejects_missing_extra_and_misshapen_keys():
  module, state_dict, _, inputs = _build_golden("song_ddpmpp")
  missing = dict(state_dict)
  del missing["enc.8x8_block0.qkv.weight"]
  with pytest.raises(ValueError, match=r"not filled.*qkv/kernel"):
    convert_torch.torch_state_dict_to_variables(missing, module, inputs)
  extra = dict(state_dict, **{"enc.16x16_block9.conv0.weight": np.zeros((16, 16, 3, 3), np.float32)})
  with pytest.raises(ValueError, match=r"no matching Flax variable.*enc\.16x16_block9\.conv0\.weight"):
    convert_torch.torch_state_dict_to_variables(extra, module, inputs)
  misshapen = dict(state_dict, **{"map_layer0.weight": np.zeros((64, 17), np.float32)})
  with pytest.raises(ValueError, match=r"shape mismatches.*map_layer0\.weight"):
    convert_torch.torch_state_dict_to_variables(misshapen, module, inputs)
  wrong_filter = {key: (value * 2 if key.endswith("resample_filter") else value) for key, value in state_dict.items()}
  with pytest.raises(ValueError, match="resample filters"):
    convert_torch.torch_state_dict_to_variables(wrong_filter, module, inputs)
  ncsnpp, ncsnpp_state, _, ncsnpp_inputs = _build_golden("song_ncsnpp")
  with pytest.raises(ValueError, match="torch_state_dict_to_variables"):
    convert_torch.torch_state_dict_to_params(ncsnpp_state, ncsnpp, ncsnpp_inputs)


def test_load_torch_checkpoint(tmp_path):
  torch = pytest.importorskip("torch")
  _, state_dict, _, _ = _build_golden("song_ddpmpp")
  path = tmp_path / "net.pt"
  torch.save({key: torch.from_numpy(value) for key, value in state_dict.items()}, path)
  loaded = convert_torch.load_torch_checkpoint(path)
  assert sorted(loaded) == sorted(state_dict)
  np.testing.assert_array_equal(loaded["map_layer0.weight"], state_dict["map_layer0.weight"])


@pytest.mark.parametrize("mode", ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"])
def test_weight_init_scales(mode):
  fan_in, fan_out = 300, 100
  draw = np.asarray(layers.edm_initializer(mode, fan_in, fan_out, scale=2.0)(jax.random.PRNGKey(0), (400, 300)))
  expected_std = {"xavier_uniform": np.sqrt(6 / (fan_in + fan_out) / 3),
                  "xavier_normal": np.sqrt(2 / (fan_in + fan_out)),
                  "kaiming_uniform": np.sqrt(3 / fan_in / 3),
                  "kaiming_normal": np.sqrt(1 / fan_in)}[mode]
  np.testing.assert_allclose(draw.std(), 2.0 * expected_std, rtol=0.02)
  with pytest.raises(ValueError, match="Invalid init mode"):
    layers.edm_initializer("orthogonal", 1, 1)
