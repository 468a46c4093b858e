"""Loads an export in a fresh process and serves image files through serving_default.

  python -m tests.scripts.serve_export EXPORT_DIR IMAGE [IMAGE ...]

Prints one JSON object: the outputs for the images, what a request holding one broken
image raised ("InvalidArgument ..." or "served") and the outputs of the next request.
"""

import json
import sys

import tensorflow as tf


def main():
  export_dir, *paths = sys.argv[1:]
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  images = [open(path, "rb").read() for path in paths]
  outputs = serve(image_bytes=tf.constant(images))
  try:
    serve(image_bytes=tf.constant([images[0], b"not an image"]))
    broken_request = "served"
  except tf.errors.InvalidArgumentError as error:
    broken_request = f"InvalidArgument {str(error).splitlines()[0][:80]}"
  again = serve(image_bytes=tf.constant(images[:1]))
  print(json.dumps({
      "probabilities": outputs["probabilities"].numpy().tolist(),
      "top_k_labels": outputs["top_k_labels"].numpy().astype(str).tolist(),
      "top_k_classes": outputs["top_k_classes"].numpy().tolist(),
      "broken_request": broken_request,
      "again": again["probabilities"].numpy().tolist()}))


if __name__ == "__main__":
  main()
