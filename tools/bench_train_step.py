"""Images/s of a stage-one step, a CBD stage-two step with K teachers (live, and from cached
teacher features), and a teacher forward.

  python tools/bench_train_step.py              # resnet32 @ 32px b128 and resnet50 @ 224px b8
  python tools/bench_train_step.py --tiny       # resnet8 @ 16px, K = 1, 2; what the tests run
  python tools/bench_train_step.py --models resnet50 --vit_teacher   # + a ViT-B/16 teacher

All configurations run in one process, one step each in turn for several rounds. Two
clocks per step: wall time (the fastest step counts) and the process's CPU time (the
median counts). On a machine shared with other jobs the wall time swings by half; the CPU
time is the work the step does, so the ratios are computed from it.
Rows per model:
  stage one            Classifier.fit step (backbone + cosine head, CE + weight decay)
  teacher forward      one teacher's embedding, training=False
  student alone, K     the stage-two student (projection to K * D) trained with CE alone
  teacher_features, K  the K teachers' concatenated, normalised feature alone
  stage two, K         CBDDistiller step with K live teachers
  cached, K            CBDDistiller step reading the K teachers' features from its batch
                       (--teacher_features: float16, as the cache stores them)
  ratio                stage two / (student alone + K * teacher forward) in CPU time,
                       target <= 1.10; cached / stage one, goal <= 1.05
--vit_teacher adds a KerasHub ViT-B/16 teacher (random weights, 224 px, class token, 768
dimensions): its forward, a live and a cached student on it.
Inputs are one fixed batch already in memory, so no input pipeline is measured (reading a
batch's rows from the cache is: tools/bench_teacher_features.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# name: (backbone, image size, batch, classes)
MODELS = {
    "resnet32": ("resnet32", 32, 128, 100),
    "resnet50": ("resnet50", 224, 8, 1000),
}
TINY_MODELS = {"resnet8": ("resnet8", 16, 8, 10)}
TARGET_RATIO = 1.10
CACHED_GOAL = 1.05


def build_step_functions(backbone, image_size, batch, num_classes, teacher_counts,
                         vit_teacher=False):
  """name -> function running one step and returning once its result is computed."""
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from cbd_tf import distiller  # pylint: disable=import-outside-toplevel
  from cbd_tf.models.classifier import Classifier  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(size=(batch, image_size, image_size, 3)).astype(np.float32))
  labels = tf.constant(rng.integers(0, num_classes, size=batch), tf.int64)

  def train_step_of(model, *batch_parts):
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), weight_decay=5e-4)
    model.make_train_function()
    iterator = iter(tf.data.Dataset.from_tensors((images, labels, *batch_parts)).repeat())

    def step():
      logs = model.train_function(iterator)
      logs = logs.get_value() if hasattr(logs, "get_value") else logs  # Optional or dict
      return float(logs["loss"])  # blocks until the step has run
    return step

  def student(width):
    return Classifier(backbone, num_classes, image_size, projection_dim=width)

  steps = {"stage one": train_step_of(Classifier(backbone, num_classes, image_size))}
  teachers = [Classifier(backbone, num_classes, image_size) for _ in range(max(teacher_counts))]
  for teacher in teachers:
    teacher.trainable = False
  forward = tf.function(lambda batch_images: teachers[0].embed(batch_images, training=False))
  steps["teacher forward"] = lambda: float(tf.reduce_sum(forward(images)))
  groups = {f"K={count}": teachers[:count] for count in teacher_counts}
  if vit_teacher:
    groups["ViT-B/16"] = [vit_b16_teacher()]
  for name, group in groups.items():
    group_width = sum(int(t.embedding_dim) for t in group)
    steps[f"student alone, {name}"] = train_step_of(student(group_width))
    steps[f"stage two, {name}"] = train_step_of(distiller.CBDDistiller(student(group_width),
                                                                       group))
    targets = tf.function(lambda batch_images, group=tuple(group):
                          distiller.teacher_features(group, batch_images))
    steps[f"teacher_features, {name}"] = (
        lambda targets=targets: float(tf.reduce_sum(targets(images))))
    cached = tf.cast(targets(images), tf.float16)
    steps[f"cached, {name}"] = train_step_of(distiller.CBDDistiller(
        student(group_width), teacher_widths=[int(t.embedding_dim) for t in group]), cached)
  return steps


def vit_b16_teacher():
  """A frozen KerasHub ViT-B/16 (224 px) with random weights, as a preset teacher."""
  import keras_hub  # pylint: disable=import-outside-toplevel
  from cbd_tf import teachers  # pylint: disable=import-outside-toplevel
  from cbd_tf.models.keras_hub_backbone import KerasHubBackbone  # pylint: disable=import-outside-toplevel
  image_model = keras_hub.models.ViTBackbone(
      image_shape=(224, 224, 3), patch_size=16, num_layers=12, num_heads=12, hidden_dim=768,
      mlp_dim=3072)
  converter = keras_hub.layers.ViTImageConverter(image_size=(224, 224), scale=1 / 127.5,
                                                 offset=-1.0)
  return teachers.PresetTeacher(KerasHubBackbone(converter, image_model, "class_token"))


def time_steps(steps, rounds):
  """(fastest wall seconds, median CPU seconds) per step of each function, after a warm-up."""
  for step in steps.values():
    step()  # traces and builds
  wall = {name: [] for name in steps}
  cpu = {name: [] for name in steps}
  for _ in range(rounds):
    for name, step in steps.items():
      start_wall, start_cpu = time.perf_counter(), time.process_time()
      step()
      wall[name].append(time.perf_counter() - start_wall)
      cpu[name].append(time.process_time() - start_cpu)
  return ({name: min(values) for name, values in wall.items()},
          {name: statistics.median(values) for name, values in cpu.items()})


def format_rows(spec, wall, cpu, groups):
  """The markdown table of one model; (ratios of live stage two, ratios of cached / stage
  one), by teacher group."""
  backbone, image_size, batch, _ = spec
  lines = [f"### {backbone} at {image_size}px, batch {batch}", "",
           "| step | wall s (fastest) | images/s | CPU s (median) | ratio, CPU |",
           "|---|---|---|---|---|"]

  def row(name, note=""):
    return (f"| {name} | {wall[name]:.3f} | {batch / wall[name]:,.1f} | {cpu[name]:.3f} | "
            f"{note} |")
  lines += [row("stage one"), row("teacher forward")]
  live, cached = {}, {}
  for group in groups:
    alone = cpu[f"student alone, {group}"]
    together = cpu[f"teacher_features, {group}"]
    two = cpu[f"stage two, {group}"]
    forwards = (int(group[2:]) * cpu["teacher forward"] if group.startswith("K=")
                else together)
    live[group] = two / (alone + forwards)
    cached[group] = cpu[f"cached, {group}"] / cpu["stage one"]
    lines.append(row(f"student alone, {group}"))
    lines.append(row(f"teacher_features, {group}"))
    lines.append(row(f"stage two, {group}",
                     f"**{live[group]:.3f}** x (student alone + teacher forwards); "
                     f"{two / cpu['stage one']:.2f} x stage one"))
    lines.append(row(f"cached, {group}", f"**{cached[group]:.3f}** x stage one"))
  return "\n".join(lines), live, cached


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="resnet8 at 16px, one short round")
  parser.add_argument("--models", default=None, help=f"comma list of {', '.join(MODELS)}")
  parser.add_argument("--teachers", default=None, help="comma list of K (1,2,4; tiny 1,2)")
  parser.add_argument("--vit_teacher", action="store_true",
                      help="also a ViT-B/16 teacher, live and cached")
  parser.add_argument("--rounds", type=int, default=None,
                      help="steps timed per configuration (default 6; resnet50 2; tiny 1)")
  args = parser.parse_args(argv)
  models = TINY_MODELS if args.tiny else MODELS
  chosen = args.models.split(",") if args.models else list(models)
  for name in chosen:
    if name not in models:
      parser.error(f"unknown model {name!r}; valid: {', '.join(models)}")
  counts_text = args.teachers or ("1,2" if args.tiny else "1,2,4")
  teacher_counts = [int(k) for k in counts_text.split(",")]
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, "
        f"{len(tf.config.list_physical_devices('GPU'))} GPUs")
  for name in chosen:
    spec = models[name]
    big = spec[1] >= 128
    rounds = args.rounds or (1 if args.tiny else 2 if big else 6)
    steps = build_step_functions(*spec, teacher_counts, args.vit_teacher)
    wall, cpu = time_steps(steps, rounds)
    groups = [name.split(", ", 1)[1] for name in steps if name.startswith("cached, ")]
    table, live, cached = format_rows(spec, wall, cpu, groups)
    print(table)
    print(f"{rounds} interleaved steps each; worst live ratio {max(live.values()):.3f} "
          f"(target <= {TARGET_RATIO}); worst cached / stage one {max(cached.values()):.3f} "
          f"(goal <= {CACHED_GOAL})\n", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
