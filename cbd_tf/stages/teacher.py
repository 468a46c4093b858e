"""--stage=teacher: a fresh classifier (or one started from pretrained weights) trained with
--loss; CBD's stage one and the loss-level baselines."""

from __future__ import annotations

from cbd_tf import config as config_lib
from cbd_tf import distribute, long_tail_losses, pretrained
from cbd_tf.data import sources
from cbd_tf.stages import Built


def check(config: config_lib.Config, source: sources.Source) -> None:
  if config.model.head_init == "text":
    pretrained.check_text_head(config, source)


def build(config: config_lib.Config, source: sources.Source) -> Built:
  classifier = pretrained.build_starting_classifier(config, source.num_classes,
                                                    distribute.is_chief(), source)
  classifier.weight_decay_exempt = long_tail_losses.prepare_head(
      classifier.head, config.long_tail, source.num_classes)
  return Built(classifier, config)
