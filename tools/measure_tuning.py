"""How much of a pretrained backbone to train, measured on the bundled data: a small ViT
(a KerasHub ViTBackbone written here as a local preset) pretrained on mnist_pairs_digits,
then mnist_pairs_lt from it with each --backbone_tuning, each with cross-entropy and with the
logit-adjusted loss, over seeds. Prints top-1, few-shot, trained weights and time a step.

  python tools/measure_tuning.py --seeds=0,1,2 --workdir=runs/tuning
  python tools/measure_tuning.py --tiny       # seconds: 1 seed, 1 epoch, 2 tunings

Each run is `python -m cbd_tf.train --flagfile=configs/mnist_pairs.flags --stage=teacher
--backbone=keras_hub:PRESET --init_from=PRETRAIN_RUN --backbone_tuning=T --loss=L --seed=S`
(40 epochs of the mnist_pairs recipe unless --epochs); finished runs are reused.

--clip trains a small CLIP on the bundled digits (tools/train_tiny_clip.py) unless it exists,
then measures its zero-shot classifier on mnist_pairs_lt (--stage=zero_shot) and AdaptFormer
runs from it whose cosine head starts from the class prompts' text (--head_init=text)
against a random head, over the seeds.

--distill then trains, per seed, CBD ResNet-8 students (class-balanced, the mnist_pairs
recipe) from the best tuned teacher (highest mean top-1) and from a ResNet-8 teacher trained
from scratch, and prints their table too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNINGS = ("full", "frozen", "bias", "lora", "adaptformer")
LOSSES = ("ce", "logit_adjusted")


def write_preset(directory: str, image_size: int) -> str:
  """A ViT of 4 blocks, width 64 (patch 4), random weights, as a KerasHub preset."""
  if os.path.exists(os.path.join(directory, "config.json")):
    return directory
  import keras  # pylint: disable=import-outside-toplevel
  import keras_hub  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(0)
  keras_hub.models.ViTBackbone(
      image_shape=(image_size, image_size, 3), patch_size=4, num_layers=4, num_heads=4,
      hidden_dim=64, mlp_dim=128).save_to_preset(directory)
  keras_hub.layers.ViTImageConverter(image_size=(image_size, image_size), scale=1 / 127.5,
                                     offset=-1.0).save_to_preset(directory)
  return directory


def train(workdir: str, *flags: str, done: str = "metrics.json") -> float | None:
  """Trains unless `workdir`/`done` exists; returns the last epoch's seconds per step."""
  log = os.path.join(workdir, "train_log.txt")
  if not os.path.exists(os.path.join(workdir, done)):
    os.makedirs(workdir, exist_ok=True)
    with open(log, "w") as f:
      subprocess.run([sys.executable, "-m", "cbd_tf.train", f"--workdir={workdir}", *flags],
                     cwd=ROOT, check=True, stdout=f, stderr=subprocess.STDOUT,
                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  with open(log) as f:
    steps = re.findall(r"(\d+)(ms|s)/step", f.read())
  if not steps:
    return None
  value, unit = steps[-1]
  return float(value) / (1000 if unit == "ms" else 1)


def read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/tuning")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--tunings", default=",".join(TUNINGS))
  parser.add_argument("--losses", default=",".join(LOSSES))
  parser.add_argument("--epochs", type=int, default=0, help="0: the flagfiles' own")
  parser.add_argument("--distill", action="store_true")
  parser.add_argument("--clip", action="store_true")
  parser.add_argument("--clip_epochs", type=int, default=20)
  parser.add_argument("--tiny", action="store_true")
  args = parser.parse_args(argv)
  seeds = [int(seed) for seed in args.seeds.split(",")]
  tunings, losses = args.tunings.split(","), args.losses.split(",")
  extra = [f"--epochs={args.epochs}"] if args.epochs else []
  if args.tiny:
    seeds, tunings, losses = [0], ["full", "adaptformer"], ["ce"]
    extra = ["--epochs=1", "--steps_per_epoch=2", "--eval_every_epochs=0", "--warmup_epochs=0"]
  if args.clip:
    clip(args.workdir, seeds, extra, 1 if args.tiny else args.clip_epochs, args.tiny)
    return
  preset = write_preset(os.path.abspath(os.path.join(args.workdir, "vit_preset")), 24)
  pretrain = os.path.join(args.workdir, "pretrain")
  start = time.time()
  train(pretrain, "--flagfile=configs/mnist_pairs_pretrain.flags",
        f"--backbone=keras_hub:{preset}", *extra)
  print(f"pretrained on mnist_pairs_digits: {read_json(pretrain + '/metrics.json')['top1']:.3f} "
        f"top-1 on its held-out digits, {time.time() - start:.0f} s", flush=True)
  print("| tuning | loss | top-1 | few | trained weights (backbone) | s / step |")
  print("|---|---|---:|---:|---:|---:|")
  means = {}
  for tuning in tunings:
    for loss in losses:
      results, step_times = [], []
      for seed in seeds:
        run = os.path.join(args.workdir, f"{tuning}_{loss}_{seed}")
        step_times.append(train(run, "--flagfile=configs/mnist_pairs.flags", "--stage=teacher",
                                f"--backbone=keras_hub:{preset}", f"--init_from={pretrain}",
                                f"--backbone_tuning={tuning}", f"--loss={loss}",
                                f"--seed={seed}", *extra))
        results.append(read_json(os.path.join(run, "metrics.json")))
      trained = read_json(os.path.join(run, "environment.json"))["trained_weights"]
      top1 = 100 * np.array([r["top1"] for r in results])
      few = 100 * np.array([r["few"] if r["few"] is not None else np.nan for r in results])
      step = np.mean([t for t in step_times if t is not None] or [np.nan])
      means[f"{tuning}_{loss}"] = top1.mean()
      print(f"| {tuning} | {loss} | {top1.mean():.1f} ± {top1.std():.1f} | "
            f"{np.nanmean(few):.1f} ± {np.nanstd(few):.1f} | {trained['total']:,} "
            f"({trained['backbone']:,}) | {step:.3f} |", flush=True)
  if args.distill:
    distill(args.workdir, max(means, key=means.get), seeds, extra)


