"""Serves one image file through an export, in a fresh process whose address space is capped
a little above what it uses once warmed up, so a large decode cannot happen unseen.

  python -m tests.scripts.serve_under_memory_limit EXPORT_DIR IMAGE HEADROOM_MB

Prints one JSON object: {"outcome": "served" | "refused: message" | "out of memory: ...",
"allocation_refused": whether an allocation of 2 x HEADROOM_MB then failed (the cap bites)}.
"""

import json
import resource
import sys

import numpy as np
import tensorflow as tf


def address_space_bytes() -> int:
  with open("/proc/self/status") as f:
    size_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
  return size_kb * 1024


def main():
  export_dir, path, headroom_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  with open(path, "rb") as f:
    contents = f.read()
  normal = tf.io.encode_png(np.full((20, 20, 3), 90, np.uint8)).numpy()
  serve(image_bytes=tf.constant([normal]))  # threads and kernels in place before the cap
  limit = address_space_bytes() + headroom_mb * 2 ** 20
  resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
  try:
    serve(image_bytes=tf.constant([contents]))
    outcome = "served"
  except tf.errors.InvalidArgumentError as error:
    outcome = "refused: " + " ".join(str(error).split())
  except (tf.errors.ResourceExhaustedError, MemoryError) as error:
    outcome = "out of memory: " + str(error).splitlines()[0][:200]
  try:
    np.ones(2 * headroom_mb * 2 ** 20, np.uint8)
    allocation_refused = False
  except MemoryError:
    allocation_refused = True
  print(json.dumps({"outcome": outcome, "allocation_refused": allocation_refused}))


if __name__ == "__main__":
  main()
