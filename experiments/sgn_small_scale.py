r"""SGN against CE, GCE and ELR on real MNIST and Fashion-MNIST, at a CPU budget.

    python experiments/sgn_small_scale.py --root=/tmp/sgn_runs            # run the grid
    python experiments/sgn_small_scale.py --root=/tmp/sgn_runs --report   # table only

Every run is `main.py` in its own workdir (finished runs are skipped, killed ones
resume), 8 fake CPU devices, the raw MNIST/Fashion-MNIST archives of
../shared/data (source=idx). Budget, the same for every method: the first
`--subset` training images, `--epochs` epochs of batch 128, 40% noise (TDSM
convention: symmetric flips go to one of the 9 other classes; asymmetric pairs
as `sgn_jax.noise`). SGN's schedule constants are for 600-epoch runs, so they
are rescaled to the budget: the EMA decay keeps the EMA half-life at 3.3% of
training (as 0.9999 does over SGN's ~211k CIFAR steps) and alpha keeps the
final correction factor 1 - alpha^E of alpha = 0.995 after 600 epochs (95%).
The same EMA decay is used for every method (its EMA columns).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"

GRID_METHODS = ("ce", "gce", "elr", "sgn")
# name -> SGN method_args overrides: loss reweighting (LR) and label correction (LC)
# switched off. EMA prediction (EP) needs no run of its own: every run evaluates
# both the net (EP off) and its EMA (EP on).
ABLATION = {
    "sgn": {},
    "sgn-LR": {"loss_reweighting": False},
    "sgn-LC": {"label_correction": False},
    "sgn-LR-LC": {"loss_reweighting": False, "label_correction": False},
}


def budget_constants(steps: int, epochs: int) -> dict[str, float]:
  """EMA decay and SGN alpha rescaled from SGN's 600-epoch CIFAR schedule."""
  half_life = 0.033 * steps
  ema_decay = 0.5 ** (1.0 / half_life)
  alpha = math.exp(600 * math.log(0.995) / epochs)
  return {"ema_decay": round(ema_decay, 5), "alpha": round(alpha, 4)}


def runs(args):
  steps = args.epochs * (args.subset // 128)
  const = budget_constants(steps, args.epochs)
  for dataset in args.datasets.split(","):
    for noise in ("sym", "asym"):
      for method in GRID_METHODS:
        for seed in range(args.seeds):
          yield dataset, noise, method, {}, seed, const
  for name, overrides in ABLATION.items():
    if name == "sgn":
      continue  # the full SGN rows of the grid serve as the ablation's reference
    for seed in range(args.ablation_seeds):
      yield args.ablation_dataset, "sym", name, overrides, seed, const


def run_one(root, dataset, noise, name, overrides, seed, const, args):
  method = name.split("-")[0]
  workdir = root / f"{dataset}_{noise}40_{name}_s{seed}"
  metrics_path = workdir / "metrics.json"
  if metrics_path.exists() and json.loads(metrics_path.read_text()).get("completed") == 1.0:
    return workdir
  cmd = [sys.executable, str(REPO / "main.py"),
         f"--config={REPO}/configs/{dataset}_{noise}.py:method={method},rate=0.4,seed={seed},"
         f"subset={args.subset},epochs={args.epochs},source=idx",
         f"--config.dataset.path={DATA / dataset}", f"--workdir={workdir}",
         f"--config.ema_decay={const['ema_decay']}", "--config.log_every_steps=1000",
         f"--config.eval_every_epochs={args.epochs}"]
  if method == "sgn":
    cmd.append(f"--config.method_args.alpha={const['alpha']}")
  for key, value in overrides.items():
    cmd.append(f"--config.method_args.{key}={value}")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  print("+", " ".join(cmd), flush=True)
  workdir.mkdir(parents=True, exist_ok=True)
  with open(workdir / "log.txt", "w") as log:
    subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=REPO)
  return workdir


def report(root, args):
  rows = {}
  for dataset, noise, name, _, seed, _ in runs(args):
    path = root / f"{dataset}_{noise}40_{name}_s{seed}" / "metrics.json"
    if not path.exists():
      continue
    m = json.loads(path.read_text())
    rows.setdefault((dataset, noise, name), []).append(m)
  lines = ["| dataset | noise | method | seeds | test acc. (net) | test acc. (EMA) | "
           "reported (final) | test NLL (net) | test ECE (net) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

  def fmt(values, scale=100.0, digits=2):
    values = [scale * v for v in values]
    if len(values) == 1:
      return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

  for (dataset, noise, name), ms in sorted(rows.items()):
    lines.append(
        f"| {dataset} | {noise} 40% | {name} | {len(ms)} | "
        f"{fmt([m['test/accuracy'] for m in ms])} | {fmt([m['ema_test/accuracy'] for m in ms])} | "
        f"{fmt([m['final/test_accuracy'] for m in ms])} | "
        f"{fmt([m['test/nll'] for m in ms], 1.0, 3)} | {fmt([m['test/ece'] for m in ms])} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--root", required=True)
  parser.add_argument("--datasets", default="mnist,fashion_mnist")
  parser.add_argument("--ablation_dataset", default="fashion_mnist")
  parser.add_argument("--subset", type=int, default=8000)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--ablation_seeds", type=int, default=1)
  parser.add_argument("--report", action="store_true")
  args = parser.parse_args()
  root = pathlib.Path(args.root)
  if not args.report:
    steps = args.epochs * (args.subset // 128)
    print("budget constants:", budget_constants(steps, args.epochs), flush=True)
    for run in runs(args):
      run_one(root, *run, args)
  print(report(root, args))


if __name__ == "__main__":
  main()
