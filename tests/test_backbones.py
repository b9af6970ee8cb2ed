"""Tests for the large backbones: ResNet (torchvision layout), Inception-ResNet-v2
(Keras layout) and the torchvision weight loader.

Big models are only traced (`jax.eval_shape`) for parameter counts and shapes;
real forwards use small inputs. The golden test against an independent PyTorch
ResNet-50 runs when torch is installed (CI installs torch==2.13.0, CPU).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgn_jax.models.inception_resnet_v2 import ConvBN
from sgn_jax.models.inception_resnet_v2 import InceptionResNetV2
from sgn_jax.models.pretrained import load_state_dict_file
from sgn_jax.models.pretrained import load_torchvision_resnet
from sgn_jax.models.resnet import BasicBlock
from sgn_jax.models.resnet import Bottleneck
from sgn_jax.models.resnet import ResNet
from sgn_jax.models.resnet import ResNet18
from sgn_jax.models.resnet import ResNet34
from sgn_jax.models.resnet import ResNet50
from sgn_jax.models.resnet import ResNet101


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _abstract(model, hw, batch=1, dtype=jnp.float32):
  """(logits or features, variables) as ShapeDtypeStructs; no compute."""
  return jax.eval_shape(
      lambda: model.init_with_output(jax.random.key(0),
                                     jnp.zeros((batch, hw, hw, 3), dtype),
                                     train=False))


# ----------------------------------------------------------------------------
# ResNet: parameter counts (torchvision's published numbers) and shapes.

@pytest.mark.parametrize("factory,kwargs,hw,expected", [
    (ResNet18, {}, 224, 11_689_512),
    (ResNet34, {}, 224, 21_797_672),
    (ResNet50, {}, 224, 25_557_032),
    (ResNet101, {}, 224, 44_549_160),
    (ResNet18, {"num_outputs": 10, "cifar_stem": True}, 32, 11_173_962),
])
def test_resnet_param_counts(factory, kwargs, hw, expected):
  y, v = _abstract(factory(**kwargs), hw, batch=2)
  assert _count(v["params"]) == expected
  assert y.shape == (2, kwargs.get("num_outputs", 1000))
  assert y.dtype == jnp.float32


def test_resnet_generic_equals_aliases():
  _, a = _abstract(ResNet(stage_sizes=(3, 4, 6, 3), block=Bottleneck,
                          num_outputs=14), 64)
  _, b = _abstract(ResNet50(num_outputs=14), 64)
  assert jax.tree.map(lambda s: s.shape, a) == jax.tree.map(lambda s: s.shape, b)
  _, c = _abstract(ResNet(stage_sizes=(2, 2, 2, 2), block=BasicBlock), 64)
  assert _count(c["params"]) == 11_689_512
  with pytest.raises(ValueError, match="block"):
    ResNet(stage_sizes=(2, 2), block="wide")
  with pytest.raises(ValueError, match="stage_sizes"):
    ResNet(stage_sizes=(), block="basic")


def test_resnet50_layout_and_features():
  model = ResNet50(num_outputs=14)
  y, v = _abstract(model, 224, batch=3)
  assert y.shape == (3, 14)
  p = v["params"]
  # Projection shortcut only in the first block of each stage.
  assert {k for k in p if "downsample_conv" in p[k]} == {
      "layer1_0", "layer2_0", "layer3_0", "layer4_0"}
  # v1.5: the 3x3 conv carries the stride; 7x7 stem; no conv biases.
  assert p["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 128, 128)
  assert p["conv1"]["kernel"].shape == (7, 7, 3, 64)
  assert set(p["layer1_0"]["conv1"]) == {"kernel"}
  assert set(v["batch_stats"]["bn1"]) == {"mean", "var"}
  f, vb = _abstract(model.clone(head=False), 224, batch=3)
  assert f.shape == (3, 2048) and "classifier" not in vb["params"]
  f, _ = _abstract(ResNet18(head=False, cifar_stem=True), 32, batch=3)
  assert f.shape == (3, 512)
  # bfloat16 compute: float32 parameters and logits.
  y, v = _abstract(ResNet50(num_outputs=14, dtype=jnp.bfloat16), 224)
  assert y.dtype == jnp.float32
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(v))


def test_resnet_stride_schedule():
  """224 -> 112 (stem conv) -> 56 (max-pool) -> 56/28/14/7; CIFAR stem keeps 32."""
  def last_map(model, hw):
    return jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((1, hw, hw, 3)), train=False,
        capture_intermediates=lambda m, _: m.name == "layer4_0"))[1][
            "intermediates"]["layer4_0"]["__call__"][0].shape
  assert last_map(ResNet50(), 224) == (1, 7, 7, 2048)
  assert last_map(ResNet18(cifar_stem=True), 32) == (1, 4, 4, 512)


def test_resnet_small_forward_train_and_eval():
  """Real compute on a tiny ResNet: BN statistics update, finite logits."""
  model = ResNet(stage_sizes=(1, 1), block="basic", num_outputs=5,
                 cifar_stem=True)
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
  v = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), x)
  y, upd = jax.jit(functools.partial(model.apply, train=True,
                                     mutable=["batch_stats"]))(v, x)
  assert y.shape == (4, 5) and y.dtype == jnp.float32
  assert np.all(np.isfinite(y))
  # momentum 0.9: running mean = 0.1 * batch mean of the stem output.
  stem = jax.lax.conv_general_dilated(
      x, v["params"]["conv1"]["kernel"], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(upd["batch_stats"]["bn1"]["mean"],
                             0.1 * np.asarray(stem).mean((0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  ye = model.apply({**v, **upd}, x, train=False)
  ye1 = model.apply({**v, **upd}, x[:1], train=False)
  np.testing.assert_allclose(ye[:1], ye1, rtol=1e-5, atol=1e-5)


def test_resnet_init_and_zero_init_residual():
  x = jnp.zeros((1, 8, 8, 256))
  v = Bottleneck(features=64).init(jax.random.key(0), x)
  np.testing.assert_array_equal(v["params"]["bn3"]["scale"], 1.0)
  assert "downsample_conv" not in v["params"]     # 256 -> 256, stride 1
  # torchvision: kaiming normal, fan_out, variance 2 / (3*3*64).
  k = np.asarray(v["params"]["conv2"]["kernel"])
  assert abs(k.std() / np.sqrt(2 / (9 * 64)) - 1) < 0.05
  v = Bottleneck(features=64, zero_init_residual=True).init(jax.random.key(0), x)
  np.testing.assert_array_equal(v["params"]["bn3"]["scale"], 0.0)
  v = BasicBlock(features=64, strides=2, zero_init_residual=True).init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 32)))
  np.testing.assert_array_equal(v["params"]["bn2"]["scale"], 0.0)
  assert v["params"]["downsample_conv"]["kernel"].shape == (1, 1, 32, 64)


# ----------------------------------------------------------------------------
# Inception-ResNet-v2.

# Keras InceptionResNetV2(weights=None, classes=1000).summary():
# trainable 55,813,192 + non-trainable 60,544 (BN moving mean and variance)
# = total 55,873,736.
KERAS_TRAINABLE = 55_813_192
KERAS_NON_TRAINABLE = 60_544
KERAS_TOTAL = 55_873_736


def test_inception_resnet_v2_param_count_matches_keras():
  assert KERAS_TRAINABLE + KERAS_NON_TRAINABLE == KERAS_TOTAL
  for hw in (227, 299):
    y, v = _abstract(InceptionResNetV2(), hw, batch=2)
    assert y.shape == (2, 1000) and y.dtype == jnp.float32
    # Trainable = "params" (kernels, biases, BN betas; no BN gammas).
    assert _count(v["params"]) == KERAS_TRAINABLE
    # Non-trainable = "batch_stats": mean + var for each of 30,272 BN channels.
    assert _count(v["batch_stats"]) == KERAS_NON_TRAINABLE
    betas = sum(int(np.prod(s["bn"]["bias"].shape)) for s in _bn_layers(
        v["params"]))
    assert 2 * betas == KERAS_NON_TRAINABLE


def _bn_layers(tree):
  if "bn" in tree:
    yield tree
  for val in tree.values():
    if isinstance(val, dict):
      yield from _bn_layers(val)


def test_inception_resnet_v2_layout_and_features():
  y, v = _abstract(InceptionResNetV2(num_outputs=50), 227, batch=2)
  assert y.shape == (2, 50)
  p = v["params"]
  assert sum(k.startswith("block35_") for k in p) == 10
  assert sum(k.startswith("block17_") for k in p) == 20
  assert sum(k.startswith("block8_") for k in p) == 10
  assert set(p["conv2d_1a"]["bn"]) == {"bias"}           # Keras scale=False
  assert set(p["block17_1"]["up"]) == {"kernel", "bias"}  # "up" conv has bias
  assert p["block17_1"]["branch1_1"]["conv"]["kernel"].shape == (1, 7, 128, 160)
  assert p["conv_7b"]["conv"]["kernel"].shape == (1, 1, 2080, 1536)
  for hw in (75, 227, 299):
    f, vb = _abstract(InceptionResNetV2(head=False), hw, batch=2)
    assert f.shape == (2, 1536) and "classifier" not in vb["params"]
  y, v = _abstract(InceptionResNetV2(num_outputs=50, dtype=jnp.bfloat16), 75)
  assert y.dtype == jnp.float32
  with pytest.raises(ValueError, match="75x75"):
    _abstract(InceptionResNetV2(), 74)


def test_inception_resnet_v2_spatial_sizes():
  """Keras' shapes: 299 -> 35/17/8 and 227 -> 26/12/5 after 5b/6a/7a."""
  names = ("mixed_5b", "mixed_6a", "mixed_7a", "conv_7b")

  def sizes(hw):
    _, v = jax.eval_shape(lambda: InceptionResNetV2().init_with_output(
        jax.random.key(0), jnp.zeros((1, hw, hw, 3)), train=False,
        capture_intermediates=lambda m, _: m.name in names))
    it = v["intermediates"]
    return [it[n]["__call__"][0].shape[1:] for n in names]
  assert sizes(299) == [(35, 35, 320), (17, 17, 1088), (8, 8, 2080),
                        (8, 8, 1536)]
  assert sizes(227) == [(26, 26, 320), (12, 12, 1088), (5, 5, 2080),
                        (5, 5, 1536)]
  assert sizes(75)[2] == (1, 1, 2080)


