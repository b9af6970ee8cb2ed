"""The SGN authors' training protocol as options: L2 over kernels and biases only, a
linear learning-rate warm-up, the last rows as validation split, SOP's batch-wide
normalisation, InceptionResNetV2's BatchNorm, model selection and a required
pretrained start; each against an independent reference, and the paper cells that
set them (ErikEnglesson/SGN@cebd960)."""

import json
import pathlib
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar10_sym
from configs import clothing1m
from configs import mnist_sym
from configs import tiny_test
from configs import webvision
from sgn_jax import classification
from sgn_jax import losses
from sgn_jax import methods
from sgn_jax import models
from sgn_jax import train_data
from sgn_jax.data import loading
from sgn_jax.models.inception_resnet_v2 import ConvBN
from sgn_jax.models.inception_resnet_v2 import InceptionResNetV2
from sgn_jax.tasks import classify

from test_baselines import _np_sop
from test_classification import _assert_trees_close, _env, _latest_state, _main, _tiny, REPO

# ---- L2 over kernels and biases only ----------------------------------------------


class _Mixed(nn.Module):
  """Conv and Dense with biases, a BatchNorm with and one without a scale, named so
  that no name says "bn" or "batch_norm"."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(3, (3, 3), use_bias=True, name="stem")(x)
    x = nn.BatchNorm(use_running_average=not train, name="stem_norm")(x)
    x = nn.Conv(4, (1, 1), use_bias=False, name="proj")(x)
    x = nn.BatchNorm(use_running_average=not train, use_scale=False, name="gate")(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(5, name="head")(x)


def _numpy_sum(tree, keep):
  """sum(w^2) in float64 over the leaves whose '/'-joined path `keep` accepts."""
  total = 0.0
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if keep(name):
      total += float(np.sum(np.asarray(leaf, np.float64) ** 2))
  return total


def test_l2_no_batchnorm_excludes_batchnorm_scale_and_bias_only():
  variables = _Mixed().init(jax.random.PRNGKey(0), jnp.ones((2, 6, 6, 2)))
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
  # Give every leaf a distinct non-trivial value (BN starts at scale 1, bias 0).
  params = jax.tree.map(lambda p: p + 0.3, params)
  kept = {"stem/kernel", "stem/bias", "proj/kernel", "head/kernel", "head/bias"}
  batchnorm = {"stem_norm/scale", "stem_norm/bias", "gate/bias"}
  names = {"/".join(str(k.key) for k in path)
           for path, _ in jax.tree_util.tree_leaves_with_path(params)}
  assert names == kept | batchnorm
  mask = losses.l2_mask(params, state, "no_batchnorm")
  np.testing.assert_allclose(float(losses.l2_penalty(params, mask)),
                             _numpy_sum(params, lambda n: n in kept), rtol=1e-6)
  np.testing.assert_allclose(float(losses.l2_penalty(params, losses.l2_mask(params, state))),
                             _numpy_sum(params, lambda n: True), rtol=1e-6)
  np.testing.assert_allclose(float(losses.l2_penalty(params)),
                             _numpy_sum(params, lambda n: True), rtol=1e-6)
  with pytest.raises(ValueError, match="l2_params='bn'.*no_batchnorm"):
    losses.l2_mask(params, state, "bn")


@pytest.mark.parametrize("name,kwargs,shape", [
    ("wrn", dict(depth=10, width=1), (32, 32, 3)),
    ("inception_resnet_v2", dict(block_repeats=(1, 1, 1), bn_scale=True), (75, 75, 3)),
])
def test_l2_no_batchnorm_on_the_library_backbones(name, kwargs, shape):
  """Against the modules' own naming: WRN's bn1/bn2/final_bn, Inception's */bn; the
  Inception residual "up" convolutions keep their biases in the penalty."""
  model = models.get_model(name, 7, **kwargs)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(1), jnp.zeros((1,) + shape)))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), shapes)
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}

  def is_bn(n):
    return n.split("/")[-2] in ("bn", "bn1", "bn2", "final_bn")
  assert any(n.endswith("up/bias") for n in _names(params)) == (name != "wrn")
  mask = losses.l2_mask(params, state, "no_batchnorm")
  got = float(jax.jit(lambda p: losses.l2_penalty(p, mask))(params))
  np.testing.assert_allclose(got, _numpy_sum(params, lambda n: not is_bn(n)), rtol=1e-5)
  assert got < float(jax.jit(losses.l2_penalty)(params))


def _names(tree):
  return ["/".join(str(k.key) for k in path)
          for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def test_the_train_step_penalises_the_masked_weights():
  """loss(weight_decay) - loss(0) = weight_decay * the NumPy sum, for both modes."""
  model = _Mixed()
  method = methods.get_method("ce")
  tx = classification.sgd(0.0)
  state = classification.init_state(model, tx, (6, 6, 2), jax.random.PRNGKey(0))
  batch = {"image": jnp.ones((4, 6, 6, 2)), "label": jnp.arange(4) % 5}
  params = state.params
  sums = {"all": _numpy_sum(params, lambda n: True),
          "no_batchnorm": _numpy_sum(params, lambda n: n.split("/")[0] in ("stem", "proj",
                                                                           "head"))}
  for mode, expected in sums.items():
    values = []
    for wd in (0.0, 0.5):
      step = classification.make_train_step(model, method, tx, num_classes=5, steps_per_epoch=1,
                                            weight_decay=wd, l2_params=mode)
      _, metrics = jax.jit(step)(state, batch, jax.random.PRNGKey(0))
      values.append(float(metrics["loss"]))
    np.testing.assert_allclose(values[1] - values[0], 0.5 * expected, rtol=1e-5)
  with pytest.raises(ValueError, match="l2_params='none'"):
    classification.make_train_step(model, method, tx, num_classes=5, steps_per_epoch=1,
                                   l2_params="none")


# ---- the learning rate's warm-up ---------------------------------------------------


def _python_lr(step, lr, spe, warmup, decay_epochs=(), factor=0.1):
  """UB's AddWarmupDecaySchedule around a piecewise-constant schedule, plainly."""
  warmup_steps = round(warmup * spe)
  if step < warmup_steps:
    return lr * step / warmup_steps
  return lr * factor ** sum(step >= e * spe for e in decay_epochs)


