"""Untrusted files never execute: every loader of a user file reads data only.

Each loader gets a crafted file that would write a marker file when read by
a naive loader (a pickled `os.system` / `builtins.exec` call, a pickled
object array, EDM's persistent class whose module source writes the marker
when exec'd). The loader must refuse it with an error naming the file (or
ignore the source, for EDM) and the marker must not exist. The positive
tests check that the real formats still load. `test_payloads_are_live`
checks that the payloads do write their marker when unpickled naively.
"""

import builtins
import contextlib
import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from sgn_jax import noise
from sgn_jax import safe_load
from sgn_jax.data import array_source
from sgn_jax.data import cifar_n


class _SystemPayload:
  """Unpickles to `os.system('touch MARKER')`."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (os.system, (f"touch '{self.marker}'",))


class _ExecPayload:
  """Unpickles to `builtins.exec("open(MARKER, 'w').close()")`."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


PAYLOADS = [_SystemPayload, _ExecPayload]


@pytest.fixture(name="marker")
def _marker(tmp_path):
  path = tmp_path / "MARKER"
  yield path
  assert not path.exists(), "a loader ran code from the file"


def _refused(error: pytest.ExceptionInfo, path, marker=None) -> None:
  """The refusal names the file, says it refuses, and nothing ran."""
  if marker is not None:
    assert not marker.exists(), "a loader ran code from the file"
  message = str(error.value)
  assert os.fspath(path) in message, message
  assert "refus" in message.lower(), message


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_are_live(tmp_path, payload):
  """Control: the payloads do write their marker when unpickled naively."""
  marker = tmp_path / "CONTROL"
  pickle.loads(pickle.dumps({"x": payload(marker)}))
  assert marker.exists()


# ----------------------------------------------------------------------------- npz readers


def test_npz_object_array_is_live(tmp_path):
  marker = tmp_path / "CONTROL"
  np.savez(tmp_path / "x.npz", labels=np.array([_ExecPayload(marker)], dtype=object))
  np.load(tmp_path / "x.npz", allow_pickle=True)["labels"]
  assert marker.exists()


def test_noise_labels_file_refuses_object_array(tmp_path, marker):
  path = tmp_path / "labels.npz"
  np.savez(path, labels=np.array([_ExecPayload(marker), 1], dtype=object))
  with pytest.raises(ValueError) as error:
    noise.load_labels_file(path, 2, 2)
  _refused(error, path, marker)
  assert isinstance(error.value, safe_load.UnsafeFileError)


def test_noise_labels_file_refuses_a_pickle(tmp_path, marker):
  path = tmp_path / "labels.npz"
  path.write_bytes(pickle.dumps({"labels": _SystemPayload(marker)}))
  with pytest.raises(ValueError) as error:  # refused as not an npz (never unpickled)
    noise.load_labels_file(path, 2, 2)
  assert not marker.exists()
  assert os.fspath(path) in str(error.value)
  with pytest.raises(safe_load.UnsafeFileError) as error:
    safe_load.open_npz(path)
  _refused(error, path, marker)


def test_noise_labels_file_still_loads(tmp_path):
  path = tmp_path / "labels.npz"
  np.savez(path, labels=np.array([0, 1, 1]), transition=np.eye(2))
  labels, transition = noise.load_labels_file(path, 3, 2)
  np.testing.assert_array_equal(labels, [0, 1, 1])
  np.testing.assert_array_equal(transition, np.eye(2))


def test_array_source_refuses_object_array(tmp_path, marker):
  path = tmp_path / "mnist.npz"
  np.savez(path, train_images=np.zeros((2, 28, 28, 1), np.uint8),
           train_labels=np.array([_SystemPayload(marker), 1], dtype=object),
           test_images=np.zeros((1, 28, 28, 1), np.uint8), test_labels=np.zeros(1, np.int64))
  with pytest.raises(safe_load.UnsafeFileError) as error:
    array_source.load_npz(path, "mnist")
  _refused(error, path, marker)
  assert "train_labels" in str(error.value)


def test_evaluation_sample_batches_refuse_object_array(tmp_path, marker):
  from lnrd import evaluation  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "samples"
  folder.mkdir()
  path = folder / "batch_00000.npz"
  np.savez(path, samples=np.array([_ExecPayload(marker)], dtype=object), labels=np.zeros(1, np.int64))
  with pytest.raises(safe_load.UnsafeFileError) as error:  # stored batch: nothing is sampled
    evaluation.sample_in_batches(None, np.zeros(1, np.int64), None, None, None, 1, str(folder))
  _refused(error, path, marker)


