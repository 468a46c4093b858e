"""Every command-line flag, and the one function that turns them into a Config.

Flagfiles may include other flagfiles (`--flagfile=base.flags` inside one); flags given
on the command line after `--flagfile` override it.
"""

from __future__ import annotations

from absl import flags

from cbd_tf import config as config_lib

_DEFAULT = config_lib.Config()

# Run.
flags.DEFINE_string("stage", _DEFAULT.stage, "teacher | student | pipeline (teachers, then student).")
flags.DEFINE_string("workdir", None, "Run directory: config, checkpoints, weights, metrics.")
flags.DEFINE_integer("seed", _DEFAULT.seed, "Random seed. In a pipeline, teacher 'aug:k' uses "
                     "seed 1000 * seed + k.")
# Data.
flags.DEFINE_string("dataset", _DEFAULT.data.dataset, "Data set name, e.g. mnist_lt.")
flags.DEFINE_string("data_dir", _DEFAULT.data.data_dir, "Where the data set lives, if not bundled.")
flags.DEFINE_integer("image_size", _DEFAULT.data.image_size, "Square input size of the model.")
flags.DEFINE_float("imbalance_ratio", _DEFAULT.data.imbalance_ratio,
                   "rho = largest / smallest class for generated long-tailed splits.")
flags.DEFINE_string("sampling", _DEFAULT.data.sampling,
                    "instance | class_balanced | sqrt. Empty: instance for teachers, "
                    "class_balanced for students.")
flags.DEFINE_string("augmentation", _DEFAULT.data.augmentation,
                    "standard | jitter (SimCLR colour jitter + grayscale) for --stage=teacher.")
flags.DEFINE_float("crop_min_area", _DEFAULT.data.crop_min_area,
                   "Smallest area fraction of the training random resized crop.")
flags.DEFINE_bool("horizontal_flip", _DEFAULT.data.horizontal_flip, "Random horizontal flips.")
flags.DEFINE_float("eval_crop_fraction", _DEFAULT.data.eval_crop_fraction,
                   "Evaluation centre crop as a fraction of the resized short side.")
flags.DEFINE_integer("batch_size", _DEFAULT.data.batch_size, "Global training batch size.")
flags.DEFINE_integer("eval_batch_size", _DEFAULT.data.eval_batch_size, "Evaluation batch size.")
# Model.
flags.DEFINE_string("backbone", _DEFAULT.model.backbone, "Backbone name, e.g. resnet50, resnet32.")
flags.DEFINE_float("cosine_scale", _DEFAULT.model.cosine_scale, "sigma of the cosine classifier.")
# Optimiser.
flags.DEFINE_float("learning_rate", _DEFAULT.optimizer.learning_rate,
                   "Learning rate per 256 images; the run uses learning_rate * batch_size / 256.")
flags.DEFINE_float("momentum", _DEFAULT.optimizer.momentum, "SGD momentum.")
flags.DEFINE_float("weight_decay", _DEFAULT.optimizer.weight_decay,
                   "L2 coefficient of the explicit term wd * 0.5 * sum(w^2).")
flags.DEFINE_integer("epochs", _DEFAULT.optimizer.epochs, "Training epochs.")
flags.DEFINE_float("warmup_epochs", _DEFAULT.optimizer.warmup_epochs, "Linear warmup epochs.")
flags.DEFINE_integer("steps_per_epoch", _DEFAULT.optimizer.steps_per_epoch,
                     "Steps per epoch; 0 means ceil(training images / batch_size).")
# Distillation.
flags.DEFINE_float("distill_alpha", _DEFAULT.distill.alpha,
                   "alpha in (1 - alpha) * CE + alpha * beta * (1 - cos).")
flags.DEFINE_float("distill_beta", _DEFAULT.distill.beta, "beta of the distillation term.")
flags.DEFINE_list("teachers", list(_DEFAULT.distill.teachers),
                  "Teacher run directories for --stage=student.")
flags.DEFINE_list("teacher_specs", list(_DEFAULT.distill.teacher_specs),
                  "Teachers trained by --stage=pipeline, as augmentation:seed "
                  "(augmentation vanilla or jitter).")
flags.DEFINE_string("teacher_sampling", _DEFAULT.distill.teacher_sampling,
                    "Sampling of the teachers trained by --stage=pipeline.")

FLAGS = flags.FLAGS


def config_from_flags() -> config_lib.Config:
  """The Config the parsed flags describe (not yet validated)."""
  return config_lib.Config(
      stage=FLAGS.stage,
      workdir=FLAGS.workdir or "",
      seed=FLAGS.seed,
      data=config_lib.DataConfig(
          dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, image_size=FLAGS.image_size,
          imbalance_ratio=FLAGS.imbalance_ratio, sampling=FLAGS.sampling,
          augmentation=FLAGS.augmentation, crop_min_area=FLAGS.crop_min_area,
          horizontal_flip=FLAGS.horizontal_flip, eval_crop_fraction=FLAGS.eval_crop_fraction,
          batch_size=FLAGS.batch_size, eval_batch_size=FLAGS.eval_batch_size),
      model=config_lib.ModelConfig(backbone=FLAGS.backbone, cosine_scale=FLAGS.cosine_scale),
      optimizer=config_lib.OptimizerConfig(
          learning_rate=FLAGS.learning_rate, momentum=FLAGS.momentum,
          weight_decay=FLAGS.weight_decay, epochs=FLAGS.epochs,
          warmup_epochs=FLAGS.warmup_epochs, steps_per_epoch=FLAGS.steps_per_epoch),
      distill=config_lib.DistillConfig(
          alpha=FLAGS.distill_alpha, beta=FLAGS.distill_beta,
          teachers=tuple(FLAGS.teachers), teacher_specs=tuple(FLAGS.teacher_specs),
          teacher_sampling=FLAGS.teacher_sampling),
  )
