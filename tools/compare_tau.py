"""tools/compare.py's tau for tau-norm on mnist_lt, which has no validation split: chosen on
the bundled MNIST images in neither its training nor its test split."""

from __future__ import annotations

import hashlib

import numpy as np

import compare_figure


def mnist_lt_validation_pool(config):
  """mnist_lt has no validation split: the bundled MNIST images in neither its training nor
  its test split (verified by content)."""
  from cbd_tf.data import sources  # pylint: disable=import-outside-toplevel
  source = sources.load_source(config.data)
  digest = lambda image: hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
  used = {digest(image) for image in source.train.images} | {
      digest(image) for image in source.test.images}
  with np.load(sources.MNIST_FILE) as arrays:
    images = arrays["images"][..., np.newaxis]
    labels = arrays["labels"].astype(np.int64)
  keep = np.array([digest(image) not in used for image in images])
  return sources.Split(images[keep], labels[keep]), source.train_counts


def choose_tau(backbone_dir: str, options: dict) -> float | None:
  """--tau if given; for mnist_lt the tau with the best mean per-class accuracy on its
  validation pool; otherwise None: the stage sweeps the data set's validation split."""
  from cbd_tf import decoupled, metrics, run_models  # pylint: disable=import-outside-toplevel
  from cbd_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  if options["fixed_tau"] is not None:
    return options["fixed_tau"]
  if options["dataset"] != "mnist_lt":
    return None
  model, config = run_models.load_classifier(backbone_dir)
  split, train_counts = mnist_lt_validation_pool(config)
  sweep = decoupled.sweep_tau(model, pipeline.build_eval_dataset(split, config.data),
                              train_counts, decoupled.TAU_SWEEP)
  tau = metrics.best_tau(sweep)
  options["sweeps"][backbone_dir] = {str(t): {k: r[k] for k in compare_figure.COLUMNS} for t, r in sweep.items()}
  print(f"  tau sweep on the validation pool ({len(split)} images) of {backbone_dir}: "
        + ", ".join(f"{t:g}: {100 * r['top1']:.1f}" for t, r in sweep.items())
        + f" -> tau = {tau:g}", flush=True)
  return tau