def test_evaluation_sample_batches_still_load(tmp_path):
  from lnrd import evaluation  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "samples"
  folder.mkdir()
  samples = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
  np.savez(folder / "batch_00000.npz", samples=samples, labels=np.array([0, 1]))
  out = evaluation.sample_in_batches(None, np.array([0, 1]), None, None, None, 2, str(folder))
  np.testing.assert_array_equal(out, samples)


def test_inception_npz_refuses_object_array(tmp_path, marker):
  from lnrd.metrics import inception_weights  # pylint: disable=g-import-not-at-top
  path = tmp_path / "inception.npz"
  np.savez(path, **{"params/fc/kernel": np.array([_ExecPayload(marker)], dtype=object)})
  with pytest.raises(safe_load.UnsafeFileError) as error:
    inception_weights.load_variables(path)
  _refused(error, path, marker)


# ----------------------------------------------------------------------------- pretrained (sgn_jax)


def test_pretrained_npz_refuses_object_array(tmp_path, marker):
  from sgn_jax.models import pretrained  # pylint: disable=g-import-not-at-top
  path = tmp_path / "resnet.npz"
  np.savez(path, **{"conv1.weight": np.zeros((2, 3)),
                    "fc.weight": np.array([_SystemPayload(marker)], dtype=object)})
  with pytest.raises(safe_load.UnsafeFileError) as error:
    pretrained.load_state_dict_file(path)
  _refused(error, path, marker)


def test_pretrained_npz_still_loads(tmp_path):
  from sgn_jax.models import pretrained  # pylint: disable=g-import-not-at-top
  path = tmp_path / "resnet.npz"
  np.savez(path, **{"conv1.weight": np.ones((2, 3), np.float32)})
  loaded = pretrained.load_state_dict_file(path)
  np.testing.assert_array_equal(loaded["conv1.weight"], np.ones((2, 3)))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_pretrained_pth_refuses_code(tmp_path, marker, payload):
  torch = pytest.importorskip("torch")
  from sgn_jax.models import pretrained  # pylint: disable=g-import-not-at-top
  path = tmp_path / "resnet.pth"
  torch.save({"conv1.weight": torch.ones(2), "evil": payload(marker)}, path)
  with pytest.raises(safe_load.UnsafeFileError) as error:
    pretrained.load_state_dict_file(path)
  _refused(error, path, marker)


def test_pretrained_pth_still_loads(tmp_path):
  torch = pytest.importorskip("torch")
  from sgn_jax.models import pretrained  # pylint: disable=g-import-not-at-top
  path = tmp_path / "resnet.pth"
  torch.save({"state_dict": {"conv1.weight": torch.arange(6.0).reshape(2, 3)}}, path)
  np.testing.assert_array_equal(pretrained.load_state_dict_file(path)["conv1.weight"],
                                np.arange(6.0).reshape(2, 3))


# ----------------------------------------------------------------------------- CIFAR-N .pt


def _cifar_n_pt(folder, obj):
  """A torch-style zip archive holding `archive/data.pkl` = pickle(obj) (no torch needed)."""
  folder.mkdir(exist_ok=True)
  path = folder / "CIFAR-10_human.pt"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
    archive.writestr("archive/version", "3\n")
  return path


def _cifar_n_labels():
  rng = np.random.default_rng(0)
  return {key: rng.integers(0, 10, cifar_n.NUM_TRAIN) for key in cifar_n.CSV_COLUMNS["cifar10"]}


@pytest.mark.parametrize("payload", PAYLOADS)
def test_cifar_n_pt_refuses_code(tmp_path, marker, payload):
  path = _cifar_n_pt(tmp_path / "cifar_n", {**_cifar_n_labels(), "evil": payload(marker)})
  with pytest.raises(safe_load.UnsafeFileError) as error:
    cifar_n.load_authors_labels("cifar10", tmp_path / "cifar_n")
  _refused(error, path, marker)


def test_cifar_n_pt_still_loads(tmp_path):
  labels = _cifar_n_labels()
  _cifar_n_pt(tmp_path / "cifar_n", labels)
  loaded = cifar_n.load_authors_labels("cifar10", tmp_path / "cifar_n")
  for key, value in labels.items():
    np.testing.assert_array_equal(loaded[key], value)


# ----------------------------------------------------------------------------- convert_torch .pt


@pytest.mark.parametrize("payload", PAYLOADS)
def test_convert_torch_state_dict_refuses_code(tmp_path, marker, payload):
  torch = pytest.importorskip("torch")
  from lnrd.networks import convert_torch  # pylint: disable=g-import-not-at-top
  path = tmp_path / "edm_ema.pt"
  torch.save({"ema": {"map_layer0.weight": torch.ones(2, 2)}, "evil": payload(marker)}, path)
  control = tmp_path / "CONTROL"
  torch.save({"evil": payload(control)}, tmp_path / "control.pt")
  torch.load(tmp_path / "control.pt", weights_only=False)
  assert control.exists()  # a naive torch.load runs it
  with pytest.raises(safe_load.UnsafeFileError) as error:
    convert_torch.load_torch_checkpoint(path)
  _refused(error, path, marker)
  assert "state_dict()" in str(error.value)  # says how to get a plain state dict