@pytest.mark.parametrize("warmup,decay", [(1.0, ()), (1.5, (3,)), (0.0, (2,)), (0.25, ())])
def test_warmup_schedule_matches_plain_python(warmup, decay):
  spe = 8
  schedule = classification.learning_rate_schedule(
      0.02, decay_epochs=decay, decay_factor=0.1, warmup_epochs=warmup, steps_per_epoch=spe)
  for step in range(5 * spe):
    got = float(schedule(step)) if callable(schedule) else schedule
    assert got == pytest.approx(_python_lr(step, 0.02, spe, warmup, decay), rel=1e-6), step


def test_sgd_takes_the_warmed_up_rate():
  """Plain SGD (no momentum) on a constant gradient moves by -lr(t) at step t."""
  tx = classification.sgd(0.1, momentum=0.0, nesterov=False, warmup_epochs=1.0,
                          steps_per_epoch=4)
  params = {"w": jnp.zeros(())}
  opt_state = tx.init(params)
  moves = []
  for _ in range(6):
    updates, opt_state = tx.update({"w": jnp.ones(())}, opt_state, params)
    moves.append(-float(updates["w"]))
  np.testing.assert_allclose(moves, [0.0, 0.025, 0.05, 0.075, 0.1, 0.1], rtol=1e-6)


# ---- the validation split -----------------------------------------------------------