def distill(workdir: str, best: str, seeds: list[int], extra: list[str]) -> None:
  """CBD students from the best tuned teacher and from a ResNet-8 teacher from scratch."""
  rows = {f"student of {best}": [], "student of a ResNet-8 from scratch": [],
          "ResNet-8 teacher from scratch": []}
  for seed in seeds:
    scratch = os.path.join(workdir, f"resnet8_teacher_{seed}")
    train(scratch, "--flagfile=configs/mnist_pairs.flags", "--stage=teacher",
          f"--seed={seed}", *extra)
    rows["ResNet-8 teacher from scratch"].append(read_json(scratch + "/metrics.json"))
    for name, teacher in ((f"student of {best}", os.path.join(workdir, f"{best}_{seed}")),
                          ("student of a ResNet-8 from scratch", scratch)):
      run = os.path.join(workdir, f"student_{os.path.basename(teacher)}")
      train(run, "--flagfile=configs/mnist_pairs.flags", "--stage=student",
            f"--teachers={teacher}", f"--seed={seed}", *extra)
      rows[name].append(read_json(run + "/metrics.json"))
  print("| run | top-1 | few |")
  print("|---|---:|---:|")
  for name, results in rows.items():
    top1 = 100 * np.array([r["top1"] for r in results])
    few = 100 * np.array([r["few"] for r in results])
    print(f"| {name} | {top1.mean():.1f} ± {top1.std():.1f} | {few.mean():.1f} ± "
          f"{few.std():.1f} |", flush=True)


def clip(workdir: str, seeds: list[int], extra: list[str], epochs: int, tiny: bool) -> None:
  """Zero-shot, and text against random heads, from a small CLIP trained here."""
  preset = os.path.abspath(os.path.join(workdir, "tiny_clip"))
  if not os.path.exists(os.path.join(preset, "class_names.txt")):
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train_tiny_clip.py"),
                    f"--out_dir={preset}", f"--epochs={epochs}", *(["--tiny"] if tiny else [])],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
  common = ("--flagfile=configs/mnist_pairs.flags", f"--backbone=keras_hub:{preset}",
            "--image_size=32", f"--class_names_file={preset}/class_names.txt",
            "--class_prompt=a photo of {}.")
  zero_shot = os.path.join(workdir, "clip_zero_shot")
  train(zero_shot, *common, "--stage=zero_shot")
  rows = {"zero-shot (no training)": [read_json(zero_shot + "/metrics.json")]}
  for head_init in ("text", "random"):
    name = f"AdaptFormer, LA loss, {head_init} head"
    rows[name] = []
    for seed in seeds:
      run = os.path.join(workdir, f"clip_adaptformer_{head_init}_{seed}")
      train(run, *common, "--stage=teacher", "--backbone_tuning=adaptformer",
            "--loss=logit_adjusted", "--cosine_scale=25", f"--head_init={head_init}",
            f"--seed={seed}", *extra)
      rows[name].append(read_json(run + "/metrics.json"))
  print("| run | top-1 | many | medium | few |")
  print("|---|---:|---:|---:|---:|")
  for name, results in rows.items():
    cells = []
    for group in ("top1", "many", "medium", "few"):
      values = 100 * np.array([r[group] for r in results])
      cells.append(f"{values.mean():.1f} ± {values.std():.1f}")
    print(f"| {name} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
  main()
