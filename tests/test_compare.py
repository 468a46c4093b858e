"""tools/compare.py: the method list, the summary table and the figure, without training."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from tests import helpers


@pytest.fixture(scope="module")
def compare():
  spec = importlib.util.spec_from_file_location(
      "compare", os.path.join(helpers.ROOT, "tools", "compare.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules["compare"] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


def test_methods_cover_the_baselines_and_share_runs(compare):
  assert {"CE (instance sampling)", "class-balanced sampling", "cRT", "LWS", "tau-norm", "NCM",
          "logit adjustment (loss)", "logit adjustment (post-hoc)", "balanced softmax", "focal",
          "class-balanced loss", "LDAM-DRW", "CBD", "CBD_ENS"} <= set(compare.METHODS)
  options = {"decoupled_epochs": 10, "tau": {0: 1.5}, "epochs": 200}
  crt = compare.RUNS["crt"].flags("/s", 0, options)
  assert "--backbone_from=/s/ce_linear" in crt and "--decoupled_epochs=10" in crt
  assert "--decoupled_batchnorm=train" in crt
  assert "--decoupled_epochs=10" not in compare.RUNS["lws"].flags("/s", 0, {**options, "decoupled_epochs": 0})
  assert "--tau=1.5" in compare.RUNS["tau_norm"].flags("/s", 0, options)
  assert not any(f.startswith("--tau=") for f in compare.RUNS["tau_norm"].flags("/s", 1, options))
  assert "--head=linear" in compare.RUNS["focal"].flags("/s", 0, options)
  assert "--head=linear" not in compare.RUNS["ce"].flags("/s", 0, options)
  ldam = compare.RUNS["ldam_drw"].flags("/s", 0, options)
  assert "--lr_schedule=step" in ldam and "--warmup_epochs=5" in ldam
  assert "--teachers=/s/ce,/s/ce_2" in compare.RUNS["cbd_ens"].flags("/s", 0, options)
  assert compare.RUNS["cbd_ens"].needs == ("ce", "ce_2")
  assert "--seed=1000" in compare.RUNS["ce_2"].flags("/s", 0, options)
  assert compare.RUNS["la_posthoc"].posthoc_from == "ce_linear"


def test_default_method_list_parses_to_every_method(compare):
  # Method names contain commas: the default list is written with run names.
  default = compare.build_parser().parse_args([]).methods
  assert compare.parse_methods(default) == list(compare.METHODS)
  assert compare.parse_methods("ce_linear, CBD") == ["CE (instance sampling)", "CBD"]
  with pytest.raises(SystemExit, match="unknown methods.*'nope'"):
    compare.parse_methods("crt,nope")


def test_posthoc_run_reevaluates_the_trained_model(compare, tmp_path, monkeypatch):
  from cbd_tf import config as config_lib, run_dir  # pylint: disable=import-outside-toplevel
  trained = tmp_path / "ce_linear"
  trained.mkdir()
  config_lib.Config(workdir=str(trained)).save(str(trained / run_dir.CONFIG))
  for name in (run_dir.CLASSES, run_dir.FINAL_WEIGHTS):
    (trained / name).write_text(name)
  calls = []
  monkeypatch.setattr(compare, "_run_module", lambda module, args: calls.append((module, args)))
  target = tmp_path / "la_posthoc"
  compare._reevaluate(str(trained), str(target), ["--posthoc_tau=1"])
  saved = config_lib.Config.load(str(target / run_dir.CONFIG))
  assert float(saved.long_tail.posthoc_tau) == 1.0 and saved.workdir == str(target)
  assert (target / run_dir.FINAL_WEIGHTS).read_text() == run_dir.FINAL_WEIGHTS
  assert calls == [("cbd_tf.evaluate", [f"--workdir={target}"])]
  with pytest.raises(ValueError, match="posthoc_tau only"):
    compare._reevaluate(str(trained), str(target), ["--tau=1"])


def test_table_json_and_figure(compare, tmp_path):
  result = {"top1": 0.5, "many": 0.9, "medium": 0.5, "few": 0.1, "ece": 0.2}
  rows = {"CE (instance sampling)": [result, {**result, "top1": 0.7}],
          "CBD": [{**result, "few": None}, result]}
  options = {"dataset": "mnist_lt", "epochs_note": "2 epochs", "tau": {0: 1.0}, "sweeps": {}}
  table = compare.write_outputs(str(tmp_path), rows, [0, 1], options)
  lines = table.splitlines()
  assert lines[0].startswith("| method (%, mean ± std over seeds 0,1) | recipe | top-1 |")
  assert lines[2] == ("| CE (instance sampling) | classifier-balancing | 60.0 ± 14.1 | "
                      "90.0 ± 0.0 | 50.0 ± 0.0 | 10.0 ± 0.0 | 20.0 ± 0.0 |")
  assert "| CBD | CBD | 50.0 ± 0.0 |" in lines[3] and "10.0 ± 0.0" in lines[3]  # one few value
  with open(tmp_path / "compare.json") as f:
    saved = json.load(f)
  assert saved["summary"]["CE (instance sampling)"]["top1"]["values"] == pytest.approx([50, 70])
  assert os.path.getsize(tmp_path / "compare.png") > 10_000
  assert (tmp_path / "compare.md").read_text().count("|---|") == 1


def test_run_killed_before_its_evaluation_is_evaluated_not_retrained(compare, tmp_path,
                                                                      monkeypatch):
  from cbd_tf import run_dir  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "ce"
  workdir.mkdir()
  (workdir / run_dir.FINAL_WEIGHTS).write_text("weights")
  calls = []

  def run_module(module, args):
    calls.append((module, args))
    (workdir / "metrics.json").write_text(json.dumps({"top1": 0.5, "ece": 0.1}))
  monkeypatch.setattr(compare, "_run_module", run_module)
  metrics = compare.ensure_run("ce", str(tmp_path), 0, {"flagfile": "f", "overrides": []})
  assert calls == [("cbd_tf.evaluate", [f"--workdir={workdir}"])] and metrics["top1"] == 0.5


def _flag(flags, name, default=None):
  return next((f.split("=", 1)[1] for f in flags if f.startswith(f"--{name}=")), default)


# Their per-weight decay gradient, the weights it reaches, and learning rate, written out
# from each code base: PyTorch SGD(weight_decay=wd) adds wd * w to every parameter (LDAM-DRW
# 2e-4, classifier-balancing 5e-4); Cui et al. add wd * tf.nn.l2_loss(w) over every trainable
# variable, gradient wd * w (2e-4; their sigmoid / focal losses leave the last bias out:
# test_baseline_losses.py); logit adjustment's models.py puts Keras l2(1e-4) (gradient
# 2e-4 * w) on the conv and dense kernels and the dense bias only, not on BatchNorm.
# (learning rate, at batch).
THEIR_RECIPES = {
    "LDAM-DRW / Cui et al.": {"decay_gradient": 2e-4, "decays": lambda path: True,
                              "lr": 0.1, "batch": 128, "schedule": "step"},
    "classifier-balancing": {"decay_gradient": 5e-4, "decays": lambda path: True,
                             "lr": 0.2, "batch": 512, "schedule": "cosine"},
    "Menon et al.": {"decay_gradient": 2e-4, "decays": lambda path: "_bn" not in path,
                     "lr": 0.1, "batch": 128, "schedule": None},
}


def decay_gradients(weight_decay):
  """(weights before, the decay's gradient on each) of a linear-head ResNet-8, measured
  through the real train step: one SGD step (rate 1) without the decay minus one with it."""
  import keras  # pylint: disable=import-outside-toplevel
  from cbd_tf.models.classifier import Classifier  # pylint: disable=import-outside-toplevel
  images, labels = helpers.tiny_batch()
  before, after = {}, {}
  for decay in (weight_decay, 0.0):
    keras.utils.set_random_seed(0)
    model = Classifier("resnet8", 4, 8, head="linear")
    model.compile(keras.optimizers.SGD(1.0), weight_decay=decay)
    paths = [v.path for v in model.trainable_variables]
    before[decay] = [v.numpy() for v in model.trainable_variables]
    model.train_on_batch(images, labels)
    after[decay] = [v.numpy() for v in model.trainable_variables]
  for mine, other in zip(before[0.0], before[weight_decay]):
    np.testing.assert_array_equal(mine, other)  # the same start
  return (dict(zip(paths, before[0.0])),
          {path: a - b for path, a, b in zip(paths, after[0.0], after[weight_decay])})


@pytest.mark.parametrize("recipe", sorted(THEIR_RECIPES))
def test_each_recipe_decays_and_steps_as_its_authors(compare, recipe):
  from cbd_tf import schedules  # pylint: disable=import-outside-toplevel
  theirs = THEIR_RECIPES[recipe]
  flags = compare.RECIPES[recipe]({"epochs": 40})
  weights, gradients = decay_gradients(float(_flag(flags, "weight_decay")))
  for path, weight in weights.items():
    np.testing.assert_allclose(gradients[path], theirs["decay_gradient"] * weight,
                               rtol=1e-2, atol=1e-7, err_msg=path)  # float32 rounding
  # cbd_tf's step decays every trainable variable (minus a loss's exemptions): where theirs
  # does not (Menon et al.: BatchNorm's gamma and beta), docs/baselines.md says so.
  undecayed = sorted(path for path in weights if not theirs["decays"](path))
  assert undecayed == (sorted(path for path in weights if path.endswith(("/gamma", "/beta")))
                       if recipe == "Menon et al." else [])
  if undecayed:
    with open(os.path.join(helpers.ROOT, "docs", "baselines.md")) as f:
      assert "decays BatchNorm's gamma and beta too" in " ".join(f.read().split())
  # Their rate at their batch, scaled linearly to the batch the row trains with.
  batch = int(_flag(flags, "batch_size", 128))
  assert schedules.scaled_learning_rate(float(_flag(flags, "learning_rate")), batch) == (
      pytest.approx(theirs["lr"] * batch / theirs["batch"]))
  if theirs["schedule"]:
    assert _flag(flags, "lr_schedule") == theirs["schedule"]
  if recipe == "LDAM-DRW / Cui et al.":
    assert _flag(flags, "warmup_epochs") == "1"  # 5 of 200 epochs, at 40
  if recipe == "classifier-balancing":
    assert _flag(flags, "warmup_epochs") == "0"


def test_every_baseline_row_names_its_recipe(compare):
  recipes = {method: compare.RUNS[run].recipe for method, run in compare.METHODS.items()}
  assert set(recipes.values()) <= set(compare.RECIPES)
  for method in ("class-balanced loss", "class-balanced focal", "LDAM-DRW", "focal"):
    assert recipes[method] == "LDAM-DRW / Cui et al.", method
  for method in ("CE (instance sampling)", "cRT", "LWS", "tau-norm", "NCM"):
    assert recipes[method] == "classifier-balancing", method
  assert recipes["CBD_ENS"] == recipes["CBD"] == "CBD"
  options = {"decoupled_epochs": 0, "tau": {}, "epochs": 40}
  crt = compare.RUNS["crt"].flags("/s", 0, options)
  assert "--weight_decay=1e-3" in crt and not any(f.startswith("--decoupled_warmup") for f in crt)


def test_cbd_rows_share_one_feature_cache_per_teacher_set(compare, tmp_path, monkeypatch):
  from cbd_tf.data import teacher_cache  # pylint: disable=import-outside-toplevel
  options = {"teacher_views": 4, "workdir": str(tmp_path), "flagfile": "f", "overrides": [],
             "decoupled_epochs": 0}
  seed_dir = str(tmp_path / "seed_0")
  cache = str(tmp_path / "teacher_features" / "seed_0-ce+ce_2")
  flags = compare.RUNS["cbd_ens"].flags(seed_dir, 0, options)
  assert f"--teacher_features={cache}" in flags
  assert not any(flag.startswith("--teachers=") for flag in flags)
  assert compare.RUNS["cbd"].teachers == ("ce",) and compare.RUNS["ce"].teachers == ()
  calls = []
  monkeypatch.setattr(compare, "_run_module", lambda module, args: calls.append(args))
  compare.ensure_features(seed_dir, ("ce", "ce_2"), options)
  assert calls[0][1:] == [f"--workdir={cache}", "--stage=teacher_features", "--seed=0",
                          "--teacher_views=4", "--loss=ce", "--init_from=",
                          f"--teachers={seed_dir}/ce,{seed_dir}/ce_2"]
  # Made whole once, the cache is used as it is by every later row and call.
  teacher_cache.write_metadata(cache, {"num_images": 3}, 8, [8], images_per_shard=2)
  for shard in range(2):
    open(teacher_cache.shard_path(cache, shard), "wb").close()
  compare.ensure_features(seed_dir, ("ce", "ce_2"), options)
  assert len(calls) == 1