def test_last_val_split_holds_out_the_last_rows_for_every_seed():
  for seed in (0, 1, 42):
    train, val = loading.split_validation(50_000, 0.1, seed, mode="last")
    np.testing.assert_array_equal(val, np.arange(45_000, 50_000))
    np.testing.assert_array_equal(train, np.arange(45_000))
  _, random_val = loading.split_validation(50_000, 0.1, 0)
  assert not np.array_equal(random_val, np.arange(45_000, 50_000))
  with pytest.raises(ValueError, match="mode='first'"):
    loading.split_validation(10, 0.1, 0, mode="first")


def test_last_val_split_through_prepare_splits():
  """The held-out rows are the last n rows of the dataset in its order, whatever the
  seed (the 2-D mixture: its rows are known without the split)."""
  spec = loading.DatasetSpec(name="gmm2d", source="gmm",
                             gmm=dict(num_classes=4, num_train=400, num_test=40),
                             val_split="last")
  dataset = loading.load_dataset(spec)
  from sgn_jax import noise  # pylint: disable=g-import-not-at-top
  for seed in (0, 3):
    splits = train_data.prepare_splits(spec, noise.NoiseSpec(kind="sym", rate=0.2), seed=seed,
                                       val_fraction=0.1)
    np.testing.assert_array_equal(splits.val_images, dataset.train_images[-40:])
    np.testing.assert_array_equal(splits.train_images, dataset.train_images[:-40])
    np.testing.assert_array_equal(splits.train_clean_labels, dataset.train_labels[:-40])
  with pytest.raises(ValueError, match="dataset.val_split='end'.*random, last"):
    loading.check_dataset_spec(dict(name="gmm2d", source="gmm", val_split="end"))


# ---- SOP's normalisation --------------------------------------------------------------


@pytest.mark.parametrize("normalization", ["row", "batch"])
def test_sop_method_normalization_against_numpy(normalization):
  rng = np.random.default_rng(0)
  b, k = 16, 10
  logits = rng.normal(size=(b, k)).astype(np.float32)
  labels = rng.integers(0, k, b)
  u = rng.normal(scale=0.3, size=(b, 1)).astype(np.float32)
  v = rng.normal(scale=0.3, size=(b, k)).astype(np.float32)
  method = methods.get_method("sop", {"normalization": normalization})
  per_example, _, _ = method.loss(methods.LossInputs(
      outputs=jnp.asarray(logits), labels=jnp.asarray(labels),
      example_state={"u": jnp.asarray(u), "v": jnp.asarray(v)}, ema_outputs=None,
      epoch=jnp.zeros(()), key=jax.random.PRNGKey(0), num_classes=k))
  reference = _np_sop(logits.astype(np.float64), labels, u.astype(np.float64),
                      v.astype(np.float64), k, normalization=normalization)
  np.testing.assert_allclose(per_example, reference, rtol=1e-4, atol=1e-5)


def test_sop_normalization_is_checked_and_defaults_to_the_papers():
  assert methods.get_method("sop").args["normalization"] == "row"
  with pytest.raises(ValueError, match="method_args.normalization='col'.*'row', 'batch'"):
    methods.get_method("sop", {"normalization": "col"})


# ---- InceptionResNetV2's BatchNorm ------------------------------------------------------


def test_convbn_momentum_and_scale_against_numpy():
  x = np.random.default_rng(0).normal(size=(4, 5, 5, 3)).astype(np.float32)
  for momentum, scale in ((0.9, True), (0.99, False)):
    layer = ConvBN(6, 1, bn_momentum=momentum, bn_scale=scale)
    variables = layer.init(jax.random.PRNGKey(0), jnp.asarray(x))
    assert ("scale" in variables["params"]["bn"]) == scale
    _, updated = layer.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    kernel = np.asarray(variables["params"]["conv"]["kernel"])[0, 0]  # (3, 6): a 1x1 conv
    y = x.reshape(-1, 3).astype(np.float64) @ kernel
    np.testing.assert_allclose(updated["batch_stats"]["bn"]["mean"],
                               (1 - momentum) * y.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(updated["batch_stats"]["bn"]["var"],
                               momentum + (1 - momentum) * y.var(0), rtol=1e-4, atol=1e-6)


def test_inception_bn_fields_reach_every_batchnorm_and_the_config():
  small = dict(block_repeats=(1, 1, 1))
  keras = InceptionResNetV2(num_outputs=5, **small).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3)))
  authors = InceptionResNetV2(num_outputs=5, bn_scale=True, **small).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3)))
  bn_channels = sum(int(np.prod(p.shape)) for n, p in zip(
      _names(authors["batch_stats"]), jax.tree.leaves(authors["batch_stats"]))
      if n.endswith("/mean"))
  count = lambda tree: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))
  assert count(authors["params"]) - count(keras["params"]) == bn_channels
  assert not any(n.endswith("/scale") for n in _names(keras["params"]))
  config = webvision.get_config()
  model = classification.build_model(config.model.name, 50, classify.method_of(config),
                                     **classify.model_kwargs(config))
  assert (model.bn_momentum, model.bn_scale) == (0.9, True)
  assert InceptionResNetV2().bn_momentum == 0.99 and not InceptionResNetV2().bn_scale


