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
of minutes (the test suite runs it with those modules unimportable); it checks that
every code path runs, so it never skips a row or a part for lack of time (its budget
only sizes the measuring windows), whatever the machine's speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from benchmarks import classification_throughput
from benchmarks import step_timer
from benchmarks import tdsm_step_time
from lnrd import augment as augment_lib
from lnrd import diffusion
from lnrd import edm
from lnrd import images as images_lib
from lnrd import runs as lnrd_runs
from lnrd import sampler as sampler_lib
from lnrd import time_classifier
from sgn_jax import noise
from sgn_jax import train_data
from sgn_jax.data import loading
from sgn_jax.training import ema
from sgn_jax.training import loop
from sgn_jax.training import mesh as mesh_lib
from sgn_jax.training import writers
# pylint: enable=wrong-import-position

PARTS = ("steps", "sampling", "mnist")
# The TDSM paper's MNIST row, 40% symmetric noise (x100), 200 Mimg (quoted, not measured).
PAPER_MNIST = {"dsm": {"CAS": 72.52, "Density": 81.93, "Coverage": 81.65},
               "tdsm": {"CAS": 96.49, "Density": 84.55, "Coverage": 81.31}}


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Every size of the campaign: `FULL` on an accelerator, `SMOKE` on a CPU (`--smoke`).

  shares: the share of the budget left when a part starts that it may use (the last
  part takes the rest); margin: seconds of the budget kept free. unet /
  classifier_kwargs / wrn: network sizes; first_compile: the compile time assumed for a
  part's first row (s); max_window: the longest measuring window of a row (s);
  mnist_images_per_s: the throughput assumed for the MNIST run's schedule constants
  when the steps part did not measure it; mnist_min_part / eval_need: the seconds the
  MNIST part and one evaluation need at least; cas_epochs / cas_batch: None = the
  library's CAS defaults for MNIST.
  """
  shares: dict
  margin: float
  unet: dict
  classifier_kwargs: dict
  wrn: dict
  big_batch: int
  small_batch: int
  first_compile: dict
  max_window: float
  heun_steps: int
  sample_batches: tuple
  feature_batches: tuple
  mnist_batch: int
  mnist_max_steps: int | None
  mnist_images_per_s: float
  mnist_min_part: float
  per_class: int
  sample_batch: int
  eval_need: float
  cas_epochs: int | None
  cas_batch: int | None


FULL = Sizes(
    shares={"steps": 0.40, "sampling": 0.20, "mnist": 1.0}, margin=15.0, unet={},
    classifier_kwargs={}, wrn=dict(depth=28, width=2), big_batch=512, small_batch=128,
    first_compile={"steps": 60.0, "sampling": 40.0}, max_window=30.0, heun_steps=18,
    sample_batches=(256, 512), feature_batches=(500,), mnist_batch=512, mnist_max_steps=None,
    mnist_images_per_s=20_000.0, mnist_min_part=180.0, per_class=1000, sample_batch=1000,
    eval_need=60.0, cas_epochs=None, cas_batch=None)
SMOKE = Sizes(  # compile-bound on a CPU: the steps part gets more of the budget
    shares={"steps": 0.55, "sampling": 0.15, "mnist": 1.0}, margin=5.0,
    unet=dict(model_channels=8, channel_mult=(1, 1), num_blocks=1, attn_resolutions=()),
    classifier_kwargs=dict(noise_channels=16, emb_channels=16), wrn=dict(depth=10, width=1),
    big_batch=16, small_batch=8, first_compile={"steps": 5.0, "sampling": 5.0}, max_window=1.0,
    heun_steps=2, sample_batches=(8,), feature_batches=(8,), mnist_batch=16, mnist_max_steps=20,
    mnist_images_per_s=500.0, mnist_min_part=60.0, per_class=20, sample_batch=8, eval_need=10.0,
    cas_epochs=1, cas_batch=32)


# ---- budget and results ---------------------------------------------------------------

class Budget:
  """Wall-clock budget: `left()` seconds remain; `fits(s)` keeps a safety margin.

  strict=False (`--smoke`): everything fits, so no row or part is skipped for time;
  `left()` still sizes the measuring windows."""

  def __init__(self, seconds: float, margin: float = 15.0, clock: Callable = time.monotonic,
               strict: bool = True):
    self.clock = clock
    self.end = clock() + seconds
    self.margin = margin
    self.strict = strict

  def left(self) -> float:
    return self.end - self.clock()

  def fits(self, seconds: float) -> bool:
    return not self.strict or self.left() - self.margin >= seconds


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
    if budget.strict and (part_left < need or not budget.fits(need)):
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


# ---- part 1: train-step throughput ------------------------------------------------------

def _classifier_arch(arch: str, num_classes: int) -> str:
  if arch == "ddpmpp_mnist":
    return "cnn"
  return "resnet18" if num_classes <= 10 else "resnet34"


def _random_data(n: int, shape, num_classes: int):
  rng = np.random.default_rng(0)
  return (rng.integers(0, 256, (n,) + tuple(shape), dtype=np.uint8),
          rng.integers(0, num_classes, n).astype(np.int32))


def diffusion_step_row(spec: dict, window: float, mesh, sizes: Sizes) -> dict:
  """One train step of DSM or TDSM as `task=diffusion` runs it, random weights and data
  (`benchmarks.tdsm_step_time.build_step`)."""
  shape = (32, 32, 1) if spec["arch"] == "ddpmpp_mnist" else (32, 32, 3)
  c, batch = spec["num_classes"], spec["batch"]
  weight_fn = None
  if spec["method"] == "tdsm":
    weight_fn = tdsm_step_time.random_weight_model(
        c, shape, noise.symmetric_transition(c, 0.4, include_true_class=False),
        "cnn" if sizes.classifier_kwargs else _classifier_arch(spec["arch"], c),
        **sizes.classifier_kwargs)
  step, state, inputs = tdsm_step_time.build_step(
      spec["arch"], shape, c, batch, mesh, *_random_data(4 * batch, shape, c),
      method=spec["method"], estimator=spec["estimator"], weight_fn=weight_fn,
      overrides=sizes.unet, dtype="bfloat16" if spec["dtype"] == "bf16" else None)
  compile_s, seconds, _ = step_timer.time_for(step, state, inputs, window,
                                              sync=mesh_lib.needs_step_sync(mesh))
  return dict(name=spec["name"], compile_s=compile_s, ms_per_step=1e3 * seconds,
              steps_per_s=1.0 / seconds, images_per_s=batch / seconds)


def classification_step_row(spec: dict, window: float, mesh, sizes: Sizes) -> dict:
  """One SGN or CE train step with WRN-28-2, as `task=classify` runs it
  (`benchmarks.classification_throughput.build_step`)."""
  batch = spec["batch"]
  step, state, inputs = classification_throughput.build_step(
      spec["method"], batch, mesh, *_random_data(4 * batch, (32, 32, 3), 10), **sizes.wrn,
      dtype="bfloat16" if spec["dtype"] == "bf16" else "float32")
  compile_s, seconds, _ = step_timer.time_for(step, state, inputs, window,
                                              sync=mesh_lib.needs_step_sync(mesh))
  return dict(name=spec["name"], compile_s=compile_s, ms_per_step=1e3 * seconds,
              steps_per_s=1.0 / seconds, images_per_s=batch / seconds)


def step_rows(sizes: Sizes) -> list[dict]:
  big, small = sizes.big_batch, sizes.small_batch
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
    measured = fn(row, window, ctx.mesh, ctx.sizes)
    if (row.get("arch"), row["method"], row["dtype"], row["batch"]) == (
        "ddpmpp_mnist", "dsm", "fp32", ctx.sizes.mnist_batch):
      ctx.rates["ddpmpp_mnist"] = measured["images_per_s"]  # sizes the MNIST part's schedule
    return measured
  rows = step_rows(ctx.sizes)
  run_rows("steps", smoke_rows(rows) if ctx.smoke else rows, measure, ctx.budget,
           ctx.part_seconds("steps"), ctx.results, first_compile=ctx.sizes.first_compile["steps"],
           max_window=ctx.sizes.max_window)


# ---- part 2: sampling and Inception throughput -----------------------------------------

def part_sampling(ctx) -> None:
  sizes, mesh = ctx.sizes, ctx.mesh
  sync = mesh_lib.needs_step_sync(mesh)

  def sampling(row, window):
    shape, c = (32, 32, 3), 10
    model = diffusion.build_network("ddpmpp", shape, c,
                                    augment_dim=augment_lib.edm_cifar_pipe().augment_dim,
                                    **sizes.unet)
    state = diffusion.init_state(model, edm.adam_with_warmup(), shape, c,
                                 jax.random.PRNGKey(0), mesh)
    settings = sampler_lib.SamplerSettings(num_steps=sizes.heun_steps)
    fn = diffusion.make_sampler(model, edm.get_preconditioning("edm"), c, mesh, settings)
    batch = row["batch"]
    labels = np.arange(batch, dtype=np.int32) % c
    variables = diffusion.ema_variables(state)
    draw = lambda s, _: (s, sampler_lib.sample_for_labels(  # pylint: disable=g-long-lambda
        fn, variables, labels, jax.random.PRNGKey(1), shape, mesh, batch))
    compile_s, seconds, _ = step_timer.time_for(draw, None, None, window, sync=sync,
                                                min_steps=1)
    ctx.rates["sampling"] = batch / seconds
    return dict(name=row["name"], compile_s=compile_s, images_per_s=batch / seconds,
                network_evals_per_s=batch / seconds * (2 * settings.num_steps - 1))

  def features(row, window):
    from lnrd.metrics import inception  # pylint: disable=g-import-not-at-top
    net = inception.InceptionFeatures(inception.random_variables(), mesh=mesh)
    batch = row["batch"]
    x = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    compile_s, seconds, _ = step_timer.time_for(lambda s, _: (s, net(x)), None, None, window,
                                                sync=sync, min_steps=1)
    ctx.rates["inception"] = batch / seconds
    return dict(name=row["name"], compile_s=compile_s, images_per_s=batch / seconds)

  rows = [dict(name=f"ddpmpp CIFAR-10 Heun-{sizes.heun_steps} batch {b}", fn=sampling, batch=b)
          for b in sizes.sample_batches]
  rows += [dict(name=f"FID Inception batch {b}", fn=features, batch=b)
           for b in sizes.feature_batches]
  run_rows("sampling", rows, lambda row, window: row["fn"](row, window), ctx.budget,
           ctx.part_seconds("sampling"), ctx.results,
           first_compile=sizes.first_compile["sampling"], max_window=sizes.max_window)
  if "sampling" in ctx.rates and "inception" in ctx.rates:
    n = 50_000
    seconds = n / ctx.rates["sampling"] + 2 * n / ctx.rates["inception"]
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


def _smoke_digits(path: str, seed: int = 0) -> str:
  """A tiny digit-like npz (a bright square per class) in `make_data`'s layout."""
  rng = np.random.default_rng(seed)

  def make(n):
    labels = rng.integers(0, 10, n).astype(np.int32)
    x = rng.integers(0, 40, (n, 28, 28, 1)).astype(np.uint8)
    for i, c in enumerate(labels):
      r, col = divmod(int(c), 4)
      x[i, 7 * r:7 * r + 7, 7 * col:7 * col + 7] = 230
    return x, labels
  (xt, yt), (xs, ys) = make(512), make(256)
  np.savez(path, train_images=xt, train_labels=yt, test_images=xs, test_labels=ys)
  return path


