r"""DSM vs TDSM on the noisily labelled 2-D Gaussian mixture, several rates and seeds.

    python experiments/tdsm_gmm.py --root=/tmp/tdsm_gmm            # run the grid
    python experiments/tdsm_gmm.py --root=/tmp/tdsm_gmm --report   # table only

Each run is the quick-start demo (`python main.py --config=configs/gmm2d.py:rate=R,seed=S`,
`task=gmm_demo`) in its own workdir, with the oracle stage (TDSM with the exact
mixture posteriors as weights) switched on: a time-dependent classifier, DSM,
TDSM with the classifier's weights and TDSM with exact weights, each sampled
1000 times per class and compared with the CLEAN class distributions by the
per-class sliced Wasserstein distance SW_2 (mean over the 4 classes). The
"noisy data" column is the same distance for the training points grouped by
their noisy labels: the distribution DSM is trained to reproduce.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
COLUMNS = (("noisy data", "noisy_training_data/sw_mean"), ("DSM", "dsm/sw_mean"),
           ("TDSM (classifier)", "tdsm/sw_mean"), ("TDSM (exact w)", "tdsm_exact/sw_mean"))


def run(root: pathlib.Path, rate: float, seed: int) -> pathlib.Path:
  workdir = root / f"rate{rate:g}_seed{seed}"
  if (workdir / "metrics.json").exists():
    return workdir
  cmd = [sys.executable, str(REPO / "main.py"),
         f"--config={REPO / 'configs/gmm2d.py'}:rate={rate},seed={seed}",
         "--config.demo.exact_weights=True", f"--workdir={workdir}"]
  print(" ".join(cmd), flush=True)
  subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  return workdir


def report(root: pathlib.Path, rates, seeds) -> str:
  lines = ["| symmetric noise | " + " | ".join(c for c, _ in COLUMNS) + " | TDSM/DSM |",
           "| --- |" + " --- |" * (len(COLUMNS) + 1)]
  for rate in rates:
    rows = []
    for seed in seeds:
      path = root / f"rate{rate:g}_seed{seed}" / "metrics.json"
      if path.exists():
        rows.append(json.loads(path.read_text()))
    if not rows:
      continue
    cells = []
    for _, key in COLUMNS:
      values = [r[key] for r in rows]
      sd = statistics.stdev(values) if len(values) > 1 else 0.0
      cells.append(f"{statistics.mean(values):.3f} ± {sd:.3f}")
    ratio = statistics.mean(r["tdsm/sw_mean"] / r["dsm/sw_mean"] for r in rows)
    lines.append(f"| {rate:.0%} ({len(rows)} seeds) | " + " | ".join(cells) + f" | {ratio:.2f} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True, type=pathlib.Path)
  parser.add_argument("--rates", default="0.2,0.4")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--report", action="store_true", help="only print the table")
  args = parser.parse_args()
  rates = [float(r) for r in args.rates.split(",")]
  seeds = [int(s) for s in args.seeds.split(",")]
  if not args.report:
    os.makedirs(args.root, exist_ok=True)
    for rate in rates:
      for seed in seeds:
        run(args.root, rate, seed)
  print(report(args.root, rates, seeds))


if __name__ == "__main__":
  main()
