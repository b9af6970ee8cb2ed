"""benchmarks/device_campaign.py: its budget logic, and `--smoke` end to end without the
modules an accelerator host lacks (TensorFlow, TFDS, clu, ml_collections, configs)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import device_campaign  # pylint: disable=wrong-import-position


class FakeClock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_rows_that_do_not_fit_are_skipped_with_a_note_never_cut_off(tmp_path):
  clock = FakeClock()
  budget = device_campaign.Budget(100.0, margin=10.0, clock=clock)
  results = device_campaign.Results(str(tmp_path), {"device": "fake"})
  measured = []

  def measure(row, window):
    measured.append((row["name"], window))
    clock.now += row["cost"]  # the row runs to its end, whatever it costs
    return {"name": row["name"], "compile_s": row["compile"]}

  rows = [dict(name="a", cost=30.0, compile=20.0), dict(name="b", cost=50.0, compile=40.0),
          dict(name="c", cost=5.0, compile=1.0), dict(name="d", cost=5.0, compile=1.0)]
  device_campaign.run_rows("steps", rows, measure, budget, part_seconds=80.0, results=results,
                           first_compile=10.0)
  # a (needs 10 + window) runs; b then needs the longest compile seen (20) + a window and
  # fits in the 50 s left; afterwards c and d need > 0 s left in the part: skipped.
  names = [m[0] for m in measured]
  assert names == ["a", "b"]
  lines = [json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()]
  rows_out = [l for l in lines if l["part"] == "steps" and "note" not in l]
  notes = [l["note"] for l in lines if "note" in l]
  assert [r["name"] for r in rows_out] == ["a", "b"]
  assert len(notes) == 2 and all(n.startswith("skipped") for n in notes)
  assert "skipped c: needs" in notes[0] and "left in the part" in notes[0]
  markdown = (tmp_path / "results.md").read_text()
  assert "| name | compile_s |" in markdown and "* skipped d" in markdown
  assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_a_failing_row_is_noted_and_the_next_one_runs(tmp_path):
  budget = device_campaign.Budget(1000.0, margin=0.0)
  results = device_campaign.Results(str(tmp_path), {})

  def measure(row, window):
    if row["name"] == "bad":
      raise RuntimeError("out of memory\nmore")
    return {"name": row["name"], "compile_s": 0.0}

  device_campaign.run_rows("sampling", [dict(name="bad"), dict(name="good")], measure, budget,
                           part_seconds=100.0, results=results, first_compile=0.0)
  lines = (tmp_path / "results.jsonl").read_text()
  assert "bad failed: RuntimeError: out of memory" in lines and '"name": "good"' in lines


def test_the_smoke_budget_never_skips_for_time(tmp_path):
  clock = FakeClock()
  budget = device_campaign.Budget(0.0, margin=10.0, clock=clock, strict=False)  # --smoke
  results = device_campaign.Results(str(tmp_path), {})
  measured = []

  def measure(row, window):
    measured.append(row["name"])
    clock.now += 100.0  # far past the budget
    return {"name": row["name"], "compile_s": 50.0}

  device_campaign.run_rows("steps", [dict(name=n) for n in "abc"], measure, budget,
                           part_seconds=0.0, results=results, first_compile=30.0)
  assert measured == ["a", "b", "c"] and budget.fits(1e9)
  assert "skipped" not in (tmp_path / "results.jsonl").read_text()


def test_part_shares_leave_the_rest_to_the_last_part():
  ctx = device_campaign.Context(device_campaign.Budget(1000.0, margin=0.0), None, None, False,
                                "", "", ("steps", "mnist"))
  assert ctx.part_seconds("steps") == pytest.approx(400.0, abs=1.0)
  assert ctx.part_seconds("mnist") == pytest.approx(1000.0, abs=1.0)


# Runs the campaign as if these modules were not installed: None in sys.modules makes
# `import tensorflow` fail and `importlib.util.find_spec("tensorflow")` answer None.
RUNNER = r"""
import runpy, sys
for name in ("tensorflow", "tensorflow_datasets", "clu", "ml_collections", "configs"):
  sys.modules[name] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_smoke_runs_every_part_without_the_missing_modules(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
  out = tmp_path / "out"
  # A budget that is spent before the first row: the smoke run must still run every part
  # (it never skips for time), so the test does not depend on the machine's speed.
  result = subprocess.run(
      [sys.executable, "-c", RUNNER, str(REPO / "benchmarks" / "device_campaign.py"),
       "--smoke", f"--out={out}", "--budget_min=0.01"],
      cwd=tmp_path, env=env, capture_output=True, text=True,
      timeout=3600)  # catches a hang only: on a loaded 2-core CPU the run takes ~10 min
  assert result.returncode == 0, result.stderr[-4000:]
  lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
  assert lines[-1].get("finished") is True
  failures = [l["note"] for l in lines if "note" in l and "failed" in l["note"]]
  assert not failures, failures
  parts = {l["part"] for l in lines if "note" not in l}
  assert {"steps", "sampling", "mnist"} <= parts
  steps = [l for l in lines if l["part"] == "steps" and "images_per_s" in l]
  assert any("tdsm/sampled" in l["name"] for l in steps)
  assert any("WRN" in l["name"] for l in steps) and any("bf16" in l["name"] for l in steps)
  mnist = [l for l in lines if l["part"] == "mnist" and "CAS" in l]
  assert {l["name"] for l in mnist} == {"dsm evaluation", "tdsm evaluation"}
  assert "## mnist" in (out / "results.md").read_text()