def test_convert_torch_refuses_a_pickled_module(tmp_path):
  torch = pytest.importorskip("torch")
  from lnrd.networks import convert_torch  # pylint: disable=g-import-not-at-top
  path = tmp_path / "net.pt"
  torch.save({"ema": torch.nn.Linear(2, 2)}, path)
  with pytest.raises(safe_load.UnsafeFileError) as error:
    convert_torch.load_torch_checkpoint(path)
  _refused(error, path)


def test_convert_torch_state_dict_still_loads(tmp_path):
  torch = pytest.importorskip("torch")
  from lnrd.networks import convert_torch  # pylint: disable=g-import-not-at-top
  path = tmp_path / "edm_ema.pt"
  torch.save({"ema": {"model.map_layer0.weight": torch.arange(4.0).reshape(2, 2)}}, path)
  loaded = convert_torch.load_torch_checkpoint(path)
  np.testing.assert_array_equal(loaded["model.map_layer0.weight"], np.arange(4.0).reshape(2, 2))


# ----------------------------------------------------------------------------- EDM snapshots


class _Persistent:
  """Pickles like an EDM `torch_utils.persistence` object (class source included)."""

  def __init__(self, class_name, module_src, state):
    self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name,
                     state=state)


@contextlib.contextmanager
def _fake_persistence_module():
  """A stand-in `torch_utils.persistence` that, like EDM's, execs the pickled source."""

  def _reconstruct_persistent_obj(meta):
    exec(meta["module_src"], {})  # pylint: disable=exec-used
    return meta["state"]

  module = types.ModuleType("torch_utils.persistence")
  _reconstruct_persistent_obj.__module__ = module.__name__
  _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
  module._reconstruct_persistent_obj = _reconstruct_persistent_obj  # pylint: disable=protected-access
  package = types.ModuleType("torch_utils")
  package.persistence = module
  saved = {name: sys.modules.get(name) for name in ("torch_utils", "torch_utils.persistence")}
  sys.modules.update({"torch_utils": package, "torch_utils.persistence": module})
  try:
    yield _reconstruct_persistent_obj
  finally:
    for name, value in saved.items():
      if value is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = value


def _dump(obj, reconstruct) -> bytes:
  class Pickler(pickle.Pickler):

    def reducer_override(self, value):
      if isinstance(value, _Persistent):
        return reconstruct, (value.meta,)
      return NotImplemented

  buffer = io.BytesIO()
  Pickler(buffer, protocol=4).dump(obj)
  return buffer.getvalue()


def _snapshot(torch, marker, extra=None):
  """(pickle bytes, expected state dict) of an EDM-like snapshot whose class source
  writes `marker` when exec'd."""
  source = f"open({str(marker)!r}, 'w').close()\nclass Conv2d: pass\n"
  linear = torch.nn.Linear(3, 2)
  weight = torch.nn.Parameter(torch.randn(2, 1, 3, 3))
  conv = _Persistent("Conv2d", source, {
      "training": False, "_parameters": {"weight": weight, "bias": None},
      "_buffers": {"resample_filter": torch.ones(1, 1, 2, 2), "scratch": torch.zeros(1)},
      "_non_persistent_buffers_set": {"scratch"}, "_modules": {}})
  model = _Persistent("SongUNet", source, {
      "_parameters": {}, "_buffers": {}, "_non_persistent_buffers_set": set(),
      "_modules": {"enc": torch.nn.ModuleDict({"8x8_lin": linear}), "conv": conv},
      "_init_kwargs": {"model_channels": 16, "sigma": np.float64(0.5)}})
  net = _Persistent("EDMPrecond", source, {"_parameters": {}, "_buffers": {},
                                            "_modules": {"model": model}, "sigma_data": 0.5})
  snapshot = dict(ema=net, loss_fn=_Persistent("EDMLoss", source, {"P_mean": -1.2}),
                  augment_pipe=None, dataset_kwargs=dict(extra or {}, path="x.zip"))
  expected = {"model.enc.8x8_lin.weight": linear.weight, "model.enc.8x8_lin.bias": linear.bias,
              "model.conv.weight": weight, "model.conv.resample_filter": torch.ones(1, 1, 2, 2)}
  with _fake_persistence_module() as reconstruct:
    data = _dump(snapshot, reconstruct)
  return data, {key: value.detach().numpy() for key, value in expected.items()}


