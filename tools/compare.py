"""Long-tail baselines beside CBD on one data set and seed list: one table, one figure.

  python tools/compare.py --flagfile=configs/demo.flags --seeds=0,1,2 \
      --workdir=runs/compare_demo --epochs=30

Per seed, runs are trained once and shared (workdir/seed_S/<run>). Heads as the authors
define them: the joint CE model `ce_linear` (linear head with bias, instance sampling) is
the "CE" row and the backbone of cRT / LWS (BatchNorm statistics following the balanced
batches, as classifier-balancing) / tau-norm / NCM / post-hoc logit adjustment (its model
re-evaluated, not retrained); the loss baselines train linear heads too, except LDAM-DRW
(cosine, s = 30, step schedule). CBD's teacher `ce` and its second teacher `ce_2` (seed
S + 1000) are cosine, as the official code; class-balanced sampling alone is CBD's own
ablation (cosine, no teachers). The zero-shot row is CLIP's classifier from text on a
keras_hub CLIP or SigLIP --backbone (nothing trained; left out, "-", on any other backbone).
Runs whose results exist are not retrained, so an interrupted comparison resumes. Every run
is an ordinary `python -m cbd_tf.train` command; the table is rewritten after each seed, so
a partial comparison is readable.

tau-norm picks tau on a validation split, never the test split: the stage sweeps the data
set's own (mnist_pairs_lt, ImageNet-LT, ...); for mnist_lt, which has none, tau is chosen
here on the bundled MNIST images in neither its training nor its test split (verified by
content). That pool has no images of class 0 (the head class uses all of them), so the
sweep scores the mean per-class accuracy of classes 1-9. Data sets without a validation
split need --tau.

--teacher_views=M: CBD rows train from cached teacher features, one cache per teacher set
(workdir/teacher_features/) used by every row on it (each seed trains its own teachers).

Writes workdir/compare.md, compare.json and compare.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Callable

from cbd_tf import stage_registry

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_figure  # pylint: disable=wrong-import-position  (beside this file)
import compare_tau  # pylint: disable=wrong-import-position

# The project root: runs start there, so flagfiles include each other by relative paths.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = compare_figure.COLUMNS


@dataclasses.dataclass(frozen=True)
class Run:
  """One training command in a seed directory: extra flags, and the runs it needs first.
  `posthoc_from` names a run whose trained model this one re-evaluates instead (copied, with
  the flags applied to its config), so no training happens."""
  flags: Callable[[str, int, dict], list[str]]
  needs: tuple[str, ...] = ()
  posthoc_from: str = ""
  recipe: str = "CBD"  # RECIPES
  text: bool = False  # its classifier is a preset's text embeddings: a CLIP / SigLIP preset only
  teachers: tuple[str, ...] = ()  # a student's teacher runs


# The recipes the rows run: each baseline its authors' learning rate at their batch, weight
# decay and schedule. cbd_tf's --weight_decay is the official CBD term (gradient
# 0.5 * wd * w); PyTorch's coupled weight_decay and Cui et al.'s `wd * tf.nn.l2_loss` give
# wd * w, and logit adjustment's Keras l2(wd) 2 * wd * w, so a row passes the value whose
# per-weight gradient is theirs (tests/tools/test_compare.py checks each against their code).
RECIPES: dict[str, Callable[[dict], list[str]]] = {
    # The flagfile's: the official CBD recipe (cosine, its warm-up, its decay).
    "CBD": lambda options: [],
    # LDAM-DRW cifar_train.py and Cui et al. cifar_main.py (+ cifar_im_trainval_cb.sh): 0.1 at
    # batch 128, coupled 2e-4, 5 warm-up epochs of 200 then x0.01 / x0.0001 from 160 / 180.
    "LDAM-DRW / Cui et al.": lambda options: [
        "--batch_size=128", "--learning_rate=0.2", "--weight_decay=4e-4", "--lr_schedule=step",
        f"--warmup_epochs={options['epochs'] * 5 / 200:g}"],
    # classifier-balancing ImageNet_LT configs: 0.2 at batch 512 (0.1 per 256), coupled 5e-4,
    # cosine to 0, no warm-up (cRT / LWS: --decoupled_warmup_epochs, 0 by default).
    "classifier-balancing": lambda options: [
        "--learning_rate=0.1", "--weight_decay=1e-3", "--lr_schedule=cosine",
        "--warmup_epochs=0"],
    # logit_adjustment main.py / models.py: 0.1 at batch 128, Keras l2(1e-4) on the kernels
    # (gradient 2e-4 * w). Their warm-up and x0.1 steps at about 49 / 75 / 91% are not a
    # cbd_tf schedule: cosine, the flagfile's warm-up.
    "Menon et al.": lambda options: [
        "--batch_size=128", "--learning_rate=0.2", "--weight_decay=4e-4"],
    # CLIP's zero-shot classifier trains nothing: the preset's logit scale and text embeddings.
    "CLIP": lambda options: [],
}


def _stage(stage: str, *extra: str, recipe: str = "", on: tuple[str, ...] = ()) -> Run:
  """A run of `stage` with `recipe` (default: its registry entry's) on the runs `on` that its
  entry needs: a decoupled stage's backbone run, a student's teachers."""
  entry = stage_registry.get_stage(stage)
  recipe = recipe or entry.recipe

  def flags(seed_dir, seed, options):
    paths = [os.path.join(seed_dir, run) for run in on]
    teachers = (f"--teacher_features={features_dir(seed_dir, on, options)}"
                if options.get("teacher_views") else f"--teachers={','.join(paths)}")
    needed = {stage_registry.NEEDS_BACKBONE_RUN: [f"--backbone_from={','.join(paths)}"],
              stage_registry.NEEDS_TEACHERS: [teachers]}.get(entry.needs, [])
    # Passes over the data, whatever steps per epoch the flagfile sets.
    epochs = options.get("decoupled_epochs")
    own_epochs = ([f"--decoupled_epochs={epochs}"] if epochs else []) + ["--steps_per_epoch=0"]
    return [f"--stage={stage}", f"--seed={seed}", *needed, *RECIPES[recipe](options),
            *(own_epochs if entry.own_epochs else []), *extra]
  return Run(flags, needs=on, recipe=recipe,
             text=entry.text_head == stage_registry.TEXT_HEAD_ALWAYS,
             teachers=on if entry.needs == stage_registry.NEEDS_TEACHERS else ())


def features_dir(seed_dir: str, teachers: tuple[str, ...], options: dict) -> str:
  """--teacher_views: the one feature cache of a seed's teacher set, whichever rows use it."""
  return os.path.join(options["workdir"], "teacher_features",
                      f"{os.path.basename(seed_dir)}-{'+'.join(teachers)}")


def ensure_features(seed_dir: str, teachers: tuple[str, ...], options: dict) -> None:
  """Caches the features of `teachers` unless done (a partial cache resumes)."""
  from cbd_tf.data import teacher_cache  # pylint: disable=import-outside-toplevel
  cache = features_dir(seed_dir, teachers, options)
  metadata = teacher_cache.read_metadata(cache)
  if metadata and not teacher_cache.missing_shards(
      cache, metadata["made_from"]["num_images"], metadata["images_per_shard"]):
    return
  _run_module("cbd_tf.train", [
      f"--flagfile={options['flagfile']}", f"--workdir={cache}", *options["overrides"],
      "--stage=teacher_features", "--seed=0", f"--teacher_views={options['teacher_views']}",
      "--loss=ce", "--init_from=",  # a flagfile's teacher settings do not apply
      f"--teachers={','.join(os.path.join(seed_dir, t) for t in teachers)}"])


# Baselines their authors define on a linear layer with bias (classifier-balancing's
# DotProductClassifier, logit adjustment's Dense): the joint CE model and the losses below.
LINEAR = "--head=linear"
# The decoupled stages run on the linear-head CE model, as Decoupling trains them.
CE_LINEAR = ("ce_linear",)


def _teacher(recipe: str, *extra: str) -> Run:
  return _stage("teacher", *extra, recipe=recipe)


def _tau_norm() -> Run:
  """tau swept by the stage on the data set's validation split; for mnist_lt (none), chosen
  here on the bundled images in neither split (choose_tau) and passed as --tau."""
  def flags(seed_dir, seed, options):
    tau = options["tau"].get(seed)
    return _stage("tau_norm", *([f"--tau={tau}"] if tau is not None else []),
                  on=CE_LINEAR).flags(seed_dir, seed, options)
  return Run(flags, needs=CE_LINEAR, recipe=stage_registry.get_stage("tau_norm").recipe)


RUNS: dict[str, Run] = {
    "ce": _teacher("CBD"),
    "ce_2": Run(lambda seed_dir, seed, options: ["--stage=teacher", f"--seed={seed + 1000}"]),
    "ce_linear": _teacher("classifier-balancing", LINEAR),
    "cb_sampling": _teacher("CBD", "--sampling=class_balanced"),
    "crt": _stage("crt", "--decoupled_batchnorm=train", on=CE_LINEAR),
    "lws": _stage("lws", "--decoupled_batchnorm=train", on=CE_LINEAR),
    "tau_norm": _tau_norm(),
    "ncm": _stage("ncm", on=CE_LINEAR),
    "la_loss": _teacher("Menon et al.", LINEAR, "--loss=logit_adjusted"),
    "la_posthoc": Run(lambda seed_dir, seed, options: ["--posthoc_tau=1"], needs=("ce_linear",),
                      posthoc_from="ce_linear", recipe="classifier-balancing"),
    # Balanced softmax's code (BALMS) builds on classifier-balancing.
    "balanced_softmax": _teacher("classifier-balancing", LINEAR, "--loss=balanced_softmax"),
    # The long-tail papers' focal row: LDAM-DRW's code, gamma 1.
    "focal": _teacher("LDAM-DRW / Cui et al.", LINEAR, "--loss=focal"),
    "class_balanced": _teacher("LDAM-DRW / Cui et al.", LINEAR, "--loss=class_balanced"),
    "class_balanced_focal": _teacher("LDAM-DRW / Cui et al.", LINEAR,
                                     "--loss=class_balanced_focal"),
    # Cosine head (NormedLinear), s = 30.
    "ldam_drw": _teacher("LDAM-DRW / Cui et al.", "--loss=ldam"),
    "cbd": _stage("student", on=("ce",)),
    "cbd_ens": _stage("student", on=("ce", "ce_2")),
    # Nothing trains: a teacher's --loss from the flagfile (LIFT's) does not apply.
    "zero_shot": _stage("zero_shot", "--loss=ce"),
}

# Method name in the table -> the run whose metrics it reports; the head each row uses.
METHODS = {
    "CE (instance sampling)": "ce_linear",
    "CE, cosine head (CBD's teacher)": "ce",
    "CE, cosine head, second teacher (seed + 1000)": "ce_2",
    "class-balanced sampling": "cb_sampling",
    "cRT": "crt",
    "LWS": "lws",
    "tau-norm": "tau_norm",
    "NCM": "ncm",
    "logit adjustment (loss)": "la_loss",
    "logit adjustment (post-hoc)": "la_posthoc",
    "balanced softmax": "balanced_softmax",
    "focal": "focal",
    "class-balanced loss": "class_balanced",
    "class-balanced focal": "class_balanced_focal",
    "LDAM-DRW": "ldam_drw",
    "CBD": "cbd",
    "CBD_ENS": "cbd_ens",
    "zero-shot (CLIP / SigLIP text head)": "zero_shot",
}


class CommandFailed(RuntimeError):
  """A command stopped on a user error (cbd_tf/errors.py): its one line is the whole story."""


def _run_module(module: str, arguments: list[str]) -> None:
  result = subprocess.run([sys.executable, "-m", module, *arguments], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  if result.returncode:
    last = (result.stderr.strip().splitlines() or [""])[-1]
    if last.startswith(f"{module}: error: "):
      raise CommandFailed(f"{module} {' '.join(arguments)} failed: {last}")
    # Anything else is a bug: its traceback.
    raise RuntimeError(f"{module} {' '.join(arguments)} failed:\n{result.stderr[-3000:]}")


def ensure_run(name: str, seed_dir: str, seed: int, options: dict) -> dict:
  """Trains run `name` (and what it needs) unless finished; returns its metrics with ece."""
  workdir = os.path.join(seed_dir, name)
  run = RUNS[name]
  for needed in run.needs:
    ensure_run(needed, seed_dir, seed, options)
  if run.teachers and options.get("teacher_views"):
    ensure_features(seed_dir, run.teachers, options)
  metrics_path = os.path.join(workdir, "metrics.json")
  if run.posthoc_from and not os.path.exists(metrics_path):
    _reevaluate(os.path.join(seed_dir, run.posthoc_from), workdir,
                run.flags(seed_dir, seed, options))
  elif not os.path.exists(os.path.join(workdir, "final.weights.h5")):
    if name == "tau_norm" and seed not in options["tau"]:
      options["tau"][seed] = compare_tau.choose_tau(os.path.join(seed_dir, "ce_linear"), options)
    start = time.time()
    _run_module("cbd_tf.train", [f"--flagfile={options['flagfile']}", f"--workdir={workdir}",
                                 *options["overrides"], *run.flags(seed_dir, seed, options)])
    print(f"  seed {seed} {name}: trained in {time.time() - start:.0f} s", flush=True)
  if not os.path.exists(metrics_path):  # killed after its final weights, before its evaluation
    _run_module("cbd_tf.evaluate", [f"--workdir={workdir}"])
  with open(metrics_path) as f:
    metrics = json.load(f)
  if name == "tau_norm":
    options["tau"][seed] = metrics.get("tau", options["tau"].get(seed))
    if "tau_sweep" in metrics:
      options["sweeps"][workdir] = {t: {k: r.get(k) for k in COLUMNS}
                                    for t, r in metrics["tau_sweep"].items()}
  if "ece" not in metrics:  # trained before calibration was measured
    _run_module("cbd_tf.evaluate", [f"--workdir={workdir}"])
    with open(metrics_path) as f:
      metrics = json.load(f)
  return metrics


def _reevaluate(trained_dir: str, workdir: str, flags: list[str]) -> None:
  """Copies a finished run's model and config to `workdir`, applies `flags`
  (--posthoc_tau=T only) to the config and evaluates it there."""
  from cbd_tf import config as config_lib, run_dir  # pylint: disable=import-outside-toplevel
  changes = dict(flag[2:].split("=", 1) for flag in flags)
  if set(changes) != {"posthoc_tau"}:
    raise ValueError(f"re-evaluation applies --posthoc_tau only, got {flags}")
  os.makedirs(workdir, exist_ok=True)
  for name in (run_dir.CLASSES, run_dir.FINAL_WEIGHTS):
    shutil.copy(os.path.join(trained_dir, name), os.path.join(workdir, name))
  config = config_lib.Config.load(os.path.join(trained_dir, run_dir.CONFIG)).replace(
      workdir=workdir, long_tail={"posthoc_tau": changes["posthoc_tau"]})
  config.save(os.path.join(workdir, run_dir.CONFIG))
  _run_module("cbd_tf.evaluate", [f"--workdir={workdir}"])


def markdown_table(summary: dict, seeds: list[int]) -> str:
  header = (f"| method (%, mean ± std over seeds {','.join(map(str, seeds))}) | recipe | top-1 "
            "| many | medium | few | ECE |")
  lines = [header, "|---|---|---:|---:|---:|---:|---:|"]
  for method, columns in summary.items():
    cells = [f"{columns[c]['mean']:.1f} ± {columns[c]['std']:.1f}"
             if columns[c]["mean"] is not None else "-" for c in COLUMNS]
    lines.append(f"| {method} | {RUNS[METHODS[method]].recipe} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_outputs(workdir: str, rows: dict, seeds: list[int], options: dict) -> str:
  summary = compare_figure.summarise(rows, COLUMNS)
  table = markdown_table(summary, seeds)
  title = (f"{options['dataset']}: {options['epochs_note']}, seeds {','.join(map(str, seeds))}")
  with open(os.path.join(workdir, "compare.md"), "w") as f:
    f.write(f"# {title}\n\n{table}\n\n![comparison](compare.png)\n")
  with open(os.path.join(workdir, "compare.json"), "w") as f:
    json.dump({"seeds": seeds, "summary": summary, "tau": options["tau"],
               "tau_sweeps": options["sweeps"], "per_seed": rows}, f, indent=2)
  compare_figure.plot(summary, os.path.join(workdir, "compare.png"), title)
  return table


def parse_methods(text: str) -> list[str]:
  """Comma-separated run names (ce_linear, crt, ...) or method names -> method names; exits
  with a one-line error naming the unknown ones."""
  by_run = {run: method for method, run in METHODS.items()}
  methods = [by_run.get(m.strip(), m.strip()) for m in text.split(",") if m.strip()]
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    sys.exit(f"compare: unknown methods {unknown}; valid run names: {', '.join(RUNS)}")
  return methods


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--flagfile", default="configs/demo.flags")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--workdir", default="runs/compare_demo")
  parser.add_argument("--methods", default=",".join(METHODS.values()),
                      help="comma-separated run names (or method names without commas): "
                      + ", ".join(f"{m} ({r})" for m, r in METHODS.items()))
  parser.add_argument("--epochs", type=int, default=0, help="override the flagfile's epochs")
  parser.add_argument("--decoupled_epochs", type=int, default=0,
                      help="epochs of cRT / LWS on the frozen backbone; 0: the stage's recipe "
                      "(cRT 10, LWS 5)")
  parser.add_argument("--tau", type=float, default=None, help="fixed tau; default: sweep")
  parser.add_argument("--extra", default="", help="more train flags, space-separated")
  parser.add_argument("--teacher_views", type=int, default=0,
                      help="CBD rows: cache each teacher set's features of M views per image "
                      "once (--stage=teacher_features) and train the students from it; 0: "
                      "live teachers")
  return parser


def main() -> None:
  args = build_parser().parse_args()
  methods = parse_methods(args.methods)
  seeds = [int(s) for s in args.seeds.split(",")]
  workdir = os.path.abspath(args.workdir)
  os.makedirs(workdir, exist_ok=True)
  overrides = ["--eval_every_epochs=0", *args.extra.split()]
  if args.epochs:
    overrides.append(f"--epochs={args.epochs}")
  def flagfile_value(name, default):
    with open(os.path.join(ROOT, args.flagfile)) as f:
      return next((line.split("=", 1)[1].strip() for line in f
                   if line.startswith(f"--{name}=")), default)
  dataset = flagfile_value("dataset", "data")
  backbone = next((flag.split("=", 1)[1] for flag in reversed(overrides)
                   if flag.startswith("--backbone=")), flagfile_value("backbone", "resnet50"))
  options = {"flagfile": args.flagfile, "overrides": overrides, "workdir": workdir,
             "teacher_views": args.teacher_views,
             "decoupled_epochs": args.decoupled_epochs, "fixed_tau": args.tau, "tau": {},
             "sweeps": {}, "dataset": dataset,
             "epochs": args.epochs or int(flagfile_value("epochs", "90")),
             "epochs_note": f"{args.epochs or flagfile_value('epochs', '90')} epochs (cRT/LWS "
                            f"{args.decoupled_epochs or '10/5'})"}
  previous = os.path.join(workdir, "compare.json")
  if os.path.exists(previous):  # sweeps of tau-norm runs trained by an earlier invocation
    with open(previous) as f:
      options["sweeps"] = json.load(f).get("tau_sweeps", {})
  rows: dict[str, list[dict]] = {m: [] for m in methods}
  for done, seed in enumerate(seeds):
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    print(f"seed {seed}", flush=True)
    for method in methods:
      if RUNS[METHODS[method]].text and not backbone.startswith("keras_hub:"):
        print(f"  {method}: left out, --backbone={backbone} is not a keras_hub CLIP or SigLIP "
              "preset", flush=True)
        continue
      rows[method].append(ensure_run(METHODS[method], seed_dir, seed, options))
    table = write_outputs(workdir, rows, seeds[:done + 1], options)
  print(f"\n{table}\n\nwritten: {os.path.join(workdir, 'compare.md')}, compare.json, compare.png")


if __name__ == "__main__":
  try:
    main()
  except CommandFailed as failed:
    sys.exit(f"compare: error: {failed}")
