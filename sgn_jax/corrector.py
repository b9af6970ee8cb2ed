r"""Label correction by a trained classifier: new labels and their estimated noise.

    python -m sgn_jax.corrector --run_dir=CLASSIFY_WORKDIR [--out=PATH]

A classifier trained on the noisy labels (`task="classify"`, e.g. SGN with its
EMA label correction) predicts a label for every training example. Those
labels, with an estimate of their own remaining noise, are what a label-noise
robust diffusion model trains on next (the TDSM paper's corrector -> TDSM
pipeline; `lnrd.tasks.pipeline` runs the chain). Set `noise.labels_file` to the npz
to train any run on them. Written next to the run (RUN_DIR):

  corrected_labels.npz
    labels      y^_n = argmax_c p(c | x_n), int32 (n,), the dataset's original
                training order (before any validation split)
    transition  the estimated T[y, y^] = p(y^ | y) of the corrected labels,
                mixed with the uniform matrix, (1 - eps) T^ + eps / C, so that it
                stays invertible (eps = `floor`). `estimator`:
                  moment          from the confusion of corrected and given labels
                                  and the noise's T (`moment_transition`); the
                                  default ("auto") when the noise has a T
                  soft_confusion  T^[i, j] = sum_n p(i | x_n) 1[y^_n = j] /
                                  sum_n p(i | x_n): needs no T, but is only as good
                                  as the classifier's calibration (an
                                  over-confident one gives T^ ~ I)
    probs       p(c | x_n), float32 (n, C)
  correction.json
    agreement with the noisy labels, accuracy against the clean labels (known
    for synthetic noise), the true transition of the corrected labels
    (`noise.empirical_transition(clean, y^)`) and max |T^ - T_true|.

Which parameters predict (`params`): "net", "ema", or "best" (default): of the
two, the one whose predictions agree more with the given noisy labels on the
training set (selection on noisy labels only, as SGN's noisy validation set;
under class-conditional noise with a dominant diagonal, higher agreement with
the noisy labels means higher clean accuracy). A short run's EMA (decay 0.9999
over a few thousand steps) still carries its initialisation, so "best" picks
the net there. Restored from RUN_DIR/checkpoints.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from sgn_jax import classification
from sgn_jax import methods as methods_lib
from sgn_jax import noise
from sgn_jax import noise_estimation
from sgn_jax import runs
from sgn_jax import train_data
from sgn_jax.data import loading
from sgn_jax.training import mesh as mesh_lib

LABELS_FILE = "corrected_labels.npz"
REPORT_FILE = "correction.json"


def _mix_uniform(estimate: np.ndarray, floor: float) -> np.ndarray:
  """(1 - floor) T^ + floor / C: keeps the estimate invertible."""
  return (1.0 - floor) * estimate + floor / estimate.shape[0]


def soft_confusion_transition(probs, predicted, floor: float = 1e-3) -> np.ndarray:
  """T^[i, j] = sum_n p(i | x_n) 1[y^_n = j] / sum_n p(i | x_n), mixed with uniform.

  `probs` (n, C) posteriors, `predicted` (n,) the corrected labels. A class no
  posterior mass reaches keeps the identity row. Returns (1 - floor) T^ +
  floor / C, row-stochastic, float64 (`noise_estimation.soft_confusion_transition`
  with the floor).
  """
  probs = np.asarray(probs, np.float64)
  n, _ = probs.shape
  predicted = np.asarray(predicted)
  if predicted.shape != (n,):
    raise ValueError(f"predicted has shape {predicted.shape}; expected ({n},)")
  if not 0.0 <= floor < 1.0:
    raise ValueError(f"floor={floor} must be in [0, 1)")
  return _mix_uniform(noise_estimation.soft_confusion_transition(probs, predicted), floor)


def moment_transition(given, predicted, noise_transition, floor: float = 1e-3) -> np.ndarray:
  """T^[y, j] = p(y^ = j | y) from the given noisy labels and their noise T.

  If the corrector's errors and the label noise are independent given the clean
  label, the observed confusion of corrected and given labels is
    O[j, k] = p(y~ = k | y^ = j) = sum_y R[j, y] T[y, k],   R[j, y] = p(y | y^ = j),
  so R = O T^-1 (each row clipped at 0 and renormalised), and by Bayes
    T^[y, j] = R[j, y] p(y^ = j) / sum_j' R[j', y] p(y^ = j')
  (`noise_estimation.moment_transition`). Mixed with the uniform matrix like
  `soft_confusion_transition`. Needs an invertible T (`noise.check_invertible`);
  unlike the soft confusion it does not rely on the classifier's calibration.
  """
  estimate = noise_estimation.moment_transition(predicted, given, noise_transition)
  if not 0.0 <= floor < 1.0:
    raise ValueError(f"floor={floor} must be in [0, 1)")
  return _mix_uniform(estimate, floor)


def restore_classifier(run: runs.Run, mesh):
  """(predict_probs, {"net"|"ema": (params, model_state)}) of a classify run's latest
  checkpoint, its model rebuilt from the run record (`sgn_jax.runs`).

  predict_probs(params, model_state, images) -> p(c | x) (`make_predict_probs`).
  """
  record = run.record
  if "model" not in record:
    raise runs.RunError(f"{run.workdir!r} has no run record with its model (run.json); it was "
                        "written by an older version: retrain it")
  method = methods_lib.get_method(record["method"], record.get("method_args") or {})
  model_fields = dict(record["model"])
  model = classification.build_model(model_fields.pop("name"), int(record["num_classes"]),
                                     method, **model_fields)
  try:
    tree = run.restore(mesh)
  except runs.RunNotFoundError:
    raise runs.RunNotFoundError(
        f"no checkpoint in {run.workdir}/checkpoints: train the corrector first "
        "(python main.py --config=configs/<dataset>_<noise>.py:method=sgn "
        "--workdir=RUN_DIR)") from None
  preprocess = classification.normalizer(record["input"]["mean"], record["input"]["std"])
  return classification.make_predict_probs(model, method, preprocess), {
      "net": (tree["params"], tree["model_state"]),
      "ema": (tree["ema_params"], tree["ema_model_state"])}


def predict_probs(fn, params, model_state, images: np.ndarray, batch_size: int,
                  mesh) -> np.ndarray:
  """fn(params, model_state, images) -> p(c | x) for every image, in batches padded to
  `batch_size` and sharded over `mesh` (padding dropped)."""
  fn = jax.jit(fn)
  sharding = mesh_lib.data_sharded(mesh)
  out = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    probs = fn(params, model_state, jax.device_put(jnp.asarray(chunk), sharding))
    out.append(np.asarray(jax.device_get(probs))[:batch_size - pad])
  return np.concatenate(out).astype(np.float32)


PARAMS = ("best", "net", "ema")
ESTIMATORS = ("auto", "moment", "soft_confusion")


def correct_labels(run_dir: str, out: str | None = None, *, floor: float = 1e-3,
                   params: str = "best", estimator: str = "auto", devices=None) -> dict:
  """Writes the corrected labels of the classify run in `run_dir`; returns the report."""
  run = runs.open_run(run_dir, tasks=("classify",), what="run_dir")
  record = run.record
  if record.get("dataset", {}).get("source") == "stream":
    raise ValueError("label correction needs an in-memory dataset; "
                     f"dataset.source={record['dataset']['source']!r} streams")
  if params not in PARAMS:
    raise ValueError(f"params={params!r}; allowed: {list(PARAMS)}")
  if estimator not in ESTIMATORS:
    raise ValueError(f"estimator={estimator!r}; allowed: {list(ESTIMATORS)}")
  mesh = mesh_lib.create_mesh(devices)
  probs_fn, candidates = restore_classifier(run, mesh)
  # the original order, all training examples
  dataset = loading.load_dataset(loading.DatasetSpec.from_mapping(record["dataset"]))
  batch = int(record["eval_batch_size"])
  mesh_lib.check_divisible(batch, mesh, "eval_batch_size")
  noise_spec = noise.NoiseSpec(**record["noise"])
  given, noise_transition = train_data.training_labels(noise_spec, dataset, int(record["seed"]))
  num_classes = int(record["num_classes"])
  agreement = {}
  for name in (("net", "ema") if params == "best" else (params,)):
    probs = predict_probs(probs_fn, *candidates[name], dataset.train_images, batch, mesh)
    agreement[name] = float(np.mean(np.argmax(probs, axis=1) == given))
    if name == max(agreement, key=agreement.get):
      chosen, chosen_probs = name, probs
  probs = chosen_probs
  predicted = np.argmax(probs, axis=1).astype(np.int32)
  clean = np.asarray(dataset.train_labels)
  true_transition = noise.empirical_transition(clean, predicted, num_classes)
  estimates = {"soft_confusion": soft_confusion_transition(probs, predicted, floor)}
  if noise_transition is not None:
    estimates["moment"] = moment_transition(given, predicted, noise_transition, floor)
  if estimator == "auto":
    estimator = "moment" if "moment" in estimates else "soft_confusion"
  if estimator not in estimates:
    raise ValueError(f"estimator={estimator!r} needs the noise transition matrix, which "
                     f"this run's noise ({noise_spec.kind!r}) does not have")
  transition = estimates[estimator]
  report = {
      "run_dir": run_dir,
      "num_examples": int(len(predicted)),
      "params": chosen,
      "agreement_with_given_labels_by_params": agreement,
      "agreement_with_given_labels": float(np.mean(predicted == given)),
      "given_label_accuracy": float(np.mean(given == clean)),
      "corrected_accuracy": float(np.mean(predicted == clean)),
      "estimated_transition": transition.tolist(),
      "true_transition_of_corrected": true_transition.tolist(),
      "estimator": estimator,
      "transition_max_abs_error": float(np.max(np.abs(transition - true_transition))),
      "transition_max_abs_error_by_estimator": {
          k: float(np.max(np.abs(v - true_transition))) for k, v in estimates.items()},
      "floor": floor,
  }
  out = out or os.path.join(run_dir, LABELS_FILE)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez(out, labels=predicted, transition=transition, probs=probs)
    with open(os.path.join(os.path.dirname(os.path.abspath(out)), REPORT_FILE), "w") as f:
      json.dump(report, f, indent=2)
  logging.info("corrected labels -> %s: accuracy %.4f (given labels %.4f), max |T^ - T| %.4f",
               out, report["corrected_accuracy"], report["given_label_accuracy"],
               report["transition_max_abs_error"])
  return report


def main(argv=None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run_dir", required=True, help="workdir of a task=classify run")
  parser.add_argument("--out", default=None, help=f"default: RUN_DIR/{LABELS_FILE}")
  parser.add_argument("--floor", type=float, default=1e-3)
  parser.add_argument("--params", choices=PARAMS, default="best")
  parser.add_argument("--estimator", choices=ESTIMATORS, default="auto")
  args = parser.parse_args(argv)
  report = correct_labels(args.run_dir, args.out, floor=args.floor, params=args.params,
                          estimator=args.estimator)
  print(json.dumps({k: v for k, v in report.items() if "transition" not in k or
                    k.endswith("error")}, indent=2))


if __name__ == "__main__":
  main()
