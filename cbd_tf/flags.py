"""Every command-line flag, and the one function that turns them into a Config.

Flagfiles may include other flagfiles (`--flagfile=base.flags` inside one); flags given
on the command line after `--flagfile` override it.
"""

from __future__ import annotations

import os

from absl import flags

from cbd_tf import config as config_lib

_DEFAULT = config_lib.Config()

# Run.
flags.DEFINE_string("stage", _DEFAULT.stage, "teacher | student | pipeline (teachers, then "
                    "student) | crt | lws | tau_norm | ncm (decoupled, need --backbone_from).")
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
                    "instance | class_balanced | sqrt | progressive (instance to "
                    "class-balanced over the run). Empty: instance for teachers, "
                    "class_balanced for students.")
flags.DEFINE_string("sampling_method", _DEFAULT.data.sampling_method,
                    "How the training stream is drawn: auto (= index) | index | per_class | "
                    "rejection | resample (the reference's copies in a row + 1,000-record "
                    "shuffle buffer). index is the default: it draws independently, while "
                    "resample repeats 12.5% (ImageNet-LT-like) / 15.2% (iNaturalist-like) of a "
                    "128-batch against 0.3% / 0.1% for independent draws. Only index resumes "
                    "in constant time; the others skip to the resumed step.")
flags.DEFINE_string("augmentation", _DEFAULT.data.augmentation,
                    "standard | jitter (SimCLR colour jitter + grayscale) for --stage=teacher.")
flags.DEFINE_float("crop_min_area", _DEFAULT.data.crop_min_area,
                   "Smallest area fraction of the training random resized crop.")
flags.DEFINE_bool("horizontal_flip", _DEFAULT.data.horizontal_flip, "Random horizontal flips.")
flags.DEFINE_float("eval_crop_fraction", _DEFAULT.data.eval_crop_fraction,
                   "Evaluation centre crop as a fraction of the resized short side.")
flags.DEFINE_integer("batch_size", _DEFAULT.data.batch_size, "Global training batch size.")
flags.DEFINE_integer("eval_batch_size", _DEFAULT.data.eval_batch_size, "Evaluation batch size.")
flags.DEFINE_string("manual_dir", _DEFAULT.data.manual_dir,
                    "TFDS manual-download directory (ImageNet tars for imagenet_lt).")
flags.DEFINE_string("train_list", _DEFAULT.data.train_list,
                    "file_list / places_lt: training list of 'relative/path label' lines.")
flags.DEFINE_string("val_list", _DEFAULT.data.val_list,
                    "file_list / places_lt: validation list (periodic evaluation).")
flags.DEFINE_string("test_list", _DEFAULT.data.test_list,
                    "file_list / places_lt: test list, evaluated once at the end (without it, "
                    "--val_list is the test split).")
flags.DEFINE_integer("num_classes", _DEFAULT.data.num_classes,
                     "Classes of file_list / tfrecord data; 0: largest training label + 1.")
flags.DEFINE_string("tfrecord_train", _DEFAULT.data.tfrecord_train,
                    "tfrecord: comma-separated glob patterns of the training files.")
flags.DEFINE_string("tfrecord_test", _DEFAULT.data.tfrecord_test,
                    "tfrecord: comma-separated glob patterns of the evaluation files.")
flags.DEFINE_string("tfrecord_val", _DEFAULT.data.tfrecord_val,
                    "tfrecord: optional glob patterns of validation files (periodic evaluation).")
flags.DEFINE_string("tfrecord_image_key", _DEFAULT.data.tfrecord_image_key,
                    "tfrecord: tf.train.Example feature holding the encoded image.")
flags.DEFINE_string("tfrecord_label_key", _DEFAULT.data.tfrecord_label_key,
                    "tfrecord: tf.train.Example int64 feature holding the label.")
flags.DEFINE_bool("validate_images", _DEFAULT.data.validate_images,
                  "Decode every image file once before training; leave out those that fail.")
flags.DEFINE_string("data_cache_dir", _DEFAULT.data.cache_dir,
                    "Exported TFDS/TFRecord images and image checks; empty: WORKDIR/data_cache.")