# ---- the paper cells and everything else ----------------------------------------------


def test_paper_cells_set_the_authors_protocol():
  c1m = clothing1m.get_config()
  assert (c1m.optim.nesterov, c1m.optim.weight_decay, c1m.optim.l2_params) == (
      False, 2.5e-3, "no_batchnorm")
  assert c1m.optim.warmup_epochs == 0.0 and c1m.optim.lr_decay_epochs == (5,)
  assert (c1m.model.name, c1m.model_pretrained, c1m.model_pretrained_required) == (
      "resnet50_keras", "", True)
  assert c1m.select.to_dict() == dict(split="val", metric="accuracy", after_epochs=0.0)
  wv = webvision.get_config()
  assert (wv.optim.nesterov, wv.optim.weight_decay, wv.optim.l2_params) == (
      False, 2.5e-4, "no_batchnorm")
  assert (wv.optim.warmup_epochs, wv.num_epochs) == (1.0, 600)
  assert (wv.model.bn_momentum, wv.model.bn_scale) == (0.9, True)
  assert wv.select.to_dict() == dict(split="test", metric="accuracy", after_epochs=76.0)
  for arg in ("method=sop", "method=sop,rate=0.2"):
    cifar = cifar10_sym.get_config(arg)
    assert cifar.method_args.normalization == "batch" and cifar.dataset.val_split == "last"
  settings = classify.settings(wv)
  assert (settings.l2_params, settings.warmup_epochs, settings.select) == (
      "no_batchnorm", 1.0, classification.Selection("test", "accuracy", 76.0))


@pytest.mark.parametrize("module,arg", [(tiny_test, "method=sop"), (mnist_sym, "method=sop")])
def test_other_configs_keep_todays_behaviour(module, arg):
  config = module.get_config(arg)
  assert (config.optim.l2_params, config.optim.warmup_epochs) == ("all", 0.0)
  assert config.select.split == "" and config.dataset.val_split == "random"
  assert config.method_args.normalization == "row"
  settings = classify.settings(config)
  assert settings.select == classification.Selection() and settings.pretrained == ""
  assert settings.dataset.val_split == "random"


# ---- model selection ------------------------------------------------------------------


def _evaluations(workdir, key):
  """{step: value} of `key` in metrics.jsonl, the last record of each step."""
  out = {}
  for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    if key in record:
      out[record["step"]] = record
  return out


# The learning rate is high enough for the accuracy to move between epochs, so the
# selected evaluation is not the last.
_SELECT = {"select.split": "test", "select.metric": "accuracy", "select.after_epochs": 1.0,
           "optim.learning_rate": 0.5, "log_every_steps": 4}


@pytest.mark.parametrize("arg,reported,lr", [("epochs=6", "test", 0.5),
                                             ("epochs=6,method=sgn", "ema_test", 0.05)])
