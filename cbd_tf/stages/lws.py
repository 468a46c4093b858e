"""--stage=lws: learnable weight scaling (Kang et al. 2020) of --backbone_from's frozen head
(decoupled.build_lws); checked and kept at its best validation epoch as cRT."""

from __future__ import annotations

from cbd_tf import config as config_lib
from cbd_tf import decoupled
from cbd_tf.data import sources
from cbd_tf.stages import Built
from cbd_tf.stages.crt import callbacks, check  # pylint: disable=unused-import  (cRT's)


def build(config: config_lib.Config, source: sources.Source) -> Built:
  classifier, config, selection = decoupled.build_lws(config, source)
  return Built(classifier, config, selection=selection)
