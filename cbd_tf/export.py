"""SavedModel export of a finished run's inference model, for TF Serving (serving.py).

  python -m cbd_tf.export --workdir=RUN_DIR --export_dir=EXPORT_DIR [--top_k=5]
      [--max_image_pixels=89478485] [--max_request_images=64] [--posthoc_tau=T|val]
      [--test_time_crops=1|5]

--posthoc_tau bakes logits - tau * log prior (Menon et al.) into the served probabilities
(default: the run's own setting); val picks tau on the validation split. --test_time_crops=5
makes serving_default average the logits of LIFT's five crops (default: the run's setting).

The export holds the classifier only: no teacher, no optimiser state. Its signatures
(serving_default on image bytes, predict_images on preprocessed images) and assets are
described in cbd_tf/serving.py.
"""

from __future__ import annotations

import sys

from cbd_tf import console

console.import_tensorflow_quietly()  # first: TensorFlow's start-up lines once at most

# pylint: disable=wrong-import-position
from cbd_tf import evaluation, flags, serving

PROGRAM = "cbd_tf.export"

# Every other flag is a training setting: given here, it stops the command (it would do nothing).
FLAGS_READ = {"workdir", "export_dir", "top_k", "max_image_pixels", "max_request_images",
              "posthoc_tau", "test_time_crops"}


def main(argv: list[str]) -> None:
  del argv
  values = flags.FLAGS
  unexpected = flags.unexpected_flag_error("export", FLAGS_READ)
  if unexpected:
    sys.exit(unexpected)
  if not values.workdir or not values.export_dir:
    sys.exit("cbd_tf.export: error: --workdir=RUN_DIR and --export_dir=EXPORT_DIR are required")
  try:
    tau = evaluation.run_posthoc_tau(
        values.workdir, values.posthoc_tau if values["posthoc_tau"].present else None)
    crops = values.test_time_crops if values["test_time_crops"].present else None
    print(serving.export_run(values.workdir, values.export_dir, values.top_k,
                             values.max_image_pixels, values.max_request_images, tau, crops))
  except ValueError as error:
    flags.exit_with_error(PROGRAM, error)


def run() -> None:
  """The cbd-export console script (pyproject.toml)."""
  flags.run_cli(main, __doc__, FLAGS_READ, PROGRAM)


if __name__ == "__main__":
  run()
