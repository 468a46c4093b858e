"""--stage=crt: classifier re-training (Kang et al. 2020) on --backbone_from's frozen
backbone, keeping the epoch with the best validation top-1 (decoupled.build_crt)."""

from __future__ import annotations

import keras

from cbd_tf import callbacks as callbacks_lib
from cbd_tf import config as config_lib
from cbd_tf import decoupled
from cbd_tf.data import pipeline, sources
from cbd_tf.stages import Built


def check(config: config_lib.Config, source: sources.Source) -> None:
  decoupled.check_backbone_run(config.long_tail.backbone_from, source.num_classes,
                               config.data.image_size)


def build(config: config_lib.Config, source: sources.Source) -> Built:
  classifier, config, selection = decoupled.build_crt(config, source)
  return Built(classifier, config, selection=selection)


def callbacks(built: Built, source: sources.Source, log_dir: str,
              save_dir: str) -> list[keras.callbacks.Callback]:
  """The epoch with the best validation top-1, as classifier-balancing keeps it."""
  if source.val is None:
    return []
  return [callbacks_lib.BestValidationEpoch(
      built.classifier, pipeline.build_eval_dataset(source.val, built.config.data),
      source.train_counts, log_dir, save_dir)]
