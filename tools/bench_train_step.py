"""Images/s of a stage-one step, a CBD stage-two step with K teachers, and a teacher forward.

  python tools/bench_train_step.py              # resnet32 @ 32px b128 and resnet50 @ 224px b8
  python tools/bench_train_step.py --tiny       # resnet8 @ 16px, K = 1, 2; what the tests run
  python tools/bench_train_step.py --models resnet32 --rounds 5

All configurations run in one process, one step each in turn for several rounds. Two
clocks per step: wall time (the fastest step counts) and the process's CPU time (the
median counts). On a machine shared with other jobs the wall time swings by half; the CPU
time is the work the step does, so the ratios are computed from it.
Columns per model:
  stage one            Classifier.fit step (backbone + cosine head, CE + weight decay)
  teacher forward      one teacher's embedding, training=False
  student alone, K     the stage-two student (projection to K * D) trained with CE alone
  teacher_features, K  the K teachers' concatenated, normalised feature alone
  stage two, K         CBDDistiller step with K teachers
  ratio                stage two / (student alone + K * teacher forward) in CPU time,
                       target <= 1.10; also against student alone + teacher_features, K
Inputs are one fixed batch already in memory, so no input pipeline is measured.
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


def build_step_functions(backbone, image_size, batch, num_classes, teacher_counts):
  """name -> function running one step and returning once its result is computed."""
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from cbd_tf import distiller  # pylint: disable=import-outside-toplevel
  from cbd_tf.models.classifier import Classifier  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  images = tf.constant(rng.uniform(size=(batch, image_size, image_size, 3)).astype(np.float32))
  labels = tf.constant(rng.integers(0, num_classes, size=batch), tf.int64)
  batches = tf.data.Dataset.from_tensors((images, labels)).repeat()

  def optimizer():
    return keras.optimizers.SGD(0.01, momentum=0.9)

  def train_step_of(model):
    model.make_train_function()
    iterator = iter(batches)

    def step():
      logs = model.train_function(iterator)
      logs = logs.get_value() if hasattr(logs, "get_value") else logs  # Optional or dict
      return float(logs["loss"])  # blocks until the step has run
    return step

  steps = {}
  stage_one = Classifier(backbone, num_classes, image_size)
  stage_one.compile(optimizer(), weight_decay=5e-4)
  steps["stage one"] = train_step_of(stage_one)
  teachers = [Classifier(backbone, num_classes, image_size) for _ in range(max(teacher_counts))]
  for teacher in teachers:
    teacher.trainable = False
  forward = tf.function(lambda batch_images: teachers[0].embed(batch_images, training=False))
  steps["teacher forward"] = lambda: float(tf.reduce_sum(forward(images)))
  width = int(teachers[0].embedding_dim)
  for count in teacher_counts:
    student = Classifier(backbone, num_classes, image_size, projection_dim=count * width)
    student.compile(optimizer(), weight_decay=5e-4)
    steps[f"student alone, K={count}"] = train_step_of(student)
    model = distiller.CBDDistiller(student, teachers[:count])
    model.compile(optimizer(), weight_decay=5e-4)
    steps[f"stage two, K={count}"] = train_step_of(model)
    targets = tf.function(lambda batch_images, group=tuple(teachers[:count]):
                          distiller.teacher_features(group, batch_images))
    steps[f"teacher_features, K={count}"] = (
        lambda targets=targets: float(tf.reduce_sum(targets(images))))
  return steps


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


def format_rows(spec, wall, cpu, teacher_counts):
  backbone, image_size, batch, _ = spec
  forward = cpu["teacher forward"]
  lines = [f"### {backbone} at {image_size}px, batch {batch}", "",
           "| step | wall s (fastest) | images/s | CPU s (median) | stage two / (student alone"
           " + K * teacher forward), CPU |",
           "|---|---|---|---|---|"]

  def row(name, note=""):
    return (f"| {name} | {wall[name]:.3f} | {batch / wall[name]:,.1f} | {cpu[name]:.3f} | "
            f"{note} |")
  lines += [row("stage one"), row("teacher forward")]
  ratios = {}
  for count in teacher_counts:
    alone = cpu[f"student alone, K={count}"]
    together = cpu[f"teacher_features, K={count}"]
    two = cpu[f"stage two, K={count}"]
    ratios[count] = two / (alone + count * forward)
    lines.append(row(f"student alone, K={count}"))
    lines.append(row(f"teacher_features, K={count}",
                     f"teacher_features = {together / (count * forward):.3f} x K forwards"))
    lines.append(row(f"stage two, K={count}",
                     f"**{ratios[count]:.3f}** ({two / (alone + together):.3f} against "
                     "student alone + teacher_features)"))
  return "\n".join(lines), ratios


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="resnet8 at 16px, one short round")
  parser.add_argument("--models", default=None, help=f"comma list of {', '.join(MODELS)}")
  parser.add_argument("--teachers", default=None, help="comma list of K (1,2,4; tiny 1,2)")
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
    steps = build_step_functions(*spec, teacher_counts)
    wall, cpu = time_steps(steps, rounds)
    table, ratios = format_rows(spec, wall, cpu, teacher_counts)
    print(table)
    print(f"{rounds} interleaved steps each; worst CPU ratio "
          f"{max(ratios.values()):.3f} (target <= {TARGET_RATIO})\n", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
