r"""This library's DSM/TDSM train step against the TDSM authors' PyTorch step, side by side.

    python benchmarks/authors_step_time.py --authors_dir=PATH_TO_YOUR_CHECKOUT_OF_byeonghu-na/tdsm

The authors' code is never part of this repository: pass the path of your own
checkout (`git clone https://github.com/byeonghu-na/tdsm`); it needs torch (CPU is
fine). Both sides train the same network, the authors' `ddpmpp_mnist` SongUNet
(1,559,425 parameters with augment labels) under EDM preconditioning, at batch 32,
dropout 0.13, augmentation off (zero augment labels), class-conditional C = 10 (or
`--num_classes=100` with 3 channels), a random-weight time-dependent classifier and
40% symmetric noise for TDSM, with Adam and the EMA update:

  dsm    authors: `training.loss.EDMLoss`            ours: `lnrd.diffusion.dsm_objective`
  tdsm   authors: `training.loss.EDMNoiseLoss` (tau)  ours: `tdsm_objective`, `sampled`

Rounds alternate between the two sides (`--rounds`), each timing `--steps` steps
after a warm-up, so both see the same machine state; the table gives the median
s/step and the ratio. torch uses `--threads` threads; XLA uses the host's cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from benchmarks import torch_interop  # pylint: disable=g-import-not-at-top,wrong-import-position


def _ours(method: str, num_classes: int, channels: int, batch: int, noise_type: str):
  """(step(), block()) of this library's jitted train step on device-resident data
  (`benchmarks.tdsm_step_time.build_step`, augmentation off)."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import tdsm_step_time  # pylint: disable=g-import-not-at-top
  from sgn_jax import noise  # pylint: disable=g-import-not-at-top
  from sgn_jax.training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  shape = (32, 32, channels)
  mesh = mesh_lib.create_mesh(jax.devices()[:1])
  weight_fn = None
  if method == "tdsm":
    if noise_type == "sym":
      transition = noise.transition_matrix("sym", num_classes, 0.4, convention="tdsm")
    else:
      transition = noise.transition_matrix("asym", num_classes, 0.4, dataset="mnist")
    weight_fn = tdsm_step_time.random_weight_model(num_classes, shape, transition)
  n = 8 * batch
  rng = np.random.default_rng(0)
  step_fn, state, inputs = tdsm_step_time.build_step(
      "ddpmpp_mnist", shape, num_classes, batch, mesh,
      rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
      rng.integers(0, num_classes, n).astype(np.int32), method=method, weight_fn=weight_fn,
      augment=False)
  holder = {"state": state, "metrics": None}

  def step():
    holder["state"], holder["metrics"] = step_fn(holder["state"], inputs)

  return step, lambda: jax.block_until_ready(holder["metrics"])


def _authors(authors_dir: str, method: str, num_classes: int, channels: int, batch: int,
             noise_type: str, tau: float):
  """(step(), block()) of the authors' training step: their EDMPrecond SongUNet, their
  loss, Adam, and EDM's EMA update, in PyTorch on the CPU."""
  import copy  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch_interop.import_torchvision(torch)  # the authors' modules import it
  sys.path.insert(0, authors_dir)
  from training import loss as loss_lib  # pylint: disable=g-import-not-at-top
  from training import networks  # pylint: disable=g-import-not-at-top
  kwargs = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
                model_channels=32, channel_mult=[2, 2, 2], num_blocks=1, augment_dim=9,
                dropout=0.13)
  net = networks.EDMPrecond(img_resolution=32, img_channels=channels, label_dim=num_classes,
                            **kwargs).train()
  ema = copy.deepcopy(net).eval().requires_grad_(False)
  optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
  images = torch.rand(batch, channels, 32, 32) * 2 - 1
  labels = torch.eye(num_classes)[torch.randint(0, num_classes, (batch,))]
  no_augment = lambda x: (x, torch.zeros(x.shape[0], 9))  # augmentation off, zero labels
  if method == "tdsm":
    cls_net = networks.EDMPrecond_classifier(
        img_resolution=32, img_channels=channels, label_dim=num_classes,
        model_type="ClassifierSong_MNIST").eval()
    loss_fn = loss_lib.EDMNoiseLoss(noise_type=noise_type, noise_rate=0.4,
                                    num_classes=num_classes, dataset="mnist", tau=tau)

    def loss_of():
      return loss_fn(net=net, images=images, labels=labels, cls_net=cls_net,
                     augment_pipe=no_augment)
  else:
    loss_fn = loss_lib.EDMLoss()

    def loss_of():
      return loss_fn(net=net, images=images, labels=labels, augment_pipe=no_augment)

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of()
    loss.sum().mul(1.0 / batch).backward()
    for param in net.parameters():
      if param.grad is not None:
        torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
    optimizer.step()
    with torch.no_grad():
      for p_ema, p_net in zip(ema.parameters(), net.parameters()):
        p_ema.copy_(p_net.detach().lerp(p_ema, 0.999))

  return step, lambda: None


def _time(step, block, steps: int) -> float:
  start = time.perf_counter()
  for _ in range(steps):
    step()
  block()
  return (time.perf_counter() - start) / steps


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--authors_dir", required=True)
  parser.add_argument("--rows", default="dsm,tdsm")
  parser.add_argument("--noise", default="sym", choices=("sym", "asym"))
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--tau", type=float, default=0.01)
  parser.add_argument("--json", default="")
  args = parser.parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  channels = 1 if args.num_classes == 10 else 3
  rows = []
  for method in args.rows.split(","):
    sides = {"authors": _authors(args.authors_dir, method, args.num_classes, channels,
                                 args.batch, args.noise, args.tau),
             "ours": _ours(method, args.num_classes, channels, args.batch, args.noise)}
    for step, block in sides.values():  # compile / warm-up
      step()
      step()
      block()
    times = {name: [] for name in sides}
    for _ in range(args.rounds):
      for name, (step, block) in sides.items():
        times[name].append(_time(step, block, args.steps))
    row = {"method": method, "noise": args.noise, "num_classes": args.num_classes,
           **{f"{k}_s_per_step": statistics.median(v) for k, v in times.items()},
           **{f"{k}_all": v for k, v in times.items()}}
    row["ours_over_authors"] = row["ours_s_per_step"] / row["authors_s_per_step"]
    rows.append(row)
    print(f"| {method} ({args.noise}, C = {args.num_classes}) | "
          f"{row['authors_s_per_step']:.3f} | {row['ours_s_per_step']:.3f} | "
          f"{row['ours_over_authors']:.2f} |", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
