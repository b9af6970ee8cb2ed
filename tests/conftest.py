"""Test set-up: 8 fake CPU devices for the whole session, shared data paths."""

import os
import pathlib

# Must happen before JAX initialises its backend: every test process sees 8 CPU
# devices, so single- and multi-device runs can be compared in one process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """../shared/data beside the repository (real MNIST, CIFAR-N, partial CIFAR-10)."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"shared data folder not found at {SHARED_DATA}")
  return SHARED_DATA


@pytest.fixture(scope="session")
def mnist_tfds_dir(tmp_path_factory, shared_data):
  """A TFDS data dir with MNIST prepared offline from ../shared/data/mnist.

  Reuses $LNRD_TEST_TFDS_DIR when set (CI prepares it once); else prepares
  into a temporary folder (about 20 s).
  """
  pytest.importorskip("tensorflow_datasets")
  from sgn_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  data_dir = os.environ.get("LNRD_TEST_TFDS_DIR") or str(tmp_path_factory.mktemp("tfds"))
  tfds_source.prepare("mnist", data_dir=data_dir, manual_dir=str(shared_data / "mnist"))
  return data_dir
