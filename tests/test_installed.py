"""`pip install .` (not editable) into a fresh virtual environment, used from outside the checkout.

The wheel of this checkout is installed into a new venv (its dependencies are
taken from the test environment through a path entry, not reinstalled), and a
script run from a temporary folder, where neither the checkout nor its
`configs` package can be imported, computes CAS on arrays and runs the whole
corrector -> classifier -> TDSM -> evaluate pipeline from a config given as
JSON. Library code that imported `configs` (or any file that is not packaged)
fails here. The researcher's building blocks (tests/test_research_blocks.py: TDSM
gradients through the weights, vmap over T, fixed sigma and noise, declared
conditioning) run there too, with `ml_collections` and `configs` unimportable.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from test_lnrd_pipeline import _digits_npz
from test_lnrd_pipeline import _tiny_pipeline_config

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, os, sys
import numpy as np
import ml_collections
import lnrd, sgn_jax
repo = sys.argv[1]
for module in (lnrd, sgn_jax):
  assert not os.path.abspath(module.__file__).startswith(repo), module.__file__
try:
  import configs
  raise SystemExit(f"configs is importable from {configs.__file__}")
except ImportError:
  pass
from lnrd.metrics import cas
from lnrd.tasks import pipeline

data = np.load(sys.argv[2])
result = cas.classification_accuracy_score(
    data["train_images"][:256, ..., None], data["train_labels"][:256].astype(np.int32),
    data["test_images"][..., None], data["test_labels"].astype(np.int32), dataset="mnist",
    workdir="cas_run", epochs=1, batch_size=32)
config = ml_collections.ConfigDict(json.load(open(sys.argv[3])))
stages = pipeline.train_and_evaluate(config, "pipeline_run")
print("RESULT " + json.dumps({"cas": result["accuracy"], "stages": sorted(stages),
                              "lnrd": lnrd.__file__,
                              "evaluate": stages["evaluate"]["cas/accuracy"]}))
"""


def _fresh_venv(tmp_path) -> pathlib.Path:
  """A new venv with this checkout's wheel installed; dependencies via a path entry."""
  pytest.importorskip("setuptools")
  source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info beside it
  source.mkdir()
  for name in ("setup.py", "README.md"):
    shutil.copy(REPO / name, source / name)
  for name in ("lnrd", "sgn_jax"):
    shutil.copytree(REPO / name, source / name,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  dist = tmp_path / "dist"
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(dist), str(source)], check=True, capture_output=True,
                 timeout=300)
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
  python = venv / "bin" / "python"
  site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                         "['purelib'])"], check=True, capture_output=True, text=True).stdout
  # The test environment's packages (jax, flax, ...) as a plain path entry: its own
  # .pth files, among them an editable install of this checkout, are not processed.
  pathlib.Path(site.strip(), "test_env_packages.pth").write_text(
      sysconfig.get_paths()["purelib"] + "\n")
  wheels = sorted(dist.glob("lnrd-*.whl"))
  assert wheels, list(dist.iterdir())
  subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                  str(wheels[-1])], check=True, capture_output=True, timeout=300)
  return python


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory) -> pathlib.Path:
  """One fresh venv with the wheel for this module's tests (the build takes ~10 s)."""
  return _fresh_venv(tmp_path_factory.mktemp("installed"))


def _outside_env() -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "PYTHONPATH", "PYTHONHOME")}
  env["JAX_PLATFORMS"] = "cpu"
  return env


def test_installed_package_runs_cas_and_the_pipeline_outside_the_checkout(tmp_path,
                                                                          installed_python):
  python = installed_python
  data = _digits_npz(tmp_path / "digits.npz")
  config = _tiny_pipeline_config(data, "method=tdsm,corrector=ce")
  config.evaluate.metrics = ("density_coverage", "cas")
  config.evaluate.feature_classifier_dir = str(tmp_path / "work" / "pipeline_run" / "classifier")
  (tmp_path / "config.json").write_text(config.to_json())
  work = tmp_path / "work"
  work.mkdir()
  env = _outside_env()
  result = subprocess.run(
      [str(python), "-c", SCRIPT, str(REPO), data, str(tmp_path / "config.json")], cwd=work,
      env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  out = json.loads([l for l in result.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
  assert str(python.parents[1]) in out["lnrd"]  # the fresh venv's lnrd
  assert out["stages"] == ["classifier", "corrector", "diffusion", "evaluate"]
  assert np.isfinite(out["cas"]) and out["cas"] > 0.5  # the digits' class is written in
  assert 0.0 <= out["evaluate"] <= 1.0


# conftest.py beside the copied test file: ml_collections and configs refused, the
# library imported from the installed wheel (not the checkout).
BLOCKS_CONFTEST = r"""
import importlib.abc, os, sys

class Refuse(importlib.abc.MetaPathFinder):
  BLOCKED = ("ml_collections", "configs")
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in self.BLOCKED:
      raise ImportError(f"{name} is blocked: the building blocks must not need it")
    return None

sys.meta_path.insert(0, Refuse())
import lnrd, sgn_jax
for module in (lnrd, sgn_jax):
  assert os.path.abspath(module.__file__).startswith(os.environ["INSTALLED_VENV"]), module.__file__
"""


def test_research_blocks_run_from_the_installed_wheel_without_ml_collections(tmp_path,
                                                                             installed_python):
  work = tmp_path / "blocks"
  work.mkdir()
  shutil.copy(REPO / "tests" / "test_research_blocks.py", work / "test_research_blocks.py")
  (work / "conftest.py").write_text(BLOCKS_CONFTEST)
  env = _outside_env()
  env["INSTALLED_VENV"] = str(installed_python.parents[1])
  result = subprocess.run(
      [str(installed_python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
       "test_research_blocks.py"], cwd=work, env=env, capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
  summary = result.stdout.strip().splitlines()[-1]
  assert " passed" in summary, summary
  assert not any(word in summary for word in ("failed", "error", "skipped")), summary
