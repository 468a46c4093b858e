"""Shared test helpers: tiny models and subprocess runners."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_classifier(num_classes=4, image_size=8, projection_dim=0, sync_batchnorm=False):
  from cbd_tf.models.classifier import Classifier  # pylint: disable=import-outside-toplevel
  return Classifier("resnet8", num_classes, image_size, projection_dim=projection_dim,
                    sync_batchnorm=sync_batchnorm)


def tiny_run_config(workdir, **sections):
  """A Config of tiny runs of every stage (ResNet-8 at 16 px, one short epoch, no periodic
  evaluation); `sections` change it as Config.replace does."""
  from cbd_tf import config as config_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.Config(
      workdir=str(workdir),
      data=config_lib.DataConfig(image_size=16, batch_size=16, crop_min_area=0.6,
                                 horizontal_flip=False, eval_crop_fraction=1.0),
      model=config_lib.ModelConfig(backbone="resnet8"),
      optimizer=config_lib.OptimizerConfig(epochs=1, steps_per_epoch=2, learning_rate=0.2),
      long_tail=config_lib.LongTailConfig(decoupled_epochs=1),
      output=config_lib.OutputConfig(eval_every_epochs=0))
  return config.replace(**sections)


def tiny_batch(batch_size=8, image_size=8, num_classes=4, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.uniform(size=(batch_size, image_size, image_size, 3)).astype(np.float32)
  return images, (np.arange(batch_size) % num_classes).astype(np.int64)


def run_tool(name, *args):
  """Runs tools/NAME (a file path, as its docstring shows) from the project root."""
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                        check=False)


def run_script(name, *args, timeout=600, env=None):
  """Runs tests/scripts/NAME.py in a fresh process; returns the JSON object it printed last."""
  result = run_module(f"tests.scripts.{name}", *args, timeout=timeout, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def run_module(module, *args, timeout=600, env=None):
  """Runs `python -m module args` from the project root, with `env` added to the
  environment; returns the CompletedProcess."""
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)


def config_from_argv(*argv, validate=True):
  """The Config the training CLI builds from `argv`, validated unless `validate` is False
  (flags left unparsed after)."""
  from cbd_tf import flags  # pylint: disable=import-outside-toplevel
  flags.FLAGS.unparse_flags()
  try:
    flags.FLAGS(["train", *argv])
    config = flags.config_from_flags()
    return config.validate() if validate else config
  finally:
    flags.FLAGS.unparse_flags()