def test_edm_snapshot_source_is_live(tmp_path):
  """Control: EDM-style unpickling of the test snapshot runs the class source."""
  torch = pytest.importorskip("torch")
  control = tmp_path / "CONTROL"
  data, _ = _snapshot(torch, control)
  with _fake_persistence_module():
    pickle.loads(data)
  assert control.exists()


def test_edm_snapshot_loads_without_running_source(tmp_path, marker):
  torch = pytest.importorskip("torch")
  from lnrd.networks import convert_torch  # pylint: disable=g-import-not-at-top
  data, expected = _snapshot(torch, marker)
  path = tmp_path / "network-snapshot-000100.pkl"
  path.write_bytes(data)
  assert "torch_utils" not in sys.modules
  for loaded in (convert_torch.load_edm_snapshot(path), convert_torch.load_torch_checkpoint(path)):
    assert list(loaded) == list(expected)
    for key, value in expected.items():
      np.testing.assert_array_equal(loaded[key], value)
  assert "torch_utils" not in sys.modules


@pytest.mark.parametrize("payload", PAYLOADS)
def test_edm_snapshot_refuses_code(tmp_path, marker, payload):
  torch = pytest.importorskip("torch")
  from lnrd.networks import convert_torch  # pylint: disable=g-import-not-at-top
  data, _ = _snapshot(torch, tmp_path / "SOURCE_RAN", extra={"evil": payload(marker)})
  path = tmp_path / "network-snapshot-000100.pkl"
  path.write_bytes(data)
  with pytest.raises(pickle.UnpicklingError) as error:
    convert_torch.load_edm_snapshot(path)
  _refused(error, path, marker)
  assert ("system" if payload is _SystemPayload else "builtins.exec") in str(error.value)
  assert not (tmp_path / "SOURCE_RAN").exists()


def test_edm_snapshot_refuses_getattr_chain(tmp_path, marker):
  pytest.importorskip("torch")
  from lnrd.networks import convert_torch  # pylint: disable=g-import-not-at-top
  path = tmp_path / "network-snapshot-000100.pkl"
  # getattr(object, '__subclasses__')(): the start of a gadget chain.
  path.write_bytes(b"cbuiltins\ngetattr\n(cbuiltins\nobject\nS'__subclasses__'\ntR)R.")
  with pytest.raises(safe_load.UnsafeFileError) as error:
    convert_torch.load_edm_snapshot(path)
  _refused(error, path, marker)
  assert "builtins.getattr" in str(error.value)


# ----------------------------------------------------------------------------- TorchScript Inception


def _torchscript_file(torch, path):
  module = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)))
  module.save(str(path))
  return path


def test_torchscript_reader_refuses_code(tmp_path, marker):
  torch = pytest.importorskip("torch")
  from lnrd.metrics import inception_weights  # pylint: disable=g-import-not-at-top
  clean = _torchscript_file(torch, tmp_path / "clean.pt")
  path = tmp_path / "default_1.pt"
  with zipfile.ZipFile(clean) as source, zipfile.ZipFile(path, "w") as target:
    for info in source.infolist():
      data = source.read(info)
      if info.filename.endswith("/data.pkl"):
        data = pickle.dumps({"weight": _ExecPayload(marker)}, protocol=2)
        control = tmp_path / "CONTROL"
        pickle.loads(pickle.dumps({"weight": _ExecPayload(control)}, protocol=2))
        assert control.exists()
      target.writestr(info, data)
  with pytest.raises(safe_load.UnsafeFileError) as error:
    inception_weights.load_torch_state_dict(path)
  _refused(error, path, marker)
  assert "builtins.exec" in str(error.value)


def test_torchscript_reader_equals_jit_load(tmp_path):
  torch = pytest.importorskip("torch")
  path = _torchscript_file(torch, tmp_path / "module.pt")
  expected = torch.jit.load(str(path)).state_dict()  # a file this test made
  loaded = safe_load.load_torchscript_state_dict(path)
  assert list(loaded) == list(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(loaded[key], value.numpy())


@pytest.mark.parametrize("payload", PAYLOADS)
def test_inception_pth_refuses_code(tmp_path, marker, payload):
  torch = pytest.importorskip("torch")
  from lnrd.metrics import inception_weights  # pylint: disable=g-import-not-at-top
  path = tmp_path / "pt_inception.pth"
  torch.save({"fc.weight": torch.ones(2), "evil": payload(marker)}, path)
  with pytest.raises(safe_load.UnsafeFileError) as error:
    inception_weights.load_torch_state_dict(path)
  _refused(error, path, marker)