flags.DEFINE_bool("randaugment", _DEFAULT.data.randaugment, "RandAugment in training.")
flags.DEFINE_integer("randaugment_num_ops", _DEFAULT.data.randaugment_num_ops,
                     "RandAugment operations per image.")
flags.DEFINE_float("randaugment_magnitude", _DEFAULT.data.randaugment_magnitude,
                   "RandAugment magnitude, 0-10.")
# Model.
flags.DEFINE_string("backbone", _DEFAULT.model.backbone, "Backbone name, e.g. resnet50, resnet32.")
flags.DEFINE_float("cosine_scale", _DEFAULT.model.cosine_scale, "sigma of the cosine classifier.")
flags.DEFINE_string("head", _DEFAULT.model.head,
                    "Classifier head: cosine (sigma * cos, no bias; CBD, LDAM) | linear (Dense with "
                    "bias, as the Decoupling / logit adjustment / balanced softmax baselines).")
# Optimiser.
flags.DEFINE_float("learning_rate", _DEFAULT.optimizer.learning_rate,
                   "Learning rate per 256 images; the run uses learning_rate * batch_size / 256.")
flags.DEFINE_float("momentum", _DEFAULT.optimizer.momentum, "SGD momentum.")
flags.DEFINE_float("weight_decay", _DEFAULT.optimizer.weight_decay,
                   "Coefficient of the official explicit L2 term wd * 0.5 * tf.nn.l2_loss(w) = "
                   "0.25 * wd * sum(w^2) over every trainable weight.")
flags.DEFINE_integer("epochs", _DEFAULT.optimizer.epochs,
                     "Training epochs of the teacher and student stages (crt and lws take "
                     "--decoupled_epochs).")
flags.DEFINE_integer("decoupled_epochs", _DEFAULT.long_tail.decoupled_epochs,
                     "Epochs of --stage=crt / lws. Not given: classifier-balancing's "
                     "ImageNet-LT recipes, 10 for crt and 5 for lws (iNaturalist's cRT: 30).")
flags.DEFINE_string("lr_schedule", _DEFAULT.optimizer.lr_schedule,
                    "cosine (the CBD recipe) | step (LDAM-DRW's CIFAR recipe: x0.01 from 80% "
                    "and x0.0001 from 90% of --epochs).")
flags.DEFINE_float("warmup_epochs", _DEFAULT.optimizer.warmup_epochs,
                   "Linear warmup epochs; negative: the schedule's own (cosine 0, step 5).")
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

# Devices and fault tolerance.
flags.DEFINE_string("strategy", _DEFAULT.distribute.strategy,
                    "auto | default | mirrored | multi_worker (reads TF_CONFIG) | tpu.")
flags.DEFINE_string("tpu", _DEFAULT.distribute.tpu, "TPU address or name; 'local' on a TPU VM.")
flags.DEFINE_integer("cpu_devices", _DEFAULT.distribute.cpu_devices,
                     "Split the host CPU into N logical devices (test Mirrored without GPUs).")
flags.DEFINE_bool("sync_batchnorm", _DEFAULT.distribute.sync_batchnorm,
                  "Synchronise BatchNorm statistics across replicas.")
flags.DEFINE_string("mixed_precision", _DEFAULT.distribute.mixed_precision,
                    "'' | bfloat16 (TPU, recent GPUs) | float16 (GPUs; with loss scaling).")
flags.DEFINE_bool("deterministic", _DEFAULT.distribute.deterministic,
                  "Deterministic ops: a resumed run matches an uninterrupted one exactly.")
flags.DEFINE_integer("checkpoint_every_steps", _DEFAULT.distribute.checkpoint_every_steps,
                     "Save the training state every N steps and at epoch ends; 0: epochs only.")
# Output.
flags.DEFINE_integer("log_every_steps", _DEFAULT.output.log_every_steps,
                     "Write train/* TensorBoard scalars every this many steps.")
flags.DEFINE_integer("eval_every_epochs", _DEFAULT.output.eval_every_epochs,
                     "Evaluate by shot group (val/* scalars) every this many epochs; 0: never.")
