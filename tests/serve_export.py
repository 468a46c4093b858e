"""Loads an export in a fresh process and serves image files through serving_default.

  python -m tests.serve_export EXPORT_DIR OUTPUT.npz IMAGE [IMAGE ...]

Saves the probabilities of each image, then checks that a request holding one broken
image fails with InvalidArgument and that the next request is served.
"""

import sys

import numpy as np
import tensorflow as tf


def main():
  export_dir, output, *paths = sys.argv[1:]
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  images = [open(path, "rb").read() for path in paths]
  outputs = serve(image_bytes=tf.constant(images))
  try:
    serve(image_bytes=tf.constant([images[0], b"not an image"]))
    print("broken_request served")
  except tf.errors.InvalidArgumentError as error:
    print(f"broken_request InvalidArgument {str(error).splitlines()[0][:80]}")
  again = serve(image_bytes=tf.constant(images[:1]))
  np.savez(output, probabilities=outputs["probabilities"].numpy(),
           top_k_labels=outputs["top_k_labels"].numpy().astype(str),
           top_k_classes=outputs["top_k_classes"].numpy(),
           again=again["probabilities"].numpy())


if __name__ == "__main__":
  main()
