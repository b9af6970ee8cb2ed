r"""DSM vs TDSM on real MNIST with 40% symmetric label noise, at a CPU budget.

    python experiments/tdsm_mnist.py --root=/tmp/tdsm_mnist --kimg=50          # run everything
    python experiments/tdsm_mnist.py --root=/tmp/tdsm_mnist --report           # table only

Stages (each `main.py` in its own workdir under --root; finished ones are
skipped, killed ones resume):

  judge/        a time-dependent CNN trained on the CLEAN labels (rate 0); at
                sigma = 0.002 it is the clean-MNIST classifier that judges samples
  classifier/   the time-dependent noisy-label classifier (40% symmetric, known T)
  dsm/, tdsm/   DSM and TDSM (default estimator `sampled`) trained side by side
  gen_dsm/, gen_tdsm/   `task=generate`: --per_class samples per class (Heun, 18 steps)

Reported per model: the judge's accuracy on the samples against their
conditioning labels (label agreement; 100% = every sample shows its class),
per class and averaged. Under 40% symmetric noise DSM learns p(x | y~), of which
40% is other digits, so its agreement is bounded near 60% + 40%/9; TDSM targets
p(x | y). The CPU budget forces a smaller U-Net than the paper's ddpmpp_mnist
(--model_channels, channel_mult (1, 2, 2), 1 block per resolution), --kimg
thousand training images instead of 200 Mimg, no augmentation and no dropout,
EMA half-life --ema_kimg; DSM and TDSM get identical settings.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mnist"
sys.path.insert(0, str(REPO))


def _main(config_arg: str, workdir: pathlib.Path, *flags: str) -> list[str]:
  return [sys.executable, str(REPO / "main.py"),
          f"--config={REPO / 'configs/mnist_sym.py'}:source=idx,{config_arg}",
          f"--config.dataset.path={DATA}", f"--workdir={workdir}", *flags]


def _done(workdir: pathlib.Path, marker: str = "metrics.json") -> bool:
  path = workdir / marker
  if not path.exists():
    return False
  return json.loads(path.read_text()).get("completed", 1.0) == 1.0


def _diffusion_flags(args) -> list[str]:
  return [f"--config.network.model_channels={args.model_channels}",
          "--config.network.channel_mult=(1,2,2)", "--config.network.num_blocks=1",
          "--config.network.dropout=0.0", "--config.augment.p=0.0",
          f"--config.batch_size={args.batch_size}", "--config.optim.warmup_kimg=2.0",
          f"--config.ema_halflife_kimg={args.ema_kimg}", "--config.snapshot_every_kimg=10.0",
          "--config.log_every_steps=50", "--config.checkpoint_every_steps=200"]


def _classifier_flags(kimg) -> list[str]:
  return ["--config.augment.p=0.0", "--config.classifier.batch_size=128", f"--config.classifier.duration_kimg={kimg}",
          "--config.classifier.optim.warmup_kimg=5.0", "--config.classifier.eval_every_kimg=60.0",
          "--config.classifier.eval_batch_size=1000"]


def run(args) -> None:
  root = args.root
  root.mkdir(parents=True, exist_ok=True)
  classifiers = {"judge": "rate=0.0", "classifier": "rate=0.4"}
  procs = []
  for name, rate in classifiers.items():
    if not _done(root / name):
      procs.append(subprocess.Popen(
          _main(f"task=noisy_classifier,{rate}", root / name, *_classifier_flags(args.cls_kimg)),
          stdout=subprocess.DEVNULL, stderr=open(root / f"{name}.log", "w")))
  for p in procs:
    if p.wait():
      raise SystemExit(f"a classifier run failed; see {root}/*.log")
  procs = []
  for method in ("dsm", "tdsm"):
    if not _done(root / method):
      extra = f",classifier_dir={root / 'classifier'}" if method == "tdsm" else ""
      procs.append(subprocess.Popen(
          _main(f"method={method},kimg={args.kimg}{extra}", root / method,
                *_diffusion_flags(args)),
          stdout=subprocess.DEVNULL, stderr=open(root / f"{method}.log", "w")))
  for p in procs:
    if p.wait():
      raise SystemExit(f"a diffusion run failed; see {root}/*.log")
  for method in ("dsm", "tdsm"):
    out = root / f"gen_{method}"
    if not (out / "samples.npz").exists():
      subprocess.run(_main(f"method={method},task=generate", out,
                           f"--config.generate.run_dir={root / method}",
                           f"--config.generate.per_class={args.per_class}",
                           "--config.generate.batch_size=250"),
                     check=True, stdout=subprocess.DEVNULL,
                     stderr=open(root / f"gen_{method}.log", "w"))


def judge(root: pathlib.Path) -> dict:
  """Label agreement of the clean judge (sigma = 0.002) on each model's samples."""
  from lnrd import images  # pylint: disable=g-import-not-at-top
  from lnrd import runs  # pylint: disable=g-import-not-at-top
  judge_net = runs.load_classifier(str(root / "judge"))
  results = {}
  for method in ("dsm", "tdsm"):
    path = root / f"gen_{method}" / "samples.npz"
    if not path.exists():
      continue
    data = np.load(path)
    x = np.asarray(images.to_model_range(data["images"]))
    preds = []
    for start in range(0, len(x), 500):
      chunk = x[start:start + 500]
      preds.append(np.argmax(np.asarray(judge_net.probs(
          chunk, np.full(len(chunk), 0.002, np.float32))), axis=1))
    preds = np.concatenate(preds)
    labels = data["labels"]
    per_class = [float(np.mean(preds[labels == c] == c)) for c in range(10)]
    results[method] = {"agreement": float(np.mean(preds == labels)), "per_class": per_class}
  return results


def report(root: pathlib.Path) -> str:
  results = judge(root)
  lines = ["| model | label agreement (clean judge) | per class 0..9 |", "| --- | --- | --- |"]
  for method, r in results.items():
    lines.append(f"| {method.upper()} | {100 * r['agreement']:.1f}% | "
                 + " ".join(f"{100 * v:.0f}" for v in r["per_class"]) + " |")
  for name in ("judge", "classifier"):
    path = root / name / "metrics.json"
    if path.exists():
      m = json.loads(path.read_text())
      lines.append(f"\n{name}: clean test accuracy at sigma 0.002 "
                   f"{100 * m.get('test/accuracy_sigma_0.002', float('nan')):.2f}%")
  for method in ("dsm", "tdsm"):
    path = root / method / "metrics.json"
    if path.exists():
      m = json.loads(path.read_text())
      lines.append(f"{method}: {m['kimg']:.1f} kimg, final loss {m.get('train/loss', 0):.1f}")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True, type=pathlib.Path)
  parser.add_argument("--kimg", type=float, default=50.0)
  parser.add_argument("--cls_kimg", type=float, default=120.0)
  parser.add_argument("--model_channels", type=int, default=16)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--ema_kimg", type=float, default=2.0)
  parser.add_argument("--per_class", type=int, default=100)
  parser.add_argument("--report", action="store_true")
  args = parser.parse_args()
  if not args.report:
    run(args)
  print(report(args.root))


if __name__ == "__main__":
  main()
