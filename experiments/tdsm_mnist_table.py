r"""The TDSM paper's MNIST rows at a CPU budget: DSM, TDSM, SGN-corrected + DSM/TDSM.

    python experiments/tdsm_mnist_table.py --root=/tmp/tdsm_mnist --noise=sym --kimg=50
    python experiments/tdsm_mnist_table.py --root=/tmp/tdsm_mnist --noise=asym --kimg=20
    python experiments/tdsm_mnist_table.py --root=/tmp/tdsm_mnist --report   # table only

Stages, each a `main.py` (or `python -m sgn_jax.corrector`) run in its own
folder under ROOT/NOISE/ (finished ones are skipped, killed ones resume):

  ROOT/judge/               a time-dependent CNN trained on CLEAN labels (rate 0):
                            the feature net of the MNIST Density/Coverage
  classifier/               TDSM's noisy-label classifier (40% noise, known T)
  dsm/, tdsm/               DSM and TDSM on the noisy labels
  sgn/                      the corrector: SGN (`task=classify`, 2-conv CNN) on the
                            noisy labels; sgn/corrected_labels.npz holds its labels
                            for every training image and their estimated T
  corrected_classifier/     TDSM's classifier on the corrected labels (estimated T)
  corrected_dsm/, corrected_tdsm/   DSM and TDSM on the corrected labels
  eval_<model>/             `task=evaluate`: --per_class samples per class (Heun,
                            18 steps), Density/Coverage (k = 5) on the clean
                            classifier's features, CW-Density/CW-Coverage, CAS (the
                            2-conv CNN trained on the samples, real MNIST test set)
  ROOT/reference.json       the same metrics for real training images in place of
                            samples (same counts): the ceiling at this sample budget

The CPU budget forces a smaller U-Net than the paper's ddpmpp_mnist
(--model_channels, channel_mult (1, 2, 2), 1 block per resolution, 317k
parameters), --kimg thousand training images instead of 200 Mimg, no
augmentation or dropout, EMA half-life --ema_kimg; every model of a noise
setting gets identical settings. Inception features of upsampled digits are
not computed on the CPU (feature_nets=classifier).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

from tdsm_mnist import _classifier_flags  # the same budgets as the 40%-sym DSM/TDSM runs
from tdsm_mnist import _diffusion_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mnist"
MODELS = ("dsm", "tdsm", "corrected_dsm", "corrected_tdsm")


def _main(noise: str, config_arg: str, workdir: pathlib.Path, *flags: str) -> list[str]:
  return [sys.executable, str(REPO / "main.py"),
          f"--config={REPO / f'configs/mnist_{noise}.py'}:source=idx,rate=0.4,{config_arg}",
          f"--config.dataset.path={DATA}", f"--workdir={workdir}", *flags]


def _done(workdir: pathlib.Path) -> bool:
  path = workdir / "metrics.json"
  return path.exists() and json.loads(path.read_text()).get("completed", 1.0) == 1.0


def _run(cmd: list[str], log: pathlib.Path) -> subprocess.Popen:
  log.parent.mkdir(parents=True, exist_ok=True)
  return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def _wait(procs) -> None:
  for p in procs:
    if p.wait():
      raise SystemExit(f"a stage failed: {' '.join(p.args)}")


def train(args) -> None:
  """Every model of one noise setting (classifiers first, diffusion two at a time)."""
  root, noise = args.root, args.noise
  base = root / noise
  procs = []
  if not _done(root / "judge"):
    procs.append(_run(_main(noise, "task=noisy_classifier,rate=0.0", root / "judge",
                            *_classifier_flags(args.cls_kimg)), root / "judge.log"))
  if not _done(base / "classifier"):
    procs.append(_run(_main(noise, "task=noisy_classifier", base / "classifier",
                            *_classifier_flags(args.cls_kimg)), base / "classifier.log"))
  if not _done(base / "sgn"):
    procs.append(_run(_main(noise, "method=sgn", base / "sgn"), base / "sgn.log"))
  _wait(procs)
  labels_file = base / "sgn" / "corrected_labels.npz"
  if not labels_file.exists():
    _wait([_run([sys.executable, "-m", "sgn_jax.corrector", f"--run_dir={base / 'sgn'}"],
                base / "corrector.log")])
  corrected = f"--config.noise.labels_file={labels_file}"
  if not _done(base / "corrected_classifier"):
    _wait([_run(_main(noise, "task=noisy_classifier", base / "corrected_classifier",
                      *_classifier_flags(args.cls_kimg), corrected),
                base / "corrected_classifier.log")])
  procs = []
  for model in MODELS:
    if _done(base / model):
      continue
    method = model.split("_")[-1]
    classifier = base / ("corrected_classifier" if model.startswith("corrected") else "classifier")
    extra = [corrected] if model.startswith("corrected") else []
    arg = f"method={method},kimg={args.kimg}"
    if method == "tdsm":
      arg += f",classifier_dir={classifier}"
    procs.append(_run(_main(noise, arg, base / model, *_diffusion_flags(args), *extra),
                      base / f"{model}.log"))
    if len(procs) == args.parallel:
      _wait(procs)
      procs = []
  _wait(procs)


def evaluate(args) -> None:
  """`task=evaluate` of every trained model of one noise setting."""
  base = args.root / args.noise
  for model in MODELS:
    out = base / f"eval_{model}"
    step_dir = base / model / "checkpoints" / str(args.checkpoint_step)
    trained = step_dir.exists() if args.checkpoint_step >= 0 else _done(base / model)
    if (out / "metrics.json").exists() or not trained:
      continue
    flags = [f"--config.evaluate.run_dir={base / model}",
             f"--config.evaluate.per_class={args.per_class}",
             f"--config.evaluate.num_real={args.num_real}",
             "--config.evaluate.feature_nets=('classifier',)",
             f"--config.evaluate.feature_classifier_dir={args.root / 'judge'}",
             f"--config.evaluate.cas.epochs={args.cas_epochs}",
             "--config.evaluate.batch_size=250"]
    if args.checkpoint_step >= 0:
      flags.append(f"--config.evaluate.checkpoint_step={args.checkpoint_step}")
    _wait([_run(_main(args.noise, "method=dsm,task=evaluate", out, *flags),
                base / f"eval_{model}.log")])


def real_reference(args) -> dict:
  """The metrics of REAL images in place of samples: a second draw of clean training
  images (as many per class as the samples), against the same real reference as
  `task=evaluate`, and CAS of a classifier trained on them: the ceiling of this budget."""
  path = args.root / "reference.json"
  if path.exists():
    return json.loads(path.read_text())
  sys.path.insert(0, str(REPO))
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import mnist_sym  # pylint: disable=g-import-not-at-top
  from lnrd import evaluation as evaluate_lib  # pylint: disable=g-import-not-at-top
  from lnrd.metrics import cas  # pylint: disable=g-import-not-at-top
  from lnrd.metrics import classifier_features  # pylint: disable=g-import-not-at-top
  from sgn_jax.tasks import common  # pylint: disable=g-import-not-at-top
  config = mnist_sym.get_config("method=dsm,task=evaluate,source=idx,rate=0.0")
  config.dataset.path = str(DATA)
  splits = common.prepare_splits(config)
  real, real_labels = evaluate_lib.real_reference(splits, args.num_real, 0)
  rng = np.random.default_rng(1)
  rows = np.concatenate([rng.choice(np.flatnonzero(splits.train_clean_labels == c),
                                    args.per_class, replace=False) for c in range(10)])
  fake, fake_labels = splits.train_images[rows], splits.train_clean_labels[rows]
  net = classifier_features.ClassifierFeatures.load(str(args.root / "judge"))
  f_real, _ = net.extract(real, 250)
  f_fake, _ = net.extract(fake, 250)
  result = evaluate_lib.feature_metrics(f_real, real_labels, f_fake, fake_labels, 10,
                                        ("density_coverage", "cw_density_coverage"),
                                        prefix="classifier/")
  result["cas/accuracy"] = cas.classification_accuracy_score(
      fake, fake_labels, splits.test_images, splits.test_labels, dataset="mnist",
      workdir=str(args.root / "reference_cas"), epochs=args.cas_epochs,
      batch_size=128, learning_rate=0.01)["accuracy"]
  result["checkpoint_kimg"] = 0.0
  path.write_text(json.dumps(result, indent=2))
  return result


PAPER = {  # the poster's MNIST rows at 40% noise (DSM, TDSM), for comparison only
    "sym": {"density": (81.93, 84.55), "coverage": (81.65, 81.31), "cas": (72.52, 96.49),
            "cw_density": (55.70, 80.09), "cw_coverage": (70.45, 79.21)},
    "asym": {"density": (84.47, 84.71), "coverage": (81.97, 82.27), "cas": (89.29, 96.54),
             "cw_density": (73.54, 81.65), "cw_coverage": (77.50, 80.57)},
}


def report(root: pathlib.Path) -> str:
  keys = (("density", "classifier/density"), ("coverage", "classifier/coverage"),
          ("cas", "cas/accuracy"), ("cw_density", "classifier/cw_density"),
          ("cw_coverage", "classifier/cw_coverage"))
  lines = []
  for noise in ("sym", "asym"):
    rows = []
    for model in (*MODELS, "real"):
      path = (root / "reference.json" if model == "real" else
              root / noise / f"eval_{model}" / "metrics.json")
      if path.exists():
        m = json.loads(path.read_text())
        cells = " | ".join(f"{100 * m[k]:.2f}" if k in m else "-" for _, k in keys)
        rows.append(f"| {model} | {m['checkpoint_kimg']:.0f} | {cells} |")
    if not rows:
      continue
    lines += [f"\n40% {noise} (x100; Density/Coverage on the clean classifier's features)",
              "| model | kimg | Density | Coverage | CAS | CW-Density | CW-Coverage |",
              "| --- | --- | --- | --- | --- | --- | --- |", *rows]
    for i, name in enumerate(("paper DSM", "paper TDSM")):
      lines.append(f"| {name} | 200000 | " + " | ".join(
          f"{PAPER[noise][k][i]:.2f}" for k, _ in keys) + " |")
    path = root / noise / "sgn" / "correction.json"
    if path.exists():
      c = json.loads(path.read_text())
      lines.append(f"\nSGN corrector ({noise}): given labels {100 * c['given_label_accuracy']:.2f}%"
                   f" correct -> corrected {100 * c['corrected_accuracy']:.2f}%; max |T^ - T| "
                   f"{c['transition_max_abs_error']:.3f}")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True, type=pathlib.Path)
  parser.add_argument("--noise", choices=("sym", "asym"), default="sym")
  parser.add_argument("--kimg", type=float, default=50.0)
  parser.add_argument("--cls_kimg", type=float, default=120.0)
  parser.add_argument("--model_channels", type=int, default=16)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--ema_kimg", type=float, default=2.0)
  parser.add_argument("--parallel", type=int, default=2, help="diffusion runs at a time")
  parser.add_argument("--per_class", type=int, default=50)
  parser.add_argument("--num_real", type=int, default=500, help="as many as the samples")
  parser.add_argument("--cas_epochs", type=int, default=20)
  parser.add_argument("--checkpoint_step", type=int, default=-1,
                      help="evaluate this checkpoint of every model (-1: finished runs' last)")
  parser.add_argument("--stage", choices=("train", "evaluate", "reference", "all", "report"),
                      default="all")
  args = parser.parse_args()
  if args.stage in ("train", "all"):
    train(args)
  if args.stage in ("evaluate", "all"):
    evaluate(args)
    real_reference(args)
  if args.stage == "reference":
    real_reference(args)
  print(report(args.root))


if __name__ == "__main__":
  main()
