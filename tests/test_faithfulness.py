"""docs/FAITHFULNESS.md and the config files cannot drift apart.

The table is parsed, not copied: each `## ` section names its cells (config files with
their arguments, `configs/{a,b}.py:method={x,y}` expands to every combination) and each
row names, in its "this library" column, the resolved config values it claims as
backticked `key=value` pairs. For every cell of a section:

* every claimed value equals the cell's resolved config (`get_config(arg)`);
* every key of the resolved config that can move a reported number is claimed by
  some row of a section that lists the cell (the keys that cannot are `BOOKKEEPING`,
  listed in the document too);
* every row says whether the library does the same as the authors or states its
  deviation (`STATUSES`) and names its source.

Every paper config file has cells, and the pipeline's corrector config is the
classification cell of the same file (with the diffusion stage's noise convention, so
that it corrects the labels TDSM trains on).
"""

from __future__ import annotations

import ast
import importlib
import itertools
import json
import pathlib
import re

import pytest

from sgn_jax.training import writers

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "FAITHFULNESS.md"
# The files that hold paper cells (TDSM: MNIST, CIFAR-10/100; SGN: CIFAR, CIFAR-N,
# Clothing1M, WebVision). fashion_mnist_*, gmm2d and tiny_test hold none.
PAPER_FILES = ("mnist_sym", "mnist_asym", "cifar10_sym", "cifar10_asym", "cifar100_sym",
               "cifar100_asym", "cifar10n", "cifar100n", "clothing1m", "webvision")
# How a row states its relation to the authors' run.
STATUSES = ("same", "deviation:", "option:", "paper only")
# Keys that cannot move a reported number: locations, intervals, logging, batch sizes
# of inference-only passes, the stage selector, and keys another task reads.
BOOKKEEPING = (
    "task", "allow_changes", "stop_after_steps", "log_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "eval_batch_size", "snapshot_every_kimg", "dataset.data_dir",
    "dataset.manual_dir", "dataset.path", "dataset.cifar_n_dir", "dataset.download",
    "dataset.from_files", "dataset.gmm.", "dataset.train_subset", "noise.labels_file",
    "classifier.log_every_steps", "classifier.checkpoint_every_steps",
    "classifier.eval_batch_size", "classifier.eval_every_kimg", "eval_every_epochs",
    "tdsm.classifier_dir", "sample.grid_per_class", "generate.", "evaluate.run_dir",
    "evaluate.checkpoint_step", "evaluate.batch_size", "evaluate.feature_batch_size",
    "evaluate.inception_weights", "evaluate.feature_classifier_dir", "discover.classifier_dir",
    "discover.batch_size", "discover.grid_count", "pipeline.classify.", "network.hidden",
    "model_pretrained")
TOKEN = re.compile(r"`([A-Za-z_][\w.]*)=([^`]*)`")


def _expand(spec: str) -> list[str]:
  """`configs/{a,b}.py:m={x,y}` -> every combination, in order."""
  parts = re.split(r"(\{[^}]*\})", spec)
  choices = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
  return ["".join(c) for c in itertools.product(*choices)]


def _parse(text: str):
  """[(heading, [cell specs], [(row cells, line number)])], one entry per block: the
  `Cells:` lines under a `## ` heading and the table after them."""
  blocks = []
  heading = ""
  for number, line in enumerate(text.splitlines(), 1):
    if line.startswith("## "):
      heading = line[3:].strip()
    elif not heading:
      continue
    elif line.startswith("Cells:"):
      if not blocks or blocks[-1][2] or blocks[-1][0] != heading:
        blocks.append([heading, [], []])
      for spec in re.findall(r"`(configs/[^`]+)`", line):
        blocks[-1][1].extend(_expand(spec))
    elif line.startswith("|") and not re.fullmatch(r"\|[\s|:-]+\|?", line.strip()):
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if cells[0].lower() == "setting":
        continue
      if not blocks or blocks[-1][0] != heading:
        blocks.append([heading, [], []])  # a table without cells: reported by the tests
      blocks[-1][2].append((cells, number))
  return blocks


SECTIONS = _parse(DOC.read_text()) if DOC.exists() else []
_CONFIGS: dict[str, dict] = {}


def _resolved(spec: str) -> dict:
  """The flat resolved config of `configs/NAME.py[:ARG]`."""
  if spec not in _CONFIGS:
    path, _, arg = spec.partition(":")
    module = importlib.import_module(path[:-3].replace("/", "."))
    config = module.get_config(arg or None)
    _CONFIGS[spec] = writers.flatten(json.loads(json.dumps(config.to_dict(), default=str)))
  return _CONFIGS[spec]


