"""--stage=ncm: nearest class mean on --backbone_from's embeddings (decoupled.build_ncm).
Not fitted."""

from __future__ import annotations

from cbd_tf import config as config_lib
from cbd_tf import decoupled
from cbd_tf.data import sources
from cbd_tf.stages import Built
from cbd_tf.stages.crt import check  # pylint: disable=unused-import  (a finished backbone run)


def build(config: config_lib.Config, source: sources.Source) -> Built:
  classifier, config, selection = decoupled.build_ncm(config, source)
  return Built(classifier, config, selection=selection)