flags.DEFINE_list("profile_batches", [], "FIRST,LAST training steps to profile into TensorBoard.")
flags.DEFINE_string("export_dir", _DEFAULT.output.export_dir,
                    "Write a SavedModel for TF Serving here at the end of training.")
flags.DEFINE_integer("top_k", _DEFAULT.output.top_k,
                     "Classes a served prediction returns (capped at the class count).")
flags.DEFINE_string("output", None, "cbd_tf.export: directory to write the SavedModel to.")
flags.DEFINE_string("saved_model", None, "cbd_tf.evaluate: evaluate this SavedModel export.")

# Long-tail baselines (cbd_tf/long_tail_losses.py, cbd_tf/decoupled.py).
flags.DEFINE_string("loss", _DEFAULT.long_tail.loss, "--stage=teacher loss: ce | logit_adjusted | "
                    "balanced_softmax | focal | class_balanced | ldam (with DRW) | "
                    "class_balanced_focal (sigmoid, Cui et al.'s large-scale loss).")
flags.DEFINE_float("logit_adjust_tau", _DEFAULT.long_tail.logit_adjust_tau,
                   "tau of --loss=logit_adjusted: logits + tau * log(prior) in training.")
flags.DEFINE_float("focal_gamma", _DEFAULT.long_tail.focal_gamma, "gamma of --loss=focal.")
flags.DEFINE_float("class_balanced_beta", _DEFAULT.long_tail.class_balanced_beta,
                   "beta of the effective number (1 - beta^n) / (1 - beta): --loss=class_balanced "
                   "and the DRW weights of --loss=ldam.")
flags.DEFINE_float("ldam_max_margin", _DEFAULT.long_tail.ldam_max_margin,
                   "Largest LDAM margin (rarest class), in cosine units.")
flags.DEFINE_float("ldam_scale", _DEFAULT.long_tail.ldam_scale,
                   "s of --loss=ldam: CE of s * (cos - m_y); the head's --cosine_scale is "
                   "divided out, so it stays the model's (and CBD's) sigma.")
flags.DEFINE_float("class_balanced_focal_beta", _DEFAULT.long_tail.class_balanced_focal_beta,
                   "beta of the class-balanced weights of --loss=class_balanced_focal.")
flags.DEFINE_float("class_balanced_focal_gamma", _DEFAULT.long_tail.class_balanced_focal_gamma,
                   "gamma of --loss=class_balanced_focal.")
flags.DEFINE_integer("drw_epoch", _DEFAULT.long_tail.drw_epoch,
                     "Epoch at which --loss=ldam turns on class-balanced weights; negative: "
                     "4/5 of --epochs; >= --epochs: never.")
flags.DEFINE_float("posthoc_tau", _DEFAULT.long_tail.posthoc_tau,
                   "Evaluation subtracts posthoc_tau * log(class prior) from the logits.")
flags.DEFINE_string("backbone_from", _DEFAULT.long_tail.backbone_from,
                    "Finished teacher or student run whose backbone a decoupled stage keeps.")
flags.DEFINE_float("tau", _DEFAULT.long_tail.tau,
                   "--stage=tau_norm: each class weight is divided by its norm^tau. Not given: "
                   "tau is swept over 0, 0.1, ..., 2 on the validation split (never test).")
flags.DEFINE_string("decoupled_batchnorm", _DEFAULT.long_tail.decoupled_batchnorm,
                    "--stage=crt / lws: frozen (the backbone's BatchNorm in inference mode) | "
                    "train (its statistics follow the class-balanced batches, weights frozen, "
                    "as classifier-balancing).")
flags.DEFINE_string("ncm_features", _DEFAULT.long_tail.ncm_features,
                    "--stage=ncm feature transform: cl2n (centred, L2-normalised; upstream's "
                    "default) | l2n | raw.")