def test_selected_epoch_is_the_first_argmax_after_after_epochs(tmp_path, arg, reported, lr):
  config = _tiny(arg, **{**_SELECT, "optim.learning_rate": lr})
  metrics = classify.train_and_evaluate(config, str(tmp_path))
  steps_per_epoch = 2048 // 64
  evaluations = _evaluations(tmp_path, f"{reported}/accuracy")
  assert sorted(evaluations) == [steps_per_epoch * e for e in range(1, 7)]
  candidates = [s for s in sorted(evaluations) if s / steps_per_epoch > 1.0]
  values = [evaluations[s][f"{reported}/accuracy"] for s in candidates]
  best = candidates[int(np.argmax(values))]  # the first maximum
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert saved["selected/step"] == best and saved["selected/epoch"] == best / steps_per_epoch
  prefix = reported[:-len("test")]
  for key in ("test/accuracy", "test/nll", "test/ece"):
    assert saved[f"selected/{key}"] == pytest.approx(evaluations[best][prefix + key], abs=1e-6)
  assert saved["selected/test_accuracy"] == saved["selected/test/accuracy"]
  assert saved["final/test_accuracy"] == metrics[f"{reported}/accuracy"]  # the last, kept
  if arg == "epochs=6":
    assert best != max(evaluations), "choose a case whose best evaluation is not the last"
  # The kept net is the reported net of that evaluation: it scores the same again.
  _, state = _latest_state(tmp_path)
  kept = state["extra"]["selected"]
  assert int(kept["step"]) == best
  assert float(kept["value"]) == pytest.approx(evaluations[best][f"{reported}/accuracy"])


def test_selection_survives_a_resume(tmp_path):
  config = _tiny("epochs=6", **_SELECT)
  full = classify.train_and_evaluate(config, str(tmp_path / "full"))
  config.stop_after_steps = 100  # after the best evaluation, before the end
  part = classify.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert part["completed"] == 0.0 and part["selected/step"] >= 0
  config.stop_after_steps = 0
  resumed = classify.train_and_evaluate(config, str(tmp_path / "resumed"))
  for key, value in full.items():
    if key.startswith("selected/"):
      assert resumed[key] == value, key
  _, a = _latest_state(tmp_path / "full")
  _, b = _latest_state(tmp_path / "resumed")
  _assert_trees_close(a["extra"], b["extra"], rtol=0, atol=0)


def test_no_candidate_yet_reports_step_minus_one(tmp_path):
  metrics = classify.train_and_evaluate(
      _tiny("epochs=1", **{"select.split": "test", "select.after_epochs": 5.0}), str(tmp_path))
  assert metrics["selected/step"] == -1 and "selected/test/accuracy" not in metrics


@pytest.mark.parametrize("key,value,match", [
    ("select.split", "val", r"select.split='val'.*\['test'\].*val_fraction"),
    ("select.metric", "f1", r"select.metric='f1'.*'accuracy', 'nll', 'ece'"),
    ("select.after_epochs", -1.0, "select.after_epochs=-1.0 must be >= 0"),
    ("optim.l2_params", "bn", "optim.l2_params='bn'.*no_batchnorm"),
    ("optim.warmup_epochs", -0.5, "optim.warmup_epochs=-0.5 must be >= 0"),
    ("dataset.val_split", "first", "dataset.val_split='first'.*random, last"),
])
def test_bad_new_keys_fail_before_any_data(tmp_path, key, value, match):
  config = _tiny(**{"select.split": "test", key: value})
  with pytest.raises(ValueError, match=match):
    classify.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "config.json").exists()


# ---- Clothing1M's pretrained start ---------------------------------------------------


