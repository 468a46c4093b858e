"""Time and peak memory of one served request: a normal image, a decompression bomb the export
refuses, the same bomb through an export whose limit lets it in, and an animated GIF of many
large frames (each under the limit) beside a still GIF of one such frame.

  python tools/bench_serving_limits.py [--bomb_side=20000] [--gif_side=3000 --gif_frames=1500]
  python tools/bench_serving_limits.py --tiny   # seconds: a 400 px bomb, a 100,000 limit,
                                                # 50 frames of 300 x 300

Exports a small untrained classifier (ResNet-8 at 32 px: the decode, not the network, is
what is measured) twice: with the default --max_image_pixels (Pillow's 89,478,485) and with
a limit above the bomb. The bomb is a real grey JPEG of bomb_side x bomb_side pixels; the GIF
repeats one solid frame (a few kB compressed: tools/malformed_images.py). Each
request runs in a fresh process, which loads the export, serves the request and reports its
peak resident memory (ru_maxrss) and the request's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

# `tools` as a package, however this file is run (python tools/..., python -m tools....).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def serve_once(export_dir: str, image_path: str, address_space_gb: float) -> None:
  """In a fresh process limited to `address_space_gb` of address space (as a server with a
  memory limit): load, serve, print {"outcome", "seconds", "peak_rss_mb"}."""
  if address_space_gb:
    limit = int(address_space_gb * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  serve = tf.saved_model.load(export_dir).signatures["serving_default"]
  with open(image_path, "rb") as f:
    contents = f.read()
  start = time.perf_counter()
  try:
    serve(image_bytes=tf.constant([contents]))
    outcome = "served"
  except (tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError) as error:
    outcome = "refused: " + str(error).split("assertion failed: ")[-1].splitlines()[0][:120]
  print(json.dumps({"outcome": outcome, "seconds": round(time.perf_counter() - start, 2),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                         / 1024)}))


def prepare(directory: str, bomb_side: int, limit: int, normal_size: tuple[int, int],
            gif_side: int, gif_frames: int) -> dict:
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from cbd_tf import config as config_lib, serving  # pylint: disable=import-outside-toplevel
  from cbd_tf.models.classifier import Classifier  # pylint: disable=import-outside-toplevel
  from tools import malformed_images  # pylint: disable=import-outside-toplevel
  model = Classifier("resnet8", 10, 32)
  exports = {}
  for name, pixels in (("default limit", limit),
                       ("limit above the bomb", bomb_side * bomb_side + 1)):
    config = config_lib.Config(workdir=directory, data=config_lib.DataConfig(
        image_size=32, max_image_pixels=pixels))
    exports[name] = serving.export_saved_model(
        model, os.path.join(directory, name.replace(" ", "_")), [str(c) for c in range(10)],
        [1] * 10, config)
  normal = np.random.default_rng(0).integers(0, 256, (*normal_size, 3), dtype=np.uint8)
  images = {f"normal {normal_size[1]} x {normal_size[0]} JPEG": tf.io.encode_jpeg(normal).numpy(),
            f"bomb {bomb_side} x {bomb_side} grey JPEG": tf.io.encode_jpeg(
                tf.fill([bomb_side, bomb_side, 1], tf.constant(128, tf.uint8))).numpy(),
            f"animated GIF, {gif_frames} frames of {gif_side} x {gif_side}":
                malformed_images.animated_gif(gif_side, gif_frames),
            f"still GIF {gif_side} x {gif_side}": malformed_images.animated_gif(gif_side, 1)}
  paths = {}
  for name, contents in images.items():
    paths[name] = os.path.join(directory, name.split(",")[0].replace(" ", "_"))
    with open(paths[name], "wb") as f:
      f.write(contents)
  return {"exports": exports, "images": paths}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bomb_side", type=int, default=20_000)
  parser.add_argument("--gif_side", type=int, default=3_000)
  parser.add_argument("--gif_frames", type=int, default=1_500)
  parser.add_argument("--tiny", action="store_true",
                      help="a 400 px bomb, a 100,000 limit, 50 GIF frames of 300 x 300")
  parser.add_argument("--address_space_gb", type=float, default=12.0,
                      help="each serving process's address-space limit (ulimit -v); 0: none")
  parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.serve:
    serve_once(args.serve[0], args.serve[1], float(args.serve[2]))
    return
  # The default export's limit: Pillow's (the --max_image_pixels default).
  from cbd_tf import config as config_lib  # pylint: disable=import-outside-toplevel
  bomb_side, limit, normal_size, gif_side, gif_frames = (
      (400, 100_000, (200, 300), 300, 50) if args.tiny else
      (args.bomb_side, config_lib.DataConfig.max_image_pixels, (375, 500), args.gif_side,
       args.gif_frames))
  with tempfile.TemporaryDirectory() as directory:
    prepared = prepare(directory, bomb_side, limit, normal_size, gif_side, gif_frames)
    normal, bomb, *gifs = prepared["images"]
    cases = [("default limit", normal), *[(export, bomb) for export in prepared["exports"]],
             *[("default limit", gif) for gif in gifs]]
    print("| export | image (file size) | outcome | request s | peak RSS MB |")
    print("|---|---|---|---:|---:|")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for export, image in cases:
      result = subprocess.run(
          [sys.executable, os.path.abspath(__file__), "--serve", prepared["exports"][export],
           prepared["images"][image], str(args.address_space_gb)], capture_output=True, text=True, env=env, check=False)
      lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
      values = json.loads(lines[-1]) if lines else {
          "outcome": f"process died ({result.returncode})", "seconds": "-", "peak_rss_mb": "-"}
      size = os.path.getsize(prepared["images"][image]) / 1e6
      print(f"| {export} | {image} ({size:.1f} MB) | {values['outcome']} | "
            f"{values['seconds']} | {values['peak_rss_mb']} |", flush=True)


if __name__ == "__main__":
  main()