def _train_for(name: str, train_step, state, data: train_data.InMemoryData, seconds: float,
               ctx) -> tuple[Any, dict]:
  """Runs `train_step` through the library's loop for about `seconds` in all (the step
  count from a measured step time; at most `sizes.mnist_max_steps`), checkpoints in
  OUT/mnist/<name>."""
  start = time.perf_counter()
  step = loop.jit_step(train_step, data.drawer())
  probe = jax.tree.map(jax.numpy.copy, state)  # the step donates its state
  compile_s, per_step, _ = step_timer.time_for(step, probe, data.train_inputs(0),
                                               min(3.0, seconds / 10),
                                               sync=mesh_lib.needs_step_sync(ctx.mesh),
                                               min_steps=2)
  total = max(2, int((seconds - (time.perf_counter() - start)) / per_step))
  total = min(total, ctx.sizes.mnist_max_steps or total)
  workdir = os.path.join(ctx.out, "mnist", name)
  result = loop.run(state, step, data.train_inputs, total_steps=total, workdir=workdir,
                    settings=loop.LoopSettings(log_every_steps=max(1, total // 10),
                                               checkpoint_every_steps=max(1, total)),
                    mesh=ctx.mesh, writer=writers.create_writer(workdir),
                    items_per_step=data.batch_size)
  info = dict(name=name, steps=result.step, kimg=result.step * data.batch_size / 1000,
              seconds=result.seconds, compile_s=compile_s,
              loss=result.train_metrics.get("loss", float("nan")))
  return result.state, info


def part_mnist(ctx) -> None:
  budget, sizes = ctx.budget, ctx.sizes
  part = ctx.part_seconds("mnist")
  path = _smoke_digits(os.path.join(ctx.out, "smoke_digits.npz")) if ctx.smoke else ctx.data
  if not path:
    ctx.results.note("mnist", "skipped: no --data (make it with --make_data)")
    return
  if budget.strict and (not budget.fits(0.5 * part) or part < sizes.mnist_min_part):
    ctx.results.note("mnist", f"skipped: {part:.0f} s left for it, too little for three "
                     "trainings and the evaluation")
    return
  # Real MNIST (train and test) with 40% symmetric noise drawn once from seed 0, on the
  # devices, as task=noisy_classifier / task=diffusion load it.
  splits = train_data.prepare_splits(
      loading.DatasetSpec(name="mnist", source="npz", path=path),
      noise.NoiseSpec(kind="sym", rate=0.4, convention="tdsm"), seed=0, num_classes=10)
  data = train_data.InMemoryData(splits, ctx.mesh, batch_size=sizes.mnist_batch,
                                 eval_batch_size=sizes.mnist_batch, seed=0)
  c = splits.num_classes
  shape = images_lib.model_input_shape(data.input_shape, 32)
  # A quarter of the part is kept for sampling and CAS; the trainings share the rest.
  shares = {"classifier": 0.15, "dsm": 0.3, "tdsm": 0.3}
  precond = edm.get_preconditioning("edm")
  pipe = augment_lib.edm_cifar_pipe(p=0.12)
  pad = lambda images: images_lib.to_model_range(images, pad_to=32)
  # Warm-ups and the EMA half-life scaled to the run (the paper's 10 Mimg warm-up and
  # 500 kimg half-life assume 200 Mimg): a tenth of the images the run sees, from the
  # throughput the steps part measured (or the assumed one).
  images_per_s = ctx.rates.get("ddpmpp_mnist", sizes.mnist_images_per_s)
  guess_kimg = max(1.0, 0.1 * part * images_per_s / 1000)

  classifier = time_classifier.get_time_classifier("cnn", c, **sizes.classifier_kwargs)
  tx = edm.adam_with_warmup(1e-3, warmup_kimg=0.1 * guess_kimg, batch_size=data.batch_size)
  state = time_classifier.init_state(classifier, tx, shape, c, jax.random.PRNGKey(11),
                                     mesh=ctx.mesh)
  step = time_classifier.make_train_step(classifier, tx, precond=precond,
                                         transition=splits.transition, augment=pipe,
                                         preprocess=pad)
  state, info = _train_for("classifier", step, state, data, shares["classifier"] * part, ctx)
  ctx.results.add("mnist", **info)
  exported = lnrd_runs.ExportedClassifier(
      "cnn", classifier, {"params": state.params["net"], **state.model_state},
      np.asarray(splits.transition), learned=False, noisy_target=False, input_shape=shape)
  weight_fn = diffusion.classifier_weights(exported, "released")  # as task=diffusion

  trained = {}
  for name, objective in (("dsm", diffusion.dsm_objective(precond)),
                          ("tdsm", diffusion.tdsm_objective(precond, weight_fn))):
    model = diffusion.build_network("ddpmpp_mnist", shape, c, augment_dim=pipe.augment_dim,
                                    dropout=0.13, **sizes.unet)
    tx = edm.adam_with_warmup(1e-3, warmup_kimg=0.1 * guess_kimg, batch_size=data.batch_size)
    state = diffusion.init_state(model, tx, shape, c, jax.random.PRNGKey(0), ctx.mesh)
    step = diffusion.make_train_step(
        model, tx, objective, precond=precond, num_classes=c, augment=pipe, preprocess=pad,
        ema_decay=ema.edm_schedule(data.batch_size, min(500.0, 0.1 * guess_kimg)))
    state, info = _train_for(name, step, state, data, shares[name] * part, ctx)
    ctx.results.add("mnist", **info)
    trained[name] = (model, diffusion.ema_variables(state))

  from lnrd.metrics import cas  # pylint: disable=g-import-not-at-top
  labels = sampler_lib.class_balanced_labels(sizes.per_class, c)
  settings = sampler_lib.SamplerSettings(num_steps=sizes.heun_steps)
  for name, (model, variables) in trained.items():
    if not budget.fits(sizes.eval_need):
      ctx.results.note("mnist", f"skipped the evaluation of {name}: {budget.left():.0f} s left")
      continue
    start = time.perf_counter()
    fn = diffusion.make_sampler(model, precond, c, ctx.mesh, settings)
    samples = sampler_lib.sample_for_labels(fn, variables, labels, jax.random.PRNGKey(2), shape,
                                            ctx.mesh, sizes.sample_batch)
    fake = images_lib.crop_to(images_lib.images_to_uint8(samples), data.input_shape)
    sample_s = time.perf_counter() - start
    score = cas.classification_accuracy_score(
        fake, labels, splits.test_images, splits.test_labels, dataset="mnist",
        workdir=os.path.join(ctx.out, "mnist", f"cas_{name}"), epochs=sizes.cas_epochs,
        batch_size=sizes.cas_batch)
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
  rates: dict = dataclasses.field(default_factory=dict)  # images/s measured so far

  @property
  def sizes(self) -> Sizes:
    return SMOKE if self.smoke else FULL

  def part_seconds(self, part: str) -> float:
    """The part's share of the budget left (the last selected part takes all of it)."""
    remaining = [p for p in self.parts if p in PARTS[PARTS.index(part):]]
    share = 1.0 if remaining[-1] == part else self.sizes.shares[part]
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
  earlier = os.path.join(args.out, "mnist")
  if "mnist" in parts and os.path.isdir(earlier) and os.listdir(earlier):
    parser.error(f"--out={args.out!r} holds an earlier campaign's MNIST runs ({earlier}), "
                 "which the mnist part would resume instead of training afresh: use a new "
                 "--out or move that folder away")
  budget = Budget(60 * args.budget_min, margin=(SMOKE if args.smoke else FULL).margin,
                  strict=not args.smoke)  # the smoke run never skips for time
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