flags.DEFINE_string("ncm_distance", _DEFAULT.long_tail.ncm_distance,
                    "--stage=ncm: euclidean (logits = -squared distance; upstream's default) | "
                    "cosine (cosine_scale * cosine).")

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
          sampling_method=FLAGS.sampling_method,
          augmentation=FLAGS.augmentation, crop_min_area=FLAGS.crop_min_area,
          horizontal_flip=FLAGS.horizontal_flip, eval_crop_fraction=FLAGS.eval_crop_fraction,
          batch_size=FLAGS.batch_size, eval_batch_size=FLAGS.eval_batch_size,
          manual_dir=FLAGS.manual_dir, train_list=FLAGS.train_list, val_list=FLAGS.val_list,
          test_list=FLAGS.test_list, num_classes=FLAGS.num_classes,
          tfrecord_train=FLAGS.tfrecord_train, tfrecord_test=FLAGS.tfrecord_test,
          tfrecord_val=FLAGS.tfrecord_val,
          tfrecord_image_key=FLAGS.tfrecord_image_key,
          tfrecord_label_key=FLAGS.tfrecord_label_key, validate_images=FLAGS.validate_images,
          # In the run directory unless set: a pipeline's runs share their parent's.
          cache_dir=FLAGS.data_cache_dir or (
              os.path.join(FLAGS.workdir, "data_cache") if FLAGS.workdir else ""),
          randaugment=FLAGS.randaugment, randaugment_num_ops=FLAGS.randaugment_num_ops,
          randaugment_magnitude=FLAGS.randaugment_magnitude),
      model=config_lib.ModelConfig(backbone=FLAGS.backbone, cosine_scale=FLAGS.cosine_scale,
                                   head=FLAGS.head),
      optimizer=config_lib.OptimizerConfig(
          learning_rate=FLAGS.learning_rate, momentum=FLAGS.momentum,
          weight_decay=FLAGS.weight_decay, epochs=FLAGS.epochs, lr_schedule=FLAGS.lr_schedule,
          warmup_epochs=FLAGS.warmup_epochs, steps_per_epoch=FLAGS.steps_per_epoch),
      distill=config_lib.DistillConfig(
          alpha=FLAGS.distill_alpha, beta=FLAGS.distill_beta,
          teachers=tuple(FLAGS.teachers), teacher_specs=tuple(FLAGS.teacher_specs),
          teacher_sampling=FLAGS.teacher_sampling),
      distribute=config_lib.DistributeConfig(
          strategy=FLAGS.strategy, tpu=FLAGS.tpu, cpu_devices=FLAGS.cpu_devices,
          sync_batchnorm=FLAGS.sync_batchnorm, mixed_precision=FLAGS.mixed_precision,
          deterministic=FLAGS.deterministic, checkpoint_every_steps=FLAGS.checkpoint_every_steps),
      output=config_lib.OutputConfig(
          log_every_steps=FLAGS.log_every_steps, eval_every_epochs=FLAGS.eval_every_epochs,
          profile_batches=_integers("profile_batches", FLAGS.profile_batches),
          export_dir=FLAGS.export_dir, top_k=FLAGS.top_k),
      long_tail=config_lib.LongTailConfig(
          loss=FLAGS.loss, logit_adjust_tau=FLAGS.logit_adjust_tau,
          focal_gamma=FLAGS.focal_gamma, class_balanced_beta=FLAGS.class_balanced_beta,
          ldam_max_margin=FLAGS.ldam_max_margin, ldam_scale=FLAGS.ldam_scale,
          class_balanced_focal_beta=FLAGS.class_balanced_focal_beta,
          class_balanced_focal_gamma=FLAGS.class_balanced_focal_gamma, drw_epoch=FLAGS.drw_epoch,
          posthoc_tau=FLAGS.posthoc_tau, backbone_from=FLAGS.backbone_from, tau=FLAGS.tau,
          decoupled_batchnorm=FLAGS.decoupled_batchnorm,
          decoupled_epochs=FLAGS.decoupled_epochs, ncm_features=FLAGS.ncm_features,
          ncm_distance=FLAGS.ncm_distance),
  )


def _integers(name: str, values: list[str]) -> tuple[int, ...]:
  try:
    return tuple(int(value) for value in values)
  except ValueError:
    raise ValueError(f"--{name} must be integers, got {','.join(values)}") from None