def test_clothing1m_without_weights_stops_before_reading_data(tmp_path):
  """No manual_dir or data_dir is given: the weights are checked first."""
  result = subprocess.run(_main(tmp_path / "run", config="configs/clothing1m.py"),
                          env=_env(1), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  message = result.stderr.strip().splitlines()[-1]
  assert message.startswith("error: model_pretrained is empty"), message
  for part in ("--config.model_pretrained=PATH", "resnet50_weights_tf_dim_ordering_tf_kernels"
               "_notop.h5", "https://storage.googleapis.com/tensorflow/keras-applications/"
               "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
               "tf.keras.applications.ResNet50(weights='imagenet', include_top=False)",
               "~/.keras/models/", "--config.model_pretrained=none",
               "Caffe-preprocessed", "Clothing1M mean / std"):  # what the weights expect
    assert part in message, (part, message)
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run" / "config.json").exists()


def test_pretrained_none_trains_from_scratch_and_files_are_checked():
  config = clothing1m.get_config()
  config.model_pretrained = "none"
  classify.validate_config(config)
  assert classify.settings(config).pretrained == ""
  config.model_pretrained = "/nowhere/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
  with pytest.raises(FileNotFoundError, match="/nowhere/resnet50_weights"):
    classify.validate_config(config)
  webvision_config = webvision.get_config()  # no pretrained weights in this cell
  assert "model_pretrained" not in webvision_config
  classify.validate_config(webvision_config)
  small = tiny_test.get_config()
  small.model_pretrained = "/nowhere/w.npz"  # only ResNets take pretrained weights
  with pytest.raises(ValueError, match="model.name='mlp'"):
    classify.validate_config(small)


# ---- SGN's and LN's WRN heads -----------------------------------------------------------


def test_wrn_glorot_head_groups_against_numpy():
  model = models.get_model("wrn", 18, depth=10, width=1, head_init="glorot_uniform",
                           head_groups=(9, 9))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8, 8, 3)), jnp.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x)
  params = variables["params"]
  assert "classifier" not in params
  features = jax.jit(model.clone(head=False).apply)(variables, x)  # (3, 64)
  outputs = jax.jit(model.apply)(variables, x)
  expected = []
  for i in range(2):
    kernel = np.asarray(params[f"classifier_{i}"]["kernel"], np.float64)
    assert kernel.shape == (64, 9)
    limit = np.sqrt(6.0 / (64 + 9))  # each layer's own glorot limit, not (64 + 18)'s
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit
    np.testing.assert_array_equal(params[f"classifier_{i}"]["bias"], 0.0)
    expected.append(np.asarray(features, np.float64) @ kernel)
  np.testing.assert_allclose(outputs, np.concatenate(expected, -1), rtol=1e-4, atol=1e-5)
  default = jax.eval_shape(models.get_model("wrn", 18, depth=10, width=1).init,
                           jax.random.PRNGKey(0), x)
  assert "classifier" in default["params"] and "classifier_0" not in default["params"]
  with pytest.raises(ValueError, match=r"head_groups=\(9, 8\).*num_outputs=18"):
    models.get_model("wrn", 18, depth=10, head_groups=(9, 8))
  with pytest.raises(ValueError, match="head_init='lecun'"):
    models.get_model("wrn", 18, depth=10, head_init="lecun")


def test_cifar_cells_give_sgn_and_ln_the_authors_heads():
  for method, groups in (("sgn", (9, 9)), ("ln", (10, 10))):
    config = cifar10_sym.get_config(f"method={method}")
    assert (config.model.head_init, tuple(config.model.head_groups)) == (
        "glorot_uniform", groups)
    model = classification.build_model(config.model.name, 10, classify.method_of(config),
                                       **classify.model_kwargs(config))
    assert (model.head_init, tuple(model.head_groups), model.num_outputs) == (
        "glorot_uniform", groups, sum(groups))
    classify.validate_config(config)
  assert cifar10_sym.get_config("method=sgn,rate=0.2").model.head_groups == (9, 9)
  for method in ("ce", "sop", "het", "nal"):
    assert "head_init" not in cifar10_sym.get_config(f"method={method}").model
  assert "head_init" not in mnist_sym.get_config("method=sgn").model
  config = cifar10_sym.get_config("method=sgn")
  config.method_args.covariance = "isotropic"  # 9 + 1 outputs: the groups no longer fit
  with pytest.raises(ValueError, match=r"model.head_groups=\(9, 9\).*\(9, 1\)"):
    classify.validate_config(config)
