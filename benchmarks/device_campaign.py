r"""The accelerator campaign: every speed and budget measurement in one command, one process.

On a GPU/TPU host (see BENCHMARKS.md for the carry list), with the MNIST arrays made
here once (`--make_data`, ~17 MB, travels with the working tree):

    python benchmarks/device_campaign.py --make_data=campaign_data/mnist.npz \
        --mnist_dir=../shared/data/mnist                                   # here, once
    python benchmarks/device_campaign.py --out=$OUT --data=campaign_data/mnist.npz   # there

Parts (`--parts`, all by default), each sized from the wall-clock budget
(`--budget_min`, default 9) and skipped with a note when the time left cannot hold it:

  steps     train-step throughput, fp32 and bf16 compute: DSM and TDSM (`sampled`,
            `official`) with the CIFAR `ddpmpp` network at batch 512, C = 10 and 100,
            the same with `ddpmpp_mnist`; SGN and CE with WRN-28-2 at batch 128 and
            512. Compile time is reported apart from steps/s and images/s.
  sampling  EDM Heun-18 sampling images/s of the CIFAR `ddpmpp` network and FID
            Inception images/s, and the projected time of a 50,000-sample
            evaluation (50k samples + features of 50k samples and 50k real images).
  mnist     a real-budget MNIST run: the time-dependent classifier, then DSM and TDSM
            with the full `ddpmpp_mnist` network on real MNIST with 40% symmetric noise
            (same seed and settings, the same share of the budget each), then samples
            per class and CAS with the 2-conv CNN on the real test set, beside the
            paper's MNIST row.

Results go to OUT as they are measured: results.jsonl (one JSON object per row or
note, flushed) and results.md (a Markdown table per part, rewritten atomically after
every row), so a campaign stopped from outside keeps everything it finished. Rows are
never cut off: a row starts only if its estimated time fits in what is left.

Only jax, flax, optax, orbax-checkpoint, chex, numpy and scipy are needed: no
TensorFlow, TFDS, clu, ml_collections or `configs` (the library's pieces are built
directly, config-free). `--smoke` runs every part at tiny sizes on a CPU in a couple
of minutes (the test suite runs it with those modules unimportable).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lnrd import augment as augment_lib
from lnrd import diffusion
from lnrd import edm
from lnrd import images as images_lib
from lnrd import sampler as sampler_lib
from lnrd import time_classifier
from lnrd import weights as weights_lib
from sgn_jax import classification
from sgn_jax import methods
from sgn_jax import noise
from sgn_jax.data import device_data
from sgn_jax.training import ema
from sgn_jax.training import loop
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers
# pylint: enable=wrong-import-position

PARTS = ("steps", "sampling", "mnist")
# Share of the budget left when a part starts that it may use (the last part takes the rest).
SHARES = {"steps": 0.40, "sampling": 0.20, "mnist": 1.0}
SMOKE_SHARES = {"steps": 0.55, "sampling": 0.15, "mnist": 1.0}  # compile-bound on a CPU
# The TDSM paper's MNIST row, 40% symmetric noise (x100), 200 Mimg (quoted, not measured).
PAPER_MNIST = {"dsm": {"CAS": 72.52, "Density": 81.93, "Coverage": 81.65},
               "tdsm": {"CAS": 96.49, "Density": 84.55, "Coverage": 81.31}}
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


# ---- budget and results ---------------------------------------------------------------

class Budget:
  """Wall-clock budget: `left()` seconds remain; `fits(s)` keeps a safety margin."""

  def __init__(self, seconds: float, margin: float = 15.0, clock: Callable = time.monotonic):
    self.clock = clock
    self.end = clock() + seconds
    self.margin = margin

  def left(self) -> float:
    return self.end - self.clock()

  def fits(self, seconds: float) -> bool:
    return self.left() - self.margin >= seconds


class Results:
  """results.jsonl (appended and flushed per entry) and results.md (rewritten
  atomically from all entries after each one)."""

  def __init__(self, out: str, header: dict):
    os.makedirs(out, exist_ok=True)
    self.jsonl = os.path.join(out, "results.jsonl")
    self.md = os.path.join(out, "results.md")
    self.entries: list[dict] = []
    self.header = header
    open(self.jsonl, "w").close()
    self.add("header", **header)

  def add(self, part: str, **fields) -> dict:
    entry = {"part": part, "time": time.strftime("%H:%M:%S"), **fields}
    with open(self.jsonl, "a") as f:
      f.write(json.dumps(entry, default=float) + "\n")
      f.flush()
      os.fsync(f.fileno())
    self.entries.append(entry)
    self._write_markdown()
    print(json.dumps(entry, default=float), flush=True)
    return entry

  def note(self, part: str, text: str) -> None:
    self.add(part, note=text)

  def _write_markdown(self) -> None:
    lines = ["# Device campaign", "", ", ".join(f"{k}: {v}" for k, v in self.header.items()), ""]
    for part in PARTS:
      rows = [e for e in self.entries if e["part"] == part and "note" not in e]
      notes = [e["note"] for e in self.entries if e["part"] == part and "note" in e]
      if not rows and not notes:
        continue
      lines += [f"## {part}", ""]
      if rows:
        keys = [k for k in rows[0] if k not in ("part", "time")]
        for row in rows[1:]:
          keys += [k for k in row if k not in keys and k not in ("part", "time")]
        lines += ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
        lines += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
        lines.append("")
      lines += [f"* {n}" for n in notes] + [""]
    tmp = self.md + ".tmp"
    with open(tmp, "w") as f:
      f.write("\n".join(lines))
    os.replace(tmp, self.md)


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


def run_rows(part: str, rows: list[dict], measure: Callable[[dict, float], dict],
             budget: Budget, part_seconds: float, results: Results,
             first_compile: float, max_window: float = 30.0) -> None:
  """Measures the rows in order while they fit: a row needs its estimated compile time
  (the longest compile seen so far, `first_compile` before any) plus a measuring window
  of the part's time left divided over the rows left; a row that does not fit in the
  part's time or the budget is skipped with a note. Rows are never interrupted."""
  part_end = budget.clock() + part_seconds
  compile_estimate = first_compile
  for i, row in enumerate(rows):
    part_left = part_end - budget.clock()
    window = min(max_window, max(1.0, 0.5 * part_left / (len(rows) - i)
                                 if part_left > 0 else 0.0))
    need = compile_estimate + window
    name = row.get("name", str(row))
    if part_left < need or not budget.fits(need):
      results.note(part, f"skipped {name}: needs ~{need:.0f} s (compile ~{compile_estimate:.0f} s"
                   f" + {window:.0f} s measuring), {max(part_left, 0):.0f} s left in the part, "
                   f"{max(budget.left(), 0):.0f} s in the budget")
      continue
    try:
      measured = measure(row, window)
    except Exception as e:  # pylint: disable=broad-except  (record and go on)
      results.note(part, f"{name} failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
      continue
    compile_estimate = max(compile_estimate, measured.get("compile_s", 0.0))
    results.add(part, **measured)


def timed_steps(step: Callable, state, inputs, window: float, min_steps: int = 3):
  """Compile (first call), then steps until `window` seconds: (compile s, s/step, state)."""
  start = time.perf_counter()
  state, metrics = step(state, inputs)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  sync = mesh_lib.needs_step_sync(mesh_lib.create_mesh())
  steps, start = 0, time.perf_counter()
  while steps < min_steps or time.perf_counter() - start < window:
    state, metrics = step(state, inputs)
    if sync:
      jax.block_until_ready(metrics)
    steps += 1
  jax.block_until_ready(metrics)
  return compile_s, (time.perf_counter() - start) / steps, state


def device_tables(images: np.ndarray, labels: np.ndarray, mesh):
  permutation = jax.jit(lambda k: device_data.epoch_permutation(k, 0, len(labels)),
                        out_shardings=mesh_lib.replicated(mesh))(jax.random.PRNGKey(1))
  return {"permutation": permutation, "train_images": device_data.put_table(images, mesh),
          "train_labels": device_data.put_table(labels, mesh)}


# ---- part 1: train-step throughput ------------------------------------------------------

def _classifier_arch(arch: str, num_classes: int) -> str:
  if arch == "ddpmpp_mnist":
    return "cnn"
  return "resnet18" if num_classes <= 10 else "resnet34"


def diffusion_step_row(spec: dict, window: float, mesh, smoke: bool) -> dict:
  """One train step of DSM or TDSM as `task=diffusion` runs it, random weights and data."""
  shape = (32, 32, 1) if spec["arch"] == "ddpmpp_mnist" else (32, 32, 3)
  c, batch = spec["num_classes"], spec["batch"]
  overrides = dict(model_channels=8, channel_mult=(1, 1), num_blocks=1,
                   attn_resolutions=()) if smoke else {}
  dtype = jnp.bfloat16 if spec["dtype"] == "bf16" else jnp.float32
  pipe = augment_lib.edm_cifar_pipe(p=0.12)
  model = diffusion.build_network(spec["arch"], shape, c, augment_dim=pipe.augment_dim,
                                  dropout=0.13, dtype=dtype, **overrides)
  precond = edm.get_preconditioning("edm")
  tx = edm.adam_with_warmup(1e-3, warmup_kimg=10_000.0, batch_size=batch)
  if spec["method"] == "tdsm":
    cls_kwargs = dict(noise_channels=16, emb_channels=16) if smoke else {}
    classifier = time_classifier.get_time_classifier(
        "cnn" if smoke else _classifier_arch(spec["arch"], c), c, **cls_kwargs)
    variables = classifier.init(jax.random.PRNGKey(3), jnp.zeros((1,) + shape), jnp.ones((1,)))
    transition = noise.symmetric_transition(c, 0.4, include_true_class=False)
    weight_fn = diffusion.WeightModel(
        "released", weights_lib.transition_constants(transition),
        lambda x_t, sigma: jax.nn.softmax(classifier.apply(variables, x_t, sigma)))
    objective = diffusion.tdsm_objective(precond, weight_fn,
                                         diffusion.TDSMSettings(estimator=spec["estimator"]))
  else:
    objective = diffusion.dsm_objective(precond)
  train_step = diffusion.make_train_step(
      model, tx, objective, precond=precond, num_classes=c,
      ema_decay=ema.edm_schedule(batch, 500.0), augment=pipe)
  state = diffusion.init_state(model, tx, shape, c, jax.random.PRNGKey(0), mesh)
  n = 4 * batch
  rng = np.random.default_rng(0)
  inputs = device_tables(rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
                         rng.integers(0, c, n).astype(np.int32), mesh)
  step = loop.jit_step(train_step, device_data.BatchDrawer(batch, n // batch, mesh))
  compile_s, seconds, _ = timed_steps(step, state, inputs, window)
  return dict(name=spec["name"], compile_s=compile_s, ms_per_step=1e3 * seconds,
              steps_per_s=1.0 / seconds, images_per_s=batch / seconds)


def classification_step_row(spec: dict, window: float, mesh, smoke: bool) -> dict:
  """One SGN or CE train step with WRN-28-2, as `task=classify` runs it."""
  method = methods.get_method(spec["method"])
  kwargs = dict(depth=10, width=1) if smoke else dict(depth=28, width=2)
  if spec["dtype"] == "bf16":
    kwargs["dtype"] = "bfloat16"
  model = classification.build_model("wrn", 10, method, **kwargs)
  tx = classification.sgd(0.01)
  batch, n = spec["batch"], 4 * spec["batch"]
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, n).astype(np.int32)
  state = classification.init_state(model, tx, (32, 32, 3), jax.random.PRNGKey(0), mesh)
  state = classification.with_example_state(state, method, labels, 10, mesh)
  train_step = classification.make_train_step(
      model, method, tx, num_classes=10, steps_per_epoch=n // batch, ema_decay=0.9999,
      weight_decay=2.5e-4, preprocess=classification.normalizer(CIFAR10_MEAN, CIFAR10_STD),
      mesh=mesh)
  inputs = device_tables(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), labels, mesh)
  step = loop.jit_step(train_step, device_data.BatchDrawer(batch, n // batch, mesh,
                                                           crop_padding=2, flip=True))
  compile_s, seconds, _ = timed_steps(step, state, inputs, window)
  return dict(name=spec["name"], compile_s=compile_s, ms_per_step=1e3 * seconds,
              steps_per_s=1.0 / seconds, images_per_s=batch / seconds)


def step_rows(smoke: bool) -> list[dict]:
  big, small = (16, 8) if smoke else (512, 128)
  rows = []
  for dtype in ("fp32", "bf16"):
    for arch in ("ddpmpp", "ddpmpp_mnist"):
      for c in (10, 100):
        for method, estimator in (("dsm", None), ("tdsm", "sampled"), ("tdsm", "official")):
          if arch == "ddpmpp_mnist" and c == 100:
            continue
          label = method if estimator is None else f"tdsm/{estimator}"
          rows.append(dict(kind="diffusion", arch=arch, dtype=dtype, num_classes=c,
                           method=method, estimator=estimator, batch=big,
                           name=f"{arch} {label} C={c} batch {big} {dtype}"))
    for method in ("sgn", "ce"):
      for batch in (small, big):
        rows.append(dict(kind="classify", dtype=dtype, method=method, batch=batch,
                         name=f"WRN-28-2 {method} batch {batch} {dtype}"))
  # fp32 first, the main rows before their variants
  order = {"ddpmpp": 0, "ddpmpp_mnist": 2}
  return sorted(rows, key=lambda r: (r["dtype"] != "fp32", order.get(r.get("arch"), 1),
                                     r.get("num_classes", 0), r.get("estimator") == "official"))


def smoke_rows(rows: list[dict]) -> list[dict]:
  """The first DSM and TDSM (`sampled`) rows, the first SGN row (fp32) and the first
  bf16 row: every code path of the part, at a CPU's compile cost."""
  wanted = [lambda r: r["kind"] == "diffusion" and r["method"] == "dsm" and r["dtype"] == "fp32",
            lambda r: r.get("estimator") == "sampled" and r["dtype"] == "fp32",
            lambda r: r["kind"] == "classify" and r["method"] == "sgn" and r["dtype"] == "fp32",
            lambda r: r["dtype"] == "bf16"]
  return [next(r for r in rows if want(r)) for want in wanted]


def part_steps(ctx) -> None:
  def measure(row, window):
    fn = diffusion_step_row if row["kind"] == "diffusion" else classification_step_row
    return fn(row, window, ctx.mesh, ctx.smoke)
  rows = step_rows(ctx.smoke)
  run_rows("steps", smoke_rows(rows) if ctx.smoke else rows, measure, ctx.budget,
           ctx.part_seconds("steps"), ctx.results, first_compile=5.0 if ctx.smoke else 60.0,
           max_window=1.0 if ctx.smoke else 30.0)


# ---- part 2: sampling and Inception throughput -----------------------------------------

def part_sampling(ctx) -> None:
  smoke, mesh = ctx.smoke, ctx.mesh
  rates = {}

  def sampling(row, window):
    shape, c = (32, 32, 3), 10
    overrides = dict(model_channels=8, channel_mult=(1, 1), num_blocks=1,
                     attn_resolutions=()) if smoke else {}
    model = diffusion.build_network("ddpmpp", shape, c, augment_dim=9, **overrides)
    state = diffusion.init_state(model, edm.adam_with_warmup(), shape, c,
                                 jax.random.PRNGKey(0), mesh)
    settings = sampler_lib.SamplerSettings(num_steps=2 if smoke else 18)
    fn = diffusion.make_sampler(model, edm.get_preconditioning("edm"), c, mesh, settings)
    batch = row["batch"]
    labels = np.arange(batch, dtype=np.int32) % c
    draw = functools.partial(sampler_lib.sample_for_labels, fn, diffusion.ema_variables(state),
                             labels, jax.random.PRNGKey(1), shape, mesh, batch)
    start = time.perf_counter()
    draw()
    compile_s = time.perf_counter() - start
    count, start = 0, time.perf_counter()
    while count < 1 or time.perf_counter() - start < window:
      draw()
      count += 1
    rate = count * batch / (time.perf_counter() - start)
    rates["sampling"] = rate
    return dict(name=row["name"], compile_s=compile_s, images_per_s=rate,
                network_evals_per_s=rate * (2 * settings.num_steps - 1))

  def features(row, window):
    from lnrd.metrics import inception  # pylint: disable=g-import-not-at-top
    net = inception.InceptionFeatures(inception.random_variables(), mesh=mesh)
    batch = row["batch"]
    x = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    start = time.perf_counter()
    jax.block_until_ready(net(x))
    compile_s = time.perf_counter() - start
    count, start = 0, time.perf_counter()
    while count < 1 or time.perf_counter() - start < window:
      out = net(x)
      count += 1
    jax.block_until_ready(out)
    rate = count * batch / (time.perf_counter() - start)
    rates["inception"] = rate
    return dict(name=row["name"], compile_s=compile_s, images_per_s=rate)

  rows = [dict(name=f"ddpmpp CIFAR-10 Heun-{2 if smoke else 18} batch {b}", fn=sampling,
               batch=b) for b in ((8,) if smoke else (256, 512))]
  rows += [dict(name=f"FID Inception batch {b}", fn=features, batch=b)
           for b in ((8,) if smoke else (500,))]
  run_rows("sampling", rows, lambda row, window: row["fn"](row, window), ctx.budget,
           ctx.part_seconds("sampling"), ctx.results, first_compile=5.0 if smoke else 40.0,
           max_window=1.0 if smoke else 30.0)
  if "sampling" in rates and "inception" in rates:
    n = 50_000
    seconds = n / rates["sampling"] + 2 * n / rates["inception"]
    ctx.results.add("sampling", name="projected 50k evaluation (50k samples, 100k features)",
                    seconds=seconds, minutes=seconds / 60)


# ---- part 3: a real-budget MNIST run -----------------------------------------------------

def make_data(mnist_dir: str, out: str) -> None:
  """The MNIST arrays (train and test, uint8 28x28x1) as one compressed npz."""
  from sgn_jax.data import array_source  # pylint: disable=g-import-not-at-top
  ds = array_source.load_idx(mnist_dir, "mnist")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.savez_compressed(out, train_images=ds.train_images, train_labels=ds.train_labels,
                      test_images=ds.test_images, test_labels=ds.test_labels)
  print(f"wrote {out} ({os.path.getsize(out) / 2**20:.1f} MiB)")


def _smoke_digits(seed: int = 0):
  rng = np.random.default_rng(seed)

  def make(n):
    labels = rng.integers(0, 10, n).astype(np.int32)
    x = rng.integers(0, 40, (n, 28, 28, 1)).astype(np.uint8)
    for i, c in enumerate(labels):
      r, col = divmod(int(c), 4)
      x[i, 7 * r:7 * r + 7, 7 * col:7 * col + 7] = 230
    return x, labels
  (xt, yt), (xs, ys) = make(512), make(256)
  return dict(train_images=xt, train_labels=yt, test_images=xs, test_labels=ys)


def _train_for(name: str, train_step, state, data, batch: int, seconds: float, ctx,
               max_steps: int | None = None) -> tuple[Any, dict]:
  """Runs `train_step` through the library's loop for about `seconds` in all (the step
  count from a measured step time; at most `max_steps`), checkpoints in OUT/mnist/<name>."""
  start = time.perf_counter()
  steps_per_epoch = len(data["labels"]) // batch
  inputs = device_tables(data["images"], data["labels"], ctx.mesh)
  permutation = jax.jit(functools.partial(device_data.epoch_permutation,
                                          num_examples=len(data["labels"])),
                        out_shardings=mesh_lib.replicated(ctx.mesh))
  epochs = {}

  def inputs_fn(s):  # each epoch its own order, as sgn_jax.train_data.InMemoryData
    epoch = s // steps_per_epoch
    if epoch not in epochs:
      epochs.clear()
      epochs[epoch] = {**inputs, "permutation": permutation(jax.random.PRNGKey(1), epoch)}
    return epochs[epoch]
  step = loop.jit_step(train_step, device_data.BatchDrawer(batch, steps_per_epoch, ctx.mesh))
  probe = jax.tree.map(jnp.copy, state)
  compile_s, per_step, _ = timed_steps(step, probe, inputs, min(3.0, seconds / 10), 2)
  total = max(2, int((seconds - (time.perf_counter() - start)) / per_step))
  total = min(total, max_steps) if max_steps else total
  workdir = os.path.join(ctx.out, "mnist", name)
  writer = writers.MultiWriter([writers.LoggingWriter(None),
                                writers.JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])
  os.makedirs(workdir, exist_ok=True)
  result = loop.run(state, step, inputs_fn, total_steps=total, workdir=workdir,
                    settings=loop.LoopSettings(log_every_steps=max(1, total // 10),
                                               checkpoint_every_steps=max(1, total)),
                    mesh=ctx.mesh, writer=writer, items_per_step=batch)
  info = dict(name=name, steps=result.step, kimg=result.step * batch / 1000,
              seconds=result.seconds, compile_s=compile_s,
              loss=result.train_metrics.get("loss", float("nan")))
  return result.state, info


def part_mnist(ctx) -> None:
  budget, smoke = ctx.budget, ctx.smoke
  part = ctx.part_seconds("mnist")
  arrays = _smoke_digits() if smoke else (dict(np.load(ctx.data)) if ctx.data else None)
  if arrays is None:
    ctx.results.note("mnist", "skipped: no --data (make it with --make_data)")
    return
  if not budget.fits(0.5 * part) or part < (60 if smoke else 180):
    ctx.results.note("mnist", f"skipped: {part:.0f} s left for it, too little for three "
                     "trainings and the evaluation")
    return
  train_images = np.asarray(arrays["train_images"]).reshape(-1, 28, 28, 1)
  clean = np.asarray(arrays["train_labels"]).astype(np.int32)
  transition = noise.transition_matrix("sym", 10, 0.4, convention="tdsm")
  noisy = noise.sample_noisy_labels(clean, transition, seed=0).astype(np.int32)
  data = {"images": train_images, "labels": noisy}
  shape, c = (32, 32, 1), 10
  batch = 16 if smoke else 512
  # A quarter of the part is kept for sampling and CAS; the trainings share the rest.
  shares = {"classifier": 0.15, "dsm": 0.3, "tdsm": 0.3}
  max_steps = 20 if smoke else None
  precond = edm.get_preconditioning("edm")
  pipe = augment_lib.edm_cifar_pipe(p=0.12)
  pad = functools.partial(images_lib.to_model_range, pad_to=32)
  # Warm-ups and the EMA half-life scaled to the run (the paper's 10 Mimg warm-up and
  # 500 kimg half-life assume 200 Mimg): at most a tenth of the images the run sees.
  guess_kimg = max(1.0, 0.1 * part * (0.5 if smoke else 20.0))

  classifier = time_classifier.get_time_classifier(
      "cnn", c, **(dict(noise_channels=16, emb_channels=16) if smoke else {}))
  tx = edm.adam_with_warmup(1e-3, warmup_kimg=0.1 * guess_kimg, batch_size=batch)
  state = time_classifier.init_state(classifier, tx, shape, c, jax.random.PRNGKey(11),
                                     mesh=ctx.mesh)
  step = time_classifier.make_train_step(classifier, tx, precond=precond, transition=transition,
                                         augment=pipe, preprocess=pad)
  state, info = _train_for("classifier", step, state, data, batch, shares["classifier"] * part,
                           ctx, max_steps)
  ctx.results.add("mnist", **info)
  variables = {"params": state.params["net"], **state.model_state}
  probs_fn = lambda x_t, sigma: jax.nn.softmax(classifier.apply(variables, x_t, sigma), -1)
  weight_fn = diffusion.WeightModel("released", weights_lib.transition_constants(transition),
                                    probs_fn)

  overrides = dict(model_channels=8, channel_mult=(1, 1), num_blocks=1,
                   attn_resolutions=()) if smoke else {}
  trained = {}
  for name, objective in (("dsm", diffusion.dsm_objective(precond)),
                          ("tdsm", diffusion.tdsm_objective(precond, weight_fn))):
    model = diffusion.build_network("ddpmpp_mnist", shape, c, augment_dim=pipe.augment_dim,
                                    dropout=0.13, **overrides)
    tx = edm.adam_with_warmup(1e-3, warmup_kimg=0.1 * guess_kimg, batch_size=batch)
    state = diffusion.init_state(model, tx, shape, c, jax.random.PRNGKey(0), ctx.mesh)
    step = diffusion.make_train_step(
        model, tx, objective, precond=precond, num_classes=c, augment=pipe, preprocess=pad,
        ema_decay=ema.edm_schedule(batch, min(500.0, 0.1 * guess_kimg)))
    state, info = _train_for(name, step, state, data, batch, shares[name] * part, ctx, max_steps)
    ctx.results.add("mnist", **info)
    trained[name] = (model, diffusion.ema_variables(state))

  from lnrd.metrics import cas  # pylint: disable=g-import-not-at-top
  per_class = 20 if smoke else 1000
  labels = sampler_lib.class_balanced_labels(per_class, c)
  settings = sampler_lib.SamplerSettings(num_steps=2 if smoke else 18)
  test_images = np.asarray(arrays["test_images"]).reshape(-1, 28, 28, 1)
  test_labels = np.asarray(arrays["test_labels"]).astype(np.int32)
  for name, (model, variables) in trained.items():
    if not budget.fits(10 if smoke else 60):
      ctx.results.note("mnist", f"skipped the evaluation of {name}: {budget.left():.0f} s left")
      continue
    start = time.perf_counter()
    fn = diffusion.make_sampler(model, precond, c, ctx.mesh, settings)
    samples = sampler_lib.sample_for_labels(fn, variables, labels, jax.random.PRNGKey(2), shape,
                                            ctx.mesh, 8 if smoke else 1000)
    fake = images_lib.crop_to(images_lib.images_to_uint8(samples), (28, 28))
    sample_s = time.perf_counter() - start
    score = cas.classification_accuracy_score(
        fake, labels, test_images, test_labels, dataset="mnist",
        workdir=os.path.join(ctx.out, "mnist", f"cas_{name}"), epochs=1 if smoke else 10,
        batch_size=32 if smoke else 128, devices=list(ctx.mesh.devices.flat))
    ctx.results.add("mnist", name=f"{name} evaluation", samples=len(labels),
                    sample_seconds=sample_s, CAS=100 * score["accuracy"],
                    paper_CAS_200Mimg=PAPER_MNIST[name]["CAS"])


# ---- main -----------------------------------------------------------------------------

@dataclasses.dataclass
class Context:
  budget: Budget
  results: Results
  mesh: Any
  smoke: bool
  out: str
  data: str
  parts: tuple

  def part_seconds(self, part: str) -> float:
    """The part's share of the budget left (the last selected part takes all of it)."""
    remaining = [p for p in self.parts if p in PARTS[PARTS.index(part):]]
    share = 1.0 if remaining[-1] == part else (SMOKE_SHARES if self.smoke else SHARES)[part]
    return max(0.0, share * (self.budget.left() - self.budget.margin))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.environ.get("OUT", "campaign_out"))
  parser.add_argument("--budget_min", type=float, default=9.0)
  parser.add_argument("--parts", default=",".join(PARTS))
  parser.add_argument("--data", default="", help="the MNIST npz of --make_data")
  parser.add_argument("--smoke", action="store_true", help="tiny sizes, a CPU, ~2 minutes")
  parser.add_argument("--make_data", default="", help="write the MNIST npz here and exit")
  parser.add_argument("--mnist_dir", default="../shared/data/mnist")
  args = parser.parse_args(argv)
  if args.make_data:
    make_data(args.mnist_dir, args.make_data)
    return 0
  parts = tuple(p for p in args.parts.split(",") if p)
  unknown = set(parts) - set(PARTS)
  if unknown:
    parser.error(f"--parts: unknown {sorted(unknown)}; allowed: {list(PARTS)}")
  budget = Budget(60 * args.budget_min, margin=5.0 if args.smoke else 15.0)
  device = jax.devices()[0]
  results = Results(args.out, dict(
      device=f"{device.device_kind} x{jax.device_count()}", platform=device.platform,
      jax=jax.__version__, host=platform.node(), budget_min=args.budget_min, smoke=args.smoke,
      date=time.strftime("%Y-%m-%d")))
  ctx = Context(budget, results, mesh_lib.create_mesh(), args.smoke, args.out, args.data, parts)
  for part in PARTS:
    if part in parts:
      {"steps": part_steps, "sampling": part_sampling, "mnist": part_mnist}[part](ctx)
  results.add("header", finished=True, seconds_left=budget.left())
  return 0


if __name__ == "__main__":
  sys.exit(main())