def test_inception_resnet_v2_forward_75():
  """One real forward of the full model, batch 1 at 75x75 (eval mode).

  Variables come from numpy (glorot-uniform kernels, Keras' BN init) on the
  eval_shape'd structure: compiling Flax's init of 56M parameters on CPU takes
  ~1 minute, most of it the random-number code.
  """
  model = InceptionResNetV2(num_outputs=50)
  _, shapes = _abstract(model, 75)
  rng = np.random.default_rng(0)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      recept = int(np.prod(s.shape[:-2]))
      lim = np.sqrt(6 / (recept * (s.shape[-2] + s.shape[-1])))
      return rng.uniform(-lim, lim, s.shape).astype(np.float32)
    return np.full(s.shape, 1.0 if name == "var" else 0.0, np.float32)
  v = jax.tree_util.tree_map_with_path(fill, shapes)
  x = jax.random.normal(jax.random.key(0), (1, 75, 75, 3))
  y = jax.jit(functools.partial(model.apply, train=False))(v, x)
  assert y.shape == (1, 50) and y.dtype == jnp.float32
  assert np.all(np.isfinite(y)) and np.abs(y).max() > 0


def test_inception_conv_bn_keras_batchnorm():
  """conv2d_bn: no BN scale, epsilon 1e-3, momentum 0.99 (Keras)."""
  layer = ConvBN(8, 3, padding="VALID")
  x = jax.random.normal(jax.random.key(0), (4, 7, 7, 3))
  v = layer.init(jax.random.key(1), x)
  assert set(v["params"]["bn"]) == {"bias"}
  y, upd = layer.apply(v, x, train=True, mutable=["batch_stats"])
  z = jax.lax.conv_general_dilated(x, v["params"]["conv"]["kernel"], (1, 1),
                                   "VALID", dimension_numbers=("NHWC", "HWIO",
                                                               "NHWC"))
  mean, var = z.mean((0, 1, 2)), z.var((0, 1, 2))
  np.testing.assert_allclose(upd["batch_stats"]["bn"]["mean"], 0.01 * mean,
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(upd["batch_stats"]["bn"]["var"],
                             0.99 + 0.01 * var, rtol=1e-5)
  np.testing.assert_allclose(y, jax.nn.relu((z - mean) / jnp.sqrt(var + 1e-3)),
                             rtol=1e-4, atol=1e-4)
  ye = layer.apply(v, x, train=False)   # mean 0, var 1: z / sqrt(1 + 1e-3)
  np.testing.assert_allclose(ye, jax.nn.relu(z / np.sqrt(1.001)), rtol=1e-5,
                             atol=1e-6)


# ----------------------------------------------------------------------------
# torchvision state-dict loader.

def _torchvision_resnet_shapes(stage_sizes, block, num_classes, cifar_stem=False):
  """torchvision ResNet state-dict key -> shape, written out independently."""
  exp = 4 if block == "bottleneck" else 1
  out = {}

  def bn(name, c):
    out.update({f"{name}.weight": (c,), f"{name}.bias": (c,),
                f"{name}.running_mean": (c,), f"{name}.running_var": (c,),
                f"{name}.num_batches_tracked": ()})
  k = 3 if cifar_stem else 7
  out["conv1.weight"] = (64, 3, k, k)
  bn("bn1", 64)
  inplanes = 64
  for i, n in enumerate(stage_sizes):
    planes = 64 * 2 ** i
    for j in range(n):
      pre = f"layer{i + 1}.{j}"
      if block == "bottleneck":
        convs = [(planes, inplanes, 1), (planes, planes, 3),
                 (planes * 4, planes, 1)]
      else:
        convs = [(planes, inplanes, 3), (planes, planes, 3)]
      for c, (o, ci, kk) in enumerate(convs, start=1):
        out[f"{pre}.conv{c}.weight"] = (o, ci, kk, kk)
        bn(f"{pre}.bn{c}", o)
      if j == 0 and (i > 0 or inplanes != planes * exp):
        out[f"{pre}.downsample.0.weight"] = (planes * exp, inplanes, 1, 1)
        bn(f"{pre}.downsample.1", planes * exp)
      inplanes = planes * exp
  out["fc.weight"] = (num_classes, inplanes)
  out["fc.bias"] = (num_classes,)
  return out


def _random_state_dict(shapes, seed=0):
  rng = np.random.default_rng(seed)
  return {k: (np.array(7, np.int64) if k.endswith("num_batches_tracked")
              else rng.normal(size=s).astype(np.float32))
          for k, s in shapes.items()}


TINY = dict(stage_sizes=(1, 2), block="bottleneck")


@pytest.fixture(scope="module")
def tiny():
  """A 2-stage bottleneck ResNet with 3 classes, really initialised."""
  model = ResNet(**TINY, num_outputs=3)
  v = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  sd = _random_state_dict(_torchvision_resnet_shapes(
      TINY["stage_sizes"], TINY["block"], 1000))
  return model, v, sd


def test_loader_maps_every_tensor(tiny):
  model, v, sd = tiny
  out = load_torchvision_resnet(sd, v, head="drop")
  p, s = out["params"], out["batch_stats"]
  np.testing.assert_array_equal(p["conv1"]["kernel"],
                                sd["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p["layer2_1"]["conv2"]["kernel"][1, 2, 5, 7],
                                sd["layer2.1.conv2.weight"][7, 5, 1, 2])
  np.testing.assert_array_equal(p["layer2_0"]["downsample_conv"]["kernel"],
                                sd["layer2.0.downsample.0.weight"].transpose(
                                    2, 3, 1, 0))
  np.testing.assert_array_equal(p["layer2_0"]["downsample_bn"]["scale"],
                                sd["layer2.0.downsample.1.weight"])
  np.testing.assert_array_equal(s["layer1_0"]["bn3"]["var"],
                                sd["layer1.0.bn3.running_var"])
  np.testing.assert_array_equal(s["bn1"]["mean"], sd["bn1.running_mean"])
  # head="drop": the 3-class classifier keeps its fresh init.
  jax.tree.map(np.testing.assert_array_equal, out["params"]["classifier"],
               v["params"]["classifier"])
  assert jax.tree.structure(out) == jax.tree.structure(v)
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(out))
  y = model.apply(out, jnp.ones((2, 32, 32, 3)), train=False)
  assert y.shape == (2, 3)
  # Every parameter was replaced (random normals, not the init's values).
  flat_new = jax.tree.leaves(out["params"]["layer1_0"])
  flat_old = jax.tree.leaves(v["params"]["layer1_0"])
  assert all(not np.array_equal(a, b) for a, b in zip(flat_new, flat_old))


def test_loader_head_keep(tiny):
  model, _, sd = tiny
  _, abstract = _abstract(model.clone(num_outputs=1000), 32)
  out = load_torchvision_resnet(sd, abstract, head="keep")
  np.testing.assert_array_equal(out["params"]["classifier"]["kernel"],
                                sd["fc.weight"].T)
  np.testing.assert_array_equal(out["params"]["classifier"]["bias"],
                                sd["fc.bias"])
  # keep with the wrong number of classes: a shape error naming fc.weight.
  with pytest.raises(ValueError, match=r"'fc\.(weight|bias)'"):
    load_torchvision_resnet(sd, tiny[1], head="keep")
  with pytest.raises(ValueError, match="head"):
    load_torchvision_resnet(sd, tiny[1], head="replace")


def test_loader_errors(tiny):
  _, v, sd = tiny
  missing = dict(sd)
  del missing["layer2.1.bn1.running_var"]
  with pytest.raises(ValueError, match=r"no key 'layer2\.1\.bn1\.running_var'"):
    load_torchvision_resnet(missing, v)
  bad = dict(sd, **{"layer1.0.conv2.weight": np.zeros((64, 64, 1, 1))})
  with pytest.raises(ValueError,
                     match=r"Shape mismatch for 'layer1\.0\.conv2\.weight'"):
    load_torchvision_resnet(bad, v)
  bad = dict(sd, **{"bn1.weight": np.zeros((64, 1))})
  with pytest.raises(ValueError, match=r"Shape mismatch for 'bn1\.weight'"):
    load_torchvision_resnet(bad, v)
  extra = dict(sd, **{"layer3.0.conv1.weight": np.zeros((256, 512, 1, 1))})
  with pytest.raises(ValueError, match=r"not used.*layer3\.0\.conv1\.weight"):
    load_torchvision_resnet(extra, v)
  # A 7x7-stem dict into a CIFAR-stem model.
  model = ResNet(**TINY, num_outputs=1000, cifar_stem=True)
  _, vc = _abstract(model, 32)
  with pytest.raises(ValueError, match=r"'conv1\.weight'.*\(64, 3, 7, 7\)"):
    load_torchvision_resnet(sd, vc, head="keep")


def test_loader_full_resnet50_keys():
  """A torchvision ResNet-50 dict (320 entries) maps one to one."""
  shapes = _torchvision_resnet_shapes((3, 4, 6, 3), "bottleneck", 1000)
  # 53 convs + 53 BNs x (weight, bias) + fc (2) = 161 parameters, plus
  # 53 x (running_mean, running_var, num_batches_tracked) buffers.
  assert len(shapes) == 161 + 159 == 320
  _, abstract = _abstract(ResNet50(), 64)
  sd = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
  out = load_torchvision_resnet(sd, abstract, head="keep")
  assert _count(out["params"]) == 25_557_032


def test_load_state_dict_file(tmp_path):
  sd = {"conv1.weight": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3),
        "bn1.num_batches_tracked": np.array(3)}
  np.savez(tmp_path / "w.npz", **sd)
  got = load_state_dict_file(tmp_path / "w.npz")
  assert set(got) == set(sd)
  np.testing.assert_array_equal(got["conv1.weight"], sd["conv1.weight"])
  with pytest.raises(FileNotFoundError,
                     match=r"(?s)nothere\.npz.*resnet50-0676ba61\.pth"):
    load_state_dict_file(tmp_path / "nothere.npz")
  (tmp_path / "w.h5").write_bytes(b"")
  with pytest.raises(ValueError, match=r"\.h5"):
    load_state_dict_file(tmp_path / "w.h5")


