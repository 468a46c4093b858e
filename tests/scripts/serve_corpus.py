"""Serves every image of tools/malformed_images.py's corpus through an export, in a fresh
process, each alone and each followed by a normal request.

  python -m tests.scripts.serve_corpus EXPORT_DIR

Prints one JSON object: {"outcomes": {name: "served" | "refused: first line"}, "next_served":
whether every following normal request was served, "baseline_mb": peak resident memory after
the first normal request, "peak_mb": after the corpus}.
"""

import json
import resource
import sys

import numpy as np
import tensorflow as tf

from tools import malformed_images


def peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
  serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
  normal = tf.io.encode_png(np.full((20, 20, 3), 90, np.uint8)).numpy()
  serve(image_bytes=tf.constant([normal]))
  baseline, outcomes, next_served = peak_mb(), {}, True
  for name, (contents, _) in malformed_images.corpus().items():
    try:
      serve(image_bytes=tf.constant([contents]))
      outcomes[name] = "served"
    except tf.errors.InvalidArgumentError as error:
      outcomes[name] = "refused: " + str(error).split("\n")[0]
    next_served &= serve(image_bytes=tf.constant([normal]))["probabilities"].shape == (1, 4)
  print(json.dumps({"outcomes": outcomes, "next_served": bool(next_served),
                    "baseline_mb": baseline, "peak_mb": peak_mb()}))


if __name__ == "__main__":
  main()