def _value(text: str):
  if text in ("inf", "-inf"):
    return float(text)
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  return json.loads(json.dumps(value, default=str))


def _bookkeeping(key: str) -> bool:
  return any(key == b or (b.endswith(".") and key.startswith(b)) for b in BOOKKEEPING)


def test_the_document_exists_and_has_sections():
  assert DOC.exists(), DOC
  assert len(SECTIONS) >= 10
  for title, cells, rows in SECTIONS:
    assert cells, f"a table under {title!r} names no cells"
    assert rows, f"cells under {title!r} have no table"


def test_every_paper_file_has_cells():
  files = {spec.split(":")[0] for _, cells, _ in SECTIONS for spec in cells}
  assert {f"configs/{name}.py" for name in PAPER_FILES} <= files


BLOCKS = [f"{i}: {s[0]}" for i, s in enumerate(SECTIONS)]


@pytest.mark.parametrize("block", BLOCKS)
def test_rows_state_source_and_status(block):
  _, _, rows = SECTIONS[BLOCKS.index(block)]
  for cells, number in rows:
    assert len(cells) == 4, f"line {number}: expected 4 columns, got {cells}"
    setting, authors, _, status = cells
    assert setting and authors, f"line {number}: setting and authors' source are needed"
    assert status.lower().startswith(STATUSES), (
        f"line {number}: status {status!r} must start with one of {STATUSES}")
    if status.lower().startswith(("deviation:", "option:")):
      assert len(status.split(":", 1)[1].strip()) > 10, f"line {number}: state the reason"


@pytest.mark.parametrize("block", BLOCKS)
def test_claimed_values_are_the_resolved_configs(block):
  _, cells, rows = SECTIONS[BLOCKS.index(block)]
  for spec in cells:
    config = _resolved(spec)
    for row, number in rows:
      for key, text in TOKEN.findall(row[2]):
        assert key in config, f"line {number}: {spec} has no key {key!r}"
        assert config[key] == _value(text), (
            f"line {number}: {spec}: {key} is {config[key]!r}, the table says {text}")


def test_every_setting_of_every_cell_is_in_the_table():
  claimed: dict[str, set[str]] = {}
  for _, cells, rows in SECTIONS:
    keys = {key for row, _ in rows for key, _ in TOKEN.findall(row[2])}
    for spec in cells:
      claimed.setdefault(spec, set()).update(keys)
  missing = {spec: sorted(k for k in _resolved(spec) if not _bookkeeping(k) and k not in keys)
             for spec, keys in claimed.items()}
  missing = {spec: keys for spec, keys in missing.items() if keys}
  assert not missing, f"settings of these cells are in no row: {missing}"


def test_the_pipelines_corrector_is_the_files_classification_cell():
  pipelines = sorted({spec for _, cells, _ in SECTIONS for spec in cells
                      if "task=pipeline" in spec})
  assert pipelines
  for spec in pipelines:
    path, _, arg = spec.partition(":")
    args = dict(item.split("=") for item in arg.split(","))
    module = importlib.import_module(path[:-3].replace("/", "."))
    config = module.get_config(arg)
    corrector = config.pipeline.classify.to_dict()
    # the same noisy labels as the diffusion stage: its noise convention
    cell = module.get_config(
        f"method={args['corrector']},convention={config.noise.convention}").to_dict()
    assert corrector == cell, spec


def test_the_parser_reads_claims_and_expands_cells():
  """The checks above can fail: a wrong value, a missing key and a bad status are seen."""
  assert _expand("configs/{a,b}.py:m={x,y}") == [
      "configs/a.py:m=x", "configs/a.py:m=y", "configs/b.py:m=x", "configs/b.py:m=y"]
  text = ("## S\nCells: `configs/{mnist_sym}.py:method=tdsm`\n"
          "| setting | authors | this library | status |\n| --- | --- | --- | --- |\n"
          "| lr | 1e-3 (x.py:1) | `optim.learning_rate=0.002` | same |\n")
  [(title, cells, rows)] = _parse(text)
  assert len(_parse(text + text.split("\n", 1)[1])) == 2  # a second Cells: line after a table
  assert (title, cells) == ("S", ["configs/mnist_sym.py:method=tdsm"])
  [(row, _)] = rows
  [(key, value)] = TOKEN.findall(row[2])
  assert _resolved(cells[0])[key] != _value(value)  # 0.001 in the file: a wrong claim fails
  assert not _bookkeeping("optim.learning_rate") and _bookkeeping("generate.per_class")