# ----------------------------------------------------------------------------
# Golden test: an independent PyTorch ResNet-50 (torchvision naming).

def _torch_resnet50(num_classes):
  torch = pytest.importorskip("torch")
  tnn = torch.nn

  class TorchBottleneck(tnn.Module):

    def __init__(self, inplanes, planes, stride, downsample):
      super().__init__()
      self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
      self.bn1 = tnn.BatchNorm2d(planes)
      self.conv2 = tnn.Conv2d(planes, planes, 3, stride=stride, padding=1,
                              bias=False)
      self.bn2 = tnn.BatchNorm2d(planes)
      self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
      self.bn3 = tnn.BatchNorm2d(planes * 4)
      self.relu = tnn.ReLU()
      self.downsample = downsample

    def forward(self, x):
      y = self.relu(self.bn1(self.conv1(x)))
      y = self.relu(self.bn2(self.conv2(y)))
      y = self.bn3(self.conv3(y))
      s = x if self.downsample is None else self.downsample(x)
      return self.relu(y + s)

  class TorchResNet50(tnn.Module):

    def __init__(self):
      super().__init__()
      self.conv1 = tnn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
      self.bn1 = tnn.BatchNorm2d(64)
      self.relu = tnn.ReLU()
      self.maxpool = tnn.MaxPool2d(3, stride=2, padding=1)
      inplanes = 64
      for i, (n, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        stride = 1 if i == 0 else 2
        down = tnn.Sequential(
            tnn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
            tnn.BatchNorm2d(planes * 4))
        blocks = [TorchBottleneck(inplanes, planes, stride, down)]
        blocks += [TorchBottleneck(planes * 4, planes, 1, None)
                   for _ in range(n - 1)]
        setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
        inplanes = planes * 4
      self.avgpool = tnn.AdaptiveAvgPool2d(1)
      self.fc = tnn.Linear(2048, num_classes)

    def forward(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      for i in range(1, 5):
        x = getattr(self, f"layer{i}")(x)
      return self.fc(torch.flatten(self.avgpool(x), 1))

  torch.manual_seed(0)
  model = TorchResNet50()
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, tnn.Conv2d):
        tnn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      elif isinstance(m, tnn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.2)
        m.running_mean.normal_(0.0, 0.2)
        m.running_var.uniform_(0.5, 2.0)
        m.num_batches_tracked.fill_(100)
  return torch, model.eval()


def test_golden_torch_resnet50(tmp_path):
  torch, tmodel = _torch_resnet50(num_classes=14)
  path = tmp_path / "resnet50.pth"
  torch.save(tmodel.state_dict(), path)
  sd = load_state_dict_file(path)
  assert len(sd) == 320 and sd["fc.weight"].shape == (14, 2048)

  model = ResNet50(num_outputs=14)
  _, abstract = _abstract(model, 64)
  variables = load_torchvision_resnet(sd, abstract, head="keep")

  x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  with torch.no_grad():
    want = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  got = np.asarray(jax.jit(functools.partial(model.apply, train=False))(
      variables, x))
  scale = np.abs(want).max()
  err = np.abs(got - want).max()
  print(f"golden ResNet-50: max |logit| {scale:.4g}, max abs diff {err:.3g}, "
        f"relative {err / scale:.3g}")
  assert scale > 1e-3
  assert err < 1e-4 * scale
